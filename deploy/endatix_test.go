package deploy_test

import (
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/keybridge/keybridge/internal/testenv"
)

// The Endatix seed (shared/seeds/004) against a real daemon serving
// config/keybridge.endatix.yaml, synced from the endatix demo realm
// (deploy/keycloak/realm-endatix.json), with tokens Keycloak signs for its
// users. Tenants acme and initech:
//
//	paula  endatix-platform-admin → PlatformAdmin, no tenant
//	amir   endatix-admin → Admin of acme       irene  Admin of initech
//	cora   endatix-creator → Creator of acme   ian    Creator of initech
//	rory   endatix-respondent → submissions.view, .create, .delete.owned in acme
//	nina   no role: Authenticated only, in acme

// endatix is a daemon serving the endatix realm and its users' tokens.
type endatix struct {
	kc     testenv.Keycloak
	d      *testenv.Daemon
	ids    map[string]string // username -> Keycloak user id, from the realm file
	tokens map[string]string
}

// exAnswer is what a decision route answered.
type exAnswer struct {
	status int
	header http.Header
	body   []byte
}

func (a exAnswer) json(t *testing.T) map[string]any {
	t.Helper()
	var out map[string]any
	if err := json.Unmarshal(a.body, &out); err != nil {
		t.Fatalf("answer %d is not a JSON object: %v: %s", a.status, err, a.body)
	}
	return out
}

func startEndatix(t *testing.T) *endatix {
	t.Helper()
	kc := testenv.RequireKeycloak(t)
	root := testenv.RepoRoot(t)
	raw, err := os.ReadFile(filepath.Join(root, "deploy", "keycloak", "realm-endatix.json"))
	if err != nil {
		t.Fatal(err)
	}
	var realm struct {
		Users []struct{ ID, Username string }
	}
	if err := json.Unmarshal(raw, &realm); err != nil {
		t.Fatal(err)
	}
	e := &endatix{kc: kc, ids: map[string]string{}, tokens: map[string]string{}}
	for _, u := range realm.Users {
		e.ids[u.Username] = u.ID
	}
	bin := testenv.BuildDaemon(t)
	db := testenv.NewDatabase(t)
	// .local/env names the fastn realm; the last value of a variable wins.
	e.d = testenv.StartDaemonWith(t, bin, filepath.Join(root, "config", "keybridge.endatix.yaml"), db, kc,
		"KEYBRIDGE_KEYCLOAK_REALM=endatix", "KEYBRIDGE_SYNC_EVENTS_ENABLED=false", "KEYBRIDGE_SYNC_SCHEDULE=@every 1h")
	e.d.WaitReady(t, 90*time.Second)
	return e
}

func (e *endatix) token(t *testing.T, user string) string {
	t.Helper()
	if tok, ok := e.tokens[user]; ok {
		return tok
	}
	tok := e.kc.Token(t, "endatix", "endatix-hub", user, e.kc.UserPassword)
	e.tokens[user] = tok
	return tok
}

