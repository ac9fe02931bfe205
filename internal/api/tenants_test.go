package api_test

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/keybridge/keybridge/internal/api"
	"github.com/keybridge/keybridge/internal/audit"
	"github.com/keybridge/keybridge/internal/kcadmin"
	"github.com/keybridge/keybridge/internal/manage"
	"github.com/keybridge/keybridge/internal/metrics"
	"github.com/keybridge/keybridge/internal/store"
	"github.com/keybridge/keybridge/internal/testenv"
	"github.com/keybridge/keybridge/mapping"
	ksync "github.com/keybridge/keybridge/sync"
)

// realKCEnv is the management API over a database filled by a real sync of
// a throwaway realm, writing back to that realm through kcadmin: nothing
// the product produces is set by hand.
type realKCEnv struct {
	env
	realm  testenv.Keycloak
	admin  *testenv.Admin
	engine *mapping.Engine
	sync   *ksync.Service
}

// newRealKCEnv creates a throwaway realm (its service account holding
// roles, extra merged into the realm), lets prepare fill it, syncs it into a
// fresh database and serves the management and tenant routes over it.
func newRealKCEnv(t *testing.T, roles []string, extra map[string]any, rules mapping.Config, prepare func(a *testenv.Admin)) *realKCEnv {
	t.Helper()
	kc := testenv.RequireKeycloak(t)
	realm := testenv.NewRealm(t, kc, roles, extra)
	a := testenv.NewAdmin(t, realm)
	if prepare != nil {
		prepare(a)
	}
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
	svc := &ksync.Service{KC: ksync.NewKeycloak(ksync.KeycloakOptions{URL: realm.URL, Realm: realm.Realm, ClientID: realm.ClientID,
		ClientSecret: realm.ClientSecret, Timeout: 10 * time.Second, Retries: 1}),
		Store: st, Engine: func() *mapping.Engine { return engine }, Log: log, Mode: "full", MaxRemovalShare: 1, Timeout: time.Minute}
	e := &realKCEnv{realm: realm, admin: a, engine: engine, sync: svc}
	e.resync(t)
	kca := kcadmin.New(realm.URL, realm.Realm, realm.ClientID, realm.ClientSecret, 10*time.Second)
	au := &testenv.AuditLog{}
	gate := &testGate{engine: engine, st: st, audit: au}
	m := &api.Management{Log: log, Gate: gate, Engine: func() *mapping.Engine { return engine }, Mapping: rules, Keycloak: kca, System: st, Audit: au}
	tn := &api.Tenants{Log: log, Gate: gate, System: st, Audit: au, Service: &manage.Tenants{Keycloak: kca, Source: rules.Tenant}}
	srv := &api.Server{Log: log, Metrics: metrics.New("test", "test"), Modules: []api.Module{m, tn}}
	e.env = env{h: srv.Handler(), st: st, audit: au}
	return e
}

func (e *realKCEnv) resync(t *testing.T) *ksync.Result {
	t.Helper()
	res, err := e.sync.Run(context.Background(), ksync.RunOptions{Trigger: "cli"})
	if err != nil {
		t.Fatalf("sync: %v", err)
	}
	return res
}

