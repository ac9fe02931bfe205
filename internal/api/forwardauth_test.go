package api_test

import (
	"bufio"
	"bytes"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/keybridge/keybridge/config"
	"github.com/keybridge/keybridge/internal/api"
	"github.com/keybridge/keybridge/internal/ratelimit"
	"github.com/keybridge/keybridge/mapping"
)

// forwardAuthRequest builds the request each proxy mode sends for the
// original method and request-target rawURI, exactly as the proxy has it
// (nothing decoded). For envoy the request-target travels on the request
// line, so a target net/http refuses to parse yields nil: no such request
// reaches keybridge.
func forwardAuthRequest(mode, method, rawURI string) *http.Request {
	switch mode {
	case "envoy":
		req, err := http.ReadRequest(bufio.NewReader(strings.NewReader(method + " /v1/forward-auth" + rawURI + " HTTP/1.1\r\nHost: keybridge\r\n\r\n")))
		if err != nil {
			return nil
		}
		req.RemoteAddr = "192.0.2.1:1234"
		return req
	case "traefik":
		req := httptest.NewRequest("GET", "/v1/forward-auth", nil)
		req.Header["X-Forwarded-Method"] = []string{method}
		req.Header["X-Forwarded-Uri"] = []string{rawURI}
		return req
	default:
		req := httptest.NewRequest("GET", "/v1/forward-auth", nil)
		req.Header["X-Original-Method"] = []string{method}
		req.Header["X-Original-Uri"] = []string{rawURI}
		return req
	}
}

// nonCanonicalPaths are original request-targets forward-auth refuses,
// with the reason it counts.
var nonCanonicalPaths = []struct {
	name, method, uri, reason string
}{
	// The two reproduced bypasses: a decoded ? cut the path to /public,
	// and to /workflows/1/deploy/x (the looser /workflows/** rule).
	{"decoded ? then dot-dot", "GET", "/public/%3F/../../admin/users", "encoded_delimiter"},
	{"decoded ? in a deploy path", "POST", "/workflows/1/deploy/x%3F/..", "encoded_delimiter"},
	{"dot-dot", "GET", "/public/../workflows/1", "dot_segment"},
	{"trailing dot-dot", "GET", "/public/..", "dot_segment"},
	{"dot", "GET", "/public/./logo.png", "dot_segment"},
	{"trailing dot", "GET", "/workflows/1/.", "dot_segment"},
	{"encoded dots", "GET", "/public/%2e%2e/workflows/1", "encoded_delimiter"},
	{"encoded dots, upper case", "GET", "/public/%2E%2E/workflows/1", "encoded_delimiter"},
	{"encoded slash", "GET", "/public%2F..%2Fworkflows/1", "encoded_delimiter"},
	{"encoded slash, lower case", "GET", "/public%2f..%2fworkflows/1", "encoded_delimiter"},
	{"encoded percent", "GET", "/public/%252e%252e/admin", "encoded_delimiter"},
	{"encoded backslash", "GET", "/public/..%5cadmin", "encoded_delimiter"},
	{"encoded hash", "GET", "/public/x%23/../../admin", "encoded_delimiter"},
	{"encoded semicolon", "GET", "/public/x%3b/admin", "encoded_delimiter"},
	{"raw backslash", "GET", `/public\..\admin`, "backslash"},
	{"raw hash", "GET", "/public/x#/../../admin", "fragment"},
	{"path parameter", "GET", "/public/logo.png;jsessionid=1", "path_parameter"},
	{"path parameter before dot-dot", "GET", "/public;x/../admin", "path_parameter"},
	{"duplicate slash", "GET", "/public//logo.png", "duplicate_slash"},
	{"leading duplicate slash", "GET", "//public/logo.png", "duplicate_slash"},
	{"encoded NUL", "GET", "/public/logo%00.png", "control_byte"},
	{"encoded newline", "GET", "/public/%0a", "control_byte"},
	{"encoded DEL", "GET", "/public/%7f", "control_byte"},
	{"raw control byte", "GET", "/public/\x01logo", "control_byte"},
	{"invalid UTF-8", "GET", "/public/%ff.png", "invalid_utf8"},
	{"invalid UTF-8 sequence", "GET", "/public/%C3%28", "invalid_utf8"},
	{"bad escape", "GET", "/public/%zz", "bad_escape"},
	{"truncated escape", "GET", "/public/%4", "bad_escape"},
	{"absolute form", "GET", "http://evil.example/public/logo.png", "not_origin_form"},
}

