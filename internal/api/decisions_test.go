package api_test

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/keybridge/keybridge/config"
	"github.com/keybridge/keybridge/internal/api"
	"github.com/keybridge/keybridge/internal/auth"
	"github.com/keybridge/keybridge/internal/directory"
	"github.com/keybridge/keybridge/internal/identity"
	"github.com/keybridge/keybridge/internal/metrics"
	"github.com/keybridge/keybridge/internal/ratelimit"
	"github.com/keybridge/keybridge/internal/store"
	"github.com/keybridge/keybridge/internal/testenv"
	"github.com/keybridge/keybridge/mapping"
	ksync "github.com/keybridge/keybridge/sync"
)

type decEnv struct {
	kc       testenv.Keycloak
	st       *store.Store
	dir      *directory.Directory
	svc      *ksync.Service
	m        *metrics.Metrics
	h        http.Handler
	dec      *api.Decisions
	verifier *auth.Verifier
	now      time.Time
}

func newDecEnv(t testing.TB, jwksURL string) *decEnv {
	t.Helper()
	return newDecEnvWith(t, jwksURL, demoRules)
}

// newDecEnvWith syncs the demo realm under another mapping.
func newDecEnvWith(t testing.TB, jwksURL string, rules mapping.Config) *decEnv {
	t.Helper()
	return newDecEnvIn(t, testenv.RequireKeycloak(t), jwksURL, rules)
}

// newDecEnvIn syncs the realm kc names (a throwaway one, say) under a mapping.
func newDecEnvIn(t testing.TB, kc testenv.Keycloak, jwksURL string, rules mapping.Config) *decEnv {
	t.Helper()
	db := testenv.NewDatabase(t)
	ctx := context.Background()
	st, err := store.Open(ctx, db.AppURL, db.SyncURL, 8)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(st.Close)
	engine, err := mapping.New(rules)
	if err != nil {
		t.Fatal(err)
	}
	m := metrics.New("test", "test")
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	e := &decEnv{kc: kc, st: st, m: m}
	e.svc = &ksync.Service{KC: ksync.NewKeycloak(ksync.KeycloakOptions{URL: kc.URL, Realm: kc.Realm, ClientID: kc.ClientID, ClientSecret: kc.ClientSecret, Timeout: 5 * time.Second, Retries: 1}),
		Store: st, Engine: func() *mapping.Engine { return engine }, Log: log, Mode: "full", MaxRemovalShare: 0.5, Timeout: time.Minute,
		EventsInterval: 200 * time.Millisecond, EventsOverlap: 10 * time.Second}
	if _, err := e.svc.Run(ctx, ksync.RunOptions{Trigger: "cli"}); err != nil {
		t.Fatal(err)
	}
	e.dir = &directory.Directory{Pool: st.SysPool(), Base: engine, Log: log, Interval: time.Minute}
	if err := e.dir.Load(ctx); err != nil {
		t.Fatal(err)
	}
	opt := auth.Options{Issuer: kc.URL + "/realms/" + kc.Realm, Audiences: []string{"keybridge"}, Algorithms: []string{"RS256"},
		Leeway: 5 * time.Second, MaxTokenBytes: 16 << 10, RefreshInterval: 30 * time.Second, JWKSURL: jwksURL,
		Now: func() time.Time {
			if !e.now.IsZero() {
				return e.now
			}
			return time.Now()
		}}
	e.verifier, err = auth.NewVerifier(ctx, opt)
	if err != nil {
		t.Fatal(err)
	}
	res := &identity.Resolver{Verifier: &auth.Cached{Next: e.verifier, Size: 1000, Now: opt.Now}, Dir: e.dir, MaxCache: 100,
		OnRefuse: func(ctx context.Context, r auth.Reason, err error) { m.TokenFailures.WithLabelValues(string(r)).Inc() }}
	dec := &api.Decisions{Log: log, Metrics: m, Identify: res, Engine: e.dir.Engine, Audit: &testenv.AuditLog{},
		Clients: []config.Client{{ID: "api", Secret: "api-secret"}}, MaxBatch: 100,
		ForwardAuth: config.ForwardAuth{Default: "deny", Headers: config.ForwardHeaders{User: "X-Auth-User", Tenant: "X-Auth-Tenant", Roles: "X-Auth-Roles"},
			Routes: []config.Route{{Path: "/public/**", Public: true}, {Methods: []string{"GET"}, Path: "/workflows/**", AnyOf: []string{"workflows.read"}},
				{Methods: []string{"POST"}, Path: "/workflows/*/deploy", AnyOf: []string{"workflows.deploy_prod"}},
				{Methods: []string{"POST", "PUT", "DELETE"}, Path: "/workflows/**", AnyOf: []string{"workflows.update"}}}},
		PerSubject: &ratelimit.Limiter{}, PerClient: &ratelimit.Limiter{}}
	e.dec = dec
	e.h = (&api.Server{Log: log, Metrics: m, Modules: []api.Module{dec}}).Handler()
	return e
}

