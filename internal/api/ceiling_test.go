package api_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/keybridge/keybridge/internal/audit"
	"github.com/keybridge/keybridge/internal/kcadmin"
	"github.com/keybridge/keybridge/internal/store"
	"github.com/keybridge/keybridge/mapping"
)

// storedAssignments loads a subject's live stored assignments as the
// directory does, for callers whose temporary grants must count.
func storedAssignments(ctx context.Context, st *store.Store, sub string) []mapping.Assignment {
	rows, err := st.SysPool().Query(ctx, `SELECT coalesce(r.name, ''), coalesce(ra.permission, ''), coalesce(ra.tenant_id, ''), ra.source, ra.expires_at
		FROM role_assignments ra LEFT JOIN roles r ON r.id = ra.role_id
		WHERE ra.person_id = $1 AND (r.id IS NULL OR r.kind IN ('system', 'custom')) AND (ra.expires_at IS NULL OR ra.expires_at > now())`, sub)
	if err != nil {
		return nil
	}
	out, _ := pgx.CollectRows(rows, func(r pgx.CollectableRow) (mapping.Assignment, error) {
		var a mapping.Assignment
		var exp *time.Time
		err := r.Scan(&a.Role, &a.Permission, &a.Tenant, &a.Source, &exp)
		if exp != nil {
			a.ExpiresAt = *exp
		}
		return a, err
	})
	return out
}

// doStored is env.do for a caller whose stored assignments (temporary
// grants included) count, as they do behind the real middleware.
func (e env) doStored(t *testing.T, who caller, method, path string, body any) (int, string) {
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
	req.Header.Set("X-Test-Stored", "1")
	rec := httptest.NewRecorder()
	e.h.ServeHTTP(rec, req)
	return rec.Code, rec.Body.String()
}

// seedPerson adds a person to tenants, as sync would.
func (e env) seedPerson(t *testing.T, id string, tenants ...string) {
	t.Helper()
	ctx := context.Background()
	if err := e.st.InSystemTx(ctx, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `INSERT INTO people (id, username, email, display_name, status) VALUES ($1, $1, $1 || '@example.test', $1, 'active')`, id); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, `INSERT INTO tenant_members SELECT unnest($2::text[]), $1`, id, tenants)
		return err
	}); err != nil {
		t.Fatal(err)
	}
}