// TestForwardAuthRefusesNonCanonicalPaths: the original URI is decoded
// once and a path that is not canonical is refused with 400 and a counted
// reason in every proxy mode, never normalized into another route.
func TestForwardAuthRefusesNonCanonicalPaths(t *testing.T) {
	e := newDecEnv(t, "")
	dana := userToken(t, e.kc, e.kc.Realm, e.kc.PublicClientID, "dana")
	for _, mode := range []string{"nginx", "traefik", "envoy"} {
		e.dec.ForwardAuth.Proxy = mode
		for _, tt := range nonCanonicalPaths {
			if mode == "envoy" && tt.reason == "not_origin_form" {
				continue // the envoy prefix always comes first on the request line
			}
			for _, token := range []string{"", dana} {
				req := forwardAuthRequest(mode, tt.method, tt.uri)
				if req == nil {
					continue // net/http refuses this request line before keybridge sees it
				}
				if token != "" {
					req.Header.Set("Authorization", "Bearer "+token)
				}
				before := testutil.ToFloat64(e.m.ForwardAuthRefused.WithLabelValues(tt.reason))
				rec := httptest.NewRecorder()
				e.h.ServeHTTP(rec, req)
				if rec.Code != http.StatusBadRequest {
					t.Errorf("%s %s (%q, token %v): %d, want 400: %s", mode, tt.name, tt.uri, token != "", rec.Code, rec.Body)
					continue
				}
				if got := testutil.ToFloat64(e.m.ForwardAuthRefused.WithLabelValues(tt.reason)); got != before+1 {
					t.Errorf("%s %s: keybridge_forward_auth_refused_total{reason=%q} %v, want %v", mode, tt.name, tt.reason, got, before+1)
				}
				for _, h := range []string{"X-Auth-User", "X-Auth-Tenant", "X-Auth-Roles"} {
					if _, ok := rec.Header()[h]; ok {
						t.Errorf("%s %s: a refusal carries %s", mode, tt.name, h)
					}
				}
			}
		}
	}
	// Two values of the proxy's header: which one the proxy meant is
	// unknowable (a client's own passed through beside the proxy's).
	for _, tt := range []struct{ mode, method, uri string }{{"nginx", "X-Original-Method", "X-Original-URI"}, {"traefik", "X-Forwarded-Method", "X-Forwarded-Uri"}} {
		e.dec.ForwardAuth.Proxy = tt.mode
		for _, h := range []map[string][]string{
			{tt.method: {"POST"}, tt.uri: {"/public/x", "/workflows/1/deploy"}},
			{tt.method: {"GET", "POST"}, tt.uri: {"/workflows/1/deploy"}},
		} {
			req := httptest.NewRequest("GET", "/v1/forward-auth", nil)
			for k, v := range h {
				req.Header[http.CanonicalHeaderKey(k)] = v
			}
			req.Header.Set("Authorization", "Bearer "+dana)
			before := testutil.ToFloat64(e.m.ForwardAuthRefused.WithLabelValues("duplicate_original"))
			rec := httptest.NewRecorder()
			e.h.ServeHTTP(rec, req)
			if rec.Code != 400 || testutil.ToFloat64(e.m.ForwardAuthRefused.WithLabelValues("duplicate_original")) != before+1 {
				t.Errorf("%s with %v: %d, want 400 counted as duplicate_original: %s", tt.mode, h, rec.Code, rec.Body)
			}
		}
	}
	// Canonical paths still decide as before; routes match case-sensitively
	// on the once-decoded path, and the query never takes part.
	accepted := []struct {
		name, method, uri, token string
		want                     int
	}{
		{"public", "GET", "/public/logo.png", "", 200},
		{"encoded space", "GET", "/public/a%20b.png", "", 200},
		{"encoded UTF-8", "GET", "/public/caf%C3%A9.png", "", 200},
		{"raw UTF-8", "GET", "/public/café.png", "", 200},
		{"query with dot-dot and encoded delimiters", "GET", "/workflows/1?next=/public/../x%3F%2F;a", dana, 200},
		{"query does not make a public path", "GET", "/workflows/1?/public/logo.png", "", 401},
		{"case-sensitive", "GET", "/Public/logo.png", "", 403},
		{"deploy", "POST", "/workflows/1/deploy", dana, 200},
	}
	for _, mode := range []string{"nginx", "traefik", "envoy"} {
		e.dec.ForwardAuth.Proxy = mode
		for _, tt := range accepted {
			req := forwardAuthRequest(mode, tt.method, tt.uri)
			if req == nil {
				t.Fatalf("%s %s: net/http refused %q", mode, tt.name, tt.uri)
			}
			if tt.token != "" {
				req.Header.Set("Authorization", "Bearer "+tt.token)
			}
			rec := httptest.NewRecorder()
			e.h.ServeHTTP(rec, req)
			if rec.Code != tt.want {
				t.Errorf("%s %s (%q): %d, want %d: %s", mode, tt.name, tt.uri, rec.Code, tt.want, rec.Body)
			}
		}
	}
}

