package sync_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"maps"
	mrand "math/rand/v2"
	"net/http/httptest"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/keybridge/keybridge/internal/api"
	"github.com/keybridge/keybridge/internal/metrics"
	"github.com/keybridge/keybridge/internal/store"
	"github.com/keybridge/keybridge/internal/testenv"
	"github.com/keybridge/keybridge/mapping"
	ksync "github.com/keybridge/keybridge/sync"
)

// Incremental events, against the real Keycloak and PostgreSQL, in a
// throwaway realm: each mutation is made through Keycloak's admin API,
// applied by the event poller (PollOnce), and then
//
//  1. database A, kept by events alone, equals database B, which started
//     from the same full sync and has just run another: events leave the
//     store exactly as a full run would;
//  2. no full run was asked for: no fallback, no deferred event, no run.

// eventFixture is a realm with admin and user events on, database A kept by
// the poller and database B by full runs.
type eventFixture struct {
	kc     testenv.Keycloak
	admin  *testenv.Admin
	a, b   *store.Store
	svcA   *ksync.Service
	svcB   *ksync.Service
	poll   func() error
	cfg    mapping.Config
	portal string // the portal client's internal id
}

func newEventFixture(t *testing.T, cfg mapping.Config, extra map[string]any) *eventFixture {
	t.Helper()
	kc := testenv.RequireKeycloak(t)
	rep := map[string]any{"adminEventsEnabled": true, "adminEventsDetailsEnabled": true, "eventsEnabled": true, "organizationsEnabled": true}
	for k, v := range extra {
		rep[k] = v
	}
	// Organizations need manage-realm on Keycloak 26.5; with
	// view-identity-providers people carry their identity provider.
	roles := append(slices.Clone(testenv.SyncRoles), "manage-realm", "view-identity-providers")
	kc = testenv.NewRealm(t, kc, roles, rep)
	f := &eventFixture{kc: kc, admin: testenv.NewAdmin(t, kc), cfg: cfg}
	open := func() *store.Store {
		db := testenv.NewDatabase(t)
		st, err := store.Open(context.Background(), db.AppURL, db.SyncURL, 4)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(st.Close)
		return st
	}
	f.a, f.b = open(), open()
	f.svcA, f.svcB = f.service(t, f.a), f.service(t, f.b)
	var clients []struct{ ID string }
	f.admin.Do("GET", "/clients?clientId=portal", nil, &clients)
	if len(clients) == 1 {
		f.portal = clients[0].ID
	}
	for _, svc := range []*ksync.Service{f.svcA, f.svcB} {
		if _, err := svc.Run(context.Background(), ksync.RunOptions{Trigger: "cli"}); err != nil {
			t.Fatalf("first full sync: %v", err)
		}
	}
	dedup := ksync.NewDedup()
	f.poll = func() error { return f.svcA.PollOnce(context.Background(), dedup) }
	if err := f.poll(); err != nil { // the cursor starts here
		t.Fatal(err)
	}
	f.assertSame(t, "after the first full sync")
	return f
}

func (f *eventFixture) service(t *testing.T, st *store.Store) *ksync.Service {
	engine, err := mapping.New(f.cfg)
	if err != nil {
		t.Fatal(err)
	}
	m := metrics.New("test", "test")
	return &ksync.Service{
		KC: ksync.NewKeycloak(ksync.KeycloakOptions{URL: f.kc.URL, Realm: f.kc.Realm, ClientID: f.kc.ClientID, ClientSecret: f.kc.ClientSecret,
			Timeout: 10 * time.Second, PageSize: 50, Retries: 1, Concurrency: 2, Metrics: m}),
		Store: st, Engine: func() *mapping.Engine { return engine }, Metrics: m, Log: slog.New(slog.NewTextHandler(io.Discard, nil)),
		Mode: "full", MaxRemovalShare: 1, Timeout: time.Minute, Schedule: "@every 1h", EventsOverlap: 5 * time.Second,
	}
}

// dump renders everything sync manages, one sorted line per row.
func dump(t testing.TB, st *store.Store) []string {
	t.Helper()
	s, err := store.LoadSyncState(context.Background(), st.SysPool())
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	add := func(kind string, x any) { out = append(out, fmt.Sprintf("%s %+v", kind, x)) }
	for _, x := range s.Tenants {
		add("tenant", x)
	}
	for _, x := range s.People {
		add("person", x)
	}
	for _, x := range s.TenantMembers {
		add("tenant_member", x)
	}
	for _, x := range s.Teams {
		add("team", x)
	}
	for _, x := range s.TeamMembers {
		add("team_member", x)
	}
	for _, x := range s.Roles {
		add("role", x)
	}
	for _, x := range s.Composites {
		add("composite", x)
	}
	for _, x := range s.Assignments {
		add("assignment", x)
	}
	sort.Strings(out)
	return out
}