var tokenCache = map[string]string{}

func userToken(t testing.TB, kc testenv.Keycloak, realm, client, user string) string {
	t.Helper()
	key := realm + "/" + client + "/" + user
	if tok, ok := tokenCache[key]; ok {
		return tok
	}
	tokenCache[key] = kc.Token(t, realm, client, user, kc.UserPassword)
	return tokenCache[key]
}

func (e *decEnv) introspect(t *testing.T, token string) map[string]any {
	t.Helper()
	req := httptest.NewRequest("POST", "/oauth2/introspect", strings.NewReader(url.Values{"token": {token}}.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.SetBasicAuth("api", "api-secret")
	rec := httptest.NewRecorder()
	e.h.ServeHTTP(rec, req)
	if rec.Code != 200 {
		t.Fatalf("introspect: %d %s", rec.Code, rec.Body)
	}
	var out map[string]any
	_ = json.Unmarshal(rec.Body.Bytes(), &out)
	if out["active"] == false && strings.TrimSpace(rec.Body.String()) != `{"active":false}` {
		t.Fatalf("inactive answer is not exactly {\"active\":false}: %s", rec.Body)
	}
	return out
}

func TestIntrospectionOfEveryDemoUser(t *testing.T) {
	e := newDecEnv(t, "")
	want := map[string]struct {
		role   string
		tenant string
		count  int
	}{
		"alice": {"Owner", "acme", 39}, "adam": {"Admin", "acme", 39}, "dana": {"Developer", "acme", 34}, "oscar": {"Operator", "acme", 18},
		"victor": {"Viewer", "acme", 7}, "erin": {"End User", "acme", 9},
		"gina": {"Owner", "globex", 39}, "gus": {"Developer", "globex", 34}, "ella": {"End User", "globex", 9},
	}
	for user, w := range want {
		t.Run(user, func(t *testing.T) {
			out := e.introspect(t, userToken(t, e.kc, e.kc.Realm, e.kc.PublicClientID, user))
			roles, _ := out["roles"].([]any)
			perms, _ := out["permissions"].([]any)
			if out["active"] != true || out["tenant_id"] != w.tenant || len(roles) == 0 || roles[0] != w.role || len(perms) != w.count {
				t.Errorf("%s: %v", user, out)
			}
			for _, k := range []string{"sub", "exp", "iat", "iss", "aud", "client_id", "username", "token_type", "jti", "scope"} {
				if _, ok := out[k]; !ok {
					t.Errorf("%s: RFC 7662 field %s missing", user, k)
				}
			}
		})
	}
	if code := httptest.NewRecorder(); true {
		req := httptest.NewRequest("POST", "/oauth2/introspect", strings.NewReader("token=x"))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		e.h.ServeHTTP(code, req)
		if code.Code != 401 {
			t.Errorf("unauthenticated introspection caller: %d", code.Code)
		}
	}
}

// A tenant admin may introspect with its own token, but only tokens of its
// own tenant: another tenant's token is inactive to it.
func TestIntrospectionByATenantAdminStaysInItsTenant(t *testing.T) {
	e := newDecEnv(t, "")
	adam := userToken(t, e.kc, e.kc.Realm, e.kc.PublicClientID, "adam")
	as := func(bearer, token string) map[string]any {
		req := httptest.NewRequest("POST", "/oauth2/introspect", strings.NewReader(url.Values{"token": {token}}.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.Header.Set("Authorization", "Bearer "+bearer)
		rec := httptest.NewRecorder()
		e.h.ServeHTTP(rec, req)
		var out map[string]any
		if err := json.Unmarshal(rec.Body.Bytes(), &out); err != nil || rec.Code != 200 {
			t.Fatalf("introspect: %d %s", rec.Code, rec.Body)
		}
		return out
	}
	if out := as(adam, userToken(t, e.kc, e.kc.Realm, e.kc.PublicClientID, "dana")); out["active"] != true || out["tenant_id"] != "acme" {
		t.Errorf("acme admin introspecting an acme token: %v", out)
	}
	if out := as(adam, userToken(t, e.kc, e.kc.Realm, e.kc.PublicClientID, "gina")); len(out) != 1 || out["active"] != false {
		t.Errorf("acme admin introspecting a globex token learned %v", out)
	}
	// The configured client still sees every tenant.
	if out := e.introspect(t, userToken(t, e.kc, e.kc.Realm, e.kc.PublicClientID, "gina")); out["tenant_id"] != "globex" {
		t.Errorf("client introspecting a globex token: %v", out)
	}
}

// TestIntrospectionFollowsGrantChanges: the encoded answer kept per
// resolved token is replaced with the resolution when the directory changes.
func TestIntrospectionFollowsGrantChanges(t *testing.T) {
	e := newDecEnv(t, "")
	tok := userToken(t, e.kc, e.kc.Realm, e.kc.PublicClientID, "dana")
	perms := func() []any {
		out := e.introspect(t, tok)
		p, _ := out["permissions"].([]any)
		return p
	}
	if n := len(perms()); n != 34 {
		t.Fatalf("dana starts with %d permissions, want 34", n)
	}
	if n := len(perms()); n != 34 { // the kept answer
		t.Fatalf("second answer has %d permissions, want 34", n)
	}
	ctx := context.Background()
	sub := e.introspect(t, tok)["sub"].(string)
	if _, err := e.st.SysPool().Exec(ctx, `INSERT INTO role_assignments (person_id, permission, tenant_id, source, rule_ref)
		VALUES ($1, 'billing.manage', 'acme', 'local', 'test')`, sub); err != nil {
		t.Fatal(err)
	}
	if err := e.dir.Load(ctx); err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(perms(), any("billing.manage")) {
		t.Fatalf("granted permission missing after the directory changed: %v", perms())
	}
	if _, err := e.st.SysPool().Exec(ctx, `DELETE FROM role_assignments WHERE person_id = $1 AND rule_ref = 'test'`, sub); err != nil {
		t.Fatal(err)
	}
	if err := e.dir.Load(ctx); err != nil {
		t.Fatal(err)
	}
	if p := perms(); len(p) != 34 || slices.Contains(p, any("billing.manage")) {
		t.Fatalf("revoked permission still answered: %v", p)
	}
}

func b64(v any) string {
	b, _ := json.Marshal(v)
	return base64.RawURLEncoding.EncodeToString(b)
}

func TestBadTokensIntrospectInactiveWithAReasonInMetrics(t *testing.T) {
	e := newDecEnv(t, "")
	good := userToken(t, e.kc, e.kc.Realm, e.kc.PublicClientID, "dana")
	parts := strings.Split(good, ".")
	var claims map[string]any
	raw, _ := base64.RawURLEncoding.DecodeString(parts[1])
	_ = json.Unmarshal(raw, &claims)
	hdr, _ := base64.RawURLEncoding.DecodeString(parts[0])
	var header map[string]any
	_ = json.Unmarshal(hdr, &header)

	// HS256 signed with the realm's RSA public key as the HMAC secret.
	res, err := http.Get(e.kc.URL + "/realms/" + e.kc.Realm + "/protocol/openid-connect/certs")
	if err != nil {
		t.Fatal(err)
	}
	pub, _ := io.ReadAll(res.Body)
	res.Body.Close()
	hsHeader := b64(map[string]any{"alg": "HS256", "typ": "JWT", "kid": header["kid"]})
	mac := hmac.New(sha256.New, pub)
	mac.Write([]byte(hsHeader + "." + parts[1]))
	hs256 := hsHeader + "." + parts[1] + "." + base64.RawURLEncoding.EncodeToString(mac.Sum(nil))

	flipped := []byte(good)
	flipped[len(parts[0])+10] ^= 1

	cases := []struct {
		name   string
		token  string
		reason string
	}{
		{"one byte altered", string(flipped), ""},
		{"alg none", b64(map[string]any{"alg": "none", "typ": "JWT"}) + "." + parts[1] + ".", "algorithm"},
		{"HS256 with the public key", hs256, "algorithm"},
		{"another audience", userToken(t, e.kc, e.kc.Realm, "admin-cli", "dana"), "audience"},
		{"another realm", userToken(t, e.kc, "other", "fastn-app", "mallory"), "unknown_kid"},
		{"oversize", good + strings.Repeat("A", 20000), "oversize"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var before float64
			if c.reason != "" {
				before = testutil.ToFloat64(e.m.TokenFailures.WithLabelValues(c.reason))
			}
			if out := e.introspect(t, c.token); out["active"] != false {
				t.Fatalf("accepted: %v", out)
			}
			if c.reason != "" && testutil.ToFloat64(e.m.TokenFailures.WithLabelValues(c.reason)) != before+1 {
				t.Errorf("reason %s not counted", c.reason)
			}
		})
	}
	t.Run("expired", func(t *testing.T) {
		defer func() { e.now = time.Time{} }()
		// Introspected once (and so cached), the token stays active through
		// the 5 s leeway after exp, exactly as an uncached verification would.
		if out := e.introspect(t, good); out["active"] != true {
			t.Fatalf("fresh token inactive: %v", out)
		}
		e.now = time.Unix(int64(claims["exp"].(float64)), 0).Add(3 * time.Second)
		if out := e.introspect(t, good); out["active"] != true {
			t.Fatalf("cached token refused inside the leeway: %v", out)
		}
		e.now = time.Now().Add(10 * time.Minute)
		if out := e.introspect(t, good); out["active"] != false {
			t.Fatalf("expired token accepted")
		}
		if testutil.ToFloat64(e.m.TokenFailures.WithLabelValues("expired")) < 1 {
			t.Error("expired not counted")
		}
	})
}

func TestChecksAnswerInOrderWithSession(t *testing.T) {
	e := newDecEnv(t, "")
	tok := userToken(t, e.kc, e.kc.Realm, e.kc.PublicClientID, "dana")
	do := func(body string) (int, map[string]any) {
		req := httptest.NewRequest("POST", "/v1/check", strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+tok)
		rec := httptest.NewRecorder()
		e.h.ServeHTTP(rec, req)
		var out map[string]any
		_ = json.Unmarshal(rec.Body.Bytes(), &out)
		return rec.Code, out
	}
	code, out := do(`{"permission":"workflows.deploy_prod","resource":{"type":"workflow","id":"w1","tenant":"acme"}}`)
	sess, _ := out["session"].(map[string]any)
	if code != 200 || out["allowed"] != true || sess["app.tenant_id"] != "acme" || sess["app.role"] != "Developer" || sess["app.user_id"] == "" {
		t.Fatalf("single check: %d %v", code, out)
	}
	code, out = do(`{"checks":[{"permission":"billing.manage"},{"any_of":["settings.manage","workflows.read"]},{"permission":"workflows.read","resource":{"tenant":"globex"}}]}`)
	results, _ := out["results"].([]any)
	if code != 200 || len(results) != 3 {
		t.Fatalf("batch: %d %v", code, out)
	}
	got := []bool{results[0].(map[string]any)["allowed"].(bool), results[1].(map[string]any)["allowed"].(bool), results[2].(map[string]any)["allowed"].(bool)}
	if !slices.Equal(got, []bool{false, true, false}) {
		t.Errorf("batch answers %v, want [false true false]", got)
	}
	big := `{"checks":[` + strings.TrimSuffix(strings.Repeat(`{"permission":"workflows.read"},`, 101), ",") + `]}`
	if code, _ := do(big); code != 400 {
		t.Errorf("101 checks: %d, want 400", code)
	}
	if code, _ := do(`{"permission":"x","bogus":1}`); code != 400 {
		t.Errorf("unknown field: %d", code)
	}
}

func TestForwardAuthPaths(t *testing.T) {
	e := newDecEnv(t, "")
	dana := userToken(t, e.kc, e.kc.Realm, e.kc.PublicClientID, "dana")
	victor := userToken(t, e.kc, e.kc.Realm, e.kc.PublicClientID, "victor")
	tests := []struct {
		name, method, uri, token string
		want                     int
		client                   map[string]string // headers the client sent, which nginx passes through
	}{
		{"public", "GET", "/public/logo.png", "", 200, nil},
		{"no token", "GET", "/workflows/1", "", 401, nil},
		{"reader reads", "GET", "/workflows/1", victor, 200, nil},
		{"viewer cannot deploy", "POST", "/workflows/1/deploy", victor, 403, nil},
		{"developer deploys", "POST", "/workflows/1/deploy", dana, 200, nil},
		{"unmapped route denied", "GET", "/admin", dana, 403, nil},
		{"dot-dot is refused, not resolved", "GET", "/public/../workflows/1", "", 400, nil},
		{"a client's X-Forwarded-Uri is not the URI checked", "POST", "/workflows/1/deploy", "", 401, map[string]string{"X-Forwarded-Uri": "/public/logo.png"}},
		{"a client's X-Forwarded-Method is not the method checked", "POST", "/workflows/1/deploy", victor, 403, map[string]string{"X-Forwarded-Method": "GET"}},
		{"no original URI from the proxy", "GET", "", dana, 400, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req := httptest.NewRequest("GET", "/v1/forward-auth", nil)
			req.Header.Set("X-Original-Method", tt.method)
			if tt.uri != "" {
				req.Header.Set("X-Original-URI", tt.uri)
			}
			for k, v := range tt.client {
				req.Header.Set(k, v)
			}
			if tt.token != "" {
				req.Header.Set("Authorization", "Bearer "+tt.token)
			}
			rec := httptest.NewRecorder()
			e.h.ServeHTTP(rec, req)
			if rec.Code != tt.want {
				t.Fatalf("%d, want %d: %s", rec.Code, tt.want, rec.Body)
			}
			if tt.want == 200 && tt.token != "" && (rec.Header().Get("X-Auth-Tenant") != "acme" || rec.Header().Get("X-Auth-User") == "") {
				t.Errorf("identity headers: %v", rec.Header())
			}
		})
	}
	// With audit.allowed_checks, an allowed forward-auth decision is audited
	// too, as /v1/check's are.
	e.dec.AuditAllow = true
	log := e.dec.Audit.(*testenv.AuditLog)
	before := len(log.Entries())
	req := httptest.NewRequest("GET", "/v1/forward-auth", nil)
	req.Header.Set("X-Original-Method", "POST")
	req.Header.Set("X-Original-URI", "/workflows/1/deploy")
	req.Header.Set("Authorization", "Bearer "+dana)
	e.h.ServeHTTP(httptest.NewRecorder(), req)
	if es := log.Entries(); len(es) != before+1 || es[len(es)-1].Outcome != "success" || es[len(es)-1].Action != "forward_auth.workflows.deploy_prod" {
		t.Errorf("allowed forward-auth decision not audited: %+v", es[before:])
	}
	e.dec.AuditAllow = false
	// Only Envoy sends the original path after the prefix; behind nginx a
	// path there is refused rather than taken as the request to check.
	if rec := httptest.NewRecorder(); true {
		e.h.ServeHTTP(rec, httptest.NewRequest("GET", "/v1/forward-auth/public/logo.png", nil))
		if rec.Code != 404 {
			t.Errorf("nginx mode, a path after the prefix: %d, want 404", rec.Code)
		}
	}
	e.dec.ForwardAuth.Proxy = "envoy"
	for _, tt := range []struct {
		method, path, token string
		want                int
	}{
		{"GET", "/v1/forward-auth/public/logo.png", "", 200},
		{"POST", "/v1/forward-auth/workflows/1/deploy", victor, 403},
		{"POST", "/v1/forward-auth/workflows/1/deploy", dana, 200},
		{"GET", "/v1/forward-auth/workflows/1?x=1", "", 401},
	} {
		req := httptest.NewRequest(tt.method, tt.path, nil)
		req.Header.Set("X-Original-URI", "/public/logo.png") // ignored behind Envoy
		if tt.token != "" {
			req.Header.Set("Authorization", "Bearer "+tt.token)
		}
		rec := httptest.NewRecorder()
		e.h.ServeHTTP(rec, req)
		if rec.Code != tt.want {
			t.Errorf("envoy %s %s: %d, want %d: %s", tt.method, tt.path, rec.Code, tt.want, rec.Body)
		}
	}
	// Behind Traefik the pair is X-Forwarded-Method / X-Forwarded-Uri, and
	// nginx's headers are the ones a client could send.
	e.dec.ForwardAuth.Proxy = "traefik"
	for _, tt := range []struct {
		name    string
		headers map[string]string
		want    int
	}{
		{"traefik: viewer cannot deploy", map[string]string{"X-Forwarded-Method": "POST", "X-Forwarded-Uri": "/workflows/1/deploy"}, 403},
		{"traefik: a client's X-Original-URI is ignored", map[string]string{"X-Forwarded-Method": "POST", "X-Forwarded-Uri": "/workflows/1/deploy", "X-Original-URI": "/public/x", "X-Original-Method": "GET"}, 403},
		{"traefik: reader reads", map[string]string{"X-Forwarded-Method": "GET", "X-Forwarded-Uri": "/workflows/1"}, 200},
	} {
		req := httptest.NewRequest("GET", "/v1/forward-auth", nil)
		for k, v := range tt.headers {
			req.Header.Set(k, v)
		}
		req.Header.Set("Authorization", "Bearer "+victor)
		rec := httptest.NewRecorder()
		e.h.ServeHTTP(rec, req)
		if rec.Code != tt.want {
			t.Errorf("%s: %d, want %d: %s", tt.name, rec.Code, tt.want, rec.Body)
		}
	}
}

func TestKeycloakDownTokensStillVerify(t *testing.T) {
	kc := testenv.RequireKeycloak(t)
	target, _ := url.Parse(kc.URL)
	proxy := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		r.URL.Scheme, r.URL.Host, r.Host = target.Scheme, target.Host, target.Host
		res, err := http.DefaultTransport.RoundTrip(r)
		if err != nil {
			w.WriteHeader(502)
			return
		}
		defer res.Body.Close()
		w.WriteHeader(res.StatusCode)
		_, _ = io.Copy(w, res.Body)
	}))
	e := newDecEnv(t, proxy.URL+"/realms/"+kc.Realm+"/protocol/openid-connect/certs")
	tok := userToken(t, kc, kc.Realm, kc.PublicClientID, "alice")
	proxy.Close() // Keycloak is now unreachable for keybridge
	if out := e.introspect(t, tok); out["active"] != true {
		t.Fatalf("valid token inactive while Keycloak is down: %v", out)
	}
}

