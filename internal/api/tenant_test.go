package api_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/keybridge/keybridge/internal/audit"
	"github.com/keybridge/keybridge/internal/ratelimit"
	"github.com/keybridge/keybridge/internal/testenv"
	"github.com/keybridge/keybridge/mapping"
	"github.com/keybridge/keybridge/middleware"
)

const tenantHeader = "X-Keybridge-Tenant"

// orgRealm is a throwaway realm whose tenants are Keycloak organizations:
// amy in acme, tess in acme and globex, ivan in initech, all fastn
// developers; the service account holds manage-realm, which Keycloak 26.5
// needs to read organizations. The public client "app" puts keybridge in
// aud and leaves the organization scope optional, so a token asked for
// without it carries no organization claim.
func orgRealm(t *testing.T) testenv.Keycloak {
	t.Helper()
	kc := testenv.RequireKeycloak(t)
	user := func(name string) map[string]any {
		return map[string]any{"username": name, "enabled": true, "email": name + "@example.test", "emailVerified": true,
			"firstName": name, "lastName": "Test", "realmRoles": []any{"fastn-developer"},
			"credentials": []any{map[string]any{"type": "password", "value": kc.UserPassword, "temporary": false}}}
	}
	kc = testenv.NewRealm(t, kc, append(slices.Clone(testenv.SyncRoles), "manage-realm"), map[string]any{
		"organizationsEnabled": true,
		"roles":                map[string]any{"realm": []any{map[string]any{"name": "fastn-developer"}}},
		"clients": []any{map[string]any{"clientId": "app", "publicClient": true, "directAccessGrantsEnabled": true, "standardFlowEnabled": false,
			"protocolMappers": []any{map[string]any{"name": "aud", "protocol": "openid-connect", "protocolMapper": "oidc-audience-mapper",
				"config": map[string]any{"included.custom.audience": "keybridge", "access.token.claim": "true", "id.token.claim": "false"}}}}},
		"users": []any{user("amy"), user("tess"), user("ivan")},
	})
	kc.PublicClientID = "app"
	admin := testenv.NewAdmin(t, kc)
	for org, members := range map[string][]string{"acme": {"amy", "tess"}, "globex": {"tess"}, "initech": {"ivan"}} {
		code, h := admin.Do("POST", "/organizations", map[string]any{"name": org, "alias": org, "domains": []any{map[string]any{"name": org + ".test"}}}, nil)
		if code != http.StatusCreated {
			t.Fatalf("create organization %s: %d", org, code)
		}
		id := h.Get("Location")[strings.LastIndex(h.Get("Location"), "/")+1:]
		for _, m := range members {
			var users []struct{ ID string }
			admin.Do("GET", "/users?exact=true&username="+m, nil, &users)
			if len(users) != 1 {
				t.Fatalf("user %s: %v", m, users)
			}
			if code, _ := admin.Do("POST", "/organizations/"+id+"/members", users[0].ID, nil); code != http.StatusCreated {
				t.Fatalf("add %s to %s: %d", m, org, code)
			}
		}
	}
	return kc
}

// scopedToken is a password-grant token of the realm's app client, asking
// for scope ("" asks for the client's defaults only).
func scopedToken(t *testing.T, kc testenv.Keycloak, user, scope string) string {
	t.Helper()
	form := url.Values{"grant_type": {"password"}, "client_id": {kc.PublicClientID}, "username": {user}, "password": {kc.UserPassword}}
	if scope != "" {
		form.Set("scope", scope)
	}
	res, err := http.PostForm(kc.URL+"/realms/"+kc.Realm+"/protocol/openid-connect/token", form)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	var out struct {
		AccessToken string `json:"access_token"`
	}
	body, _ := io.ReadAll(res.Body)
	if err := json.Unmarshal(body, &out); err != nil || out.AccessToken == "" {
		t.Fatalf("token for %s (scope %q): %d %s", user, scope, res.StatusCode, body)
	}
	return out.AccessToken
}

func (e *decEnv) call(t *testing.T, method, target, token string, header map[string]string, body string) *httptest.ResponseRecorder {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req := httptest.NewRequest(method, target, rd)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	for k, v := range header {
		req.Header.Set(k, v)
	}
	rec := httptest.NewRecorder()
	e.h.ServeHTTP(rec, req)
	return rec
}