// tenantRows are the tenants as the store holds them, one line each.
func (e *realKCEnv) tenantRows(t *testing.T) []string {
	t.Helper()
	rows, err := e.st.SysPool().Query(context.Background(), `SELECT id || ' ' || name || ' ' || source || ' ' || status || ' ' || coalesce(keycloak_id, '-') FROM tenants ORDER BY id`)
	if err != nil {
		t.Fatal(err)
	}
	out, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// createOrg creates an organization in the realm with members (usernames)
// and returns its id.
func createOrg(t *testing.T, a *testenv.Admin, alias, name string, members ...string) string {
	t.Helper()
	_, h := a.Do("POST", "/organizations", map[string]any{"name": name, "alias": alias}, nil)
	id := h.Get("Location")[strings.LastIndex(h.Get("Location"), "/")+1:]
	for _, m := range members {
		var users []struct{ ID string }
		a.Do("GET", "/users?exact=true&username="+m, nil, &users)
		if len(users) != 1 {
			t.Fatalf("user %s: %v", m, users)
		}
		a.Do("POST", "/organizations/"+id+"/members", users[0].ID, nil)
	}
	return id
}

func realmUser(kc testenv.Keycloak, name string, realmRoles ...string) map[string]any {
	return map[string]any{"username": name, "enabled": true, "email": name + "@example.test", "emailVerified": true,
		"firstName": name, "lastName": "Test", "realmRoles": realmRoles,
		"credentials": []any{map[string]any{"type": "password", "value": kc.UserPassword, "temporary": false}}}
}

func realmRoles(names ...string) map[string]any {
	var rs []any
	for _, n := range names {
		rs = append(rs, map[string]any{"name": n})
	}
	return map[string]any{"realm": rs}
}

// Issue 16, part 1: sync records each tenant's organization, so an
// invitation into an organization tenant after a real sync creates the
// Keycloak user as a member of that organization. Before, sync never wrote
// tenants.keycloak_id and the invitation answered "no Keycloak
// organization" (the old test set the column by hand).
func TestInvitationAfterARealSyncJoinsTheOrganization(t *testing.T) {
	kc := testenv.RequireKeycloak(t)
	rules := demoRules
	rules.Tenant = mapping.TenantSource{Organization: true}
	var org string
	e := newRealKCEnv(t, append(slices.Clone(testenv.SyncRoles), "manage-realm", "manage-users"), map[string]any{
		"organizationsEnabled": true,
		"roles":                realmRoles("fastn-owner", "fastn-viewer"),
		"users":                []any{realmUser(kc, "owen", "fastn-owner")},
	}, rules, func(a *testenv.Admin) { org = createOrg(t, a, "acme", "Acme", "owen") })

	if rows := e.tenantRows(t); !slices.Equal(rows, []string{"acme Acme organization active " + org}) {
		t.Errorf("tenants after a sync: %v, want acme with its organization's id %s", rows, org)
	}
	code, out, body := e.do(t, caller{"owen", "fastn-owner", "acme"}, "POST", "/v1/people/invite", map[string]any{"email": "vera@acme.test", "name": "Vera Test", "role": "Viewer"})
	if code != http.StatusCreated {
		t.Fatalf("invite into acme: %d %s", code, body)
	}
	id, _ := out["id"].(string)
	var members []struct{ ID, Username string }
	e.admin.Do("GET", "/organizations/"+org+"/members", nil, &members)
	if !slices.ContainsFunc(members, func(m struct{ ID, Username string }) bool { return m.ID == id && m.Username == "vera@acme.test" }) {
		t.Errorf("the invitee %s is not a member of acme's organization: %+v", id, members)
	}
	// The next sync places the invitee in acme from Keycloak's own record.
	e.resync(t)
	var tenants []string
	if err := e.st.SysPool().QueryRow(context.Background(), `SELECT tenant_ids FROM people WHERE id = $1`, id).Scan(&tenants); err != nil || !slices.Equal(tenants, []string{"acme"}) {
		t.Errorf("the invitee's tenants after a sync: %v (%v), want [acme]", tenants, err)
	}
}

// tenantItem is one tenant of GET /v1/tenants.
type tenantItem struct {
	ID, Name, Source, Status string
	KeycloakID               string `json:"keycloak_id"`
	Members                  int    `json:"member_count"`
}

func (e *realKCEnv) listTenants(t *testing.T, who caller) map[string]tenantItem {
	t.Helper()
	code, out, body := e.do(t, who, "GET", "/v1/tenants", nil)
	if code != http.StatusOK {
		t.Fatalf("list tenants: %d %s", code, body)
	}
	got := map[string]tenantItem{}
	for _, x := range out["items"].([]any) {
		m := x.(map[string]any)
		it := tenantItem{ID: m["id"].(string), Name: m["name"].(string), Source: m["source"].(string), Status: m["status"].(string),
			Members: int(m["member_count"].(float64))}
		it.KeycloakID, _ = m["keycloak_id"].(string)
		got[it.ID] = it
	}
	return got
}

// refusedEverywhere: a tenant caller is refused every tenant route (403),
// and each refusal is audited as a denial.
func (e *realKCEnv) refusedEverywhere(t *testing.T, who caller, tenant string) {
	t.Helper()
	for _, r := range []struct {
		method, path, action string
		body                 any
	}{
		{"GET", "/v1/tenants", "tenants.list", nil},
		{"POST", "/v1/tenants", "tenants.create", map[string]any{"id": "sneaky"}},
		{"PATCH", "/v1/tenants/" + tenant, "tenants.update", map[string]any{"disabled": true}},
	} {
		before := e.audit.Count(r.action, string(audit.Denied))
		if code, _, body := e.do(t, who, r.method, r.path, r.body); code != http.StatusForbidden {
			t.Errorf("%s %s by %s of %s: %d %s, want 403", r.method, r.path, who.roles, who.tenant, code, body)
		}
		if e.audit.Count(r.action, string(audit.Denied)) != before+1 {
			t.Errorf("%s by %s: the refusal was not audited", r.action, who.roles)
		}
	}
}

// Issue 16, part 3, organization source under Endatix: a PlatformAdmin
// creates, renames, disables and enables tenants, each its organization in
// Keycloak; the list counts members; a re-sync reads back exactly what was
// recorded; a tenant Admin is refused.
func TestTenantAdministrationWithOrganizations(t *testing.T) {
	kc := testenv.RequireKeycloak(t)
	rules := mapping.Config{Preset: "endatix", Tenant: mapping.TenantSource{Organization: true},
		Rules: []mapping.Rule{{RealmRole: "platform", GrantRole: "PlatformAdmin"}, {RealmRole: "admin", GrantRole: "Admin"}}}
	var acme string
	e := newRealKCEnv(t, append(slices.Clone(testenv.SyncRoles), "manage-realm"), map[string]any{
		"organizationsEnabled": true,
		"roles":                realmRoles("platform", "admin"),
		"users":                []any{realmUser(kc, "amy", "admin"), realmUser(kc, "tess")},
	}, rules, func(a *testenv.Admin) { acme = createOrg(t, a, "acme", "Acme", "amy", "tess") })
	root := caller{"root", "platform", "acme"}

	got := e.listTenants(t, root)
	if want := (tenantItem{ID: "acme", Name: "Acme", Source: "organization", Status: "active", KeycloakID: acme, Members: 2}); got["acme"] != want {
		t.Fatalf("acme listed as %+v, want %+v", got["acme"], want)
	}

	code, out, body := e.do(t, root, "POST", "/v1/tenants", map[string]any{"id": "initech", "name": "Initech Ltd"})
	if code != http.StatusCreated || out["source"] != "organization" || out["keycloak_id"] == "" {
		t.Fatalf("create initech: %d %s", code, body)
	}
	initech := out["keycloak_id"].(string)
	var o map[string]any
	e.admin.Do("GET", "/organizations/"+initech, nil, &o)
	if o["alias"] != "initech" || o["name"] != "Initech Ltd" || o["enabled"] != true {
		t.Errorf("initech's organization in Keycloak: %v", o)
	}
	if code, _, body := e.do(t, root, "POST", "/v1/tenants", map[string]any{"id": "initech"}); code != http.StatusConflict {
		t.Errorf("create initech twice: %d %s", code, body)
	}
	if code, _, body := e.do(t, root, "POST", "/v1/tenants", map[string]any{"id": "bad/id"}); code != http.StatusBadRequest {
		t.Errorf("create with a slash in the id: %d %s", code, body)
	}

	if code, _, body := e.do(t, root, "PATCH", "/v1/tenants/initech", map[string]any{"name": "Initech Corp"}); code != http.StatusOK || !strings.Contains(body, `"Initech Corp"`) {
		t.Fatalf("rename initech: %d %s", code, body)
	}
	e.admin.Do("GET", "/organizations/"+initech, nil, &o)
	if o["name"] != "Initech Corp" || o["alias"] != "initech" {
		t.Errorf("initech renamed in Keycloak: %v", o)
	}
	if code, _, body := e.do(t, root, "PATCH", "/v1/tenants/acme", map[string]any{"disabled": true}); code != http.StatusOK || !strings.Contains(body, `"disabled"`) {
		t.Fatalf("disable acme: %d %s", code, body)
	}
	e.admin.Do("GET", "/organizations/"+acme, nil, &o)
	if o["enabled"] != false {
		t.Errorf("acme's organization still enabled: %v", o)
	}
	if code, _, body := e.do(t, root, "PATCH", "/v1/tenants/nowhere", map[string]any{"disabled": true}); code != http.StatusNotFound {
		t.Errorf("disable a tenant that does not exist: %d %s", code, body)
	}

	got = e.listTenants(t, root)
	if got["acme"].Status != "disabled" || got["acme"].Members != 2 || got["initech"].Name != "Initech Corp" || got["initech"].Members != 0 {
		t.Errorf("list after the changes: %+v", got)
	}
	// Sync reads the same from Keycloak: nothing to change.
	recorded := e.tenantRows(t)
	if res := e.resync(t); res.Changes["tenants"] != nil {
		t.Errorf("a sync after the changes changed tenants: %v", res.Changes["tenants"])
	}
	if rows := e.tenantRows(t); !slices.Equal(rows, recorded) || !slices.Contains(rows, "acme Acme organization disabled "+acme) ||
		!slices.Contains(rows, "initech Initech Corp organization active "+initech) {
		t.Errorf("tenants after a sync: %v, recorded %v", rows, recorded)
	}

	if code, _, body := e.do(t, root, "PATCH", "/v1/tenants/acme", map[string]any{"disabled": false}); code != http.StatusOK {
		t.Fatalf("enable acme: %d %s", code, body)
	}
	e.admin.Do("GET", "/organizations/"+acme, nil, &o)
	if o["enabled"] != true {
		t.Errorf("acme's organization not enabled again: %v", o)
	}
	if n := e.audit.Count("tenants.create", string(audit.Success)) + e.audit.Count("tenants.update", string(audit.Success)); n != 4 {
		t.Errorf("%d successful tenant changes audited, want 4", n)
	}
	for _, en := range e.audit.Entries() {
		if en.Action == "tenants.update" && en.Outcome == string(audit.Success) && (en.ActorID != "root" || en.TenantID != en.ResourceID) {
			t.Errorf("audit entry %+v: want actor root, in the tenant changed", en)
		}
	}

	e.refusedEverywhere(t, caller{"amy", "admin", "acme"}, "acme")
}

// Issue 16, part 3, group source under fastn: a platform operator (granted
// platform.tenants.manage by a rule; no fastn role holds it) creates a
// tenant's group under /customers, renames and disables it through the
// group's attributes (its name, the tenant's id, stays), and a re-sync
// reads back what was recorded; a tenant Owner is refused. Attribute
// tenants have nothing in Keycloak to create.
func TestTenantAdministrationWithGroups(t *testing.T) {
	kc := testenv.RequireKeycloak(t)
	rules := mapping.Config{Preset: "fastn", Tenant: mapping.TenantSource{GroupPrefix: "/customers"}, Rules: []mapping.Rule{
		{RealmRole: "fastn-owner", GrantRole: "Owner"},
		{RealmRole: "fastn-platform", GrantPermissions: []string{"platform.tenants.manage"}},
	}}
	e := newRealKCEnv(t, append(slices.Clone(testenv.SyncRoles), "manage-users"), map[string]any{
		"roles": realmRoles("fastn-owner", "fastn-platform"),
		"groups": []any{map[string]any{"name": "customers", "subGroups": []any{
			map[string]any{"name": "acme", "subGroups": []any{map[string]any{"name": "eng"}}}}}},
		"users": []any{withGroups(realmUser(kc, "alice", "fastn-owner"), "/customers/acme"), withGroups(realmUser(kc, "dana"), "/customers/acme/eng")},
	}, rules, nil)
	var acme struct{ ID string }
	e.admin.Do("GET", "/group-by-path/customers/acme", nil, &acme)
	operator := caller{"olga", "fastn-platform", "acme"}

	got := e.listTenants(t, operator)
	if want := (tenantItem{ID: "acme", Name: "acme", Source: "group", Status: "active", KeycloakID: acme.ID, Members: 2}); got["acme"] != want {
		t.Fatalf("acme listed as %+v, want %+v", got["acme"], want)
	}
	code, out, body := e.do(t, operator, "POST", "/v1/tenants", map[string]any{"id": "initech", "name": "Initech Ltd"})
	if code != http.StatusCreated || out["source"] != "group" {
		t.Fatalf("create initech: %d %s", code, body)
	}
	var g struct {
		ID, Name, Path string
		Attributes     map[string][]string
	}
	e.admin.Do("GET", "/group-by-path/customers/initech", nil, &g)
	if g.ID != out["keycloak_id"] || g.Name != "initech" || !slices.Equal(g.Attributes[mapping.GroupAttrTenantName], []string{"Initech Ltd"}) {
		t.Errorf("initech's group in Keycloak: %+v, answered %v", g, out)
	}
	if code, _, body := e.do(t, operator, "PATCH", "/v1/tenants/initech", map[string]any{"name": "Initech Corp"}); code != http.StatusOK {
		t.Fatalf("rename initech: %d %s", code, body)
	}
	if code, _, body := e.do(t, operator, "PATCH", "/v1/tenants/acme", map[string]any{"disabled": true, "name": "Acme Inc"}); code != http.StatusOK {
		t.Fatalf("disable and rename acme: %d %s", code, body)
	}
	e.admin.Do("GET", "/group-by-path/customers/initech", nil, &g)
	if g.Path != "/customers/initech" || !slices.Equal(g.Attributes[mapping.GroupAttrTenantName], []string{"Initech Corp"}) {
		t.Errorf("initech renamed in Keycloak: %+v", g)
	}
	e.admin.Do("GET", "/group-by-path/customers/acme", nil, &g)
	if g.Path != "/customers/acme" || !slices.Equal(g.Attributes[mapping.GroupAttrTenantDisabled], []string{"true"}) {
		t.Errorf("acme disabled in Keycloak: %+v", g)
	}
	got = e.listTenants(t, operator)
	if got["acme"].Status != "disabled" || got["acme"].Name != "Acme Inc" || got["acme"].Members != 2 || got["initech"].Name != "Initech Corp" {
		t.Errorf("list after the changes: %+v", got)
	}
	recorded := e.tenantRows(t)
	if res := e.resync(t); res.Changes["tenants"] != nil {
		t.Errorf("a sync after the changes changed tenants: %v", res.Changes["tenants"])
	}
	if rows := e.tenantRows(t); !slices.Equal(rows, recorded) || !slices.Contains(rows, "acme Acme Inc group disabled "+acme.ID) {
		t.Errorf("tenants after a sync: %v, recorded %v", rows, recorded)
	}
	var team int
	if err := e.st.SysPool().QueryRow(context.Background(), `SELECT count(*) FROM teams WHERE path = '/customers/initech' AND tenant_id = 'initech'`).Scan(&team); err != nil || team != 1 {
		t.Errorf("initech's group as a team after the sync: %d (%v)", team, err)
	}

	e.refusedEverywhere(t, caller{"alice", "fastn-owner", "acme"}, "acme")

	// Attribute tenants exist while a user carries them: nothing to create.
	attr := &api.Tenants{Log: slog.New(slog.NewTextHandler(io.Discard, nil)), Gate: &testGate{engine: e.engine, st: e.st, audit: e.audit},
		System: e.st, Audit: e.audit, Service: &manage.Tenants{Source: mapping.TenantSource{Attribute: "tenant"}}}
	ea := env{h: (&api.Server{Log: slog.New(slog.NewTextHandler(io.Discard, nil)), Metrics: metrics.New("t", "t"), Modules: []api.Module{attr}}).Handler(), st: e.st, audit: e.audit}
	if code, _, body := ea.do(t, operator, "POST", "/v1/tenants", map[string]any{"id": "umbrella"}); code != http.StatusConflict || !strings.Contains(body, "attribute") {
		t.Errorf("create with an attribute tenant source: %d %s", code, body)
	}
}

func withGroups(u map[string]any, groups ...string) map[string]any {
	u["groups"] = groups
	return u
}

// Issue 16: keybridge refuses to act in a disabled tenant. acme is disabled
// through tenant administration (its organization disabled in Keycloak):
// amy's real token, placed in acme by her synced membership, is refused
// (403 tenant_forbidden, audited with the reason) by /v1/check and is
// inactive to introspection; a full sync reads the organization disabled
// and keeps it so; enabled again, amy is served.
func TestDisabledTenantIsRefused(t *testing.T) {
	kc := orgRealm(t) // amy in acme; the service account holds manage-realm
	rules := demoRules
	rules.Tenant = mapping.TenantSource{Organization: true}
	e := newDecEnvIn(t, kc, "", rules)
	e.dec.TenantHeader = tenantHeader
	log := e.dec.Audit.(*testenv.AuditLog)
	ctx := context.Background()
	amy := scopedToken(t, kc, "amy", "")
	check := func() int {
		t.Helper()
		rec := e.call(t, "POST", "/v1/check", amy, nil, `{"permission":"workflows.read"}`)
		if rec.Code == http.StatusOK && !decode[checkAnswer](t, rec).Allowed {
			t.Fatalf("amy denied workflows.read: %s", rec.Body)
		}
		return rec.Code
	}
	if code := check(); code != http.StatusOK {
		t.Fatalf("amy in active acme: %d", code)
	}
	tenants := &manage.Tenants{Keycloak: kcadmin.New(kc.URL, kc.Realm, kc.ClientID, kc.ClientSecret, 10*time.Second), Source: rules.Tenant}
	setDisabled := func(off bool) {
		t.Helper()
		err := e.st.InSystemTx(ctx, func(tx pgx.Tx) error {
			_, err := tenants.Update(ctx, tx, "acme", manage.TenantChange{Disabled: &off})
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
		if err := e.dir.Load(ctx); err != nil { // the NOTIFY every replica reloads on
			t.Fatal(err)
		}
	}

	setDisabled(true)
	rec := e.call(t, "POST", "/v1/check", amy, nil, `{"permission":"workflows.read"}`)
	if rec.Code != http.StatusForbidden || !strings.Contains(rec.Body.String(), "tenant_forbidden") {
		t.Fatalf("amy in disabled acme: %d %s", rec.Code, rec.Body)
	}
	if !slices.ContainsFunc(log.Entries(), func(en audit.Entry) bool {
		return en.Outcome == string(audit.Denied) && en.ActorID != "" && strings.Contains(en.Reason, `tenant "acme": the tenant is disabled`)
	}) {
		t.Errorf("the refusal was not audited with its reason: %+v", log.Entries())
	}
	if out := e.introspect(t, amy); out["active"] != false {
		t.Errorf("introspection of amy's token in disabled acme: %v", out)
	}
	if rec := e.call(t, "GET", "/v1/me", amy, nil, ""); rec.Code != http.StatusForbidden {
		t.Errorf("/v1/me of amy in disabled acme: %d %s", rec.Code, rec.Body)
	}
	rec = e.call(t, "GET", "/v1/forward-auth", amy, map[string]string{"X-Original-URI": "/workflows/1", "X-Original-Method": "GET"}, "")
	if rec.Code != http.StatusForbidden || rec.Header().Get("X-Auth-Error") != "tenant_forbidden" {
		t.Errorf("forward-auth of amy in disabled acme: %d %v %s", rec.Code, rec.Header(), rec.Body)
	}
	if _, err := e.svc.Run(ctx, ksync.RunOptions{Trigger: "cli"}); err != nil {
		t.Fatal(err)
	}
	if err := e.dir.Load(ctx); err != nil {
		t.Fatal(err)
	}
	if code := check(); code != http.StatusForbidden {
		t.Errorf("amy after a sync of the disabled organization: %d", code)
	}

	setDisabled(false)
	if code := check(); code != http.StatusOK {
		t.Errorf("amy once acme is enabled again: %d", code)
	}
}
