package deploy_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/keybridge/keybridge/internal/testenv"
)

// The demo realm's fixed ids (deploy/keycloak/realm-fastn.json).
const (
	idAlice  = "b0acb7e2-e014-5f2f-ad52-6b2842fcf7b5"
	idAdam   = "a3ae21e1-f248-5b5c-8a56-b1c2c8a60603"
	idDana   = "b1989013-af6f-50f4-bafa-2bb2d0696480"
	idOscar  = "879f2e30-dd8d-51dd-b0a2-32b5b09c506a"
	idVictor = "9e65342c-366c-5933-9cbe-b972fe50a10e"
	idDave   = "0631b3a5-0d67-5649-bcdd-871349d9f4c8"
	idNomail = "d220b73b-f069-5900-93fd-440bad49efc3"
	idGina   = "9973e18e-9b3b-599c-b68e-aa50e6a7bbb4"
	idGus    = "5eefa972-0f27-5d1b-9b18-2b60073aab48"
)

// escalation is one attempt an attacker makes. try reports whether the
// attack succeeded, with what it saw; a transport error fails the test.
type escalation struct {
	name string
	try  func(t *testing.T, h *escHarness) (bool, string)
}

// escHarness holds three real daemons on one database each, synced from
// the real demo realm: nginx mode (the reference config), envoy mode, and
// traefik mode behind a trusted proxy with small limits.
type escHarness struct {
	kc       testenv.Keycloak
	nginx    *testenv.Daemon
	envoy    *testenv.Daemon
	traefik  *testenv.Daemon
	ownerURL string
	tokens   map[string]string
}

func (h *escHarness) token(t *testing.T, user string) string {
	t.Helper()
	if tok, ok := h.tokens[user]; ok {
		return tok
	}
	tok := h.kc.UserToken(t, user)
	h.tokens[user] = tok
	return tok
}

// answer is what a request got back.
type answer struct {
	status int
	header http.Header
	body   string
}

// send makes one request. user "" sends no token; a user name sends that
// demo user's token. hdr is set as given (several values for one name are
// all sent).
func send(t *testing.T, base, method, path, user string, h *escHarness, body any, hdr map[string][]string) answer {
	t.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		rd = strings.NewReader(b)
	default:
		raw, _ := json.Marshal(b)
		rd = bytes.NewReader(raw)
	}
	req, err := http.NewRequest(method, base+path, rd)
	if err != nil {
		t.Fatal(err)
	}
	if rd != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if user != "" {
		req.Header.Set("Authorization", "Bearer "+h.token(t, user))
	}
	for k, vs := range hdr {
		req.Header.Del(k)
		for _, v := range vs {
			req.Header.Add(k, v)
		}
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer res.Body.Close()
	raw, _ := io.ReadAll(io.LimitReader(res.Body, 1<<20))
	return answer{status: res.StatusCode, header: res.Header, body: string(raw)}
}

// rawGet sends a request line exactly as given (like curl --path-as-is),
// so the path reaches the daemon unnormalised.
func rawGet(t *testing.T, base, method, target string, hdr map[string]string) int {
	t.Helper()
	u, _ := url.Parse(base)
	conn, err := net.DialTimeout("tcp", u.Host, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n", method, target, u.Host)
	for k, v := range hdr {
		fmt.Fprintf(&b, "%s: %s\r\n", k, v)
	}
	b.WriteString("\r\n")
	if _, err := conn.Write([]byte(b.String())); err != nil {
		t.Fatal(err)
	}
	res, err := http.ReadResponse(bufioReader(conn), nil)
	if err != nil {
		t.Fatalf("%s %s: %v", method, target, err)
	}
	res.Body.Close()
	return res.StatusCode
}

// forward asks the nginx-mode daemon about an original request.
func forward(t *testing.T, h *escHarness, user, method, uri string, extra map[string][]string) answer {
	hdr := map[string][]string{"X-Original-Method": {method}, "X-Original-URI": {uri}}
	for k, v := range extra {
		hdr[k] = v
	}
	return send(t, h.nginx.Base, http.MethodGet, "/v1/forward-auth", user, h, nil, hdr)
}

func ok2xx(a answer) bool { return a.status >= 200 && a.status < 300 }

// person reads a person as alice (acme's Owner) on the nginx daemon.
func (h *escHarness) person(t *testing.T, id string) map[string]any {
	t.Helper()
	a := send(t, h.nginx.Base, http.MethodGet, "/v1/people/"+id, "alice", h, nil, nil)
	var p map[string]any
	_ = json.Unmarshal([]byte(a.body), &p)
	return p
}

// localRole says whether a person holds role name as a local assignment,
// and whether that assignment is permanent.
func (h *escHarness) localRole(t *testing.T, id, name string) (held, permanent bool) {
	t.Helper()
	roles, _ := h.person(t, id)["roles"].([]any)
	for _, r := range roles {
		m, _ := r.(map[string]any)
		if m["name"] == name && m["source"] == "local" {
			held = true
			if m["expires_at"] == nil {
				permanent = true
			}
		}
	}
	return held, permanent
}

// grant makes alice give a person a local role, for the attempts' setup.
func (h *escHarness) grant(t *testing.T, id string, roles ...map[string]any) {
	t.Helper()
	a := send(t, h.nginx.Base, http.MethodPut, "/v1/people/"+id+"/roles", "alice", h, map[string]any{"roles": roles}, nil)
	if a.status != http.StatusOK {
		t.Fatalf("setup: alice assigns %v to %s: %d %s", roles, id, a.status, a.body)
	}
}

// customRole makes alice create a custom role in acme and returns its id.
func (h *escHarness) customRole(t *testing.T, name string, perms ...string) string {
	t.Helper()
	a := send(t, h.nginx.Base, http.MethodPost, "/v1/roles", "alice", h, map[string]any{"name": name, "permissions": perms}, nil)
	if a.status != http.StatusCreated {
		t.Fatalf("setup: create role %s: %d %s", name, a.status, a.body)
	}
	var r struct{ ID string }
	_ = json.Unmarshal([]byte(a.body), &r)
	return r.ID
}

// auditRows runs a query over audit_log as the schema owner.
func (h *escHarness) auditInt(t *testing.T, sql string, args ...any) int {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := pgx.Connect(ctx, h.ownerURL)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(ctx)
	var n int
	if err := c.QueryRow(ctx, sql, args...).Scan(&n); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
	return n
}

func tamper(tok string) string {
	parts := strings.Split(tok, ".")
	payload, _ := base64.RawURLEncoding.DecodeString(parts[1])
	payload = bytes.Replace(payload, []byte(idVictor), []byte(idAlice), 1)
	parts[1] = base64.RawURLEncoding.EncodeToString(payload)
	return strings.Join(parts, ".")
}

func noneAlg(tok string) string {
	parts := strings.Split(tok, ".")
	head := base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"none","typ":"JWT"}`))
	return head + "." + parts[1] + "."
}
