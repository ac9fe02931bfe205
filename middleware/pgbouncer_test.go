package middleware_test

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/keybridge/keybridge/internal/testenv"
	"github.com/keybridge/keybridge/mapping"
	"github.com/keybridge/keybridge/middleware"
)

// seen is what a request's transaction saw of its session.
type seen struct {
	TenantID string   `json:"tenant_id"`
	UserID   string   `json:"user_id"`
	Role     string   `json:"role"`
	Roles    string   `json:"roles"`
	Platform string   `json:"platform"`
	User     string   `json:"user"`
	Backend  int32    `json:"backend"`
	Tenants  []string `json:"tenants"`
}

// Behind PgBouncer in transaction pooling mode (2 server connections), 7
// clients of two tenants call a route through the five steps at once while
// an eighth runs plain transactions on the same pool; every answer carries
// exactly its caller's variables and rows, the plain transactions see none of
// theirs, and the tenants were served by the same server connections.
func TestFiveStepsBehindPgBouncer(t *testing.T) {
	db := testenv.NewDatabase(t)
	testenv.TemplateTable(t, db)
	b := testenv.StartPgBouncer(t, db, 2)
	ctx := context.Background()
	cfg, err := pgxpool.ParseConfig(b.AppURL)
	if err != nil {
		t.Fatal(err)
	}
	cfg.MaxConns = 8
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	e, err := mapping.New(mapping.Config{Preset: "fastn", Tenant: mapping.TenantSource{GroupPrefix: "/customers"},
		Rules: []mapping.Rule{{RealmRole: "dev", GrantRole: "Developer"}}})
	if err != nil {
		t.Fatal(err)
	}
	auth := tokens{e: e, facts: map[string]mapping.Facts{
		"acme-dev":   {Subject: "dana", RealmRoles: []string{"dev"}, Groups: []string{"/customers/acme"}},
		"globex-dev": {Subject: "gus", RealmRoles: []string{"dev"}, Groups: []string{"/customers/globex"}},
	}}
	mw := &middleware.Middleware{Auth: auth, Decider: func() middleware.Decider { return e }, DB: pool}
	h := mw.HTTP("items.list", []string{"workflows.read"}, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var s seen
		err := middleware.Tx(r.Context()).QueryRow(r.Context(), `SELECT current_setting('app.tenant_id'), current_setting('app.user_id'),
			current_setting('app.role'), current_setting('app.roles'), current_setting('app.platform'), current_user::text, pg_backend_pid(),
			coalesce((SELECT array_agg(DISTINCT tenant_id ORDER BY tenant_id) FROM items), '{}')`).
			Scan(&s.TenantID, &s.UserID, &s.Role, &s.Roles, &s.Platform, &s.User, &s.Backend, &s.Tenants)
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		_ = json.NewEncoder(w).Encode(s)
	}))

	want := map[string]seen{}
	for token := range auth.facts {
		g, err := auth.Authenticate(ctx, token)
		if err != nil {
			t.Fatal(err)
		}
		sess := middleware.SessionFor(g)
		if sess.TenantID == "" || sess.Platform {
			t.Fatalf("%s: session %+v", token, sess)
		}
		v := sess.Vars()
		want[token] = seen{TenantID: sess.TenantID, UserID: sess.UserID, Role: sess.Role, Roles: v["app.roles"], User: "keybridge_app", Tenants: []string{sess.TenantID}}
	}

	const target = 3000
	deadline := time.Now().Add(20 * time.Second)
	var done, bad atomic.Int64
	var mu sync.Mutex
	backends := map[string]map[int32]bool{}
	var wg sync.WaitGroup
	plain := func() {
		for done.Load() < target && time.Now().Before(deadline) {
			var s seen
			err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
				return tx.QueryRow(ctx, `SELECT coalesce(current_setting('app.tenant_id', true), ''), coalesce(current_setting('app.user_id', true), ''),
					current_user::text, coalesce((SELECT array_agg(tenant_id) FROM items), '{}')`).Scan(&s.TenantID, &s.UserID, &s.User, &s.Tenants)
			})
			if err != nil || s.TenantID != "" || s.UserID != "" || s.User != "keybridge_app" || len(s.Tenants) != 0 {
				if bad.Add(1) <= 5 {
					t.Errorf("a plain transaction between requests saw %+v (%v)", s, err)
				}
			}
		}
	}
	for i := range 8 {
		token := []string{"acme-dev", "globex-dev"}[i%2]
		if i == 7 {
			wg.Go(plain)
			continue
		}
		wg.Go(func() {
			for done.Load() < target && time.Now().Before(deadline) {
				req := httptest.NewRequest(http.MethodGet, "/items", nil)
				req.Header.Set("Authorization", "Bearer "+token)
				rec := httptest.NewRecorder()
				h.ServeHTTP(rec, req)
				done.Add(1)
				var s seen
				err := json.Unmarshal(rec.Body.Bytes(), &s)
				w := want[token]
				w.Backend = s.Backend
				if rec.Code != http.StatusOK || err != nil || !equalSeen(s, w) {
					if bad.Add(1) <= 5 {
						t.Errorf("%s: %d %s, want %+v", token, rec.Code, rec.Body.String(), w)
					}
					continue
				}
				mu.Lock()
				if backends[token] == nil {
					backends[token] = map[int32]bool{}
				}
				backends[token][s.Backend] = true
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	t.Logf("%d requests through the middleware and pgbouncer, %d wrong", done.Load(), bad.Load())
	if done.Load() < 1000 {
		t.Errorf("only %d requests in the time allowed", done.Load())
	}
	shared := false
	for pid := range backends["acme-dev"] {
		shared = shared || backends["globex-dev"][pid]
	}
	if !shared {
		t.Errorf("acme and globex never shared a server connection (%v): the pooler was not in the way", backends)
	}

	// And after them all, a connection carries nothing of theirs.
	var tenant, user string
	if err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		return tx.QueryRow(ctx, `SELECT coalesce(current_setting('app.tenant_id', true), ''), current_user::text`).Scan(&tenant, &user)
	}); err != nil || tenant != "" || user != "keybridge_app" {
		t.Errorf("a plain transaction after them sees app.tenant_id %q as %q (%v)", tenant, user, err)
	}
}

func equalSeen(a, b seen) bool {
	return a.TenantID == b.TenantID && a.UserID == b.UserID && a.Role == b.Role && a.Roles == b.Roles &&
		a.Platform == b.Platform && a.User == b.User && a.Backend == b.Backend && slices.Equal(a.Tenants, b.Tenants)
}
