package main

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/keybridge/keybridge/config"
	"github.com/keybridge/keybridge/internal/testenv"
	"github.com/keybridge/keybridge/mapping"
)

// sessionsRealm is a throwaway realm for tests that end sessions and push
// not-befores: user and admin events saved (admin events with details),
// two public clients whose tokens name keybridge in aud, four users.
func sessionsRealm(t *testing.T, kc testenv.Keycloak) testenv.Keycloak {
	t.Helper()
	client := func(id string) map[string]any {
		return map[string]any{"clientId": id, "publicClient": true, "directAccessGrantsEnabled": true, "standardFlowEnabled": false,
			"protocolMappers": []any{map[string]any{"name": "audience keybridge", "protocol": "openid-connect", "protocolMapper": "oidc-audience-mapper",
				"config": map[string]any{"included.custom.audience": "keybridge", "access.token.claim": "true", "introspection.token.claim": "true"}}}}
	}
	var users []any
	for _, u := range []string{"alice", "bob", "carol", "dave"} {
		users = append(users, map[string]any{"username": u, "enabled": true, "email": u + "@example.test", "firstName": u, "lastName": "Test",
			"credentials": []any{map[string]any{"type": "password", "value": kc.UserPassword, "temporary": false}}})
	}
	return testenv.NewRealm(t, kc, nil, map[string]any{
		"eventsEnabled": true, "enabledEventTypes": []string{"LOGIN", "LOGOUT", "LOGOUT_ERROR"},
		"adminEventsEnabled": true, "adminEventsDetailsEnabled": true,
		"clients": []any{client("app"), client("app2")}, "users": users,
	})
}

// sessionsProbe asks the daemon and Keycloak about tokens.
type sessionsProbe struct {
	t     *testing.T
	realm testenv.Keycloak
	base  string
}

type tokens struct{ access, refresh, sid string }

func (p sessionsProbe) login(user, client string) tokens {
	p.t.Helper()
	res, err := http.PostForm(p.realm.URL+"/realms/"+p.realm.Realm+"/protocol/openid-connect/token",
		url.Values{"grant_type": {"password"}, "client_id": {client}, "username": {user}, "password": {p.realm.UserPassword}})
	if err != nil {
		p.t.Fatal(err)
	}
	defer res.Body.Close()
	var out struct {
		Access  string `json:"access_token"`
		Refresh string `json:"refresh_token"`
	}
	if err := json.NewDecoder(res.Body).Decode(&out); err != nil || out.Access == "" {
		p.t.Fatalf("login %s/%s: %d %v", user, client, res.StatusCode, err)
	}
	var claims struct {
		Sid string `json:"sid"`
	}
	parts := strings.Split(out.Access, ".")
	payload, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil || json.Unmarshal(payload, &claims) != nil || claims.Sid == "" {
		p.t.Fatalf("login %s/%s: no sid in the access token (%v)", user, client, err)
	}
	return tokens{out.Access, out.Refresh, claims.Sid}
}