func lineDiff(a, b []string) (onlyA, onlyB []string) {
	inA, inB := map[string]bool{}, map[string]bool{}
	for _, x := range a {
		inA[x] = true
	}
	for _, x := range b {
		inB[x] = true
	}
	for _, x := range a {
		if !inB[x] {
			onlyA = append(onlyA, x)
		}
	}
	for _, x := range b {
		if !inA[x] {
			onlyB = append(onlyB, x)
		}
	}
	return onlyA, onlyB
}

func (f *eventFixture) assertSame(t *testing.T, what string) {
	t.Helper()
	a, b := dump(t, f.a), dump(t, f.b)
	if onlyA, onlyB := lineDiff(a, b); len(onlyA)+len(onlyB) > 0 {
		t.Fatalf("%s: events and a full run disagree\n  events only:\n    %s\n  full run only:\n    %s", what,
			strings.Join(onlyA, "\n    "), strings.Join(onlyB, "\n    "))
	}
}

// step makes a change in Keycloak, lets the poller apply it, and asserts
// that the store equals a full run's and that no full run was asked for.
func (f *eventFixture) step(t *testing.T, what string, change func()) {
	t.Helper()
	change()
	if _, err := f.svcB.Run(context.Background(), ksync.RunOptions{Trigger: "cli"}); err != nil {
		t.Fatalf("%s: full sync of B: %v", what, err)
	}
	want := dump(t, f.b)
	var got []string
	deadline := time.Now().Add(20 * time.Second)
	for {
		if err := f.poll(); err != nil {
			t.Fatalf("%s: poll: %v", what, err)
		}
		if got = dump(t, f.a); slices.Equal(got, want) || time.Now().After(deadline) {
			break
		}
		time.Sleep(100 * time.Millisecond) // Keycloak writes its events as the request ends
	}
	f.assertSame(t, what)
	f.assertNoFullRun(t, what)
}

func (f *eventFixture) assertNoFullRun(t *testing.T, what string) {
	t.Helper()
	m := f.svcA.Metrics
	if n := testutil.CollectAndCount(m.SyncFullFallbacks); n != 0 {
		var reasons []string
		for _, r := range []string{ksync.FallbackUnknownPath, ksync.FallbackRealmImport, ksync.FallbackRoleUnknown, ksync.FallbackTooManyPeople,
			ksync.FallbackClientRoles, ksync.FallbackApplyFailed} {
			if v := testutil.ToFloat64(m.SyncFullFallbacks.WithLabelValues(r)); v > 0 {
				reasons = append(reasons, fmt.Sprintf("%s=%v", r, v))
			}
		}
		t.Fatalf("%s: full runs asked for: %v", what, reasons)
	}
	if n := testutil.ToFloat64(m.KeycloakEvents.WithLabelValues("admin", "deferred")); n != 0 {
		t.Fatalf("%s: %v admin events deferred to a full run", what, n)
	}
	var runs int
	if err := f.a.SysPool().QueryRow(context.Background(), `SELECT count(*) FROM sync_runs`).Scan(&runs); err != nil {
		t.Fatal(err)
	}
	if runs != 1 {
		t.Fatalf("%s: %d sync runs in the events' database, want only the first", what, runs)
	}
}

// created returns the id at the end of a Location header.
func created(h interface{ Get(string) string }) string {
	loc := h.Get("Location")
	return loc[strings.LastIndex(loc, "/")+1:]
}

func (f *eventFixture) groupID(t *testing.T, path string) string {
	t.Helper()
	var g struct{ ID string }
	f.admin.Do("GET", "/group-by-path/"+strings.TrimPrefix(path, "/"), nil, &g)
	return g.ID
}

func (f *eventFixture) userID(t *testing.T, username string) string {
	t.Helper()
	var us []struct{ ID string }
	f.admin.Do("GET", "/users?exact=true&username="+username, nil, &us)
	if len(us) != 1 {
		t.Fatalf("user %s: %d found", username, len(us))
	}
	return us[0].ID
}

func (f *eventFixture) role(t *testing.T, path string) map[string]any {
	t.Helper()
	var r map[string]any
	f.admin.Do("GET", path, nil, &r)
	return r
}

