package testenv

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"testing"
)

// Token signs username in to client of realm with the password grant and
// returns the access token. Keycloak refusing fails the test with its answer.
func (kc Keycloak) Token(t testing.TB, realm, client, username, password string) string {
	t.Helper()
	res, err := http.PostForm(kc.URL+"/realms/"+realm+"/protocol/openid-connect/token",
		url.Values{"grant_type": {"password"}, "client_id": {client}, "username": {username}, "password": {password}})
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	body, _ := io.ReadAll(res.Body)
	var out struct {
		AccessToken string `json:"access_token"`
	}
	if err := json.Unmarshal(body, &out); err != nil || out.AccessToken == "" {
		t.Fatalf("token for %s in %s/%s: %d %s", username, realm, client, res.StatusCode, body)
	}
	return out.AccessToken
}

// UserToken is a fresh access token of a demo-realm user from the public
// client, signed in with the demo password.
func (kc Keycloak) UserToken(t testing.TB, username string) string {
	t.Helper()
	return kc.Token(t, kc.Realm, kc.PublicClientID, username, kc.UserPassword)
}

// Admin calls the demo realm's admin REST API as the master realm's admin.
type Admin struct {
	t   testing.TB
	kc  Keycloak
	tok string
}

// NewAdmin signs in as the master realm's admin.
func NewAdmin(t testing.TB, kc Keycloak) *Admin {
	t.Helper()
	return &Admin{t: t, kc: kc, tok: kc.Token(t, "master", "admin-cli", kc.AdminUser, kc.AdminPassword)}
}

// Bearer is the admin's access token, for requests outside the demo realm.
func (a *Admin) Bearer() string { return a.tok }

// Attempt sends a request to path under /admin/realms/<demo realm>. body is
// sent as it is when it is an io.Reader, JSON-encoded otherwise (nil sends
// none). It returns the status, headers and answer without judging them.
func (a *Admin) Attempt(method, path string, body any) (int, http.Header, []byte, error) {
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case io.Reader:
		rd = b
	default:
		raw, err := json.Marshal(b)
		if err != nil {
			return 0, nil, nil, err
		}
		rd = bytes.NewReader(raw)
	}
	req, err := http.NewRequest(method, a.kc.URL+"/admin/realms/"+a.kc.Realm+path, rd)
	if err != nil {
		return 0, nil, nil, err
	}
	req.Header.Set("Authorization", "Bearer "+a.tok)
	req.Header.Set("Content-Type", "application/json")
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, nil, nil, err
	}
	defer res.Body.Close()
	raw, err := io.ReadAll(res.Body)
	return res.StatusCode, res.Header, raw, err
}

// Do is Attempt for requests that must succeed: a transport error or a
// status of 300 or more fails the test. The answer is decoded into out
// when out is not nil.
func (a *Admin) Do(method, path string, body, out any) (int, http.Header) {
	a.t.Helper()
	code, hdr, raw, err := a.Attempt(method, path, body)
	if err == nil && code >= 300 {
		err = fmt.Errorf("%d %s", code, raw)
	}
	if err == nil && out != nil && len(raw) > 0 {
		err = json.Unmarshal(raw, out)
	}
	if err != nil {
		a.t.Fatalf("keycloak admin %s %s: %v", method, path, err)
	}
	return code, hdr
}
