package middleware_test

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gin-gonic/gin"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/keybridge/keybridge/internal/testenv"
	"github.com/keybridge/keybridge/mapping"
	"github.com/keybridge/keybridge/middleware"
)

// tokens maps a bearer token to the facts of its subject.
type tokens struct {
	e     *mapping.Engine
	facts map[string]mapping.Facts
}

func (a tokens) Authenticate(_ context.Context, bearer string) (*mapping.Grant, error) {
	f, ok := a.facts[bearer]
	if !ok {
		return nil, errors.New("invalid token")
	}
	return a.e.Resolve(f, nil, time.Now()), nil
}

type limiter struct{ left int }

func (l *limiter) Allow(string) (bool, time.Duration) {
	if l.left <= 0 {
		return false, 2 * time.Second
	}
	l.left--
	return true, 0
}

func TestFiveStepsAndRLS(t *testing.T) {
	db := testenv.NewDatabase(t)
	ctx := context.Background()
	owner, err := pgx.Connect(ctx, db.OwnerURL)
	if err != nil {
		t.Fatal(err)
	}
	defer owner.Close(ctx)
	// An application table protected with the documented policy template.
	for _, q := range []string{
		`CREATE TABLE workflows (id serial PRIMARY KEY, tenant_id text NOT NULL, name text NOT NULL)`,
		`CREATE INDEX ON workflows (tenant_id)`,
		`INSERT INTO workflows (tenant_id, name) VALUES ('acme', 'a1'), ('acme', 'a2'), ('globex', 'g1')`,
		`ALTER TABLE workflows ENABLE ROW LEVEL SECURITY`, `ALTER TABLE workflows FORCE ROW LEVEL SECURITY`,
		`CREATE POLICY tenant_isolation ON workflows USING (tenant_id = (SELECT keybridge.current_tenant())) WITH CHECK (tenant_id = (SELECT keybridge.current_tenant()))`,
		`GRANT SELECT, INSERT ON workflows TO keybridge_app`, `GRANT USAGE ON SEQUENCE workflows_id_seq TO keybridge_app`,
	} {
		if _, err := owner.Exec(ctx, q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	pool, err := pgxpool.New(ctx, db.AppURL)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	e, err := mapping.New(mapping.Config{Preset: "fastn", Tenant: mapping.TenantSource{GroupPrefix: "/customers"},
		Rules: []mapping.Rule{{RealmRole: "dev", GrantRole: "Developer"}, {RealmRole: "viewer", GrantRole: "Viewer"}}})
	if err != nil {
		t.Fatal(err)
	}
	auth := tokens{e: e, facts: map[string]mapping.Facts{
		"acme-dev":    {Subject: "dana", RealmRoles: []string{"dev"}, Groups: []string{"/customers/acme"}},
		"globex-dev":  {Subject: "gus", RealmRoles: []string{"dev"}, Groups: []string{"/customers/globex"}},
		"no-tenant":   {Subject: "nobody", RealmRoles: []string{"dev"}},
		"acme-viewer": {Subject: "victor", RealmRoles: []string{"viewer"}, Groups: []string{"/customers/acme"}},
	}}
	var mu sync.Mutex
	var events []middleware.Event
	lim := &limiter{left: 1000}
	mw := &middleware.Middleware{Auth: auth, Decider: func() middleware.Decider { return e }, DB: pool, Limiter: lim, AuditSuccess: true,
		Audit: func(_ context.Context, ev middleware.Event) { mu.Lock(); events = append(events, ev); mu.Unlock() }}

	list := mw.HTTP("workflows.list", []string{"workflows.read"}, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rows, err := middleware.Tx(r.Context()).Query(r.Context(), `SELECT name FROM workflows ORDER BY name`)
		if err != nil {
			http.Error(w, err.Error(), 500)
			return
		}
		names, _ := pgx.CollectRows(rows, pgx.RowTo[string])
		_, _ = w.Write([]byte(strings.Join(names, ",")))
	}))
	create := mw.HTTP("workflows.create", []string{"workflows.create"}, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, err := middleware.Tx(r.Context()).Exec(r.Context(), `INSERT INTO workflows (tenant_id, name) VALUES ($1, 'x')`, r.URL.Query().Get("tenant"))
		if err != nil {
			http.Error(w, "refused", http.StatusForbidden)
			return
		}
		w.WriteHeader(201)
	}))
	call := func(h http.Handler, token, query string) (int, string) {
		req := httptest.NewRequest("POST", "/?"+query, nil)
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		return rec.Code, rec.Body.String()
	}
	tests := []struct {
		name, token string
		h           http.Handler
		query       string
		code        int
		body        string
	}{
		{"tenant A sees only A's rows", "acme-dev", list, "", 200, "a1,a2"},
		{"tenant B sees only B's rows", "globex-dev", list, "", 200, "g1"},
		{"no tenant sees none", "no-tenant", list, "", 200, ""},
		{"no token", "", list, "", 401, ""},
		{"bad token", "forged", list, "", 401, ""},
		{"writes into its own tenant", "acme-dev", create, "tenant=acme", 201, ""},
		{"cannot write into another tenant", "acme-dev", create, "tenant=globex", 403, ""},
		{"viewer lacks workflows.create", "acme-viewer", create, "tenant=acme", 403, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, body := call(tt.h, tt.token, tt.query)
			if code != tt.code || (tt.code == 200 && body != tt.body) {
				t.Fatalf("%d %q, want %d %q", code, body, tt.code, tt.body)
			}
		})
	}
	// A handler that writes and then panics commits nothing.
	boom := mw.HTTP("workflows.create", []string{"workflows.create"}, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = middleware.Tx(r.Context()).Exec(r.Context(), `INSERT INTO workflows (tenant_id, name) VALUES ('acme', 'panic')`)
		panic("handler bug")
	}))
	func() {
		defer func() { _ = recover() }()
		call(boom, "acme-dev", "")
	}()
	var n int
	_ = owner.QueryRow(ctx, `SELECT count(*) FROM (SELECT set_config('app.tenant_id', 'acme', false)) s, workflows WHERE name = 'panic'`).Scan(&n)
	if n != 0 {
		t.Errorf("a panicking handler's write was committed")
	}
	_ = owner.QueryRow(ctx, `SELECT count(*) FROM workflows WHERE name = 'x'`).Scan(&n) // the owner is filtered too: FORCE
	if err := pool.QueryRow(ctx, `SELECT count(*) FROM workflows`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != 0 {
		t.Errorf("outside the middleware, with no session, the runtime role sees %d rows", n)
	}
	_ = owner.QueryRow(ctx, `SELECT count(*) FROM (SELECT set_config('app.tenant_id', 'acme', false)) s, workflows WHERE name = 'x'`).Scan(&n)
	if n != 1 {
		t.Errorf("%d rows written, want 1 (the refused write rolled back)", n)
	}
	// A handler that answers success although its transaction cannot commit
	// (it swallowed an error, which aborts the transaction) must not tell
	// the client 201: the commit happens before the answer, which becomes 503.
	swallow := func(tx pgx.Tx, ctx context.Context) {
		_, _ = tx.Exec(ctx, `INSERT INTO workflows (tenant_id, name) VALUES ('acme', 'lost')`)
		_, _ = tx.Exec(ctx, `SELECT 1/0`)
	}
	lost := mw.HTTP("workflows.create", []string{"workflows.create"}, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		swallow(middleware.Tx(r.Context()), r.Context())
		w.WriteHeader(201)
		_, _ = w.Write([]byte(`{"id":"lost"}`))
	}))
	if code, body := call(lost, "acme-dev", ""); code != http.StatusServiceUnavailable || strings.Contains(body, "lost") {
		t.Errorf("net/http: a failed commit answered %d %q, want 503 without the handler's body", code, body)
	}
	// A read streams from its transaction while it answers (an audit
	// export does): it is not committed under it.
	stream := mw.HTTP("workflows.list", []string{"workflows.read"}, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rows, err := middleware.Tx(r.Context()).Query(r.Context(), `SELECT name FROM workflows ORDER BY name`)
		if err != nil {
			http.Error(w, err.Error(), 500)
			return
		}
		defer rows.Close()
		for rows.Next() {
			var name string
			_ = rows.Scan(&name)
			_, _ = w.Write([]byte(name + ";"))
		}
		if rows.Err() != nil {
			_, _ = w.Write([]byte("broken"))
		}
	}))
	req := httptest.NewRequest("GET", "/", nil)
	req.Header.Set("Authorization", "Bearer acme-dev")
	rec := httptest.NewRecorder()
	stream.ServeHTTP(rec, req)
	if rec.Code != 200 || rec.Body.String() != "a1;a2;x;" {
		t.Errorf("a streaming read: %d %q, want 200 \"a1;a2;x;\"", rec.Code, rec.Body)
	}
	gin.SetMode(gin.TestMode)
	r := gin.New()
	r.POST("/w", mw.Require("workflows.create", "workflows.create"), func(c *gin.Context) {
		swallow(mw.Tx(c), c.Request.Context())
		c.JSON(201, gin.H{"id": "lost"})
	})
	r.POST("/empty", mw.Require("workflows.create", "workflows.create"), func(c *gin.Context) {
		swallow(mw.Tx(c), c.Request.Context())
		c.Status(204)
	})
	for _, path := range []string{"/w", "/empty"} {
		req := httptest.NewRequest("POST", path, nil)
		req.Header.Set("Authorization", "Bearer acme-dev")
		rec := httptest.NewRecorder()
		r.ServeHTTP(rec, req)
		if rec.Code != http.StatusServiceUnavailable || strings.Contains(rec.Body.String(), "lost") {
			t.Errorf("gin %s: a failed commit answered %d %q, want 503", path, rec.Code, rec.Body)
		}
	}

	lim.left = 0
	if code, _ := call(list, "acme-dev", ""); code != 429 {
		t.Errorf("rate limit: %d", code)
	}
	mu.Lock()
	defer mu.Unlock()
	outcomes := map[string]int{}
	for _, ev := range events {
		outcomes[ev.Outcome]++
	}
	if outcomes["success"] != 5 || outcomes["denied"] != 4 || outcomes["failure"] != 5 {
		t.Errorf("audited outcomes %v, want 5 successes (3 lists, 1 create, 1 stream), 4 denials and 5 failures (a refused write, a panic, 3 failed commits)", outcomes)
	}
}