// do sends a request; auth is a username (its bearer token), "" for none,
// or a whole Authorization header value when it contains a space.
func (e *endatix) do(t *testing.T, method, path, auth string, body io.Reader, header map[string]string) exAnswer {
	t.Helper()
	req, err := http.NewRequest(method, e.d.Base+path, body)
	if err != nil {
		t.Fatal(err)
	}
	switch {
	case strings.Contains(auth, " "):
		req.Header.Set("Authorization", auth)
	case auth != "":
		req.Header.Set("Authorization", "Bearer "+e.token(t, auth))
	}
	for k, v := range header {
		req.Header.Set(k, v)
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return exAnswer{status: res.StatusCode, header: res.Header, body: b}
}

func (e *endatix) check(t *testing.T, auth string, req map[string]any) exAnswer {
	t.Helper()
	b, _ := json.Marshal(req)
	return e.do(t, http.MethodPost, "/v1/check", auth, strings.NewReader(string(b)), map[string]string{"Content-Type": "application/json"})
}

func (e *endatix) forward(t *testing.T, auth, method, uri string) exAnswer {
	t.Helper()
	return e.do(t, http.MethodGet, "/v1/forward-auth", auth, nil, map[string]string{"X-Original-Method": method, "X-Original-URI": uri})
}

// exCase is one /v1/check: who asks what, and what must come back.
type exCase struct {
	name     string
	user     string
	req      map[string]any
	allowed  bool
	passedBy string // allowed: the permission that passed ("" = the one asked)
	reason   string // a part of the reason
}

func exOne(p string) map[string]any { return map[string]any{"permission": p} }

func exIn(p, tenant string) map[string]any {
	return map[string]any{"permission": p, "resource": map[string]any{"type": "form", "id": "f1", "tenant": tenant}}
}

func exOwned(owner string, anyOf ...string) map[string]any {
	res := map[string]any{"type": "submission", "id": "s1"}
	if owner != "" {
		res["owner"] = owner
	}
	return map[string]any{"any_of": anyOf, "resource": res}
}

// TestEndatixDemoRealm runs every case of the seed against one daemon.
func TestEndatixDemoRealm(t *testing.T) {
	e := startEndatix(t)
	t.Run("seed decisions", func(t *testing.T) { endatixSeedDecisions(t, e) })
	t.Run("Public", func(t *testing.T) { endatixPublic(t, e) })
	t.Run("introspection and people", func(t *testing.T) { endatixIntrospectionAndPeople(t, e) })
}

// endatixSeedDecisions: /v1/check for every role of the seed, its bypasses,
// policy, ownership scope and any-of.
func endatixSeedDecisions(t *testing.T, e *endatix) {
	rory, cora := e.ids["rory"], e.ids["cora"]
	if rory == "" || cora == "" {
		t.Fatalf("realm-endatix.json has no rory or cora: %v", e.ids)
	}
	cases := []exCase{
		// Admin: every check inside its own tenant, also permissions its role
		// does not list (reports.view is config's, held by no role); not
		// another tenant, not platform.*.
		{"admin holds its own permissions", "amir", exOne("tenant.users.manage"), true, "", `bypass role "Admin"`},
		{"admin passes a permission no role lists", "amir", exOne("reports.view"), true, "", `bypass role "Admin"`},
		{"admin passes in its own tenant named", "amir", exIn("reports.view", "acme"), true, "", `bypass role "Admin"`},
		{"admin passes .owned whoever owns it", "amir", exOwned(cora, "submissions.delete.owned"), true, "", `bypass role "Admin"`},
		{"admin stops at another tenant", "amir", exIn("forms.view", "initech"), false, "", `resource tenant "initech" differs from caller tenant "acme"`},
		{"admin stops at platform.*", "amir", exOne("platform.tenants.manage"), false, "", "platform.* requires role PlatformAdmin"},
		{"admin of the other tenant likewise", "irene", exIn("reports.view", "initech"), true, "", `bypass role "Admin"`},
		{"admin of the other tenant stops at acme", "irene", exIn("forms.view", "acme"), false, "", `resource tenant "acme" differs from caller tenant "initech"`},
		{"admin passes no name outside the catalog", "amir", exOne("forms.fly"), false, "", "not in the endatix catalog"},
		// PlatformAdmin: platform.* and every check in every tenant.
		{"platform admin manages tenants", "paula", exOne("platform.tenants.manage"), true, "", `bypass role "PlatformAdmin"`},
		{"platform admin impersonates", "paula", exOne("platform.users.impersonate"), true, "", `bypass role "PlatformAdmin"`},
		{"platform admin in acme", "paula", exIn("reports.view", "acme"), true, "", `bypass role "PlatformAdmin"`},
		{"platform admin in initech", "paula", exIn("tenant.users.manage", "initech"), true, "", `bypass role "PlatformAdmin"`},
		{"platform admin passes .owned", "paula", exOwned(rory, "submissions.delete.owned"), true, "", `bypass role "PlatformAdmin"`},
		// Creator: forms, templates, themes, questions, hub access; nothing else.
		{"creator creates forms", "cora", exOne("forms.create"), true, "", `role "Creator"`},
		{"creator edits templates", "cora", exOne("templates.edit"), true, "", `role "Creator"`},
		{"creator deletes themes", "cora", exOne("themes.delete"), true, "", `role "Creator"`},
		{"creator views questions", "cora", exOne("questions.view"), true, "", `role "Creator"`},
		{"creator reaches the hub", "cora", exOne("access.apps.hub"), true, "", `role "Creator"`},
		{"creator is authenticated", "cora", exOne("access.authenticated"), true, "", "Authenticated"},
		{"creator sees no submissions", "cora", exOne("submissions.view"), false, "", "no role grants any of"},
		{"creator manages no users", "cora", exOne("tenant.users.view"), false, "", "no role grants any of"},
		{"creator reads no reports", "cora", exOne("reports.view"), false, "", "no role grants any of"},
		{"creator reaches no platform", "cora", exOne("platform.metrics.view"), false, "", "platform.* requires role PlatformAdmin"},
		{"creator stays in its tenant", "cora", exIn("forms.create", "initech"), false, "", `differs from caller tenant "acme"`},
		{"other creator in its tenant", "ian", exIn("forms.create", "initech"), true, "", `role "Creator"`},
		{"other creator not in acme", "ian", exIn("forms.create", "acme"), false, "", `differs from caller tenant "initech"`},
		// .owned: only the owner, and only with the owner named.
		{"owner deletes own submission", "rory", exOwned(rory, "submissions.delete.owned"), true, "", "submissions.delete.owned"},
		{"not another's submission", "rory", exOwned(cora, "submissions.delete.owned"), false, "", "requires the caller to own the resource"},
		{"not without an owner", "rory", exOwned("", "submissions.delete.owned"), false, "", "names no owner"},
		{"respondent may not delete any submission", "rory", exOwned(rory, "submissions.delete"), false, "", "no role grants any of"},
		// Any of: the seed's Permissions(Delete, DeleteOwned).
		{"any of: delete or delete.owned, own", "rory", exOwned(rory, "submissions.delete", "submissions.delete.owned"), true, "submissions.delete.owned", ""},
		{"any of: delete or delete.owned, another's", "rory", exOwned(cora, "submissions.delete", "submissions.delete.owned"), false, "", "requires the caller to own the resource"},
		{"any of: one held is enough", "cora", map[string]any{"any_of": []string{"submissions.export", "tenant.users.manage", "forms.edit"}}, true, "forms.edit", `role "Creator"`},
		{"any of: none held", "cora", map[string]any{"any_of": []string{"submissions.export", "tenant.users.manage"}}, false, "", "no role grants any of"},
		// Authenticated: a token with none of the realm roles.
		{"role-less user is authenticated", "nina", exOne("access.authenticated"), true, "", `role "Authenticated"`},
		{"role-less user has no hub", "nina", exOne("access.apps.hub"), false, "", "no role grants any of"},
		{"role-less user views no forms", "nina", exOne("forms.view"), false, "", "no role grants any of"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			a := e.check(t, c.user, c.req)
			if a.status != http.StatusOK {
				t.Fatalf("%s: %d %s", c.user, a.status, a.body)
			}
			out := a.json(t)
			reason, _ := out["reason"].(string)
			if out["allowed"] != c.allowed || !strings.Contains(reason, c.reason) {
				t.Errorf("%s %v: allowed=%v reason %q; want allowed=%v, reason containing %q", c.user, c.req, out["allowed"], reason, c.allowed, c.reason)
			}
			want := c.passedBy
			if want == "" && c.allowed {
				want, _ = c.req["permission"].(string)
				if want == "" {
					want = c.req["any_of"].([]string)[0]
				}
			}
			if got, _ := out["permission"].(string); got != want {
				t.Errorf("%s %v: passed by %q, want %q", c.user, c.req, got, want)
			}
		})
	}

	// The role-less user holds access.authenticated and nothing else of
	// the whole catalog (as the daemon serves it).
	t.Run("authenticated holds one permission of the catalog", func(t *testing.T) {
		a := e.do(t, http.MethodGet, "/v1/permissions", "amir", nil, nil)
		var cat struct{ Permissions []string }
		if a.status != 200 || json.Unmarshal(a.body, &cat) != nil || len(cat.Permissions) < 40 {
			t.Fatalf("catalog: %d %s", a.status, a.body)
		}
		checks := make([]map[string]any, len(cat.Permissions))
		for i, p := range cat.Permissions {
			checks[i] = exOne(p)
		}
		a = e.check(t, "nina", map[string]any{"checks": checks})
		var out struct {
			Results []struct {
				Allowed bool
				Session map[string]any
			}
		}
		if a.status != 200 || json.Unmarshal(a.body, &out) != nil || len(out.Results) != len(checks) {
			t.Fatalf("batch: %d %s", a.status, a.body)
		}
		var allowed []string
		for i, r := range out.Results {
			if r.Allowed {
				allowed = append(allowed, cat.Permissions[i])
			}
		}
		if !slices.Equal(allowed, []string{"access.authenticated"}) {
			t.Errorf("nina passes %v, want only access.authenticated", allowed)
		}
		if s := out.Results[0].Session; s["app.role"] != "Authenticated" || s["app.tenant_id"] != "acme" || s["app.user_id"] != e.ids["nina"] {
			t.Errorf("nina's session: %v", s)
		}
	})
}