var tenantsByGroup = mapping.Config{Preset: "fastn", Tenant: mapping.TenantSource{GroupPrefix: "/customers"}, Rules: []mapping.Rule{
	{RealmRole: "fastn-admin", GrantRole: "Admin"}, {RealmRole: "fastn-developer", GrantRole: "Developer"},
	{RealmRole: "fastn-viewer", GrantRole: "Viewer"}, {ClientRole: "portal:operator", GrantRole: "Operator"},
	{ClientRole: "portal:developer", GrantRole: "Developer"}, {Group: "/customers/*/support/**", GrantRole: "Viewer"},
}}

var eventRealm = map[string]any{
	"roles": map[string]any{
		"realm": []any{
			map[string]any{"name": "fastn-admin"}, map[string]any{"name": "fastn-developer"}, map[string]any{"name": "fastn-viewer"},
			map[string]any{"name": "bundle", "composite": true, "composites": map[string]any{"realm": []any{"fastn-viewer"}, "client": map[string]any{"portal": []any{"developer"}}}},
		},
		"client": map[string]any{"portal": []any{map[string]any{"name": "developer"}, map[string]any{"name": "operator"}}},
	},
	"clients": []any{map[string]any{"clientId": "portal", "publicClient": false, "standardFlowEnabled": false}},
	"groups": []any{
		map[string]any{"name": "customers", "subGroups": []any{
			map[string]any{"name": "acme", "subGroups": []any{
				map[string]any{"name": "eng", "realmRoles": []any{"fastn-developer"}, "subGroups": []any{map[string]any{"name": "backend"}}},
				map[string]any{"name": "support"},
			}},
			map[string]any{"name": "globex", "subGroups": []any{map[string]any{"name": "sales"}}},
		}},
		map[string]any{"name": "staff", "realmRoles": []any{"fastn-viewer"}, "subGroups": []any{
			map[string]any{"name": "ops", "clientRoles": map[string]any{"portal": []any{"operator"}}},
		}},
	},
	"users": []any{
		map[string]any{"username": "alice", "enabled": true, "firstName": "Alice", "lastName": "Archer", "email": "alice@acme.test",
			"groups": []any{"/customers/acme/eng/backend"}},
		map[string]any{"username": "bob", "enabled": true, "firstName": "Bob", "email": "bob@globex.test",
			"groups": []any{"/customers/globex/sales"}, "clientRoles": map[string]any{"portal": []any{"operator"}}},
		map[string]any{"username": "carol", "enabled": true, "groups": []any{"/staff/ops", "/customers/acme/support"}},
		map[string]any{"username": "dave", "enabled": true, "realmRoles": []any{"bundle"}},
		map[string]any{"username": "erin", "enabled": false, "groups": []any{"/customers/acme"}},
	},
}

