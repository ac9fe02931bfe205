package api_test

import (
	"bytes"
	"context"
	"encoding/csv"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gin-gonic/gin"
	"github.com/jackc/pgx/v5"

	"github.com/keybridge/keybridge/internal/api"
	"github.com/keybridge/keybridge/internal/audit"
	"github.com/keybridge/keybridge/internal/kcadmin"
	"github.com/keybridge/keybridge/internal/metrics"
	"github.com/keybridge/keybridge/internal/store"
	"github.com/keybridge/keybridge/internal/testenv"
	"github.com/keybridge/keybridge/mapping"
	"github.com/keybridge/keybridge/rls"
)

// testGate is the five-step middleware minus token verification: the test
// names the caller in headers (subject, realm roles, tenant group); the
// grant, the decision and the RLS transaction are the real ones.
type testGate struct {
	engine *mapping.Engine
	st     *store.Store
	audit  audit.Recorder
}

const (
	ctxTx    = "test.tx"
	ctxGrant = "test.grant"
)

func (g *testGate) Require(action string, anyOf ...string) gin.HandlerFunc {
	return func(c *gin.Context) {
		sub := c.GetHeader("X-Test-Subject")
		if sub == "" {
			api.Error(c, http.StatusUnauthorized, "unauthenticated", "no token")
			return
		}
		tenant := c.GetHeader("X-Test-Tenant")
		// The tenant as every tenant source would read it.
		facts := mapping.Facts{Subject: sub, Username: sub, RealmRoles: strings.Split(c.GetHeader("X-Test-Roles"), ","),
			Groups: []string{"/customers/" + tenant}, Organizations: []string{tenant}, Attributes: map[string][]string{"tenant": {tenant}}}
		var stored []mapping.Assignment
		if c.GetHeader("X-Test-Stored") == "1" { // the caller's stored assignments count too, as in the directory
			stored = storedAssignments(c.Request.Context(), g.st, sub)
		}
		grant := g.engine.Resolve(facts, stored, time.Now())
		d := g.engine.Decide(grant, mapping.Request{AnyOf: anyOf, Now: time.Now()})
		if !d.Allowed {
			g.audit.Record(c.Request.Context(), audit.Entry{OccurredAt: time.Now(), TenantID: grant.Tenant, ActorID: sub, ActorName: sub,
				Action: action, Outcome: audit.Denied, Reason: d.Reason})
			api.Error(c, http.StatusForbidden, "forbidden", "permission denied")
			return
		}
		ctx := rls.WithSession(c.Request.Context(), rls.Session{TenantID: grant.Tenant, UserID: sub, Role: grant.PrimaryRole(), Platform: grant.Global()})
		tx, err := rls.Begin(ctx, g.st.AppPool(), pgx.TxOptions{})
		if err != nil {
			api.Error(c, http.StatusServiceUnavailable, "unavailable", "database unavailable")
			return
		}
		c.Set(ctxTx, tx)
		c.Set(ctxGrant, grant)
		c.Next()
		if c.Writer.Status() < 400 {
			_ = tx.Commit(ctx)
		} else {
			_ = tx.Rollback(ctx)
		}
	}
}

func (g *testGate) Tx(c *gin.Context) pgx.Tx            { return c.MustGet(ctxTx).(pgx.Tx) }
func (g *testGate) Grant(c *gin.Context) *mapping.Grant { return c.MustGet(ctxGrant).(*mapping.Grant) }
func (g *testGate) Platform(c *gin.Context) bool        { return g.Grant(c).Global() }

// fakeKeycloak records what management writes back.
type fakeKeycloak struct {
	mu      sync.Mutex
	created []kcadmin.Invitee
	enabled map[string]bool
	// groupRoles: group id -> the realm roles and "client:role"s it gives.
	groupRoles map[string][]string
	// disabled: users disabled in Keycloak (Enabled answers false).
	disabled map[string]bool
}

