// Package keycloak_test proves the demo realm and the keybridge service
// account against the real Keycloak started by deploy/local/up.
package keycloak_test

import (
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/keybridge/keybridge/internal/testenv"
)

func token(t *testing.T, kc testenv.Keycloak, realm string, form url.Values) string {
	t.Helper()
	res, err := http.PostForm(kc.URL+"/realms/"+realm+"/protocol/openid-connect/token", form)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	var out struct {
		AccessToken string `json:"access_token"`
	}
	body, _ := io.ReadAll(res.Body)
	if err := json.Unmarshal(body, &out); err != nil || out.AccessToken == "" {
		t.Fatalf("token from %s: %d %s", realm, res.StatusCode, body)
	}
	return out.AccessToken
}

func serviceToken(t *testing.T, kc testenv.Keycloak) string {
	return token(t, kc, kc.Realm, url.Values{"grant_type": {"client_credentials"}, "client_id": {kc.ClientID}, "client_secret": {kc.ClientSecret}})
}

func call(t *testing.T, kc testenv.Keycloak, tok, method, path, body string) (int, []byte) {
	t.Helper()
	req, _ := http.NewRequest(method, kc.URL+path, strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+tok)
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return res.StatusCode, b
}

func TestServiceAccountReadsWhatSyncNeedsAndNothingMore(t *testing.T) {
	kc := testenv.RequireKeycloak(t)
	tok := serviceToken(t, kc)
	base := "/admin/realms/" + kc.Realm
	_, groups := call(t, kc, tok, "GET", base+"/groups?briefRepresentation=true", "")
	var top []struct{ ID string }
	_ = json.Unmarshal(groups, &top)
	if len(top) == 0 {
		t.Fatalf("no groups: %s", groups)
	}
	reads := []struct{ name, path string }{
		{"users", base + "/users?briefRepresentation=true&max=5"},
		{"groups", base + "/groups"},
		{"child groups", base + "/groups/" + top[0].ID + "/children"},
		{"group members", base + "/groups/" + top[0].ID + "/members"},
		{"realm roles", base + "/roles"},
		{"role holders", base + "/roles/fastn-owner/users"},
		{"clients", base + "/clients?clientId=portal"},
		{"admin events", base + "/admin-events?max=5"},
		{"user events", base + "/events?max=5"},
	}
	for _, r := range reads {
		t.Run("can read "+r.name, func(t *testing.T) {
			if code, body := call(t, kc, tok, "GET", r.path, ""); code != 200 {
				t.Errorf("GET %s: %d %s", r.path, code, body)
			}
		})
	}
	refused := []struct{ name, method, path, body string }{
		{"change realm settings", "PUT", base, `{"displayName":"pwned"}`},
		{"create a client", "POST", base + "/clients", `{"clientId":"evil"}`},
		{"create a realm role", "POST", base + "/roles", `{"name":"evil"}`},
		{"read the master realm", "GET", "/admin/realms/master/users", ""},
		{"delete the realm", "DELETE", base, ""},
	}
	for _, r := range refused {
		t.Run("cannot "+r.name, func(t *testing.T) {
			if code, body := call(t, kc, tok, r.method, r.path, r.body); code != 403 {
				t.Errorf("%s %s answered %d, want 403: %s", r.method, r.path, code, body)
			}
		})
	}
}

func claims(t *testing.T, jwt string) map[string]any {
	t.Helper()
	parts := strings.Split(jwt, ".")
	b, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		t.Fatal(err)
	}
	var c map[string]any
	_ = json.Unmarshal(b, &c)
	return c
}

func TestDemoRealmShape(t *testing.T) {
	kc := testenv.RequireKeycloak(t)
	admin := kc.Token(t, "master", "admin-cli", kc.AdminUser, kc.AdminPassword)
	_, body := call(t, kc, admin, "GET", "/admin/realms/"+kc.Realm+"/users?max=100&briefRepresentation=false", "")
	var users []struct {
		ID, Username, Email string
		Enabled             bool
	}
	if err := json.Unmarshal(body, &users); err != nil {
		t.Fatal(err)
	}
	byName := map[string]int{}
	for i, u := range users {
		byName[u.Username] = i
	}
	for _, name := range []string{"alice", "adam", "dana", "oscar", "victor", "erin", "dave", "nomail", "gina", "gus", "ella"} {
		i, ok := byName[name]
		if !ok {
			t.Errorf("user %s missing", name)
			continue
		}
		u := users[i]
		if want := name != "dave"; u.Enabled != want {
			t.Errorf("%s enabled=%v, want %v", name, u.Enabled, want)
		}
		if (u.Email == "") != (name == "nomail") {
			t.Errorf("%s email %q", name, u.Email)
		}
	}
	_, orgs := call(t, kc, admin, "GET", "/admin/realms/"+kc.Realm+"/organizations", "")
	if !strings.Contains(string(orgs), `"alias":"acme"`) || !strings.Contains(string(orgs), `"alias":"globex"`) {
		t.Errorf("organizations acme and globex missing: %s", orgs)
	}
	dana := users[byName["dana"]].ID
	_, body = call(t, kc, admin, "GET", "/admin/realms/"+kc.Realm+"/users/"+dana+"/role-mappings/realm/composite", "")
	if !strings.Contains(string(body), `"fastn-developer"`) {
		t.Errorf("dana does not inherit fastn-developer through her group: %s", body)
	}
	c := claims(t, kc.UserToken(t, "alice"))
	aud := c["aud"]
	if s, ok := aud.(string); (ok && s != "keybridge") || (!ok && !slices.Contains(toStrings(aud), "keybridge")) {
		t.Errorf("aud = %v, want keybridge", aud)
	}
	if !slices.Contains(toStrings(c["groups"]), "/customers/acme") || c["tenant_id"] != "acme" {
		t.Errorf("groups %v tenant %v", c["groups"], c["tenant_id"])
	}
	if !slices.Contains(toStrings(c["realm_access"].(map[string]any)["roles"]), "fastn-owner") {
		t.Errorf("realm_access %v", c["realm_access"])
	}
}