// Users, role mappings and group memberships.
func TestEventsApplyUserChangesWithoutAFullRun(t *testing.T) {
	f := newEventFixture(t, tenantsByGroup, eventRealm)
	a := f.admin
	var frank string
	f.step(t, "user created in a group", func() {
		_, h := a.Do("POST", "/users", map[string]any{"username": "frank", "enabled": true, "email": "frank@globex.test",
			"groups": []any{"/customers/globex/sales"}}, nil)
		frank = created(h)
	})
	f.step(t, "user renamed", func() {
		a.Do("PUT", "/users/"+frank, map[string]any{"firstName": "Frank", "lastName": "Fuller", "email": "frank@globex.test"}, nil)
	})
	f.step(t, "user disabled", func() { a.Do("PUT", "/users/"+frank, map[string]any{"enabled": false}, nil) })
	f.step(t, "user enabled", func() { a.Do("PUT", "/users/"+frank, map[string]any{"enabled": true}, nil) })
	admin := f.role(t, "/roles/fastn-admin")
	f.step(t, "realm role mapped", func() { a.Do("POST", "/users/"+frank+"/role-mappings/realm", []any{admin}, nil) })
	f.step(t, "realm role unmapped", func() { a.Do("DELETE", "/users/"+frank+"/role-mappings/realm", []any{admin}, nil) })
	bundle := f.role(t, "/roles/bundle")
	f.step(t, "composite realm role mapped", func() { a.Do("POST", "/users/"+frank+"/role-mappings/realm", []any{bundle}, nil) })
	operator := f.role(t, "/clients/"+f.portal+"/roles/operator")
	f.step(t, "client role mapped", func() { a.Do("POST", "/users/"+frank+"/role-mappings/clients/"+f.portal, []any{operator}, nil) })
	f.step(t, "client role unmapped", func() { a.Do("DELETE", "/users/"+frank+"/role-mappings/clients/"+f.portal, []any{operator}, nil) })
	support := f.groupID(t, "/customers/acme/support")
	f.step(t, "group joined (a second tenant, a group rule)", func() { a.Do("PUT", "/users/"+frank+"/groups/"+support, nil, nil) })
	sales := f.groupID(t, "/customers/globex/sales")
	f.step(t, "group left", func() { a.Do("DELETE", "/users/"+frank+"/groups/"+sales, nil, nil) })
	f.step(t, "identity provider created", func() {
		a.Do("POST", "/identity-provider/instances", map[string]any{"alias": "corp", "providerId": "oidc",
			"config": map[string]any{"authorizationUrl": "https://idp.test/auth", "tokenUrl": "https://idp.test/token", "clientId": "kb", "clientSecret": "s"}}, nil)
	})
	f.step(t, "identity provider linked", func() {
		a.Do("POST", "/users/"+frank+"/federated-identity/corp", map[string]any{"identityProvider": "corp", "userId": "frank-ext", "userName": "frank"}, nil)
	})
	var idp string
	if err := f.a.SysPool().QueryRow(context.Background(), `SELECT coalesce(identity_provider, '') FROM people WHERE id = $1`, frank).Scan(&idp); err != nil || idp != "corp" {
		t.Fatalf("identity provider of the linked user: %q (%v), want corp", idp, err)
	}
	f.step(t, "identity provider deleted", func() { a.Do("DELETE", "/identity-provider/instances/corp", nil, nil) })
	f.step(t, "user deleted", func() { a.Do("DELETE", "/users/"+frank, nil, nil) })
	f.assertScheduledRunFindsNoDrift(t)
}

// Groups: created, renamed with descendants (the tenant of group_prefix
// moves with it), moved, their role mappings changed, deleted.
func TestEventsApplyGroupChangesWithoutAFullRun(t *testing.T) {
	f := newEventFixture(t, tenantsByGroup, eventRealm)
	a := f.admin
	acme := f.groupID(t, "/customers/acme")
	f.step(t, "child group created", func() { a.Do("POST", "/groups/"+acme+"/children", map[string]any{"name": "qa"}, nil) })
	f.step(t, "top-level group created", func() { a.Do("POST", "/groups", map[string]any{"name": "partners"}, nil) })
	f.step(t, "tenant group renamed with its descendants", func() { a.Do("PUT", "/groups/"+acme, map[string]any{"name": "acme-corp"}, nil) })
	if got := f.paths(t, "/customers/acme-corp/eng/backend"); len(got) != 1 {
		t.Fatalf("the descendant's path after the rename: %v", got)
	}
	eng := f.groupID(t, "/customers/acme-corp/eng")
	staff := f.groupID(t, "/staff")
	f.step(t, "group moved under another parent (out of its tenant)", func() {
		a.Do("POST", "/groups/"+staff+"/children", map[string]any{"id": eng, "name": "eng"}, nil)
	})
	if got := f.paths(t, "/staff/eng/backend"); len(got) != 1 {
		t.Fatalf("the descendant's path after the move: %v", got)
	}
	globex := f.groupID(t, "/customers/globex")
	f.step(t, "group moved into a tenant", func() {
		a.Do("POST", "/groups/"+globex+"/children", map[string]any{"id": eng, "name": "eng"}, nil)
	})
	f.step(t, "group moved to the top", func() { a.Do("POST", "/groups", map[string]any{"id": eng, "name": "eng"}, nil) })
	admin := f.role(t, "/roles/fastn-admin")
	f.step(t, "realm role mapped to a parent group (children inherit)", func() {
		a.Do("POST", "/groups/"+globex+"/role-mappings/realm", []any{admin}, nil)
	})
	developer := f.role(t, "/clients/"+f.portal+"/roles/developer")
	f.step(t, "client role mapped to a group", func() {
		a.Do("POST", "/groups/"+staff+"/role-mappings/clients/"+f.portal, []any{developer}, nil)
	})
	f.step(t, "realm role unmapped from a group", func() {
		a.Do("DELETE", "/groups/"+globex+"/role-mappings/realm", []any{admin}, nil)
	})
	f.step(t, "group with a subtree deleted", func() { a.Do("DELETE", "/groups/"+staff, nil, nil) })
	f.step(t, "tenant group deleted", func() { a.Do("DELETE", "/groups/"+globex, nil, nil) })
	f.assertScheduledRunFindsNoDrift(t)
}