func (f *fakeKeycloak) GroupRoles(_ context.Context, id string, _ []string) (realm, client []string, err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, r := range f.groupRoles[id] {
		if strings.Contains(r, ":") {
			client = append(client, r)
		} else {
			realm = append(realm, r)
		}
	}
	return realm, client, nil
}

func (f *fakeKeycloak) Enabled(_ context.Context, id string) (bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if on, ok := f.enabled[id]; ok {
		return on, nil
	}
	return !f.disabled[id], nil
}

func (f *fakeKeycloak) CreateUser(_ context.Context, in kcadmin.Invitee) (string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, c := range f.created {
		if c.Email == in.Email {
			return "", kcadmin.ErrExists
		}
	}
	f.created = append(f.created, in)
	return "kc-" + in.Email, nil
}
func (f *fakeKeycloak) SendInvitation(context.Context, string) error { return kcadmin.ErrNoMail }
func (f *fakeKeycloak) SetEnabled(_ context.Context, id string, on bool) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.enabled == nil {
		f.enabled = map[string]bool{}
	}
	f.enabled[id] = on
	return nil
}
func (f *fakeKeycloak) DeleteUser(context.Context, string) error { return nil }

var demoRules = mapping.Config{
	Preset: "fastn",
	Tenant: mapping.TenantSource{GroupPrefix: "/customers"},
	Rules: []mapping.Rule{
		{RealmRole: "fastn-owner", GrantRole: "Owner"}, {RealmRole: "fastn-admin", GrantRole: "Admin"},
		{RealmRole: "fastn-developer", GrantRole: "Developer"}, {RealmRole: "fastn-operator", GrantRole: "Operator"},
		{ClientRole: "portal:developer", GrantRole: "Developer"}, {ClientRole: "portal:operator", GrantRole: "Operator"},
		{RealmRole: "fastn-viewer", GrantRole: "Viewer"}, {RealmRole: "fastn-enduser", GrantRole: "End User"},
	},
}

type env struct {
	h     http.Handler
	st    *store.Store
	audit *testenv.AuditLog
	kc    *fakeKeycloak
}

func newEnv(t *testing.T) env { t.Helper(); return newEnvWith(t, demoRules) }

