package middleware_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/keybridge/keybridge/internal/testenv"
	"github.com/keybridge/keybridge/mapping"
	"github.com/keybridge/keybridge/middleware"
)

// A handler that releases the request's transaction gives its connection
// back to the pool before it answers, and the request is still audited as
// the success it is (no commit failure from the transaction ended early).
func TestReleaseReturnsTheConnectionBeforeTheAnswer(t *testing.T) {
	db := testenv.NewDatabase(t)
	pool, err := pgxpool.New(context.Background(), db.AppURL)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	e, err := mapping.New(mapping.Config{Preset: "fastn", Tenant: mapping.TenantSource{GroupPrefix: "/customers"},
		Rules: []mapping.Rule{{RealmRole: "viewer", GrantRole: "Viewer"}}})
	if err != nil {
		t.Fatal(err)
	}
	auth := tokens{e: e, facts: map[string]mapping.Facts{"v": {Subject: "victor", RealmRoles: []string{"viewer"}, Groups: []string{"/customers/acme"}}}}
	var mu sync.Mutex
	var events []middleware.Event
	mw := &middleware.Middleware{Auth: auth, Decider: func() middleware.Decider { return e }, DB: pool, AuditSuccess: true,
		Audit: func(_ context.Context, ev middleware.Event) { mu.Lock(); events = append(events, ev); mu.Unlock() }}
	var held, releasedHeld int32
	h := mw.HTTP("audit.export", []string{"audit.view"}, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		held = pool.Stat().AcquiredConns()
		if err := middleware.Release(r.Context()); err != nil {
			http.Error(w, err.Error(), 500)
			return
		}
		releasedHeld = pool.Stat().AcquiredConns()
		_, _ = w.Write([]byte("streamed"))
	}))
	req := httptest.NewRequest("GET", "/", nil)
	req.Header.Set("Authorization", "Bearer v")
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	if rec.Code != 200 || rec.Body.String() != "streamed" {
		t.Fatalf("%d %q", rec.Code, rec.Body)
	}
	if held != 1 || releasedHeld != 0 {
		t.Errorf("connections held: %d before Release, %d after; want 1 and 0", held, releasedHeld)
	}
	if len(events) != 1 || events[0].Outcome != "success" {
		t.Errorf("audited %+v, want one success", events)
	}
	if err := middleware.Release(context.Background()); err == nil {
		t.Error("Release outside the middleware reported nothing")
	}
}