// active is keybridge's introspection; an inactive answer must be exactly
// {"active":false}.
func (p sessionsProbe) active(tok string) bool {
	p.t.Helper()
	req, _ := http.NewRequest("POST", p.base+"/oauth2/introspect", strings.NewReader(url.Values{"token": {tok}}.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.SetBasicAuth("demo-api", "demo-api-secret")
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		p.t.Fatal(err)
	}
	defer res.Body.Close()
	body, _ := io.ReadAll(res.Body)
	if res.StatusCode != http.StatusOK {
		p.t.Fatalf("introspect: %d %s", res.StatusCode, body)
	}
	if strings.TrimSpace(string(body)) == `{"active":false}` {
		return false
	}
	var out struct {
		Active bool `json:"active"`
	}
	if err := json.Unmarshal(body, &out); err != nil || !out.Active {
		p.t.Fatalf("introspect answered %s", body)
	}
	return true
}

// keycloakActive is Keycloak's own introspection, for parity.
func (p sessionsProbe) keycloakActive(tok string) bool {
	p.t.Helper()
	req, _ := http.NewRequest("POST", p.realm.URL+"/realms/"+p.realm.Realm+"/protocol/openid-connect/token/introspect",
		strings.NewReader(url.Values{"token": {tok}}.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.SetBasicAuth(p.realm.ClientID, p.realm.ClientSecret)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		p.t.Fatal(err)
	}
	defer res.Body.Close()
	var out struct {
		Active bool `json:"active"`
	}
	if err := json.NewDecoder(res.Body).Decode(&out); err != nil {
		p.t.Fatalf("keycloak introspect: %d %v", res.StatusCode, err)
	}
	return out.Active
}

// statuses are /v1/check's and forward-auth's answers to tok.
func (p sessionsProbe) statuses(tok string) (check, forward int) {
	p.t.Helper()
	do := func(req *http.Request) int {
		req.Header.Set("Authorization", "Bearer "+tok)
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			p.t.Fatal(err)
		}
		res.Body.Close()
		return res.StatusCode
	}
	req, _ := http.NewRequest("POST", p.base+"/v1/check", strings.NewReader(`{"permission":"workflows.read"}`))
	req.Header.Set("Content-Type", "application/json")
	check = do(req)
	req, _ = http.NewRequest("GET", p.base+"/v1/forward-auth", nil)
	req.Header.Set("X-Original-Method", "GET")
	req.Header.Set("X-Original-URI", "/anything")
	return check, do(req)
}

// revoked waits until keybridge calls tok inactive and returns how long
// that took after the action; /v1/check and forward-auth then answer 401,
// and Keycloak's own introspection agrees. Every token in live stays
// active in both.
func (p sessionsProbe) revoked(what string, since time.Time, tok string, live ...string) time.Duration {
	p.t.Helper()
	testenv.Eventually(p.t, what+": keybridge calls the token inactive", 10*time.Second, func() bool { return !p.active(tok) })
	lag := time.Since(since)
	if check, forward := p.statuses(tok); check != http.StatusUnauthorized || forward != http.StatusUnauthorized {
		p.t.Errorf("%s: /v1/check %d, forward-auth %d; want 401 and 401", what, check, forward)
	}
	if p.keycloakActive(tok) {
		p.t.Errorf("%s: Keycloak's introspection still calls the token active", what)
	}
	for i, l := range live {
		if !p.active(l) || !p.keycloakActive(l) {
			p.t.Errorf("%s: unaffected token %d is inactive (keybridge %v, Keycloak %v)", what, i, p.active(l), p.keycloakActive(l))
		}
		if check, forward := p.statuses(l); check != http.StatusOK || forward != http.StatusOK {
			p.t.Errorf("%s: unaffected token %d: /v1/check %d, forward-auth %d; want 200", what, i, check, forward)
		}
	}
	p.t.Logf("%s: inactive in keybridge %s after the action", what, lag.Round(time.Millisecond))
	return lag
}

// nextSecond sleeps into the next whole second: Keycloak's not-befores are
// whole seconds, and a token issued in the not-before's own second stays
// active (iat < notBefore refuses), in Keycloak as here.
func nextSecond() {
	now := time.Now()
	time.Sleep(now.Truncate(time.Second).Add(time.Second + 50*time.Millisecond).Sub(now))
}

// Issue 14: a session ended in Keycloak (the user's OIDC logout, an admin
// deleting the session or logging the user out) or a not-before pushed
// for the realm or a client makes keybridge call the tokens concerned
// inactive within the event poll interval, as Keycloak's own introspection
// does, and only those.
func TestSessionEndsAndNotBeforesRevokeTokens(t *testing.T) {
	kc := testenv.RequireKeycloak(t)
	realm := sessionsRealm(t, kc)
	db := testenv.NewDatabase(t)
	a := testenv.NewAdmin(t, realm)

	cfg := config.Default()
	cfg.Keycloak.URL, cfg.Keycloak.Realm, cfg.Keycloak.ClientID, cfg.Keycloak.ClientSecret = realm.URL, realm.Realm, realm.ClientID, realm.ClientSecret
	cfg.Database.URL, cfg.Database.SyncURL = db.AppURL, db.SyncURL
	cfg.Server.Listen = fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))
	cfg.Sync.Jitter = 0
	cfg.Auth.IntrospectionClients = []config.Client{{ID: "demo-api", Secret: "demo-api-secret"}}
	cfg.ForwardAuth.Default = "authenticated"
	cfg.Mapping = mapping.Config{Preset: "fastn", Tenant: mapping.TenantSource{GroupPrefix: "/customers"}}
	var logs lockedBuffer
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- serve(ctx, &cfg, slog.New(slog.NewTextHandler(&logs, nil))) }()
	t.Cleanup(func() {
		cancel()
		<-done
		if t.Failed() {
			t.Logf("keybridge log:\n%s", logs.String())
		}
	})
	d := &testenv.Daemon{Base: "http://" + cfg.Server.Listen}
	d.WaitReady(t, 60*time.Second)
	p := sessionsProbe{t: t, realm: realm, base: d.Base}
	userID := func(name string) string {
		var us []struct{ ID string }
		a.Do("GET", "/users?exact=true&username="+name, nil, &us)
		if len(us) != 1 {
			t.Fatalf("user %s: %v", name, us)
		}
		return us[0].ID
	}
	var lags []string

	// 1. The user logs out with their refresh token: user event LOGOUT.
	alice, bob := p.login("alice", "app"), p.login("bob", "app")
	if !p.active(alice.access) || !p.active(bob.access) {
		t.Fatal("fresh tokens are inactive")
	}
	start := time.Now()
	res, err := http.PostForm(realm.URL+"/realms/"+realm.Realm+"/protocol/openid-connect/logout", url.Values{"client_id": {"app"}, "refresh_token": {alice.refresh}})
	if err != nil || res.StatusCode != http.StatusNoContent {
		t.Fatalf("logout: %v %v", err, res)
	}
	res.Body.Close()
	lags = append(lags, "logout "+p.revoked("OIDC logout", start, alice.access, bob.access).Round(time.Millisecond).String())

	// 2. An admin deletes one of alice's sessions: admin event DELETE
	// USER_SESSION. Her other session's token stays active.
	one, other := p.login("alice", "app"), p.login("alice", "app2")
	start = time.Now()
	a.Do("DELETE", "/sessions/"+one.sid, nil, nil)
	lags = append(lags, "session_delete "+p.revoked("admin deletes the session", start, one.access, other.access, bob.access).Round(time.Millisecond).String())

	// 3. An admin logs carol out: admin event ACTION USER users/{id}/logout,
	// and Keycloak sets her not-before to the second it happened.
	carol := p.login("carol", "app")
	start = time.Now()
	a.Do("POST", "/users/"+userID("carol")+"/logout", nil, nil)
	lags = append(lags, "user_logout "+p.revoked("admin logs the user out", start, carol.access, bob.access).Round(time.Millisecond).String())
	var rep struct{ NotBefore int64 }
	a.Do("GET", "/users/"+userID("carol"), nil, &rep)
	if rep.NotBefore == 0 {
		t.Error("Keycloak set no notBefore on the user it logged out")
	}

	// 4. A not-before for client app2 (set to now, then pushed): admin
	// events UPDATE CLIENT and ACTION CLIENT push-revocation. dave's app
	// token stays active.
	daveApp2, daveApp := p.login("dave", "app2"), p.login("dave", "app")
	nextSecond()
	var clients []struct{ ID string }
	a.Do("GET", "/clients?clientId=app2", nil, &clients)
	start = time.Now()
	a.Do("PUT", "/clients/"+clients[0].ID, map[string]any{"notBefore": time.Now().Unix()}, nil)
	a.Do("POST", "/clients/"+clients[0].ID+"/push-revocation", nil, nil)
	lags = append(lags, "client_not_before "+p.revoked("client not-before", start, daveApp2.access, daveApp.access).Round(time.Millisecond).String())

	// 5. A not-before for the realm (set to now, then pushed): admin events
	// UPDATE REALM and ACTION REALM push-revocation. A token issued after it
	// stays active.
	nextSecond()
	start = time.Now()
	a.Do("PUT", "", map[string]any{"notBefore": time.Now().Unix()}, nil)
	a.Do("POST", "/push-revocation", nil, nil)
	after := p.login("bob", "app2")
	lags = append(lags, "realm_not_before "+p.revoked("realm not-before", start, bob.access, after.access).Round(time.Millisecond).String())

	res, err = http.Get(d.Base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	metrics, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if !strings.Contains(string(metrics), `keybridge_token_verification_failures_total{reason="revoked"}`) {
		t.Error("no token refusal counted with reason revoked")
	}
	fmt.Printf("REVOCATION lags (event poll interval %s): %s\n", cfg.Sync.Events.Interval, strings.Join(lags, " "))
}