// localRoles lists a person's local assignments: "Role" or "Role@expiry".
func (e env) localRoles(t *testing.T, person string) []string {
	t.Helper()
	rows, err := e.st.SysPool().Query(context.Background(), `SELECT r.name || coalesce('@' || to_char(ra.expires_at AT TIME ZONE 'UTC', 'HH24:MI'), '')
		FROM role_assignments ra JOIN roles r ON r.id = ra.role_id WHERE ra.person_id = $1 AND ra.source = 'local' ORDER BY 1`, person)
	if err != nil {
		t.Fatal(err)
	}
	out, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func roles(rs ...map[string]any) map[string]any {
	list := make([]any, len(rs))
	for i, r := range rs {
		list[i] = r
	}
	return map[string]any{"roles": list}
}

func grant(role string, until ...time.Time) map[string]any {
	m := map[string]any{"role": role}
	if len(until) > 0 {
		m["expires_at"] = until[0].UTC().Format(time.RFC3339)
	}
	return m
}

// Issue 3: a temporary grant does not make itself permanent. A Viewer given
// Admin for ten minutes may not turn it into a lasting Admin, nor give
// anyone a lasting Developer, nor anything past its own expiry; it may give
// what it holds until no later than its own grant ends.
func TestTemporaryGrantCannotMakeItselfPermanent(t *testing.T) {
	e := newEnv(t)
	e.seedPerson(t, "victor", "acme")
	in10 := time.Now().Add(10 * time.Minute).Truncate(time.Second)
	if code, _, body := e.do(t, acmeAdmin, "PUT", "/v1/people/victor/roles", roles(grant("Admin", in10))); code != 200 {
		t.Fatalf("temporary Admin for victor: %d %s", code, body)
	}
	viewer := caller{"victor", "fastn-viewer", "acme"}
	for _, tc := range []struct {
		name, path string
		body       map[string]any
	}{
		{"Admin for good to itself", "/v1/people/victor/roles", roles(grant("Admin"))},
		{"Admin past its own expiry to itself", "/v1/people/victor/roles", roles(grant("Admin", in10.Add(time.Hour)))},
		{"Developer for good to someone else", "/v1/people/dana/roles", roles(grant("Developer"))},
	} {
		if code, body := e.doStored(t, viewer, "PUT", tc.path, tc.body); code != 403 || !strings.Contains(body, "temporary") {
			t.Errorf("%s: %d %s, want 403 naming the temporary grant", tc.name, code, body)
		}
	}
	if got := e.localRoles(t, "victor"); len(got) != 1 || !strings.HasPrefix(got[0], "Admin@") {
		t.Errorf("victor holds %v locally, want only the temporary Admin", got)
	}
	if got := e.localRoles(t, "dana"); len(got) != 0 {
		t.Errorf("dana holds %v locally after the refusals", got)
	}
	if n := e.audit.Count("people.assign", audit.Denied); n != 3 {
		t.Errorf("%d denials audited, want 3", n)
	}
	if code, body := e.doStored(t, viewer, "PUT", "/v1/people/dana/roles", roles(grant("Developer", in10))); code != 200 {
		t.Errorf("Developer until victor's own expiry: %d %s", code, body)
	}

	// The same for a temporary PlatformAdmin (Endatix).
	en := newEnvWith(t, mapping.Config{Preset: "endatix", Tenant: mapping.TenantSource{GroupPrefix: "/customers"},
		Rules: []mapping.Rule{{RealmRole: "platform", GrantRole: "PlatformAdmin"}, {RealmRole: "creator", GrantRole: "Creator"}}})
	root := caller{"root", "platform", "acme"}
	if code, _, body := en.do(t, root, "PUT", "/v1/people/alice/roles", roles(grant("PlatformAdmin", in10))); code != 200 {
		t.Fatalf("temporary PlatformAdmin for alice: %d %s", code, body)
	}
	alice := caller{"alice", "creator", "acme"}
	if code, body := en.doStored(t, alice, "PUT", "/v1/people/alice/roles", roles(grant("PlatformAdmin"))); code != 403 {
		t.Errorf("a temporary PlatformAdmin made itself permanent: %d %s", code, body)
	}
	if code, body := en.doStored(t, alice, "PUT", "/v1/people/gina/roles", map[string]any{"tenant": "globex", "roles": []any{grant("PlatformAdmin")}}); code != 403 {
		t.Errorf("a temporary PlatformAdmin granted PlatformAdmin for good: %d %s", code, body)
	}
	if got := en.localRoles(t, "gina"); len(got) != 0 {
		t.Errorf("gina holds %v", got)
	}
}

// Issue 8: replacing someone's roles touches only what the caller could
// grant. A caller holding people.manage and Viewer's permissions, asked to
// set dana's roles, leaves dana's local Admin (which it could not grant) as
// it is, and may not change it either.
func TestReplacingRolesKeepsWhatTheCallerCouldNotGrant(t *testing.T) {
	cfg := demoRules
	cfg.Rules = append(append([]mapping.Rule{}, demoRules.Rules...),
		mapping.Rule{RealmRole: "people-manager", GrantRole: "Viewer"},
		mapping.Rule{RealmRole: "people-manager", GrantPermissions: []string{"people.view", "people.manage"}})
	e := newEnvWith(t, cfg)
	in10 := time.Now().Add(10 * time.Minute).Truncate(time.Second)
	if code, _, body := e.do(t, acmeOwner, "PUT", "/v1/people/dana/roles", roles(grant("Admin"), grant("Operator", in10))); code != 200 {
		t.Fatalf("setup: %d %s", code, body)
	}
	pam := caller{"pam", "people-manager", "acme"}
	code, body := e.doStored(t, pam, "PUT", "/v1/people/dana/roles", roles(grant("Viewer")))
	if code != 200 {
		t.Fatalf("replace: %d %s", code, body)
	}
	if got := strings.Join(e.localRoles(t, "dana"), ","); !strings.HasPrefix(got, "Admin,Operator@") || !strings.HasSuffix(got, ",Viewer") {
		t.Errorf("dana holds %s locally, want Admin and the temporary Operator kept, Viewer added", got)
	}
	if !strings.Contains(body, `"kept":["Admin","Operator"]`) {
		t.Errorf("the answer does not say what was kept: %s", body)
	}
	if code, body := e.doStored(t, pam, "PUT", "/v1/people/dana/roles", roles(grant("Admin", in10))); code != 403 {
		t.Errorf("changing an assignment the caller could not make: %d %s", code, body)
	}
	// Dropping the Viewer it gave is within its reach.
	if code, body := e.doStored(t, pam, "PUT", "/v1/people/dana/roles", roles()); code != 200 {
		t.Errorf("clear: %d %s", code, body)
	}
	if got := strings.Join(e.localRoles(t, "dana"), ","); !strings.HasPrefix(got, "Admin,Operator@") || strings.Contains(got, "Viewer") {
		t.Errorf("dana holds %s locally, want Admin and Operator only", got)
	}
}

// inviterRules: "inviter" holds Viewer and may invite, nothing more; the
// group /customers/<tenant>/admins makes its members Admin by a rule.
func inviterRules() mapping.Config {
	cfg := demoRules
	cfg.Rules = append(append([]mapping.Rule{}, demoRules.Rules...),
		mapping.Rule{RealmRole: "inviter", GrantRole: "Viewer"},
		mapping.Rule{RealmRole: "inviter", GrantPermissions: []string{"people.view", "people.invite"}},
		mapping.Rule{Group: "/customers/*/admins", GrantRole: "Admin"})
	return cfg
}

// Issue 9: an invitation's teams pass the grant ceiling. A team whose
// Keycloak group maps fastn-admin, a team a group rule makes Admin, and a
// tenant group that carries a role all grant more than a mere inviter
// holds: refused with 403 before anything is created in Keycloak.
func TestInviteTeamsPassTheGrantCeiling(t *testing.T) {
	e := newEnvWith(t, inviterRules())
	if err := e.st.InSystemTx(context.Background(), func(tx pgx.Tx) error {
		_, err := tx.Exec(context.Background(), `INSERT INTO teams (id, tenant_id, name, path) VALUES ('g-acme-admins', 'acme', 'admins', '/customers/acme/admins')`)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	inviter := caller{"ivy", "inviter", "acme"}
	invite := func(email string, teams ...string) (int, string) {
		code, _, body := e.do(t, inviter, "POST", "/v1/people/invite", map[string]any{"email": email, "role": "Viewer", "teams": teams})
		return code, body
	}
	if code, body := invite("plain@acme.test", "/customers/acme/eng"); code != 201 {
		t.Fatalf("a team that carries nothing: %d %s", code, body)
	}
	e.kc.groupRoles = map[string][]string{"g-acme-eng": {"fastn-admin"}}
	if code, body := invite("eng@acme.test", "/customers/acme/eng"); code != 403 || !strings.Contains(body, "/customers/acme/eng") {
		t.Errorf("a team whose group maps fastn-admin: %d %s", code, body)
	}
	e.kc.groupRoles = map[string][]string{"g-acme-eng": {"portal:developer"}}
	if code, body := invite("portal@acme.test", "/customers/acme/eng"); code != 403 {
		t.Errorf("a team whose group maps portal:developer: %d %s", code, body)
	}
	e.kc.groupRoles = nil
	if code, body := invite("admins@acme.test", "/customers/acme/admins"); code != 403 || !strings.Contains(body, "Admin") {
		t.Errorf("a team a group rule makes Admin: %d %s", code, body)
	}
	e.kc.groupRoles = map[string][]string{"g-acme": {"fastn-developer"}}
	if code, body := invite("tenant@acme.test"); code != 403 {
		t.Errorf("a tenant group that carries Developer: %d %s", code, body)
	}
	if len(e.kc.created) != 1 {
		t.Errorf("refused invitations reached Keycloak: %+v", e.kc.created)
	}
	if n := e.audit.Count("people.invite", audit.Denied); n != 4 {
		t.Errorf("%d denials audited, want 4", n)
	}
	// An Admin may put people into the admins team.
	e.kc.groupRoles = nil
	if code, _, body := e.do(t, acmeAdmin, "POST", "/v1/people/invite", map[string]any{"email": "new-admin@acme.test", "role": "Viewer", "teams": []string{"/customers/acme/admins"}}); code != 201 {
		t.Errorf("an Admin inviting into the admins team: %d %s", code, body)
	}
}

// Issue 12a: inviting an address that already has an account outside the
// caller's tenant (another tenant's person, or a Keycloak user keybridge has
// not synced) answers as an accepted invitation would, 202 with a generic
// body, and creates nothing; the real reason goes to the platform's audit
// log, not the tenant's. A person of the caller's own tenant, whom the
// caller sees anyway, is still a 409.
func TestInviteDoesNotRevealAccountsOfOtherTenants(t *testing.T) {
	e := newEnv(t)
	e.kc.created = []kcadmin.Invitee{{Email: "kc-only@acme.test"}}
	for _, email := range []string{"gina@globex.test", "GINA@globex.test", "kc-only@acme.test"} {
		code, _, body := e.do(t, acmeAdmin, "POST", "/v1/people/invite", map[string]any{"email": email, "role": "Viewer"})
		if code != 202 || strings.Contains(strings.ToLower(body), "exist") || strings.Contains(body, `"tenant":"globex"`) {
			t.Errorf("invite %s: %d %s, want 202 with a body that says nothing of the account", email, code, body)
		}
	}
	if len(e.kc.created) != 1 {
		t.Errorf("Keycloak got %+v", e.kc.created)
	}
	var platformOnly int
	for _, en := range e.audit.Entries() {
		if en.Action == "people.invite" {
			if en.TenantID != "" || en.Outcome != audit.Failure || !strings.Contains(en.Reason, "account") {
				t.Errorf("audit entry %+v, want a failure with the reason, in no tenant's log", en)
			}
			platformOnly++
		}
	}
	if platformOnly != 3 {
		t.Errorf("%d invite entries, want 3", platformOnly)
	}
	if code, _, body := e.do(t, acmeAdmin, "POST", "/v1/people/invite", map[string]any{"email": "dana@acme.test", "role": "Viewer"}); code != 409 {
		t.Errorf("invite of a person of the caller's own tenant: %d %s", code, body)
	}
}

// Issue 6: re-enabling a person needs the authority of whoever disabled
// them. Keycloak's and a platform caller's deactivations are undone by a
// platform caller only; a tenant caller's by a platform caller or a caller
// of that same tenant. Deactivating again does not take a stronger
// deactivation over, and a user Keycloak disabled that sync has not seen
// yet is asked about.
func TestReenablingNeedsTheDisablersAuthority(t *testing.T) {
	e := newEnvWith(t, mapping.Config{Preset: "endatix", Tenant: mapping.TenantSource{GroupPrefix: "/customers"},
		Rules: []mapping.Rule{{RealmRole: "platform", GrantRole: "PlatformAdmin"}, {RealmRole: "admin", GrantRole: "Admin"}}})
	e.seedPerson(t, "kim", "acme")
	adam, gil, root := caller{"adam", "admin", "acme"}, caller{"gil", "admin", "globex"}, caller{"root", "platform", "acme"}
	status := func(who caller, s string) (int, string) {
		code, _, body := e.do(t, who, "PUT", "/v1/people/kim/status", map[string]any{"status": s})
		return code, body
	}
	sys := func(q string) {
		if err := e.st.InSystemTx(context.Background(), func(tx pgx.Tx) error { _, err := tx.Exec(context.Background(), q); return err }); err != nil {
			t.Fatal(err)
		}
	}

	// Keycloak disabled kim; sync saw it.
	sys(`UPDATE people SET status = 'inactive' WHERE id = 'kim'`)
	if code, body := status(adam, "active"); code != 403 || !strings.Contains(body, "Keycloak") {
		t.Errorf("a tenant Admin re-enabled a user Keycloak disabled: %d %s", code, body)
	}
	if len(e.kc.enabled) != 0 {
		t.Errorf("a refused re-enable reached Keycloak: %v", e.kc.enabled)
	}
	if code, body := status(root, "active"); code != 200 {
		t.Fatalf("a platform caller re-enables: %d %s", code, body)
	}

	// A platform caller disabled kim; the tenant Admin's own deactivation
	// on top does not take it over.
	if code, body := status(root, "inactive"); code != 200 {
		t.Fatalf("platform deactivation: %d %s", code, body)
	}
	if code, body := status(adam, "inactive"); code != 200 {
		t.Fatalf("deactivating again: %d %s", code, body)
	}
	if code, body := status(adam, "active"); code != 403 || !strings.Contains(body, "platform") {
		t.Errorf("a tenant Admin re-enabled a user a platform caller disabled: %d %s", code, body)
	}
	if code, body := status(root, "active"); code != 200 {
		t.Fatalf("platform re-enable: %d %s", code, body)
	}

	// A tenant Admin disabled kim: that tenant may re-enable, another may not.
	if code, body := status(adam, "inactive"); code != 200 {
		t.Fatalf("tenant deactivation: %d %s", code, body)
	}
	sys(`INSERT INTO tenant_members VALUES ('globex', 'kim')`)
	if code, body := status(gil, "active"); code != 403 {
		t.Errorf("globex's Admin re-enabled a user acme's Admin disabled: %d %s", code, body)
	}
	if code, body := status(adam, "active"); code != 200 {
		t.Errorf("acme's Admin re-enables the user it disabled: %d %s", code, body)
	}

	// Keycloak disabled kim a moment ago; sync has not seen it yet.
	e.kc.mu.Lock()
	delete(e.kc.enabled, "kim")
	e.kc.disabled = map[string]bool{"kim": true}
	e.kc.mu.Unlock()
	if code, body := status(adam, "active"); code != 403 {
		t.Errorf("a tenant Admin re-enabled a user disabled in Keycloak but not yet synced: %d %s", code, body)
	}
	if n := e.audit.Count("people.status", audit.Denied); n != 4 {
		t.Errorf("%d denials audited, want 4", n)
	}
}