func TestMatchRouteIsCaseSensitiveAndExact(t *testing.T) {
	routes := []config.Route{{Path: "/public/**", Public: true}, {Methods: []string{"POST"}, Path: "/workflows/*/deploy", AnyOf: []string{"workflows.deploy_prod"}}}
	for _, tt := range []struct {
		method, path string
		want         int // index of the route, -1 for none
	}{
		{"GET", "/public/x", 0},
		{"GET", "/public", 0},
		{"GET", "/PUBLIC/x", -1},
		{"POST", "/workflows/1/deploy", 1},
		{"post", "/workflows/1/deploy", 1},
		{"POST", "/workflows/1/Deploy", -1},
		{"POST", "/workflows/1/deploy/x", -1},
		{"POST", "/workflows/deploy", -1},
	} {
		r, ok := api.MatchRoute(routes, tt.method, tt.path)
		got := -1
		for i := range routes {
			if ok && r.Path == routes[i].Path {
				got = i
			}
		}
		if got != tt.want {
			t.Errorf("%s %s matched route %d, want %d", tt.method, tt.path, got, tt.want)
		}
	}
}

// TestForwardAuthIdentityHeadersAlwaysPresent: every 2xx answer carries
// every configured identity header, with an explicit empty value for
// none, so a proxy copying them always overwrites a client's own.
func TestForwardAuthIdentityHeadersAlwaysPresent(t *testing.T) {
	check := func(t *testing.T, h http.Handler, uri, token, wantUser, wantTenant, wantRoles string) {
		t.Helper()
		req := httptest.NewRequest("GET", "/v1/forward-auth", nil)
		req.Header.Set("X-Original-Method", "GET")
		req.Header.Set("X-Original-URI", uri)
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code != 200 {
			t.Fatalf("%s: %d %s", uri, rec.Code, rec.Body)
		}
		for name, want := range map[string]string{"X-Auth-User": wantUser, "X-Auth-Tenant": wantTenant, "X-Auth-Roles": wantRoles} {
			got, ok := rec.Header()[name]
			switch {
			case !ok:
				t.Errorf("%s: no %s header", uri, name)
			case len(got) != 1:
				t.Errorf("%s: %s %q, want one value", uri, name, got)
			case want == "*" && got[0] == "":
				t.Errorf("%s: %s is empty", uri, name)
			case want != "*" && got[0] != want:
				t.Errorf("%s: %s %q, want %q", uri, name, got[0], want)
			}
		}
	}
	t.Run("fastn", func(t *testing.T) {
		e := newDecEnv(t, "")
		dana := userToken(t, e.kc, e.kc.Realm, e.kc.PublicClientID, "dana")
		check(t, e.h, "/public/logo.png", "", "", "", "")
		check(t, e.h, "/workflows/1", dana, "*", "acme", `"Developer"`)
	})
	t.Run("no tenant and no roles", func(t *testing.T) {
		e := newDecEnvWith(t, "", mapping.Config{Preset: "fastn"})
		e.dec.ForwardAuth.Default = "authenticated"
		victor := userToken(t, e.kc, e.kc.Realm, e.kc.PublicClientID, "victor")
		check(t, e.h, "/anything", victor, "*", "", "")
		check(t, e.h, "/public/logo.png", "", "", "", "")
	})
	t.Run("endatix: Public and Authenticated", func(t *testing.T) {
		e := newDecEnvWith(t, "", mapping.Config{Preset: "endatix", Tenant: mapping.TenantSource{GroupPrefix: "/customers"}})
		e.dec.ForwardAuth.Default = "authenticated"
		victor := userToken(t, e.kc, e.kc.Realm, e.kc.PublicClientID, "victor")
		check(t, e.h, "/anything", victor, "*", "acme", `"Authenticated"`)
		check(t, e.h, "/public/logo.png", "", "", "", `"Public"`)
	})
}

