package api_test

import (
	"context"
	"io"
	"log/slog"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/keybridge/keybridge/internal/api"
	"github.com/keybridge/keybridge/internal/audit"
	"github.com/keybridge/keybridge/internal/metrics"
	"github.com/keybridge/keybridge/internal/store"
	"github.com/keybridge/keybridge/internal/testenv"
	"github.com/keybridge/keybridge/mapping"
	ksync "github.com/keybridge/keybridge/sync"
)

// syncEnv serves the sync routes behind the test gate, with a Keycloak that
// does not answer: a run fails at once, which is all these tests need.
func syncEnv(t *testing.T, rules mapping.Config) (h func(who caller, method, path, body string) (int, string, string), st *store.Store, au *testenv.AuditLog) {
	t.Helper()
	db := testenv.NewDatabase(t)
	ctx := context.Background()
	st, err := store.Open(ctx, db.AppURL, db.SyncURL, 4)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(st.Close)
	engine, err := mapping.New(rules)
	if err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	m := metrics.New("test", "test")
	svc := &ksync.Service{KC: ksync.NewKeycloak(ksync.KeycloakOptions{URL: "http://127.0.0.1:1", Realm: "none", Timeout: time.Second}),
		Store: st, Engine: func() *mapping.Engine { return engine }, Log: log, Metrics: m, Mode: "full", MaxRemovalShare: 0.2, Timeout: 5 * time.Second}
	au = &testenv.AuditLog{}
	mod := &api.Sync{Log: log, Metrics: m, Service: svc, Store: st, Gate: &testGate{engine: engine, st: st, audit: au}, Background: ctx, Audit: au}
	handler := (&api.Server{Log: log, Metrics: m, Modules: []api.Module{mod}}).Handler()
	return func(who caller, method, path, body string) (int, string, string) {
		req := httptest.NewRequest(method, path, strings.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("X-Test-Subject", who.sub)
		req.Header.Set("X-Test-Roles", who.roles)
		req.Header.Set("X-Test-Tenant", who.tenant)
		rec := httptest.NewRecorder()
		handler.ServeHTTP(rec, req)
		return rec.Code, rec.Body.String(), rec.Header().Get("Retry-After")
	}, st, au
}

// Issue 12c: sync runs are realm-wide (every tenant's counts and errors):
// a tenant caller is refused them, and the refusal is audited; a platform
// caller reads them.
func TestSyncRunsArePlatformOnly(t *testing.T) {
	do, st, au := syncEnv(t, mapping.Config{Preset: "endatix", Tenant: mapping.TenantSource{GroupPrefix: "/customers"},
		Rules: []mapping.Rule{{RealmRole: "platform", GrantRole: "PlatformAdmin"}, {RealmRole: "admin", GrantRole: "Admin"}}})
	if err := st.InSystemTx(context.Background(), func(tx pgx.Tx) error {
		_, err := tx.Exec(context.Background(), `INSERT INTO sync_runs (trigger, mode, started_at, outcome, error) VALUES ('schedule', 'full', now(), 'failure', 'globex group x')`)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if code, body, _ := do(caller{"adam", "admin", "acme"}, "GET", "/v1/sync/runs", ""); code != 403 || strings.Contains(body, "trigger") {
		t.Errorf("a tenant Admin read the realm's sync runs: %d %s", code, body)
	}
	if au.Count("sync.runs", audit.Denied) != 1 {
		t.Errorf("the refusal was not audited: %+v", au.Entries())
	}
	if code, body, _ := do(caller{"root", "platform", "acme"}, "GET", "/v1/sync/runs", ""); code != 200 || !strings.Contains(body, `"trigger":"schedule"`) {
		t.Errorf("a platform caller reading sync runs: %d %s", code, body)
	}
}

// Issue 12d: a tenant caller starts at most one realm-wide sync a minute for
// its tenant; the next is answered 429 with Retry-After, and audited.
// Another tenant's caller is not held up by it.
func TestSyncTriggersByTenantCallersAreSpaced(t *testing.T) {
	do, _, au := syncEnv(t, demoRules)
	if code, body, _ := do(acmeAdmin, "POST", "/v1/sync", `{"dry_run":true}`); code == 429 || code == 403 {
		t.Fatalf("first sync: %d %s", code, body)
	}
	code, body, retry := do(acmeOwner, "POST", "/v1/sync", `{"dry_run":true}`)
	if code != 429 || retry == "" {
		t.Errorf("a second sync from acme at once: %d %s (Retry-After %q)", code, body, retry)
	}
	if au.Count("sync.trigger", audit.Denied) != 1 {
		t.Errorf("the refusal was not audited: %+v", au.Entries())
	}
	if code, body, _ := do(caller{"gina", "fastn-owner", "globex"}, "POST", "/v1/sync", `{"dry_run":true}`); code == 429 {
		t.Errorf("globex held up by acme: %d %s", code, body)
	}
}