// endatixPublic: with check.allow_anonymous and
// forward_auth.allow_anonymous on (config/keybridge.endatix.yaml), a request
// without credentials is the Public pseudo role, which holds nothing; any
// credential that fails verification is 401, never Public.
func endatixPublic(t *testing.T, e *endatix) {
	fastn := e.kc.UserToken(t, "alice") // signed by another realm's keys
	invalid := map[string]string{
		"garbage":           "Bearer not-a-token",
		"tampered":          "Bearer " + e.token(t, "amir")[:len(e.token(t, "amir"))-4] + "AAAA",
		"another realm's":   "Bearer " + fastn,
		"empty bearer":      "Bearer ",
		"basic credentials": "Basic YW1pcjpkZW1vLVBhc3N3MHJk",
	}

	t.Run("check", func(t *testing.T) {
		for _, p := range []string{"forms.view", "access.authenticated"} {
			a := e.check(t, "", exOne(p))
			if a.status != http.StatusOK {
				t.Fatalf("anonymous check %s: %d %s", p, a.status, a.body)
			}
			out := a.json(t)
			sess, _ := out["session"].(map[string]any)
			if out["allowed"] != false || sess["app.role"] != "Public" || sess["app.user_id"] != "" || sess["app.tenant_id"] != "" {
				t.Errorf("anonymous check %s: %s", p, a.body)
			}
			if reason, _ := out["reason"].(string); !strings.Contains(reason, p) || !strings.Contains(reason, "pseudo role Public") {
				t.Errorf("anonymous check %s: reason %q does not name it and the Public pseudo role", p, reason)
			}
		}
		for name, auth := range invalid {
			if a := e.check(t, auth, exOne("forms.view")); a.status != http.StatusUnauthorized {
				t.Errorf("%s token: %d %s, want 401", name, a.status, a.body)
			}
		}
	})

	t.Run("forward-auth", func(t *testing.T) {
		a := e.forward(t, "", "GET", "/public/form/1")
		if a.status != 200 || a.header.Get("X-Auth-Roles") != `"Public"` || a.header.Get("X-Auth-User") != "" || a.header.Get("X-Auth-Tenant") != "" {
			t.Errorf("anonymous on a public route: %d roles %q user %q tenant %q", a.status,
				a.header.Get("X-Auth-Roles"), a.header.Get("X-Auth-User"), a.header.Get("X-Auth-Tenant"))
		}
		for _, h := range []string{"X-Auth-Roles", "X-Auth-User", "X-Auth-Tenant"} {
			if _, ok := a.header[h]; !ok {
				t.Errorf("public route answered without %s (a proxy would pass the client's own)", h)
			}
		}
		// A route that needs a permission: Public holds none, so sign in.
		a = e.forward(t, "", "GET", "/api/forms/1")
		if a.status != http.StatusUnauthorized || !strings.Contains(string(a.body), "Public") {
			t.Errorf("anonymous on /api/forms/1: %d %s", a.status, a.body)
		}
		for name, auth := range invalid {
			if a := e.forward(t, auth, "GET", "/api/forms/1"); a.status != http.StatusUnauthorized || strings.Contains(string(a.body), "Public") {
				t.Errorf("%s token on /api/forms/1: %d %s, want 401 without Public", name, a.status, a.body)
			}
		}
		routes := []struct {
			user, method, uri string
			status            int
			tenant, role      string
		}{
			{"nina", "GET", "/api/me", 200, "acme", `"Authenticated"`},
			{"nina", "GET", "/hub/forms", 403, "", ""},
			{"cora", "GET", "/hub/forms", 200, "acme", `"Creator"`},
			{"cora", "GET", "/api/forms/1", 200, "acme", `"Creator"`},
			{"cora", "DELETE", "/api/forms/1", 200, "acme", `"Creator"`},
			{"cora", "GET", "/api/reports/1", 403, "", ""},
			{"cora", "GET", "/api/submissions/1", 403, "", ""},
			{"rory", "GET", "/api/submissions/1", 200, "acme", `"Authenticated"`},
			{"rory", "GET", "/api/submissions/1/export", 403, "", ""},
			{"amir", "GET", "/api/reports/1", 200, "acme", `"Admin"`},
			{"amir", "GET", "/api/submissions/1/export", 200, "acme", `"Admin"`},
			{"amir", "GET", "/api/platform/tenants", 403, "", ""},
			{"irene", "GET", "/api/forms/1", 200, "initech", `"Admin"`},
			{"paula", "GET", "/api/platform/tenants", 200, "", `"PlatformAdmin"`},
			{"paula", "GET", "/nowhere", 403, "", ""},
		}
		for _, r := range routes {
			a := e.forward(t, r.user, r.method, r.uri)
			if a.status != r.status {
				t.Errorf("%s %s %s: %d %s, want %d", r.user, r.method, r.uri, a.status, a.body, r.status)
				continue
			}
			if r.status != 200 {
				continue
			}
			if a.header.Get("X-Auth-User") != e.ids[r.user] || a.header.Get("X-Auth-Tenant") != r.tenant || !strings.Contains(a.header.Get("X-Auth-Roles"), r.role) {
				t.Errorf("%s %s %s: user %q tenant %q roles %q; want %s, %q, roles with %s", r.user, r.method, r.uri,
					a.header.Get("X-Auth-User"), a.header.Get("X-Auth-Tenant"), a.header.Get("X-Auth-Roles"), e.ids[r.user], r.tenant, r.role)
			}
		}
	})
}

