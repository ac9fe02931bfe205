package middleware_test

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/keybridge/keybridge/internal/auth"
	"github.com/keybridge/keybridge/internal/directory"
	"github.com/keybridge/keybridge/internal/identity"
	"github.com/keybridge/keybridge/internal/store"
	"github.com/keybridge/keybridge/internal/testenv"
	"github.com/keybridge/keybridge/mapping"
	"github.com/keybridge/keybridge/middleware"
	ksync "github.com/keybridge/keybridge/sync"
)

// treeRealm is a throwaway realm of two organizations and their customers:
// acme holds the customer groups /customers/acme-eu and /customers/acme-us,
// globex holds /customers/globex-1 (each group's keybridge.tenant.organization
// attribute). olivia is an Owner in the organization acme, gus in globex;
// dave is a Developer in the customer acme-eu only. The service account
// holds manage-realm, which Keycloak 26.5 needs to read organizations.
func treeRealm(t *testing.T) testenv.Keycloak {
	t.Helper()
	kc := testenv.RequireKeycloak(t)
	user := func(name, role string, groups ...string) map[string]any {
		return map[string]any{"username": name, "enabled": true, "email": name + "@example.test", "emailVerified": true,
			"firstName": name, "lastName": "Test", "realmRoles": []any{role}, "groups": groups,
			"credentials": []any{map[string]any{"type": "password", "value": kc.UserPassword, "temporary": false}}}
	}
	customer := func(name, org string) map[string]any {
		return map[string]any{"name": name, "attributes": map[string]any{ksync.AttrTenantOrganization: []any{org}},
			"subGroups": []any{map[string]any{"name": "ops"}}}
	}
	kc = testenv.NewRealm(t, kc, append(slices.Clone(testenv.SyncRoles), "manage-realm"), map[string]any{
		"organizationsEnabled": true,
		"roles":                map[string]any{"realm": []any{map[string]any{"name": "fastn-owner"}, map[string]any{"name": "fastn-developer"}}},
		"groups": []any{map[string]any{"name": "customers", "subGroups": []any{
			customer("acme-eu", "acme"), customer("acme-us", "acme"), customer("globex-1", "globex")}}},
		"clients": []any{map[string]any{"clientId": "app", "publicClient": true, "directAccessGrantsEnabled": true, "standardFlowEnabled": false,
			"protocolMappers": []any{map[string]any{"name": "aud", "protocol": "openid-connect", "protocolMapper": "oidc-audience-mapper",
				"config": map[string]any{"included.custom.audience": "keybridge", "access.token.claim": "true", "id.token.claim": "false"}}}}},
		"users": []any{user("olivia", "fastn-owner"), user("gus", "fastn-owner"), user("dave", "fastn-developer", "/customers/acme-eu/ops")},
	})
	kc.PublicClientID = "app"
	admin := testenv.NewAdmin(t, kc)
	for org, member := range map[string]string{"acme": "olivia", "globex": "gus"} {
		code, h := admin.Do("POST", "/organizations", map[string]any{"name": org, "alias": org, "domains": []any{map[string]any{"name": org + ".test"}}}, nil)
		if code != http.StatusCreated {
			t.Fatalf("create organization %s: %d", org, code)
		}
		id := h.Get("Location")[strings.LastIndex(h.Get("Location"), "/")+1:]
		var users []struct{ ID string }
		admin.Do("GET", "/users?exact=true&username="+member, nil, &users)
		if len(users) != 1 {
			t.Fatalf("user %s: %v", member, users)
		}
		if code, _ := admin.Do("POST", "/organizations/"+id+"/members", users[0].ID, nil); code != http.StatusCreated {
			t.Fatalf("add %s to %s: %d", member, org, code)
		}
	}
	return kc
}

// treeSeen is what the handler read through the request's RLS transaction.
type treeSeen struct {
	User      string   `json:"user"`
	Tenant    string   `json:"tenant"`
	Org       string   `json:"org"`
	Tenants   string   `json:"tenants"`
	Workflows []string `json:"workflows"`
	Settings  []string `json:"settings"`
}