func TestRolesHeaderIsAStructuredFieldList(t *testing.T) {
	for _, tt := range []struct {
		roles []string
		want  string
	}{
		{nil, ""},
		{[]string{"Viewer"}, `"Viewer"`},
		{[]string{"Viewer", "End User"}, `"Viewer", "End User"`},
		{[]string{"a,b", "c"}, `"a,b", "c"`},
		{[]string{`say "hi" \o/`}, `"say \"hi\" \\o/"`},
		{[]string{"Café"}, `%"Caf%c3%a9"`},
		{[]string{"100%", "tab\there"}, `"100%", %"tab%09here"`},
	} {
		if got := api.RolesHeader(tt.roles); got != tt.want {
			t.Errorf("%q: %s, want %s", tt.roles, got, tt.want)
		}
	}
}

// TestForwardAuthRateLimitsEachClientBehindATrustedProxy: behind a proxy
// in server.trusted_proxies each client has its own bucket, so one
// flooding client does not push the others into 429.
func TestForwardAuthRateLimitsEachClientBehindATrustedProxy(t *testing.T) {
	e := newDecEnv(t, "")
	var logs bytes.Buffer
	e.dec.Log = slog.New(slog.NewTextHandler(&logs, nil))
	e.dec.PerClient = &ratelimit.Limiter{Rate: 0.01, Burst: 3}
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	proxied := (&api.Server{Log: quiet, Metrics: e.m, Modules: []api.Module{e.dec}, TrustedProxies: []string{"192.0.2.1/32"}}).Handler()
	ask := func(h http.Handler, client string) *httptest.ResponseRecorder {
		req := httptest.NewRequest("GET", "/v1/forward-auth", nil) // from 192.0.2.1, the proxy
		req.Header.Set("X-Original-Method", "GET")
		req.Header.Set("X-Original-URI", "/public/logo.png")
		req.Header.Set("X-Forwarded-For", client)
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		return rec
	}
	// Behind nginx (the default proxy) a rate limit is a 403 naming it.
	isLimited := func(rec *httptest.ResponseRecorder) bool {
		return rec.Code == http.StatusForbidden && rec.Header().Get("X-Auth-Error") == "rate_limited"
	}
	limited := 0
	for range 10 {
		if isLimited(ask(proxied, "198.51.100.7")) {
			limited++
		}
	}
	if limited != 7 {
		t.Fatalf("the flooding client was rate-limited %d times, want 7", limited)
	}
	for _, client := range []string{"198.51.100.8", "2001:db8::1"} {
		if rec := ask(proxied, client); rec.Code != 200 {
			t.Errorf("client %s behind the same proxy: %d, want 200", client, rec.Code)
		}
	}
	// A client's own X-Forwarded-For, appended to by the proxy, does not
	// give it a fresh bucket: the address the proxy saw is the key.
	if rec := ask(proxied, "203.0.113.50, 198.51.100.7"); !isLimited(rec) {
		t.Errorf("a spoofed X-Forwarded-For escaped the flooding client's bucket: %d", rec.Code)
	}
	if logs.Len() != 0 {
		t.Errorf("warned behind a trusted proxy: %s", logs.String())
	}
	// Through a proxy that is not trusted, every client shares the proxy's
	// bucket: keybridge says so, once.
	untrusted := (&api.Server{Log: quiet, Metrics: e.m, Modules: []api.Module{e.dec}}).Handler()
	e.dec.PerClient = &ratelimit.Limiter{}
	for range 3 {
		ask(untrusted, "198.51.100.9")
	}
	if n := strings.Count(logs.String(), "server.trusted_proxies"); n != 1 {
		t.Errorf("warnings naming server.trusted_proxies: %d, want 1:\n%s", n, logs.String())
	}
}