func toStrings(v any) []string {
	var out []string
	if l, ok := v.([]any); ok {
		for _, e := range l {
			if s, ok := e.(string); ok {
				out = append(out, s)
			}
		}
	}
	return out
}

// TestDemoRealmKeepsItsIDs: every user, group, role and client of the demo
// realms has a fixed id in realm-<name>.json, and Keycloak imports it as is.
// deploy/local/reset-realm re-imports the realms before every test run; with
// new ids each time, keybridge's next sync of the demo database would see
// every person deleted and re-created, and its deletion guard would refuse
// it (`make run` after `make test` then served stale people).
func TestDemoRealmKeepsItsIDs(t *testing.T) {
	kc := testenv.RequireKeycloak(t)
	for _, r := range []struct {
		name            string
		minUsers, roles int
	}{{kc.Realm, 10, 8}, {"endatix", 8, 4}, {"other", 1, 0}} {
		t.Run(r.name, func(t *testing.T) { realmKeepsItsIDs(t, kc, r.name, r.minUsers, r.roles) })
	}
}

func realmKeepsItsIDs(t *testing.T, kc testenv.Keycloak, name string, minUsers, minRoles int) {
	file := "realm-" + name + ".json"
	raw, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	type group struct {
		ID, Name  string
		SubGroups []group
	}
	type named struct{ ID, Name string }
	var realm struct {
		Realm   string
		Users   []struct{ ID, Username string }
		Groups  []group
		Clients []struct{ ID, ClientID string }
		Roles   struct {
			Realm  []named
			Client map[string][]named
		}
	}
	if err := json.Unmarshal(raw, &realm); err != nil {
		t.Fatal(err)
	}
	if realm.Realm != name {
		t.Fatalf("%s holds realm %q", file, realm.Realm)
	}
	kc.Realm = name
	a := testenv.NewAdmin(t, kc)
	check := func(what, id, path, field, want string) {
		t.Helper()
		if id == "" {
			t.Errorf("%s %s has no id in %s", what, want, file)
			return
		}
		var got map[string]any
		if code, _, body, err := a.Attempt("GET", path, nil); err != nil || code != 200 || json.Unmarshal(body, &got) != nil {
			t.Errorf("%s %s: Keycloak has no %s (%d %v)", what, want, path, code, err)
		} else if got[field] != want {
			t.Errorf("%s %s: Keycloak's %s is %v", what, want, path, got[field])
		}
	}
	for _, u := range realm.Users {
		check("user", u.ID, "/users/"+u.ID, "username", u.Username)
	}
	var walk func(gs []group, parent string)
	walk = func(gs []group, parent string) {
		for _, g := range gs {
			check("group", g.ID, "/groups/"+g.ID, "path", parent+"/"+g.Name)
			walk(g.SubGroups, parent+"/"+g.Name)
		}
	}
	walk(realm.Groups, "")
	for _, c := range realm.Clients {
		check("client", c.ID, "/clients/"+c.ID, "clientId", c.ClientID)
	}
	roles := realm.Roles.Realm
	for _, rs := range realm.Roles.Client {
		roles = append(roles, rs...)
	}
	for _, r := range roles {
		check("role", r.ID, "/roles-by-id/"+r.ID, "name", r.Name)
	}
	if len(realm.Users) < minUsers || len(roles) < minRoles {
		t.Errorf("only %d users and %d roles read from %s", len(realm.Users), len(roles), file)
	}
}