// Roles: created, composites added and removed (by name and by id),
// renamed, deleted; client roles alike.
func TestEventsApplyRoleChangesWithoutAFullRun(t *testing.T) {
	f := newEventFixture(t, tenantsByGroup, eventRealm)
	a := f.admin
	dave := f.userID(t, "dave")
	f.step(t, "realm role created", func() { a.Do("POST", "/roles", map[string]any{"name": "auditor"}, nil) })
	auditor := f.role(t, "/roles/auditor")
	id := auditor["id"].(string)
	f.step(t, "role mapped", func() { a.Do("POST", "/users/"+dave+"/role-mappings/realm", []any{auditor}, nil) })
	viewer := f.role(t, "/roles/fastn-viewer")
	f.step(t, "composite added by name", func() { a.Do("POST", "/roles/auditor/composites", []any{viewer}, nil) })
	operator := f.role(t, "/clients/"+f.portal+"/roles/operator")
	f.step(t, "client role composite added by id", func() { a.Do("POST", "/roles-by-id/"+id+"/composites", []any{operator}, nil) })
	f.step(t, "composite removed by id", func() { a.Do("DELETE", "/roles-by-id/"+id+"/composites", []any{viewer}, nil) })
	f.step(t, "composite of a role held through a group changed", func() {
		a.Do("POST", "/roles/fastn-developer/composites", []any{operator}, nil)
	})
	f.step(t, "role renamed", func() {
		a.Do("PUT", "/roles/auditor", map[string]any{"name": "fastn-admin-2", "description": "renamed"}, nil)
	})
	f.step(t, "role renamed by id", func() { a.Do("PUT", "/roles-by-id/"+id, map[string]any{"name": "auditor", "description": "back"}, nil) })
	f.step(t, "role deleted (its holders and the roles containing it)", func() {
		a.Do("POST", "/roles/bundle/composites", []any{f.role(t, "/roles/auditor")}, nil)
		a.Do("DELETE", "/roles/auditor", nil, nil)
	})
	f.step(t, "client role created", func() { a.Do("POST", "/clients/"+f.portal+"/roles", map[string]any{"name": "tester"}, nil) })
	tester := f.role(t, "/clients/"+f.portal+"/roles/tester")
	f.step(t, "client role mapped and made composite", func() {
		a.Do("POST", "/users/"+dave+"/role-mappings/clients/"+f.portal, []any{tester}, nil)
		a.Do("POST", "/clients/"+f.portal+"/roles/tester/composites", []any{operator}, nil)
	})
	f.step(t, "client role renamed", func() { a.Do("PUT", "/clients/"+f.portal+"/roles/tester", map[string]any{"name": "developer-2"}, nil) })
	f.step(t, "client role deleted", func() { a.Do("DELETE", "/roles-by-id/"+tester["id"].(string), nil, nil) })
	f.step(t, "client renamed out of the mapping (its roles leave, with their holdings)", func() {
		a.Do("PUT", "/clients/"+f.portal, map[string]any{"clientId": "portal-old"}, nil)
	})
	f.assertScheduledRunFindsNoDrift(t)
}

var tenantsByOrganization = mapping.Config{Preset: "fastn", Tenant: mapping.TenantSource{Organization: true}, Rules: []mapping.Rule{
	{RealmRole: "fastn-admin", GrantRole: "Admin"}, {Organization: "initech", GrantRole: "Viewer"},
}}

// Organizations: created, members added (Keycloak does not name them) and
// removed, renamed, deleted.
func TestEventsApplyOrganizationChangesWithoutAFullRun(t *testing.T) {
	f := newEventFixture(t, tenantsByOrganization, eventRealm)
	a := f.admin
	alice, bob := f.userID(t, "alice"), f.userID(t, "bob")
	var org string
	f.step(t, "organization created", func() {
		_, h := a.Do("POST", "/organizations", map[string]any{"name": "Initech", "alias": "initech", "domains": []any{map[string]any{"name": "initech.test"}}}, nil)
		org = created(h)
	})
	f.step(t, "member added", func() { a.Do("POST", "/organizations/"+org+"/members", alice, nil) })
	f.step(t, "second member added", func() { a.Do("POST", "/organizations/"+org+"/members", bob, nil) })
	f.step(t, "organization renamed", func() {
		a.Do("PUT", "/organizations/"+org, map[string]any{"name": "Initech Ltd", "alias": "initech", "domains": []any{map[string]any{"name": "initech.test"}}}, nil)
	})
	f.step(t, "member removed", func() { a.Do("DELETE", "/organizations/"+org+"/members/"+alice, nil, nil) })
	f.step(t, "organization deleted", func() { a.Do("DELETE", "/organizations/"+org, nil, nil) })
	f.assertScheduledRunFindsNoDrift(t)
}