// TestForwardAuthRateLimitBehindNginxIsADeniedAnswer: nginx auth_request
// turns any status but 2xx, 401 and 403 into 500, so behind nginx a rate
// limit answers 403 with X-Auth-Error: rate_limited and Retry-After, which
// the documented error_page maps to 429; other proxies pass 429 as is.
func TestForwardAuthRateLimitBehindNginxIsADeniedAnswer(t *testing.T) {
	e := newDecEnv(t, "")
	e.dec.PerClient = &ratelimit.Limiter{Rate: 0.01, Burst: 1}
	for _, tt := range []struct {
		mode string
		want int
	}{{"nginx", 403}, {"traefik", 429}, {"envoy", 429}} {
		e.dec.ForwardAuth.Proxy = tt.mode
		var rec *httptest.ResponseRecorder
		for range 2 {
			req := forwardAuthRequest(tt.mode, "GET", "/public/logo.png")
			req.RemoteAddr = "198.51.100." + map[string]string{"nginx": "1", "traefik": "2", "envoy": "3"}[tt.mode] + ":5000"
			rec = httptest.NewRecorder()
			e.h.ServeHTTP(rec, req)
		}
		if rec.Code != tt.want || rec.Header().Get("Retry-After") == "" {
			t.Errorf("%s: %d (Retry-After %q), want %d", tt.mode, rec.Code, rec.Header().Get("Retry-After"), tt.want)
		}
		if tt.mode == "nginx" && rec.Header().Get("X-Auth-Error") != "rate_limited" {
			t.Errorf("nginx: X-Auth-Error %q, want rate_limited", rec.Header().Get("X-Auth-Error"))
		}
		if _, ok := rec.Header()["X-Auth-User"]; ok {
			t.Errorf("%s: a refusal carries identity headers", tt.mode)
		}
	}
	// /v1/check is not behind a proxy: its rate limit stays 429.
	e.dec.ForwardAuth.Proxy = "nginx"
	var rec *httptest.ResponseRecorder
	for range 2 {
		req := httptest.NewRequest("POST", "/v1/check", strings.NewReader(`{"permission":"workflows.read"}`))
		req.RemoteAddr = "198.51.100.4:5000"
		rec = httptest.NewRecorder()
		e.h.ServeHTTP(rec, req)
	}
	if rec.Code != 429 {
		t.Errorf("/v1/check rate limit: %d, want 429", rec.Code)
	}
}