// newEnvWith seeds the same tenants and people under another mapping.
func newEnvWith(t *testing.T, rules mapping.Config) env {
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
	// Seed two tenants as sync would: system roles from the preset, people
	// with Keycloak-sourced Owner/Developer assignments, one team each.
	err = st.InSystemTx(ctx, func(tx pgx.Tx) error {
		for _, r := range engine.Roles() {
			if r.Kind != "system" {
				continue
			}
			var id string
			if err := tx.QueryRow(ctx, `INSERT INTO roles (name, kind) VALUES ($1, 'system') RETURNING id::text`, r.Name).Scan(&id); err != nil {
				return err
			}
			if _, err := tx.Exec(ctx, `INSERT INTO role_permissions (role_id, permission) SELECT $1::uuid, unnest($2::text[])`, id, r.Permissions); err != nil {
				return err
			}
		}
		for _, q := range []string{
			`INSERT INTO tenants (id, name, source) VALUES ('acme', 'Acme', 'group'), ('globex', 'Globex', 'group')`,
			`INSERT INTO teams (id, tenant_id, name, path) VALUES ('g-acme', 'acme', 'acme', '/customers/acme'), ('g-globex', 'globex', 'globex', '/customers/globex'),
				('g-acme-eng', 'acme', 'eng', '/customers/acme/eng')`,
			`INSERT INTO people (id, username, email, display_name, status) VALUES
				('alice', 'alice', 'alice@acme.test', 'Alice', 'active'), ('dana', 'dana', 'dana@acme.test', 'Dana', 'active'),
				('gina', 'gina', 'gina@globex.test', 'Gina', 'active')`,
			`INSERT INTO tenant_members VALUES ('acme', 'alice'), ('acme', 'dana'), ('globex', 'gina')`,
			`INSERT INTO team_members VALUES ('g-acme-eng', 'dana', 'acme')`,
			`INSERT INTO role_assignments (person_id, role_id, tenant_id, source) SELECT p, r.id, t, 'keycloak'
				FROM (VALUES ('alice', 'Owner', 'acme'), ('dana', 'Developer', 'acme'), ('gina', 'Owner', 'globex')) v(p, n, t) JOIN roles r ON r.name = v.n`,
		} {
			if _, err := tx.Exec(ctx, q); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatalf("seed: %v", err)
	}
	au := &testenv.AuditLog{}
	kc := &fakeKeycloak{}
	m := &api.Management{Log: slog.New(slog.NewTextHandler(io.Discard, nil)), Gate: &testGate{engine: engine, st: st, audit: au},
		Engine: func() *mapping.Engine { return engine }, Mapping: rules, Keycloak: kc, System: st, Audit: au}
	srv := &api.Server{Log: slog.New(slog.NewTextHandler(io.Discard, nil)), Metrics: metrics.New("test", "test"), Modules: []api.Module{m}}
	return env{h: srv.Handler(), st: st, audit: au, kc: kc}
}

type caller struct{ sub, roles, tenant string }

var (
	acmeOwner     = caller{"alice", "fastn-owner", "acme"}
	acmeAdmin     = caller{"adam", "fastn-admin", "acme"}
	acmeDeveloper = caller{"dana", "fastn-developer", "acme"}
	acmeViewer    = caller{"victor", "fastn-viewer", "acme"}
	acmeEndUser   = caller{"erin", "fastn-enduser", "acme"}
	acmeOperator  = caller{"oscar", "fastn-operator", "acme"}
)

func (e env) do(t *testing.T, who caller, method, path string, body any) (int, map[string]any, string) {
	t.Helper()
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req := httptest.NewRequest(method, path, rd)
	req.Header.Set("X-Test-Subject", who.sub)
	req.Header.Set("X-Test-Roles", who.roles)
	req.Header.Set("X-Test-Tenant", who.tenant)
	rec := httptest.NewRecorder()
	e.h.ServeHTTP(rec, req)
	var out map[string]any
	_ = json.Unmarshal(rec.Body.Bytes(), &out)
	return rec.Code, out, rec.Body.String()
}

func TestPeopleScreen(t *testing.T) {
	e := newEnv(t)
	code, out, body := e.do(t, acmeOwner, "GET", "/v1/people", nil)
	if code != 200 {
		t.Fatalf("list: %d %s", code, body)
	}
	items := out["items"].([]any)
	if len(items) != 2 || strings.Contains(body, "gina") {
		t.Fatalf("acme's owner sees %d people: %s", len(items), body)
	}
	for _, q := range []struct{ query, want, not string }{
		{"role=Developer", "dana", "alice"},
		{"status=active&sort=name", "alice", "gina"},
		{"team=/customers/acme/eng", "dana", "alice"},
		{"q=ali", "alice", "dana"},
	} {
		_, _, body := e.do(t, acmeOwner, "GET", "/v1/people?"+q.query, nil)
		if !strings.Contains(body, q.want) || strings.Contains(body, `"username":"`+q.not+`"`) {
			t.Errorf("filter %s: %s", q.query, body)
		}
	}
	if code, _, _ := e.do(t, acmeOwner, "GET", "/v1/people?status=sleeping", nil); code != 400 {
		t.Errorf("bad filter answered %d, want 400", code)
	}
}

func TestInviteCreatesInKeycloakAndLocallyOnce(t *testing.T) {
	e := newEnv(t)
	code, out, body := e.do(t, acmeAdmin, "POST", "/v1/people/invite", map[string]any{"email": "new@acme.test", "name": "New Person", "role": "Developer", "teams": []string{"/customers/acme/eng"}})
	if code != 201 {
		t.Fatalf("invite: %d %s", code, body)
	}
	if out["email_sent"] != false || !strings.Contains(out["email_error"].(string), "no SMTP server") {
		t.Errorf("invite must say plainly that mail is not configured: %s", body)
	}
	if len(e.kc.created) != 1 || e.kc.created[0].Realm[0] != "fastn-developer" || len(e.kc.created[0].Groups) != 2 {
		t.Errorf("keycloak got %+v, want the developer realm role and the team + tenant groups", e.kc.created)
	}
	_, _, body = e.do(t, acmeAdmin, "GET", "/v1/people?status=invited", nil)
	if !strings.Contains(body, "new@acme.test") {
		t.Errorf("invited person not listed as invited: %s", body)
	}
	if code, _, _ := e.do(t, acmeAdmin, "POST", "/v1/people/invite", map[string]any{"email": "new@acme.test", "role": "Developer"}); code != 409 {
		t.Errorf("second invite answered %d, want 409", code)
	}
	if len(e.kc.created) != 1 {
		t.Errorf("duplicate invite reached Keycloak")
	}
	if e.audit.Count("people.invite", audit.Success) != 1 {
		t.Errorf("invite not audited")
	}
	if code, _, _ := e.do(t, acmeViewer, "POST", "/v1/people/invite", map[string]any{"email": "x@acme.test", "role": "Viewer"}); code != 403 {
		t.Errorf("viewer invited: %d", code)
	}
}

func TestCustomRoleLifecycleAndLastOwner(t *testing.T) {
	e := newEnv(t)
	_, out, body := e.do(t, acmeOwner, "GET", "/v1/roles", nil)
	var devID string
	for _, r := range out["items"].([]any) {
		m := r.(map[string]any)
		if m["name"] == "Developer" {
			devID = m["id"].(string)
			if m["permission_count"].(float64) != 34 || m["member_count"].(float64) != 1 {
				t.Errorf("Developer row: %v", m)
			}
		}
	}
	if devID == "" {
		t.Fatalf("no Developer role: %s", body)
	}
	code, dup, body := e.do(t, acmeOwner, "POST", "/v1/roles/"+devID+"/duplicate", map[string]any{"name": "Developer Lite"})
	if code != 201 {
		t.Fatalf("duplicate: %d %s", code, body)
	}
	id := dup["id"].(string)
	perms := dup["permissions"].([]any)
	var keep []string
	for _, p := range perms {
		if p != "workflows.deploy_prod" && p != "connectors.deploy_prod" {
			keep = append(keep, p.(string))
		}
	}
	code, upd, body := e.do(t, acmeOwner, "PATCH", "/v1/roles/"+id, map[string]any{"permissions": keep})
	if code != 200 || upd["permission_count"].(float64) != 32 {
		t.Fatalf("patch: %d %s", code, body)
	}
	if code, _, _ := e.do(t, acmeOwner, "PATCH", "/v1/roles/"+devID, map[string]any{"name": "Hacked"}); code != 403 {
		t.Errorf("system role edit answered %d, want 403", code)
	}
	if code, _, _ := e.do(t, acmeOwner, "DELETE", "/v1/roles/"+devID, nil); code != 403 {
		t.Errorf("system role delete answered %d, want 403", code)
	}
	code, _, body = e.do(t, acmeOwner, "PUT", "/v1/people/dana/roles", map[string]any{"roles": []any{map[string]any{"role": "Developer Lite"}}})
	if code != 200 || !strings.Contains(body, "Developer Lite") {
		t.Fatalf("assign: %d %s", code, body)
	}
	if code, _, _ := e.do(t, acmeOwner, "DELETE", "/v1/roles/"+id, nil); code != 409 {
		t.Errorf("delete of an assigned role answered %d, want 409", code)
	}
	if code, _, _ := e.do(t, acmeOwner, "DELETE", "/v1/roles/"+id+"?force=true", nil); code != 204 {
		t.Errorf("forced delete answered %d", code)
	}

	// alice is the only Owner (from Keycloak); give dana a local Owner
	// grant, then take it away: allowed while alice remains.
	if code, _, body := e.do(t, acmeOwner, "PUT", "/v1/people/dana/roles", map[string]any{"roles": []any{map[string]any{"role": "Owner"}}}); code != 200 {
		t.Fatalf("grant owner: %d %s", code, body)
	}
	if code, _, body := e.do(t, acmeOwner, "PUT", "/v1/people/dana/roles", map[string]any{"roles": []any{}}); code != 200 {
		t.Fatalf("demote a non-last owner: %d %s", code, body)
	}
	// Now make dana the only owner: alice's Keycloak Owner row goes away.
	_ = e.st.InSystemTx(context.Background(), func(tx pgx.Tx) error {
		_, err := tx.Exec(context.Background(), `DELETE FROM role_assignments WHERE person_id = 'alice'`)
		return err
	})
	if code, _, body := e.do(t, acmeOwner, "PUT", "/v1/people/dana/roles", map[string]any{"roles": []any{map[string]any{"role": "Owner"}}}); code != 200 {
		t.Fatalf("grant owner: %d %s", code, body)
	}
	if code, _, body := e.do(t, acmeOwner, "PUT", "/v1/people/dana/roles", map[string]any{"roles": []any{}}); code != 409 {
		t.Errorf("demoting the last owner answered %d, want 409: %s", code, body)
	}
}

func TestIsolationManagementRoutes(t *testing.T) {
	e := newEnv(t)
	var globexRole string
	_ = e.st.InSystemTx(context.Background(), func(tx pgx.Tx) error {
		return tx.QueryRow(context.Background(), `INSERT INTO roles (name, kind, tenant_id) VALUES ('Globex Custom', 'custom', 'globex') RETURNING id::text`).Scan(&globexRole)
	})
	attempts := []struct {
		method, path string
		body         any
	}{
		{"GET", "/v1/people/gina", nil},
		{"PUT", "/v1/people/gina/roles", map[string]any{"roles": []any{}}},
		{"PUT", "/v1/people/gina/status", map[string]any{"status": "inactive"}},
		{"GET", "/v1/teams/g-globex/members", nil},
		{"PATCH", "/v1/roles/" + globexRole, map[string]any{"name": "x"}},
		{"DELETE", "/v1/roles/" + globexRole + "?force=true", nil},
		{"POST", "/v1/roles/" + globexRole + "/duplicate", map[string]any{"name": "stolen"}},
		{"POST", "/v1/roles", map[string]any{"name": "Sneaky", "permissions": []string{"workflows.read"}, "tenant": "globex"}},
	}
	for _, who := range []caller{acmeOwner, acmeAdmin, acmeDeveloper, acmeOperator, acmeViewer, acmeEndUser} {
		for _, a := range attempts {
			code, _, body := e.do(t, who, a.method, a.path, a.body)
			if code != 404 && code != 403 {
				t.Errorf("%s %s %s by %s answered %d: %s", who.roles, a.method, a.path, who.sub, code, body)
			}
		}
	}
	denied := 0
	for _, en := range e.audit.Entries() {
		if en.Outcome == audit.Denied {
			denied++
		}
	}
	if want := 6 * len(attempts); denied != want {
		t.Errorf("%d denials audited, want %d", denied, want)
	}
	if len(e.kc.enabled) != 0 {
		t.Errorf("a cross-tenant status change reached Keycloak: %v", e.kc.enabled)
	}
	// Lists: nothing of globex shows in any acme caller's answer.
	_ = e.st.InSystemTx(context.Background(), func(tx pgx.Tx) error {
		_, err := tx.Exec(context.Background(), `INSERT INTO audit_log (occurred_at, tenant_id, actor_name, action, outcome, entry_id) VALUES (now(), 'globex', 'gina', 'globex.secret', 'success', gen_random_uuid())`)
		return err
	})
	lists := []string{"/v1/people", "/v1/people?q=gina", "/v1/teams", "/v1/roles", "/v1/audit", "/v1/audit?format=csv", "/v1/teams/g-acme/members"}
	leaks := 0
	for _, who := range []caller{acmeOwner, acmeAdmin, acmeDeveloper, acmeOperator, acmeViewer, acmeEndUser} {
		for _, path := range lists {
			_, _, body := e.do(t, who, "GET", path, nil)
			for _, marker := range []string{"gina", "g-globex", "Globex Custom", "globex.secret", `"tenant":"globex"`} {
				if strings.Contains(body, marker) {
					leaks++
					t.Errorf("%s GET %s shows %q", who.roles, path, marker)
				}
			}
		}
	}
	fmt.Printf("RELIABILITY isolation tried=%d bad=%d note=management routes x 6 acme roles against globex objects\n", 6*(len(attempts)+len(lists)), leaks+(6*len(attempts)-denied))
}

func TestAuditExportCSV(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	_ = e.st.InSystemTx(ctx, func(tx pgx.Tx) error {
		_, err := tx.Exec(ctx, `INSERT INTO audit_log (occurred_at, tenant_id, actor_name, action, outcome, entry_id)
			SELECT now() - (i || ' minutes')::interval, CASE WHEN i % 2 = 0 THEN 'acme' ELSE 'globex' END, 'x', 'auth.login', 'success', gen_random_uuid()
			FROM generate_series(1, 300) i`)
		if err != nil {
			return err
		}
		_, err = tx.Exec(ctx, `INSERT INTO audit_log (occurred_at, tenant_id, actor_name, action, resource_id, outcome, entry_id)
			VALUES (now(), 'acme', '@x', 'auth.login', '=HYPERLINK("http://evil.test","ok")', 'success', gen_random_uuid())`)
		return err
	})
	req := httptest.NewRequest("GET", "/v1/audit?action=auth.login", nil)
	req.Header.Set("Accept", "text/csv")
	req.Header.Set("X-Test-Subject", "alice")
	req.Header.Set("X-Test-Roles", "fastn-owner")
	req.Header.Set("X-Test-Tenant", "acme")
	rec := httptest.NewRecorder()
	e.h.ServeHTTP(rec, req)
	rows, err := csv.NewReader(rec.Body).ReadAll()
	if err != nil || rec.Code != 200 {
		t.Fatalf("csv: %d %v", rec.Code, err)
	}
	if len(rows) != 152 {
		t.Errorf("csv has %d rows (with header), want 152", len(rows))
	}
	formula := false
	for _, r := range rows[1:] {
		for _, v := range r {
			formula = formula || strings.HasPrefix(v, "=") || strings.HasPrefix(v, "@")
		}
	}
	if formula {
		t.Error("a value the caller chose reached the CSV as a spreadsheet formula")
	}
}

// Nobody gives what they do not hold: an Endatix tenant Admin, who passes
// every check in its tenant, may not make anyone (itself included) a
// PlatformAdmin, by assignment, invitation or a custom role; it may still
// hand out the tenant's own roles. Each refusal is audited.
func TestNoPrivilegeEscalationThroughManagement(t *testing.T) {
	e := newEnvWith(t, mapping.Config{Preset: "endatix", Tenant: mapping.TenantSource{GroupPrefix: "/customers"},
		Rules: []mapping.Rule{{RealmRole: "platform", GrantRole: "PlatformAdmin"}, {RealmRole: "admin", GrantRole: "Admin"}, {RealmRole: "creator", GrantRole: "Creator"}}})
	admin := caller{"alice", "admin", "acme"}
	held := func() []string {
		rows, err := e.st.SysPool().Query(context.Background(), `SELECT r.name FROM role_assignments ra JOIN roles r ON r.id = ra.role_id WHERE ra.person_id = 'alice' ORDER BY 1`)
		if err != nil {
			t.Fatal(err)
		}
		names, err := pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil {
			t.Fatal(err)
		}
		return names
	}

	code, _, body := e.do(t, admin, "PUT", "/v1/people/alice/roles", map[string]any{"roles": []any{map[string]any{"role": "PlatformAdmin"}}})
	if code != 403 || !strings.Contains(body, "PlatformAdmin") {
		t.Fatalf("Admin made itself PlatformAdmin: %d %s", code, body)
	}
	if got := held(); slices.Contains(got, "PlatformAdmin") {
		t.Fatalf("alice holds %v after the refusal", got)
	}
	if code, _, body := e.do(t, admin, "PUT", "/v1/people/alice/roles", map[string]any{"roles": []any{map[string]any{"role": "Creator"}}}); code != 200 {
		t.Fatalf("Admin could not assign Creator: %d %s", code, body)
	}
	if code, _, body := e.do(t, admin, "POST", "/v1/people/invite", map[string]any{"email": "pat@acme.test", "role": "PlatformAdmin"}); code != 403 {
		t.Fatalf("Admin invited a PlatformAdmin: %d %s", code, body)
	}
	if len(e.kc.created) != 0 {
		t.Fatalf("a refused invitation reached Keycloak: %+v", e.kc.created)
	}
	if code, _, body := e.do(t, admin, "POST", "/v1/roles", map[string]any{"name": "Sneaky", "permissions": []string{"forms.view", "platform.tenants.manage"}}); code != 403 {
		t.Fatalf("Admin wrote platform.* into a custom role: %d %s", code, body)
	}
	_, roles, _ := e.do(t, admin, "GET", "/v1/roles", nil)
	var platformID string
	for _, r := range roles["items"].([]any) {
		if m := r.(map[string]any); m["name"] == "PlatformAdmin" {
			platformID = m["id"].(string)
		}
	}
	if code, _, body := e.do(t, admin, "POST", "/v1/roles/"+platformID+"/duplicate", map[string]any{"name": "Platform Copy"}); code != 403 {
		t.Fatalf("Admin duplicated PlatformAdmin into its tenant: %d %s", code, body)
	}
	for action, want := range map[string]int{"people.assign": 1, "people.invite": 1, "roles.create": 1, "roles.duplicate": 1} {
		if n := e.audit.Count(action, string(audit.Denied)); n != want {
			t.Errorf("%s denials audited: %d, want %d", action, n, want)
		}
	}
	// A PlatformAdmin may, in any tenant; acting in globex, it shows in
	// globex's audit log, where that tenant's admins look.
	platform := caller{"root", "platform", "acme"}
	if code, _, body := e.do(t, platform, "PUT", "/v1/people/alice/roles", map[string]any{"roles": []any{map[string]any{"role": "PlatformAdmin"}}}); code != 200 {
		t.Fatalf("PlatformAdmin could not assign PlatformAdmin: %d %s", code, body)
	}
	if code, _, body := e.do(t, platform, "PUT", "/v1/people/gina/roles", map[string]any{"tenant": "globex", "roles": []any{map[string]any{"role": "Creator"}}}); code != 200 {
		t.Fatalf("PlatformAdmin could not assign in globex: %d %s", code, body)
	}
	var inGlobex bool
	for _, en := range e.audit.Entries() {
		inGlobex = inGlobex || (en.Action == "people.assign" && en.ResourceID == "gina" && en.TenantID == "globex")
	}
	if !inGlobex {
		t.Errorf("the platform caller's assignment in globex is not in globex's audit log: %+v", e.audit.Entries())
	}
}

// Deactivating disables the Keycloak user, in every tenant: a tenant caller
// may not deactivate the tenant's last Owner, a person who is also in
// another tenant, or (Endatix) someone whose role it could not grant.
func TestDeactivationStaysWithinWhatTheCallerControls(t *testing.T) {
	e := newEnv(t)
	adam := caller{"adam", "fastn-admin", "acme"}
	if code, _, body := e.do(t, adam, "PUT", "/v1/people/alice/status", map[string]any{"status": "inactive"}); code != 409 || !strings.Contains(body, "last_owner") {
		t.Errorf("the last Owner deactivated: %d %s", code, body)
	}
	if err := e.st.InSystemTx(context.Background(), func(tx pgx.Tx) error {
		_, err := tx.Exec(context.Background(), `INSERT INTO tenant_members VALUES ('globex', 'dana')`)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if code, _, body := e.do(t, adam, "PUT", "/v1/people/dana/status", map[string]any{"status": "inactive"}); code != 409 || !strings.Contains(body, "other tenants") {
		t.Errorf("a person of two tenants deactivated by one: %d %s", code, body)
	}
	if len(e.kc.enabled) != 0 {
		t.Errorf("a refused deactivation reached Keycloak: %v", e.kc.enabled)
	}
	if n := e.audit.Count("people.status", string(audit.Denied)); n != 1 {
		t.Errorf("%d denials audited, want 1 (the other-tenants refusal)", n)
	}

	en := newEnvWith(t, mapping.Config{Preset: "endatix", Tenant: mapping.TenantSource{GroupPrefix: "/customers"},
		Rules: []mapping.Rule{{RealmRole: "platform", GrantRole: "PlatformAdmin"}, {RealmRole: "admin", GrantRole: "Admin"}}})
	platform := caller{"root", "platform", "acme"}
	if code, _, body := en.do(t, platform, "PUT", "/v1/people/alice/roles", map[string]any{"roles": []any{map[string]any{"role": "PlatformAdmin"}}}); code != 200 {
		t.Fatalf("setup: %d %s", code, body)
	}
	if code, _, body := en.do(t, caller{"adam", "admin", "acme"}, "PUT", "/v1/people/alice/status", map[string]any{"status": "inactive"}); code != 403 {
		t.Errorf("a tenant Admin deactivated a PlatformAdmin: %d %s", code, body)
	}
}

// An invitation places the invitee in the tenant the way the tenant source
// reads it (a group, an organization, an attribute), or refuses with what to
// do: a Keycloak user in no tenant would be granted nothing.
func TestInvitePlacesTheInviteeInTheTenant(t *testing.T) {
	e := newEnv(t) // group_prefix /customers
	if err := e.st.InSystemTx(context.Background(), func(tx pgx.Tx) error {
		_, err := tx.Exec(context.Background(), `INSERT INTO tenants (id, name, source) VALUES ('initech', 'Initech', 'group')`)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if code, _, body := e.do(t, caller{"ian", "fastn-owner", "initech"}, "POST", "/v1/people/invite", map[string]any{"email": "x@initech.test", "role": "Viewer"}); code != 409 || !strings.Contains(body, "/customers/initech") {
		t.Errorf("invite into a tenant without its group: %d %s", code, body)
	}
	if code, _, body := e.do(t, acmeOwner, "POST", "/v1/people/invite", map[string]any{"email": "y@acme.test", "role": "Viewer"}); code != 201 || !slices.Contains(e.kc.created[0].Groups, "g-acme") {
		t.Errorf("invite into acme: %d %s %+v", code, body, e.kc.created)
	}

	attr := demoRules
	attr.Tenant = mapping.TenantSource{Attribute: "tenant"}
	ea := newEnvWith(t, attr)
	if code, _, body := ea.do(t, acmeOwner, "POST", "/v1/people/invite", map[string]any{"email": "z@acme.test", "role": "Viewer"}); code != 201 ||
		len(ea.kc.created) != 1 || ea.kc.created[0].Attributes["tenant"][0] != "acme" {
		t.Errorf("attribute mode: %d %s %+v", code, body, ea.kc.created)
	}

	org := demoRules
	org.Tenant = mapping.TenantSource{Organization: true}
	eo := newEnvWith(t, org)
	if code, _, body := eo.do(t, acmeOwner, "POST", "/v1/people/invite", map[string]any{"email": "w@acme.test", "role": "Viewer"}); code != 409 || !strings.Contains(body, "organization") {
		t.Errorf("organization mode, tenant without an organization: %d %s", code, body)
	}
	// A tenant with its organization, as a real sync records it, is
	// TestInvitationAfterARealSyncJoinsTheOrganization's (tenants_test.go).
}