func (f *eventFixture) paths(t *testing.T, path string) []string {
	t.Helper()
	rows, err := f.a.SysPool().Query(context.Background(), `SELECT id FROM teams WHERE path = $1 AND status = 'active'`, path)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var id string
		_ = rows.Scan(&id)
		out = append(out, id)
	}
	return out
}

// assertScheduledRunFindsNoDrift: after the events, a scheduled run has
// nothing left to apply, and says so in its record.
func (f *eventFixture) assertScheduledRunFindsNoDrift(t *testing.T) {
	t.Helper()
	f.svcA.EventsEnabled = true
	res, err := f.svcA.Run(context.Background(), ksync.RunOptions{Trigger: "schedule"})
	if err != nil {
		t.Fatal(err)
	}
	for kind, n := range res.Drift {
		if n != 0 {
			t.Errorf("a scheduled run after the events applied %d %s: drift %v, changes %v", n, kind, res.Drift, res.Changes)
		}
	}
	if res.Drift == nil {
		t.Error("a scheduled run recorded no drift")
	}
}

// Drift: changes the events never showed (their admin events deleted
// before the poller read them) are what the next scheduled run applies, and
// it counts them by kind, in the metric and in its run record.
func TestScheduledRunCountsDriftTheEventsMissed(t *testing.T) {
	f := newEventFixture(t, tenantsByGroup, eventRealm)
	a := f.admin
	_, h := a.Do("POST", "/users", map[string]any{"username": "ghost", "enabled": true, "groups": []any{"/customers/globex/sales"}}, nil)
	_ = created(h)
	a.Do("PUT", "/groups/"+f.groupID(t, "/staff/ops"), map[string]any{"name": "operations"}, nil)
	a.Do("DELETE", "/admin-events", nil, nil)
	if err := f.poll(); err != nil {
		t.Fatal(err)
	}
	// A run that is not scheduled measures nothing.
	f.svcA.EventsEnabled = true
	if _, err := f.svcA.Run(context.Background(), ksync.RunOptions{Trigger: "cli", DryRun: true}); err != nil {
		t.Fatal(err)
	}
	res, err := f.svcA.Run(context.Background(), ksync.RunOptions{Trigger: "schedule"})
	if err != nil {
		t.Fatal(err)
	}
	// ghost: a person with a team and a tenant membership; the renamed team.
	want := map[string]float64{"people": 1, "team_members": 1, "tenant_members": 1, "teams": 1}
	for kind, n := range want {
		if got := testutil.ToFloat64(f.svcA.Metrics.SyncDrift.WithLabelValues(kind)); got < n {
			t.Errorf("keybridge_sync_drift_total{kind=%q} = %v, want at least %v", kind, got, n)
		}
		if float64(res.Drift[kind]) < n {
			t.Errorf("run drift[%s] = %d, want at least %v", kind, res.Drift[kind], n)
		}
	}
	runs, err := store.ListRuns(context.Background(), f.a.SysPool(), 5)
	if err != nil {
		t.Fatal(err)
	}
	var recorded map[string]int
	if err := json.Unmarshal(runs[0].Drift, &recorded); err != nil || runs[0].Trigger != "schedule" {
		t.Fatalf("the scheduled run's record: trigger %s, drift %s (%v)", runs[0].Trigger, runs[0].Drift, err)
	}
	if recorded["people"] != 1 || recorded["teams"] != 1 {
		t.Errorf("recorded drift %v, want people 1 and teams 1", recorded)
	}
	if runs[1].Drift != nil || runs[1].Trigger != "cli" {
		t.Errorf("the cli run's record: trigger %s, drift %s; want no drift measured", runs[1].Trigger, runs[1].Drift)
	}
}