// TestPublicPseudoRoleForAnonymousCallers: with check.allow_anonymous and
// forward_auth.allow_anonymous, a request without any credentials is
// evaluated as the Public pseudo role; without them it is 401. An invalid
// token is 401 either way, never downgraded to Public.
func TestPublicPseudoRoleForAnonymousCallers(t *testing.T) {
	e := newDecEnvWith(t, "", mapping.Config{Preset: "endatix", Tenant: mapping.TenantSource{GroupPrefix: "/customers"}})
	e.dec.ForwardAuth.Routes = []config.Route{{Path: "/forms/**", AnyOf: []string{"forms.view"}}, {Path: "/me", AnyOf: nil}}
	victor := userToken(t, e.kc, e.kc.Realm, e.kc.PublicClientID, "victor")
	check := func(auth string) (int, map[string]any) {
		req := httptest.NewRequest("POST", "/v1/check", strings.NewReader(`{"permission":"access.authenticated"}`))
		if auth != "" {
			req.Header.Set("Authorization", auth)
		}
		rec := httptest.NewRecorder()
		e.h.ServeHTTP(rec, req)
		var out map[string]any
		_ = json.Unmarshal(rec.Body.Bytes(), &out)
		return rec.Code, out
	}
	forward := func(uri, auth string) *httptest.ResponseRecorder {
		req := httptest.NewRequest("GET", "/v1/forward-auth", nil)
		req.Header.Set("X-Original-Method", "GET")
		req.Header.Set("X-Original-URI", uri)
		if auth != "" {
			req.Header.Set("Authorization", auth)
		}
		rec := httptest.NewRecorder()
		e.h.ServeHTTP(rec, req)
		return rec
	}
	invalid := []string{"Bearer not-a-token", "Bearer " + victor[:len(victor)-4] + "AAAA", "Basic YWxpY2U6eA==", "Bearer "}

	// Off (the default): no token is 401.
	if code, out := check(""); code != 401 {
		t.Errorf("check without a token, allow_anonymous off: %d %v", code, out)
	}
	if rec := forward("/forms/1", ""); rec.Code != 401 || !strings.Contains(rec.Body.String(), "bearer token is required") {
		t.Errorf("forward-auth without a token, allow_anonymous off: %d %s", rec.Code, rec.Body)
	}

	e.dec.AllowAnonymousChecks = true
	e.dec.ForwardAuth.AllowAnonymous = true
	code, out := check("")
	sess, _ := out["session"].(map[string]any)
	if code != 200 || out["allowed"] != false || sess["app.role"] != "Public" || sess["app.user_id"] != "" || !strings.Contains(out["reason"].(string), "access.authenticated") {
		t.Errorf("check without a token, allow_anonymous on: %d %v", code, out)
	}
	if code, out := check("Bearer " + victor); code != 200 || out["allowed"] != true {
		t.Errorf("check with a token: %d %v", code, out)
	}
	// Public holds nothing in the preset: a route needing a permission still
	// asks for a token, and says that Public was evaluated.
	if rec := forward("/forms/1", ""); rec.Code != 401 || !strings.Contains(rec.Body.String(), "Public") {
		t.Errorf("forward-auth any_of route as Public: %d %s", rec.Code, rec.Body)
	}
	// A route for any authenticated caller is never Public's.
	if rec := forward("/me", ""); rec.Code != 401 {
		t.Errorf("forward-auth authenticated route without a token: %d %s", rec.Code, rec.Body)
	}
	for _, auth := range invalid {
		if code, out := check(auth); code != 401 {
			t.Errorf("check with %q, allow_anonymous on: %d %v", auth, code, out)
		}
		if rec := forward("/forms/1", auth); rec.Code != 401 || strings.Contains(rec.Body.String(), "Public") {
			t.Errorf("forward-auth with %q, allow_anonymous on: %d %s", auth, rec.Code, rec.Body)
		}
	}
}