// endatixIntrospectionAndPeople: RFC 7662 introspection of an Endatix
// Admin's token shows its tenant and roles; the people list of a tenant
// Admin holds its own tenant only, and a role-less user may not read it.
func endatixIntrospectionAndPeople(t *testing.T, e *endatix) {
	introspect := func(user string) map[string]any {
		t.Helper()
		form := url.Values{"token": {e.token(t, user)}}.Encode()
		a := e.do(t, http.MethodPost, "/oauth2/introspect", "Basic "+base64.StdEncoding.EncodeToString([]byte("demo-api:demo-api-secret")), strings.NewReader(form),
			map[string]string{"Content-Type": "application/x-www-form-urlencoded"})
		if a.status != 200 {
			t.Fatalf("introspect %s: %d %s", user, a.status, a.body)
		}
		return a.json(t)
	}
	strs := func(v any) []string {
		var out []string
		l, _ := v.([]any)
		for _, x := range l {
			s, _ := x.(string)
			out = append(out, s)
		}
		return out
	}

	amir := introspect("amir")
	perms := strs(amir["permissions"])
	if amir["active"] != true || amir["tenant_id"] != "acme" || amir["sub"] != e.ids["amir"] || amir["username"] != "amir" ||
		!slices.Contains(strs(amir["roles"]), "Admin") || slices.Contains(strs(amir["roles"]), "PlatformAdmin") ||
		!slices.Contains(perms, "tenant.users.manage") || slices.ContainsFunc(perms, func(p string) bool { return strings.HasPrefix(p, "platform.") }) {
		t.Errorf("amir introspected: %v", amir)
	}
	paula := introspect("paula")
	if paula["active"] != true || paula["tenant_id"] != "" || !slices.Contains(strs(paula["roles"]), "PlatformAdmin") ||
		!slices.Contains(strs(paula["permissions"]), "platform.tenants.manage") {
		t.Errorf("paula introspected: %v", paula)
	}
	nina := introspect("nina")
	if nina["tenant_id"] != "acme" || !slices.Equal(strs(nina["roles"]), []string{"Authenticated"}) || !slices.Equal(strs(nina["permissions"]), []string{"access.authenticated"}) {
		t.Errorf("nina introspected: %v", nina)
	}

	people := func(user string) (usernames []string, items []map[string]any) {
		t.Helper()
		a := e.do(t, http.MethodGet, "/v1/people?limit=100", user, nil, nil)
		var out struct{ Items []map[string]any }
		if a.status != 200 || json.Unmarshal(a.body, &out) != nil {
			t.Fatalf("people as %s: %d %s", user, a.status, a.body)
		}
		for _, p := range out.Items {
			u, _ := p["username"].(string)
			usernames = append(usernames, u)
		}
		sort.Strings(usernames)
		return usernames, out.Items
	}
	got, items := people("amir")
	if want := []string{"amir", "cora", "nina", "rory"}; !slices.Equal(got, want) {
		t.Errorf("amir (Admin of acme) lists %v, want %v", got, want)
	}
	for _, p := range items {
		if !slices.Equal(strs(p["tenants"]), []string{"acme"}) {
			t.Errorf("amir's list holds %v in tenants %v", p["username"], p["tenants"])
		}
		if p["username"] == "amir" && !strings.Contains(string(exMustJSON(p["roles"])), `"name":"Admin"`) {
			t.Errorf("amir's own row has no Admin role: %v", p["roles"])
		}
	}
	if got, _ := people("irene"); !slices.Equal(got, []string{"ian", "irene"}) {
		t.Errorf("irene (Admin of initech) lists %v, want [ian irene]", got)
	}
	if a := e.do(t, http.MethodGet, "/v1/people", "nina", nil, nil); a.status != http.StatusForbidden {
		t.Errorf("nina (no role) reads people: %d %s", a.status, a.body)
	}
}

func exMustJSON(v any) []byte {
	b, _ := json.Marshal(v)
	return b
}