// A signed webhook takes the poller's path: the change is in the store when
// the delivery is answered, and no full run is asked for.
func TestWebhookAppliesAGroupChangeWithoutAFullRun(t *testing.T) {
	f := newEventFixture(t, tenantsByGroup, eventRealm)
	secret := []byte("hook-secret")
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	mod := &api.Sync{Log: log, Metrics: f.svcA.Metrics, Service: f.svcA, Store: f.a, Gate: openGate{}, Secret: secret, MaxBody: 64 << 10,
		Background: context.Background()}
	h := (&api.Server{Log: log, Metrics: f.svcA.Metrics, Modules: []api.Module{mod}}).Handler()
	acme := f.groupID(t, "/customers/acme")
	_, hdr := f.admin.Do("POST", "/groups/"+acme+"/children", map[string]any{"name": "hooked"}, nil)
	gid := created(hdr)
	body, _ := json.Marshal(map[string]any{"type": "admin.GROUP-CREATE", "uid": "d-" + gid, "id": "e-" + gid, "time": time.Now().UnixMilli(),
		"resourceType": "GROUP", "operationType": "CREATE", "resourcePath": "groups/" + acme + "/children"})
	req := httptest.NewRequest("POST", "/webhooks/keycloak", bytes.NewReader(body))
	req.Header.Set("X-Keycloak-Signature", ksync.Sign(secret, body))
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	if rec.Code != 200 {
		t.Fatalf("webhook: %d %s", rec.Code, rec.Body)
	}
	if got := f.paths(t, "/customers/acme/hooked"); len(got) != 1 || got[0] != gid {
		t.Fatalf("the group is not in the store when the delivery is answered: %v", got)
	}
	f.assertNoFullRun(t, "webhook")
}

// Many admin changes at once, several to the same objects, read by the
// poller in a few rounds, as in the field: the store converges on what a
// full run gives, and no full run is asked for.
func TestRandomAdminChangesConvergeWithoutAFullRun(t *testing.T) {
	f := newEventFixture(t, tenantsByGroup, eventRealm)
	a := f.admin
	seed := time.Now().UnixNano()
	t.Logf("seed %d", seed)
	rnd := mrand.New(mrand.NewPCG(uint64(seed), 0))
	pick := func(xs []string) string { return xs[rnd.IntN(len(xs))] }
	users := []string{f.userID(t, "alice"), f.userID(t, "bob"), f.userID(t, "carol"), f.userID(t, "dave")}
	var groups []string
	for _, p := range []string{"/customers", "/customers/acme", "/customers/acme/eng", "/customers/acme/eng/backend", "/customers/acme/support",
		"/customers/globex", "/customers/globex/sales", "/staff", "/staff/ops"} {
		groups = append(groups, f.groupID(t, p))
	}
	realmRoles := []map[string]any{f.role(t, "/roles/fastn-admin"), f.role(t, "/roles/fastn-viewer"), f.role(t, "/roles/bundle"), f.role(t, "/roles/fastn-developer")}
	clientRoles := []map[string]any{f.role(t, "/clients/"+f.portal+"/roles/operator"), f.role(t, "/clients/"+f.portal+"/roles/developer")}
	try := func(method, path string, body any) {
		if _, _, _, err := a.Attempt(method, path, body); err != nil {
			t.Fatal(err)
		}
	}
	const changes = 60
	for i := range changes {
		u, g := pick(users), pick(groups)
		switch rnd.IntN(12) {
		case 0:
			code, h, _, _ := a.Attempt("POST", "/users", map[string]any{"username": fmt.Sprintf("rnd-%d", i), "enabled": true, "email": fmt.Sprintf("rnd-%d@x.test", i)})
			if code == 201 {
				users = append(users, created(h))
			}
		case 1:
			try("PUT", "/users/"+u, map[string]any{"firstName": fmt.Sprint("N", i), "enabled": rnd.IntN(3) > 0})
		case 2:
			try("POST", "/users/"+u+"/role-mappings/realm", []any{realmRoles[rnd.IntN(len(realmRoles))]})
		case 3:
			try("DELETE", "/users/"+u+"/role-mappings/realm", []any{realmRoles[rnd.IntN(len(realmRoles))]})
		case 4:
			try("POST", "/users/"+u+"/role-mappings/clients/"+f.portal, []any{clientRoles[rnd.IntN(len(clientRoles))]})
		case 5:
			try("PUT", "/users/"+u+"/groups/"+g, nil)
		case 6:
			try("DELETE", "/users/"+u+"/groups/"+g, nil)
		case 7:
			code, h, _, _ := a.Attempt("POST", "/groups/"+g+"/children", map[string]any{"name": fmt.Sprint("g", i)})
			if code == 201 {
				groups = append(groups, created(h))
			}
		case 8:
			try("PUT", "/groups/"+g, map[string]any{"name": fmt.Sprint("renamed", i)})
		case 9:
			// A move; Keycloak refuses one into the group's own subtree.
			try("POST", "/groups/"+pick(groups)+"/children", map[string]any{"id": g, "name": fmt.Sprint("moved", i)})
		case 10:
			try("POST", "/groups/"+g+"/role-mappings/realm", []any{realmRoles[rnd.IntN(len(realmRoles))]})
		case 11:
			child := clientRoles[rnd.IntN(len(clientRoles))]
			if rnd.IntN(2) == 0 {
				try("POST", "/roles/fastn-developer/composites", []any{child})
			} else {
				try("DELETE", "/roles/fastn-developer/composites", []any{child})
			}
		}
	}
	f.step(t, fmt.Sprintf("%d random changes", changes), func() {})
	if n := testutil.ToFloat64(f.svcA.Metrics.KeycloakEvents.WithLabelValues("admin", "applied")); n < changes/2 {
		t.Errorf("%v admin events applied for %d changes", n, changes)
	}
	f.assertScheduledRunFindsNoDrift(t)
}