// Issue 16 end to end, against real Keycloak and PostgreSQL: a Keycloak
// realm of organizations and customer groups, synced by the sync service
// into the tenant tree; tokens resolved by the identity resolver over the
// directory; the middleware's RLS transaction as the runtime role over a
// customer-scoped and an organization-scoped table under docs/rls.md's
// policies, rows put in by the table owner before FORCE. An organization Owner acts in each of its customers in turn,
// and in the organization over all of them; a customer's Developer sees its
// customer only; no one reaches another organization's customers.
func TestTenantTreeEndToEnd(t *testing.T) {
	kc := treeRealm(t)
	db := testenv.NewDatabase(t)
	ctx := context.Background()
	st, err := store.Open(ctx, db.AppURL, db.SyncURL, 4)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(st.Close)
	engine, err := mapping.New(mapping.Config{Preset: "fastn",
		Tenant: mapping.TenantSource{Organization: true, Customers: mapping.CustomerSource{GroupPrefix: "/customers"}},
		Rules:  []mapping.Rule{{RealmRole: "fastn-owner", GrantRole: "Owner"}, {RealmRole: "fastn-developer", GrantRole: "Developer"}}})
	if err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	svc := &ksync.Service{KC: ksync.NewKeycloak(ksync.KeycloakOptions{URL: kc.URL, Realm: kc.Realm, ClientID: kc.ClientID, ClientSecret: kc.ClientSecret,
		Timeout: 5 * time.Second, Retries: 1}), Store: st, Engine: func() *mapping.Engine { return engine }, Log: log, Mode: "full",
		MaxRemovalShare: 0.5, Timeout: time.Minute}
	if _, err := svc.Run(ctx, ksync.RunOptions{Trigger: "cli"}); err != nil {
		t.Fatal(err)
	}

	t.Run("sync stores the tree", func(t *testing.T) {
		rows, err := st.SysPool().Query(ctx, `SELECT id || ':' || source || ':' || coalesce(org_id, '') FROM tenants`)
		if err != nil {
			t.Fatal(err)
		}
		got, err := pgx.CollectRows(rows, pgx.RowTo[string])
		slices.Sort(got)
		want := []string{"acme-eu:group:acme", "acme-us:group:acme", "acme:organization:", "globex-1:group:globex", "globex:organization:"}
		if err != nil || !slices.Equal(got, want) {
			t.Fatalf("tenants %v (%v), want %v", got, err, want)
		}
	})

	// The application's tables, as docs/rls.md writes their policies, with
	// rows put in by the owner (before FORCE ROW LEVEL SECURITY filters it).
	owner, err := pgx.Connect(ctx, db.OwnerURL)
	if err != nil {
		t.Fatal(err)
	}
	defer owner.Close(ctx)
	for _, q := range []string{
		`CREATE TABLE workflows (id serial PRIMARY KEY, tenant_id text NOT NULL, name text NOT NULL)`,
		`CREATE INDEX workflows_tenant_idx ON workflows (tenant_id)`,
		`INSERT INTO workflows (tenant_id, name) VALUES ('acme-eu', 'eu-1'), ('acme-eu', 'eu-2'), ('acme-us', 'us-1'), ('globex-1', 'gx-1'), ('acme', 'org-1')`,
		`ALTER TABLE workflows ENABLE ROW LEVEL SECURITY`, `ALTER TABLE workflows FORCE ROW LEVEL SECURITY`,
		`CREATE POLICY tenant_isolation ON workflows TO keybridge_app USING (tenant_id = (SELECT keybridge.current_tenant()))`,
		`CREATE POLICY organization_isolation ON workflows TO keybridge_org USING (tenant_id = ANY ((SELECT keybridge.current_tenants())::text[]))`,
		`CREATE POLICY platform_access ON workflows TO keybridge_platform USING ((SELECT keybridge.is_platform()))`,
		`GRANT SELECT, INSERT ON workflows TO keybridge_app, keybridge_org, keybridge_platform`,
		`GRANT USAGE ON SEQUENCE workflows_id_seq TO keybridge_app, keybridge_org, keybridge_platform`,

		`CREATE TABLE org_settings (id serial PRIMARY KEY, org_id text NOT NULL, name text NOT NULL)`,
		`CREATE INDEX org_settings_org_idx ON org_settings (org_id)`,
		`INSERT INTO org_settings (org_id, name) VALUES ('acme', 'acme-billing'), ('globex', 'globex-billing')`,
		`ALTER TABLE org_settings ENABLE ROW LEVEL SECURITY`, `ALTER TABLE org_settings FORCE ROW LEVEL SECURITY`,
		`CREATE POLICY organization_isolation ON org_settings TO keybridge_app, keybridge_org USING (org_id = (SELECT keybridge.current_org()))`,
		`CREATE POLICY platform_access ON org_settings TO keybridge_platform USING ((SELECT keybridge.is_platform()))`,
		`GRANT SELECT ON org_settings TO keybridge_app, keybridge_org, keybridge_platform`,
	} {
		if _, err := owner.Exec(ctx, q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}

	dir := &directory.Directory{Pool: st.SysPool(), Base: engine, Log: log, Interval: time.Hour}
	if err := dir.Load(ctx); err != nil {
		t.Fatal(err)
	}
	verifier, err := auth.NewVerifier(ctx, auth.Options{Issuer: kc.URL + "/realms/" + kc.Realm, Audiences: []string{"keybridge"},
		Algorithms: []string{"RS256"}, Leeway: 5 * time.Second, MaxTokenBytes: 16 << 10, RefreshInterval: 30 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	resolver := &identity.Resolver{Verifier: verifier, Dir: dir, MaxCache: 100}
	app, err := pgxpool.New(ctx, db.AppURL)
	if err != nil {
		t.Fatal(err)
	}
	defer app.Close()
	mw := &middleware.Middleware{Auth: resolver, Decider: func() middleware.Decider { return dir.Engine() }, DB: app, TenantHeader: "X-Keybridge-Tenant"}
	read := mw.HTTP("workflows.list", []string{"workflows.read"}, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		tx := middleware.Tx(r.Context())
		var s treeSeen
		if err := tx.QueryRow(r.Context(), `SELECT current_user, current_setting('app.tenant_id'), current_setting('app.org_id'),
			current_setting('app.tenant_ids')`).Scan(&s.User, &s.Tenant, &s.Org, &s.Tenants); err != nil {
			http.Error(w, err.Error(), 500)
			return
		}
		for _, q := range []struct {
			sql  string
			into *[]string
		}{{`SELECT name FROM workflows ORDER BY name`, &s.Workflows}, {`SELECT name FROM org_settings ORDER BY name`, &s.Settings}} {
			rows, _ := tx.Query(r.Context(), q.sql)
			names, err := pgx.CollectRows(rows, pgx.RowTo[string])
			if err != nil {
				http.Error(w, err.Error(), 500)
				return
			}
			*q.into = append([]string{}, names...)
		}
		_ = json.NewEncoder(w).Encode(s)
	}))
	get := func(t *testing.T, user, tenant string) (int, treeSeen, string) {
		t.Helper()
		req := httptest.NewRequest("GET", "/workflows", nil)
		req.Header.Set("Authorization", "Bearer "+kc.Token(t, kc.Realm, "app", user, kc.UserPassword))
		if tenant != "" {
			req.Header.Set("X-Keybridge-Tenant", tenant)
		}
		rec := httptest.NewRecorder()
		read.ServeHTTP(rec, req)
		var s treeSeen
		if rec.Code == 200 {
			if err := json.Unmarshal(rec.Body.Bytes(), &s); err != nil {
				t.Fatalf("%s", rec.Body)
			}
		}
		return rec.Code, s, rec.Body.String()
	}
	same := func(a, b treeSeen) bool {
		return a.User == b.User && a.Tenant == b.Tenant && a.Org == b.Org && a.Tenants == b.Tenants &&
			slices.Equal(a.Workflows, b.Workflows) && slices.Equal(a.Settings, b.Settings)
	}

	t.Run("an organization Owner acts in each of its customers in turn", func(t *testing.T) {
		for tenant, want := range map[string]treeSeen{
			"acme-eu": {User: "keybridge_app", Tenant: "acme-eu", Org: "acme", Tenants: "{}", Workflows: []string{"eu-1", "eu-2"}, Settings: []string{"acme-billing"}},
			"acme-us": {User: "keybridge_app", Tenant: "acme-us", Org: "acme", Tenants: "{}", Workflows: []string{"us-1"}, Settings: []string{"acme-billing"}},
		} {
			code, got, body := get(t, "olivia", tenant)
			if code != 200 || !same(got, want) {
				t.Errorf("olivia in %s: %d %s, want %+v", tenant, code, body, want)
			}
		}
	})
	t.Run("and in the organization over all of its customers", func(t *testing.T) {
		want := treeSeen{User: "keybridge_org", Tenant: "acme", Org: "acme", Tenants: `{"acme-eu","acme-us"}`,
			Workflows: []string{"eu-1", "eu-2", "org-1", "us-1"}, Settings: []string{"acme-billing"}}
		for _, named := range []string{"", "acme"} {
			if code, got, body := get(t, "olivia", named); code != 200 || !same(got, want) {
				t.Errorf("olivia naming %q: %d %s, want %+v", named, code, body, want)
			}
		}
	})
	t.Run("an organization Owner does not reach another organization's customers", func(t *testing.T) {
		for _, tc := range []struct{ user, tenant string }{{"olivia", "globex-1"}, {"olivia", "globex"}, {"gus", "acme-eu"}, {"gus", "acme"}} {
			if code, _, body := get(t, tc.user, tc.tenant); code != http.StatusForbidden || !strings.Contains(body, "tenant_forbidden") {
				t.Errorf("%s naming %s: %d %s", tc.user, tc.tenant, code, body)
			}
		}
		want := treeSeen{User: "keybridge_app", Tenant: "globex-1", Org: "globex", Tenants: "{}", Workflows: []string{"gx-1"}, Settings: []string{"globex-billing"}}
		if code, got, body := get(t, "gus", "globex-1"); code != 200 || !same(got, want) {
			t.Errorf("gus in globex-1: %d %s", code, body)
		}
	})
	t.Run("a customer's Developer sees only its customer", func(t *testing.T) {
		want := treeSeen{User: "keybridge_app", Tenant: "acme-eu", Org: "", Tenants: "{}", Workflows: []string{"eu-1", "eu-2"}, Settings: []string{}}
		for _, named := range []string{"", "acme-eu"} {
			if code, got, body := get(t, "dave", named); code != 200 || !same(got, want) {
				t.Errorf("dave naming %q: %d %s, want %+v", named, code, body, want)
			}
		}
		for _, other := range []string{"acme-us", "acme", "globex-1"} {
			if code, _, body := get(t, "dave", other); code != http.StatusForbidden {
				t.Errorf("dave naming %s: %d %s", other, code, body)
			}
		}
	})

	admin := testenv.NewAdmin(t, kc)
	group := func(path string) map[string]any {
		t.Helper()
		var g map[string]any
		if code, _ := admin.Do("GET", "/group-by-path"+path, nil, &g); code != http.StatusOK {
			t.Fatalf("group %s: %d", path, code)
		}
		return g
	}
	t.Run("a customer moved to another organization changes hands at the next sync", func(t *testing.T) {
		g := group("/customers/acme-us")
		g["attributes"] = map[string]any{ksync.AttrTenantOrganization: []any{"globex"}}
		if code, _ := admin.Do("PUT", "/groups/"+g["id"].(string), g, nil); code != http.StatusNoContent {
			t.Fatalf("move acme-us: %d", code)
		}
		if _, err := svc.Run(ctx, ksync.RunOptions{Trigger: "cli"}); err != nil {
			t.Fatal(err)
		}
		if err := dir.Load(ctx); err != nil {
			t.Fatal(err)
		}
		if code, _, body := get(t, "olivia", "acme-us"); code != http.StatusForbidden {
			t.Errorf("olivia in acme-us after the move: %d %s", code, body)
		}
		want := treeSeen{User: "keybridge_app", Tenant: "acme-us", Org: "globex", Tenants: "{}", Workflows: []string{"us-1"}, Settings: []string{"globex-billing"}}
		if code, got, body := get(t, "gus", "acme-us"); code != 200 || !same(got, want) {
			t.Errorf("gus in acme-us after the move: %d %s", code, body)
		}
	})
	t.Run("and back with the group's own admin event", func(t *testing.T) {
		g := group("/customers/acme-us")
		g["attributes"] = map[string]any{ksync.AttrTenantOrganization: []any{"acme"}}
		if code, _ := admin.Do("PUT", "/groups/"+g["id"].(string), g, nil); code != http.StatusNoContent {
			t.Fatalf("move acme-us back: %d", code)
		}
		full, err := svc.ApplyAdminEvent(ctx, ksync.AdminEvent{ResourceType: "GROUP", OperationType: "UPDATE", ResourcePath: "groups/" + g["id"].(string)}, "test")
		if err != nil || full {
			t.Fatalf("apply: full %v, %v", full, err)
		}
		var org string
		if err := st.SysPool().QueryRow(ctx, `SELECT coalesce(org_id, '') FROM tenants WHERE id = 'acme-us'`).Scan(&org); err != nil || org != "acme" {
			t.Fatalf("acme-us: org %q %v", org, err)
		}
		if err := dir.Load(ctx); err != nil {
			t.Fatal(err)
		}
		if code, got, body := get(t, "olivia", "acme-us"); code != 200 || got.Org != "acme" || !slices.Equal(got.Workflows, []string{"us-1"}) {
			t.Errorf("olivia in acme-us after the move back: %d %s", code, body)
		}
	})
	t.Run("a customer group named like an organization fails the sync whole", func(t *testing.T) {
		parent := group("/customers")
		if code, _ := admin.Do("POST", "/groups/"+parent["id"].(string)+"/children", map[string]any{"name": "acme"}, nil); code != http.StatusCreated {
			t.Fatalf("create /customers/acme: %d", code)
		}
		// Its admin event is left to a full run, which refuses it.
		full, err := svc.ApplyAdminEvent(ctx, ksync.AdminEvent{ResourceType: "GROUP", OperationType: "CREATE",
			ResourcePath: "groups/" + parent["id"].(string) + "/children"}, "test")
		if err != nil || !full {
			t.Errorf("the event: full %v, %v", full, err)
		}
		res, err := svc.Run(ctx, ksync.RunOptions{Trigger: "cli"})
		if err == nil || res == nil || res.Outcome != "failure" || !strings.Contains(res.Error, `customer group /customers/acme and organization acme would both be tenant "acme"`) {
			t.Errorf("run: %+v %v", res, err)
		}
		var source string
		if err := st.SysPool().QueryRow(ctx, `SELECT source FROM tenants WHERE id = 'acme'`).Scan(&source); err != nil || source != "organization" {
			t.Errorf("tenant acme: %q %v", source, err)
		}
	})
}