func TestDisabledUserTokenTurnsInactive(t *testing.T) {
	e := newDecEnv(t, "")
	a := testenv.NewAdmin(t, e.kc)
	tok := userToken(t, e.kc, e.kc.Realm, e.kc.PublicClientID, "ella")
	if out := e.introspect(t, tok); out["active"] != true {
		t.Fatalf("ella inactive before: %v", out)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() { _ = e.dir.Run(ctx) }()
	e.svc.EventsEnabled = true
	e.svc.Schedule = "@every 1h"
	e.svc.LeaderRetry = 200 * time.Millisecond
	go func() { _ = e.svc.Loop(ctx) }()
	for i := 0; i < 100 && !e.svc.IsLeader(); i++ {
		time.Sleep(50 * time.Millisecond)
	}
	time.Sleep(500 * time.Millisecond)
	id := setEnabled(a, "ella", false)
	t.Cleanup(func() { setEnabledID(a, id, true) })
	start := time.Now()
	for time.Since(start) < 10*time.Second {
		if out := e.introspect(t, tok); out["active"] == false {
			t.Logf("disabled user's token inactive after %s (event poll interval 200ms)", time.Since(start))
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatal("token of a disabled user still active after 10s")
}

// setEnabled turns a demo user on or off in Keycloak and returns their id.
func setEnabled(a *testenv.Admin, user string, on bool) string {
	var us []map[string]any
	a.Do("GET", "/users?exact=true&username="+user, nil, &us)
	id := us[0]["id"].(string)
	setEnabledID(a, id, on)
	return id
}

func setEnabledID(a *testenv.Admin, id string, on bool) {
	var u map[string]any
	a.Do("GET", "/users/"+id, nil, &u)
	u["enabled"] = on
	a.Do("PUT", "/users/"+id, u, nil)
}