// TestNewLeaderSkipsWhatTheOldOneApplied (issue 14): a leader that takes
// over reads the last sync.events.overlap of events again, in case the old
// one read some it had not made durable. Two services on one database, as
// two replicas: the second, with nothing in memory, reads the events the
// first applied and skips every one (counted as duplicates), applies and
// re-reads none, and leaves the store as the first left it.
func TestNewLeaderSkipsWhatTheOldOneApplied(t *testing.T) {
	realm := maps.Clone(eventRealm)
	realm["clients"] = append(slices.Clone(eventRealm["clients"].([]any)),
		map[string]any{"clientId": "login-app", "publicClient": true, "directAccessGrantsEnabled": true, "standardFlowEnabled": false})
	realm["users"] = append(slices.Clone(eventRealm["users"].([]any)),
		map[string]any{"username": "lou", "enabled": true, "email": "lou@lou.test", "emailVerified": true, "firstName": "Lou", "lastName": "Lind",
			"credentials": []any{map[string]any{"type": "password", "value": "pw-lou-4711", "temporary": false}}})
	f := newEventFixture(t, tenantsByGroup, realm)
	ctx := context.Background()
	alice, bob := f.userID(t, "alice"), f.userID(t, "bob")
	f.admin.Do("PUT", "/users/"+alice, map[string]any{"firstName": "Alicia"}, nil)
	f.admin.Do("PUT", "/users/"+bob+"/groups/"+f.groupID(t, "/staff"), nil, nil)
	f.kc.Token(t, f.kc.Realm, "login-app", "lou", "pw-lou-4711") // a LOGIN user event
	// The second service's own sign-in is a user event too (CLIENT_LOGIN):
	// made now, the first applies it with the rest.
	next := f.service(t, f.a)
	next.EventsOverlap = time.Minute // surely reaching back past every event here
	if _, err := next.KC.User(ctx, alice); err != nil {
		t.Fatal(err)
	}

	count := func(svc *ksync.Service, source, outcome string) float64 {
		return testutil.ToFloat64(svc.Metrics.KeycloakEvents.WithLabelValues(source, outcome))
	}
	deadline := time.Now().Add(20 * time.Second)
	for count(f.svcA, "admin", "applied") < 2 || count(f.svcA, "user", "applied") < 2 {
		if time.Now().After(deadline) {
			t.Fatalf("the first leader applied %v admin and %v user events, want 2 and 2", count(f.svcA, "admin", "applied"), count(f.svcA, "user", "applied"))
		}
		if err := f.poll(); err != nil {
			t.Fatal(err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	want := dump(t, f.a)

	before := next.KC.Requests()
	if err := next.PollOnce(ctx, ksync.NewDedup()); err != nil {
		t.Fatal(err)
	}
	if a, u := count(next, "admin", "applied"), count(next, "user", "applied"); a+u != 0 {
		t.Errorf("the new leader applied %v admin and %v user events the old one had applied", a, u)
	}
	if a, u := count(next, "admin", "duplicate"), count(next, "user", "duplicate"); a < 2 || u < 2 {
		t.Errorf("the new leader skipped %v admin and %v user events, want at least 2 and 2: it did not read them again", a, u)
	}
	// The admin events and the user events: nothing re-read.
	if n := next.KC.Requests() - before; n != 2 {
		t.Errorf("the new leader made %d Keycloak requests, want 2, the two listings of events", n)
	}
	if got := dump(t, f.a); !slices.Equal(got, want) {
		onlyA, onlyB := lineDiff(want, got)
		t.Errorf("the store changed: before only %v, after only %v", onlyA, onlyB)
	}
}