type checkAnswer struct {
	Allowed bool              `json:"allowed"`
	Reason  string            `json:"reason"`
	Session map[string]any    `json:"session"`
	Error   map[string]string `json:"error"`
}

func decode[T any](t *testing.T, rec *httptest.ResponseRecorder) T {
	t.Helper()
	var v T
	if err := json.Unmarshal(rec.Body.Bytes(), &v); err != nil {
		t.Fatalf("%d %s: %v", rec.Code, rec.Body, err)
	}
	return v
}

// Issue 16, against real Keycloak organizations: a token without the
// organization scope is placed by the synced membership; a person in two
// tenants names the one it acts in (header, check field, forward-auth
// parameter, management middleware), is refused a tenant it is not in, and
// naming none is answered tenant_required instead of acting in the first.
func TestActiveTenant(t *testing.T) {
	kc := orgRealm(t)
	rules := demoRules
	rules.Tenant = mapping.TenantSource{Organization: true}
	e := newDecEnvIn(t, kc, "", rules)
	e.dec.TenantHeader = tenantHeader
	log := e.dec.Audit.(*testenv.AuditLog)
	ctx := context.Background()
	// tess is also an Admin in globex (a local assignment), so the two
	// tenants' sessions differ in role as well as in tenant.
	if err := e.st.InSystemTx(ctx, func(tx pgx.Tx) error {
		_, err := tx.Exec(ctx, `INSERT INTO role_assignments (person_id, role_id, tenant_id, source)
			SELECT p.id, r.id, 'globex', 'local' FROM people p, roles r WHERE p.username = 'tess' AND r.name = 'Admin' AND r.kind = 'system'`)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if err := e.dir.Load(ctx); err != nil {
		t.Fatal(err)
	}
	amy, tess := scopedToken(t, kc, "amy", ""), scopedToken(t, kc, "tess", "")
	check := `{"permission":"workflows.read"}`

	t.Run("a token without the organization scope acts in the synced tenant", func(t *testing.T) {
		if tok := mapping.FactsFromClaims(claimsOf(t, amy), mapping.ClaimPaths{}); len(tok.Organizations) != 0 {
			t.Fatalf("the token carries organizations %v: the test needs one without the scope", tok.Organizations)
		}
		if out := e.introspect(t, amy); out["tenant_id"] != "acme" {
			t.Errorf("introspection: %v", out)
		}
		rec := e.call(t, "POST", "/v1/check", amy, nil, check)
		if a := decode[checkAnswer](t, rec); rec.Code != 200 || !a.Allowed || a.Session["app.tenant_id"] != "acme" {
			t.Errorf("check: %d %s", rec.Code, rec.Body)
		}
		// The claim, when the scope is asked for, says the same.
		withScope := scopedToken(t, kc, "amy", "organization")
		if tok := mapping.FactsFromClaims(claimsOf(t, withScope), mapping.ClaimPaths{}); !slices.Equal(tok.Organizations, []string{"acme"}) {
			t.Fatalf("organizations with the scope: %v", tok.Organizations)
		}
		if out := e.introspect(t, withScope); out["tenant_id"] != "acme" {
			t.Errorf("introspection with the scope: %v", out)
		}
	})

	t.Run("naming nothing with two tenants is tenant_required", func(t *testing.T) {
		before := log.Count("check.tenant", string(audit.Denied))
		rec := e.call(t, "POST", "/v1/check", tess, nil, check)
		if a := decode[checkAnswer](t, rec); rec.Code != http.StatusConflict || a.Error["code"] != "tenant_required" ||
			!strings.Contains(a.Error["message"], tenantHeader) || strings.Contains(rec.Body.String(), "globex") {
			t.Errorf("check: %d %s", rec.Code, rec.Body)
		}
		if n := log.Count("check.tenant", string(audit.Denied)); n != before+1 {
			t.Errorf("%d tenant_required refusals audited, want 1", n-before)
		}
		rec = e.call(t, "GET", "/v1/me", tess, nil, "")
		me := decode[map[string]any](t, rec)
		if rec.Code != 200 || me["tenant"] != "" || me["tenant_required"] != true || !equalAny(me["tenants"], "acme", "globex") ||
			me["session"].(map[string]any)["app.tenant_id"] != "" {
			t.Errorf("/v1/me: %d %s", rec.Code, rec.Body)
		}
		if out := e.introspect(t, tess); out["tenant_id"] != "" || out["tenant_required"] != true {
			t.Errorf("introspection: %v", out)
		}
	})

	t.Run("naming a tenant of theirs acts in it", func(t *testing.T) {
		for name, req := range map[string]struct {
			header map[string]string
			body   string
		}{
			"header": {map[string]string{tenantHeader: "globex"}, check},
			"field":  {nil, `{"permission":"workflows.read","tenant":"globex"}`},
			"both":   {map[string]string{tenantHeader: "globex"}, `{"permission":"workflows.read","tenant":"globex"}`},
		} {
			rec := e.call(t, "POST", "/v1/check", tess, req.header, req.body)
			a := decode[checkAnswer](t, rec)
			if rec.Code != 200 || !a.Allowed || a.Session["app.tenant_id"] != "globex" || a.Session["app.role"] != "Admin" {
				t.Errorf("%s: %d %s", name, rec.Code, rec.Body)
			}
		}
		rec := e.call(t, "POST", "/v1/check", tess, nil,
			`{"checks":[{"permission":"workflows.read","tenant":"acme"},{"permission":"workflows.read","tenant":"globex"}]}`)
		res := decode[struct{ Results []checkAnswer }](t, rec)
		if rec.Code != 200 || len(res.Results) != 2 || res.Results[0].Session["app.tenant_id"] != "acme" || res.Results[0].Session["app.role"] != "Developer" ||
			res.Results[1].Session["app.tenant_id"] != "globex" || res.Results[1].Session["app.role"] != "Admin" {
			t.Errorf("batch with a tenant per check: %d %s", rec.Code, rec.Body)
		}
		rec = e.call(t, "GET", "/v1/me", tess, map[string]string{tenantHeader: "acme"}, "")
		if me := decode[map[string]any](t, rec); rec.Code != 200 || me["tenant"] != "acme" || me["tenant_required"] != false {
			t.Errorf("/v1/me naming acme: %d %s", rec.Code, rec.Body)
		}
	})

	t.Run("naming a tenant not theirs is 403 and audited", func(t *testing.T) {
		before := log.Count("check.tenant", string(audit.Denied))
		for name, req := range map[string]struct {
			header map[string]string
			body   string
		}{
			"header": {map[string]string{tenantHeader: "initech"}, check},
			"field":  {nil, `{"checks":[{"permission":"workflows.read","tenant":"acme"},{"permission":"workflows.read","tenant":"initech"}]}`},
		} {
			rec := e.call(t, "POST", "/v1/check", tess, req.header, req.body)
			if a := decode[checkAnswer](t, rec); rec.Code != http.StatusForbidden || a.Error["code"] != "tenant_forbidden" {
				t.Errorf("%s: %d %s", name, rec.Code, rec.Body)
			}
		}
		if n := log.Count("check.tenant", string(audit.Denied)); n != before+2 {
			t.Errorf("%d refusals audited, want 2", n-before)
		}
		var found bool
		for _, en := range log.Entries() {
			found = found || (en.Action == "check.tenant" && strings.Contains(en.Reason, `"initech"`) && en.ActorName == "tess")
		}
		if !found {
			t.Errorf("no audit entry names tess and initech: %+v", log.Entries())
		}
		rec := e.call(t, "GET", "/v1/me", tess, map[string]string{tenantHeader: "initech"}, "")
		if rec.Code != http.StatusForbidden {
			t.Errorf("/v1/me naming initech: %d %s", rec.Code, rec.Body)
		}
		rec = e.call(t, "POST", "/v1/check", tess, map[string]string{tenantHeader: "acme"}, `{"permission":"workflows.read","tenant":"globex"}`)
		if rec.Code != http.StatusBadRequest {
			t.Errorf("header and field naming different tenants: %d %s", rec.Code, rec.Body)
		}
	})

	t.Run("forward-auth", func(t *testing.T) {
		fwd := func(query string, header map[string]string) *httptest.ResponseRecorder {
			h := map[string]string{"X-Original-Method": "GET", "X-Original-URI": "/workflows/w1"}
			for k, v := range header {
				h[k] = v
			}
			return e.call(t, "GET", "/v1/forward-auth"+query, tess, h, "")
		}
		if rec := fwd("?tenant=globex", nil); rec.Code != 200 || rec.Header().Get("X-Auth-Tenant") != "globex" {
			t.Errorf("?tenant=globex: %d %v %s", rec.Code, rec.Header(), rec.Body)
		}
		if rec := fwd("", map[string]string{tenantHeader: "acme"}); rec.Code != 200 || rec.Header().Get("X-Auth-Tenant") != "acme" {
			t.Errorf("header acme: %d %v %s", rec.Code, rec.Header(), rec.Body)
		}
		if rec := fwd("", nil); rec.Code != http.StatusForbidden || rec.Header().Get("X-Auth-Error") != "tenant_required" {
			t.Errorf("no tenant: %d %v %s", rec.Code, rec.Header(), rec.Body)
		}
		if rec := fwd("?tenant=initech", nil); rec.Code != http.StatusForbidden || rec.Header().Get("X-Auth-Error") != "tenant_forbidden" {
			t.Errorf("?tenant=initech: %d %v %s", rec.Code, rec.Header(), rec.Body)
		}
		// The client does not override the tenant the proxy pins.
		if rec := fwd("?tenant=acme", map[string]string{tenantHeader: "globex"}); rec.Code != http.StatusBadRequest {
			t.Errorf("query and header disagree: %d %s", rec.Code, rec.Body)
		}
	})

	t.Run("the middleware's transaction runs in the named tenant", func(t *testing.T) {
		var events []middleware.Event
		mw := &middleware.Middleware{Auth: e.dec.Identify.(middleware.Authenticator), Decider: func() middleware.Decider { return e.dir.Engine() },
			DB: e.st.AppPool(), Limiter: &ratelimit.Limiter{}, TenantHeader: tenantHeader,
			Audit: func(_ context.Context, ev middleware.Event) { events = append(events, ev) }}
		h := mw.HTTP("settings.read", []string{"workflows.read"}, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			var tenant, role string
			if err := middleware.Tx(r.Context()).QueryRow(r.Context(),
				`SELECT current_setting('app.tenant_id'), current_setting('app.role')`).Scan(&tenant, &role); err != nil {
				http.Error(w, err.Error(), 500)
				return
			}
			_, _ = io.WriteString(w, tenant+" "+role)
		}))
		call := func(tenant string) (int, string) {
			req := httptest.NewRequest("GET", "/", nil)
			req.Header.Set("Authorization", "Bearer "+tess)
			if tenant != "" {
				req.Header.Set(tenantHeader, tenant)
			}
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			return rec.Code, rec.Body.String()
		}
		for tenant, want := range map[string]string{"globex": "globex Admin", "acme": "acme Developer"} {
			if code, body := call(tenant); code != 200 || body != want {
				t.Errorf("naming %s: %d %q, want %q", tenant, code, body, want)
			}
		}
		if code, body := call(""); code != http.StatusConflict || !strings.Contains(body, "tenant_required") {
			t.Errorf("naming none: %d %s", code, body)
		}
		if code, body := call("initech"); code != http.StatusForbidden || !strings.Contains(body, "tenant_forbidden") {
			t.Errorf("naming initech: %d %s", code, body)
		}
		var denied []string
		for _, ev := range events {
			if ev.Outcome == "denied" && ev.Grant != nil && ev.Grant.Username == "tess" {
				denied = append(denied, ev.Reason)
			}
		}
		if len(denied) != 2 || denied[0] != mapping.TenantRequiredReason || !strings.Contains(denied[1], `"initech"`) {
			t.Errorf("audited denials %q, want tenant_required then initech", denied)
		}
	})
}

func equalAny(v any, want ...string) bool {
	list, _ := v.([]any)
	if len(list) != len(want) {
		return false
	}
	for i := range list {
		if list[i] != want[i] {
			return false
		}
	}
	return true
}

// claimsOf reads a JWT's payload without verifying it (the daemon does).
func claimsOf(t *testing.T, jwt string) map[string]any {
	t.Helper()
	parts := strings.Split(jwt, ".")
	if len(parts) != 3 {
		t.Fatal("not a JWT")
	}
	raw, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		t.Fatal(err)
	}
	var c map[string]any
	if err := json.Unmarshal(raw, &c); err != nil {
		t.Fatal(err)
	}
	return c
}