// TestEndatixRealmShape: the endatix demo realm (realm-endatix.json) as
// keybridge's endatix config reads it: tenant_id declared in the user
// profile and writable by admins only (keybridge refuses a tenant attribute
// users can edit), users in tenants acme and initech with the realm roles
// the rules map, tokens of endatix-hub carrying aud keybridge, tenant_id and
// the realm roles, and a keybridge service account holding exactly the
// realm-management roles it holds in the fastn realm.
func TestEndatixRealmShape(t *testing.T) {
	kc := testenv.RequireKeycloak(t)
	fastn := testenv.NewAdmin(t, kc)
	ekc := kc
	ekc.Realm = "endatix"
	a := testenv.NewAdmin(t, ekc)

	var profile struct {
		UnmanagedAttributePolicy string
		Attributes               []struct {
			Name        string
			Permissions struct{ View, Edit []string }
		}
	}
	a.Do("GET", "/users/profile", nil, &profile)
	if p := profile.UnmanagedAttributePolicy; p != "" && p != "ADMIN_VIEW" {
		t.Errorf("unmanagedAttributePolicy %q: users or admins could write undeclared attributes", p)
	}
	declared := false
	for _, at := range profile.Attributes {
		if at.Name == "tenant_id" {
			declared = true
			if !slices.Equal(at.Permissions.Edit, []string{"admin"}) {
				t.Errorf("tenant_id editable by %v, want [admin] only", at.Permissions.Edit)
			}
		}
	}
	if !declared {
		t.Errorf("tenant_id not declared in the user profile: %+v", profile.Attributes)
	}

	var users []struct {
		ID, Username string
		Attributes   map[string][]string
	}
	a.Do("GET", "/users?max=100&briefRepresentation=false", nil, &users)
	want := map[string]struct{ tenant, role string }{
		"paula": {"", "endatix-platform-admin"}, "amir": {"acme", "endatix-admin"}, "irene": {"initech", "endatix-admin"},
		"cora": {"acme", "endatix-creator"}, "ian": {"initech", "endatix-creator"}, "rory": {"acme", "endatix-respondent"},
		"nina": {"acme", ""},
	}
	seen := 0
	for _, u := range users {
		w, ok := want[u.Username]
		if !ok {
			continue
		}
		seen++
		if got := strings.Join(u.Attributes["tenant_id"], ","); got != w.tenant {
			t.Errorf("%s: tenant_id %q, want %q", u.Username, got, w.tenant)
		}
		var roles []struct{ Name string }
		a.Do("GET", "/users/"+u.ID+"/role-mappings/realm/composite", nil, &roles)
		var names []string
		for _, r := range roles {
			if strings.HasPrefix(r.Name, "endatix-") {
				names = append(names, r.Name)
			}
		}
		if wr := []string{w.role}; (w.role == "" && len(names) != 0) || (w.role != "" && !slices.Equal(names, wr)) {
			t.Errorf("%s: realm roles %v, want %q", u.Username, names, w.role)
		}
	}
	if seen != len(want) {
		t.Errorf("%d of the %d demo users found: %v", seen, len(want), users)
	}

	c := claims(t, kc.Token(t, "endatix", "endatix-hub", "amir", kc.UserPassword))
	aud := c["aud"]
	if s, ok := aud.(string); (ok && s != "keybridge") || (!ok && !slices.Contains(toStrings(aud), "keybridge")) {
		t.Errorf("amir's aud = %v, want keybridge", aud)
	}
	if c["tenant_id"] != "acme" || !slices.Contains(toStrings(c["realm_access"].(map[string]any)["roles"]), "endatix-admin") {
		t.Errorf("amir's token: tenant_id %v realm_access %v", c["tenant_id"], c["realm_access"])
	}
	if c := claims(t, kc.Token(t, "endatix", "endatix-hub", "paula", kc.UserPassword)); c["tenant_id"] != nil {
		t.Errorf("paula (PlatformAdmin, no tenant) has tenant_id %v", c["tenant_id"])
	}

	// The service account: the same realm-management roles as in fastn.
	saRoles := func(a *testenv.Admin) []string {
		var cl []struct{ ID string }
		a.Do("GET", "/clients?clientId="+kc.ClientID, nil, &cl)
		var sa struct{ ID string }
		a.Do("GET", "/clients/"+cl[0].ID+"/service-account-user", nil, &sa)
		var rm []struct{ ID string }
		a.Do("GET", "/clients?clientId=realm-management", nil, &rm)
		var roles []struct{ Name string }
		a.Do("GET", "/users/"+sa.ID+"/role-mappings/clients/"+rm[0].ID, nil, &roles)
		var out []string
		for _, r := range roles {
			out = append(out, r.Name)
		}
		slices.Sort(out)
		return out
	}
	if f, e := saRoles(fastn), saRoles(a); len(f) < 8 || !slices.Equal(f, e) {
		t.Errorf("service account roles: endatix %v, fastn %v", e, f)
	}
	tok := token(t, kc, "endatix", url.Values{"grant_type": {"client_credentials"}, "client_id": {kc.ClientID}, "client_secret": {kc.ClientSecret}})
	if code, body := call(t, kc, tok, "GET", "/admin/realms/endatix/users/profile", ""); code != 200 {
		t.Errorf("service account reads the user profile: %d %s", code, body)
	}
	if code, body := call(t, kc, tok, "PUT", "/admin/realms/endatix", `{"displayName":"pwned"}`); code != 403 {
		t.Errorf("service account changes realm settings: %d %s", code, body)
	}
}
