package deploy_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/keybridge/keybridge/internal/testenv"
)

func bufioReader(c net.Conn) *bufio.Reader { return bufio.NewReader(c) }

// TestEscalationAttacks is the escalation suite of `make reliability` (and
// of `make test`): every path the security review found, and more of our
// own, tried against real daemons synced from the real demo realm. Each
// attempt reports whether the attacker got what they wanted; none may.
func TestEscalationAttacks(t *testing.T) {
	kc := testenv.RequireKeycloak(t)
	bin := testenv.BuildDaemon(t)
	admin := testenv.NewAdmin(t, kc)
	quiet := []string{"KEYBRIDGE_SYNC_EVENTS_ENABLED=false", "KEYBRIDGE_SYNC_SCHEDULE=@every 1h"}

	dbN := testenv.NewDatabase(t)
	h := &escHarness{kc: kc, ownerURL: dbN.OwnerURL, tokens: map[string]string{}}
	h.nginx = testenv.StartDaemon(t, bin, dbN, kc, quiet...)
	dbE := testenv.NewDatabase(t)
	h.envoy = testenv.StartDaemon(t, bin, dbE, kc, append(quiet, "KEYBRIDGE_FORWARD_AUTH_PROXY=envoy")...)
	// Traefik mode behind a trusted proxy, with a small per-client budget and
	// a maximum token lifetime below the realm's 5 minutes.
	raw, err := os.ReadFile(filepath.Join(testenv.RepoRoot(t), "config", "keybridge.example.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	cfg := strings.Replace(string(raw), "trusted_proxies: []", "trusted_proxies: [127.0.0.1/32]", 1)
	cfg = strings.Replace(cfg, "proxy: nginx", "proxy: traefik", 1)
	cfgPath := filepath.Join(t.TempDir(), "traefik.yaml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	dbT := testenv.NewDatabase(t)
	h.traefik = testenv.StartDaemonWith(t, bin, cfgPath, dbT, kc, append(quiet,
		"KEYBRIDGE_RATE_LIMIT_PER_CLIENT_RATE=5", "KEYBRIDGE_RATE_LIMIT_PER_CLIENT_BURST=10",
		"KEYBRIDGE_AUTH_MAX_TOKEN_LIFETIME=1m")...)
	for _, d := range []*testenv.Daemon{h.nginx, h.envoy, h.traefik} {
		d.WaitReady(t, 90*time.Second)
	}

	attempts := escalations(admin)
	succeeded := 0
	for _, a := range attempts {
		got, detail := a.try(t, h)
		if got {
			succeeded++
			t.Errorf("escalation succeeded: %s: %s", a.name, detail)
		}
	}
	fmt.Printf("RELIABILITY escalation tried=%d bad=%d\n", len(attempts), succeeded)
	if len(attempts) < 34 {
		t.Fatalf("only %d escalation attempts; the suite promises at least 34", len(attempts))
	}
}

func escalations(admin *testenv.Admin) []escalation {
	future := func(d time.Duration) string { return time.Now().Add(d).UTC().Format(time.RFC3339) }
	deleteInvited := func(t *testing.T, email string) {
		var users []struct{ ID string }
		admin.Do(http.MethodGet, "/users?exact=true&email="+url.QueryEscape(email), nil, &users)
		for _, u := range users {
			admin.Do(http.MethodDelete, "/users/"+u.ID, nil, nil)
		}
	}
	pathAttack := func(name, method, uri string) escalation {
		return escalation{"path: " + name, func(t *testing.T, h *escHarness) (bool, string) {
			a := forward(t, h, "", method, uri, nil)
			return ok2xx(a), fmt.Sprintf("nginx mode, anonymous %s %q answered %d", method, uri, a.status)
		}}
	}
	envoyPath := func(name, target string) escalation {
		return escalation{"envoy path: " + name, func(t *testing.T, h *escHarness) (bool, string) {
			code := rawGet(t, h.envoy.Base, http.MethodGet, "/v1/forward-auth"+target, nil)
			return code >= 200 && code < 300, fmt.Sprintf("anonymous GET %s answered %d", target, code)
		}}
	}
	roleName := func(name string) escalation {
		return escalation{fmt.Sprintf("name: custom role %q", name), func(t *testing.T, h *escHarness) (bool, string) {
			a := send(t, h.nginx.Base, http.MethodPost, "/v1/roles", "adam", h, map[string]any{"name": name, "permissions": []string{"workflows.read"}}, nil)
			return ok2xx(a), fmt.Sprintf("adam created it: %d %s", a.status, a.body)
		}}
	}
	return []escalation{
		// 1. Forward-auth paths the upstream never serves.
		envoyPath("decoded ? cuts the path", "/public/%3F/../../admin/users"),
		envoyPath("deploy behind an encoded ?", "/workflows/1/deploy/x%3F/.."),
		envoyPath("dot segments", "/public/../workflows/1"),
		envoyPath("encoded slash", "/public%2F..%2Fworkflows/1"),
		pathAttack("dot segments", http.MethodPost, "/public/../workflows/1/deploy"),
		pathAttack("encoded dots", http.MethodPost, "/public/%2e%2e/workflows/1/deploy"),
		pathAttack("encoded slash", http.MethodGet, "/public/..%2fworkflows/1"),
		pathAttack("matrix parameter", http.MethodPost, "/public;x=/../workflows/1/deploy"),
		pathAttack("backslashes", http.MethodGet, `/public/..\workflows\1`),
		pathAttack("NUL byte", http.MethodPost, "/public/%00/../../workflows/1/deploy"),
		pathAttack("double slash", http.MethodPost, "/public//../workflows/1/deploy"),
		pathAttack("absolute URI", http.MethodPost, "http://evil.test/public/../workflows/1/deploy"),
		pathAttack("encoded percent", http.MethodPost, "/public/%252e%252e/workflows/1/deploy"),
		pathAttack("invalid UTF-8", http.MethodPost, "/public/%ff/../workflows/1/deploy"),
		pathAttack("case of the public prefix", http.MethodPost, "/Public/../workflows/1/deploy"),
		{"path: two X-Original-URI headers", func(t *testing.T, h *escHarness) (bool, string) {
			a := send(t, h.nginx.Base, http.MethodGet, "/v1/forward-auth", "", h, nil,
				map[string][]string{"X-Original-Method": {"POST"}, "X-Original-URI": {"/public/x", "/workflows/1/deploy"}})
			return ok2xx(a), fmt.Sprintf("answered %d", a.status)
		}},
		{"path: X-Forwarded-Uri beside nginx's header", func(t *testing.T, h *escHarness) (bool, string) {
			a := forward(t, h, "", http.MethodPost, "/workflows/1/deploy", map[string][]string{"X-Forwarded-Uri": {"/public/x"}})
			return ok2xx(a), fmt.Sprintf("answered %d", a.status)
		}},
		{"path: X-Original-URI in envoy mode", func(t *testing.T, h *escHarness) (bool, string) {
			a := send(t, h.envoy.Base, http.MethodPost, "/v1/forward-auth/workflows/1/deploy", "", h, nil,
				map[string][]string{"X-Original-URI": {"/public/x"}, "X-Original-Method": {"GET"}})
			return ok2xx(a), fmt.Sprintf("answered %d", a.status)
		}},
		{"path: lower-case method slips past the deploy rule", func(t *testing.T, h *escHarness) (bool, string) {
			a := forward(t, h, "victor", "post", "/workflows/1/deploy", nil)
			return ok2xx(a), fmt.Sprintf("victor (Viewer) answered %d", a.status)
		}},

		// 2. Names that smuggle.
		roleName("Reader,PlatformAdmin"),
		roleName("system"),
		roleName("owner"),
		roleName("Platformadmin"),
		roleName("Viewer "),
		roleName("x\nX-Auth-Roles: Owner"),
		roleName(`{Owner}`),
		roleName("public"),

		// 3. Temporary grants that make themselves permanent.
		{"grant: temporary Admin makes itself permanent", func(t *testing.T, h *escHarness) (bool, string) {
			h.grant(t, idVictor, map[string]any{"role": "Admin", "expires_at": future(10 * time.Minute)})
			defer h.reset(t, idVictor, "victor", "Admin")
			h.waitRole(t, "victor", "Admin")
			a := send(t, h.nginx.Base, http.MethodPut, "/v1/people/"+idVictor+"/roles", "victor", h,
				map[string]any{"roles": []map[string]any{{"role": "Admin"}}}, nil)
			_, permanent := h.localRole(t, idVictor, "Admin")
			return permanent, fmt.Sprintf("answered %d, permanent Admin: %v", a.status, permanent)
		}},
		{"grant: temporary Admin grants a permanent Developer", func(t *testing.T, h *escHarness) (bool, string) {
			h.grant(t, idVictor, map[string]any{"role": "Admin", "expires_at": future(10 * time.Minute)})
			defer h.reset(t, idVictor, "victor", "Admin")
			defer h.grant(t, idNomail)
			h.waitRole(t, "victor", "Admin")
			a := send(t, h.nginx.Base, http.MethodPut, "/v1/people/"+idNomail+"/roles", "victor", h,
				map[string]any{"roles": []map[string]any{{"role": "Developer"}}}, nil)
			_, permanent := h.localRole(t, idNomail, "Developer")
			return permanent, fmt.Sprintf("answered %d, permanent Developer: %v", a.status, permanent)
		}},
		{"grant: temporary Admin grants past its own expiry", func(t *testing.T, h *escHarness) (bool, string) {
			h.grant(t, idVictor, map[string]any{"role": "Admin", "expires_at": future(10 * time.Minute)})
			defer h.reset(t, idVictor, "victor", "Admin")
			defer h.grant(t, idNomail)
			h.waitRole(t, "victor", "Admin")
			a := send(t, h.nginx.Base, http.MethodPut, "/v1/people/"+idNomail+"/roles", "victor", h,
				map[string]any{"roles": []map[string]any{{"role": "Developer", "expires_at": future(48 * time.Hour)}}}, nil)
			return ok2xx(a), fmt.Sprintf("answered %d %s", a.status, a.body)
		}},

		// 4 and 5. Unbounded audit rows.
		{"audit: 80,000-byte request id stored", func(t *testing.T, h *escHarness) (bool, string) {
			send(t, h.nginx.Base, http.MethodGet, "/v1/people", "", h, nil, map[string][]string{"X-Request-Id": {strings.Repeat("a", 80000)}})
			h.auditMarker(t)
			n := h.auditInt(t, `SELECT coalesce(max(length(request_id)), 0) FROM audit_log`)
			return n > 128, fmt.Sprintf("longest stored request id: %d bytes", n)
		}},
		{"audit: request id with control bytes stored", func(t *testing.T, h *escHarness) (bool, string) {
			send(t, h.nginx.Base, http.MethodPost, "/v1/check", "erin", h, `{"permission":"billing.manage"}`,
				map[string][]string{"X-Request-Id": {"evil;DROP <script>é"}})
			h.auditMarker(t)
			n := h.auditInt(t, `SELECT count(*) FROM audit_log WHERE request_id ~ '[^A-Za-z0-9._:-]'`)
			return n > 0, fmt.Sprintf("%d rows with unsafe request ids", n)
		}},
		{"audit: huge resource fields in a denied check", func(t *testing.T, h *escHarness) (bool, string) {
			big := strings.Repeat("r", 200000)
			body, _ := json.Marshal(map[string]any{"permission": "billing.manage", "resource": map[string]any{"type": big, "id": big, "owner": big}})
			send(t, h.nginx.Base, http.MethodPost, "/v1/check", "erin", h, string(body), nil)
			h.auditMarker(t)
			n := h.auditInt(t, `SELECT coalesce(max(length(resource_id) + length(resource_type) + length(details::text)), 0) FROM audit_log`)
			return n > 8192, fmt.Sprintf("largest stored resource: %d bytes", n)
		}},
		{"audit: a flood of unauthenticated refusals written row by row", func(t *testing.T, h *escHarness) (bool, string) {
			since := time.Now().Add(-time.Second)
			for i := 0; i < 300; i++ {
				send(t, h.nginx.Base, http.MethodGet, "/v1/people", "", h, nil, nil)
			}
			h.auditMarker(t)
			n := h.auditInt(t, `SELECT count(*) FROM audit_log WHERE occurred_at >= $1 AND actor_id = ''`, since)
			return n >= 50, fmt.Sprintf("%d audit rows for 300 anonymous refusals", n)
		}},

		// 6. Re-enabling someone a higher authority disabled.
		{"status: tenant Owner re-enables a user Keycloak disabled", func(t *testing.T, h *escHarness) (bool, string) {
			a := send(t, h.nginx.Base, http.MethodPut, "/v1/people/"+idDave+"/status", "alice", h, map[string]any{"status": "active"}, nil)
			if ok2xx(a) {
				admin.Do(http.MethodPut, "/users/"+idDave, map[string]any{"enabled": false}, nil)
			}
			return ok2xx(a), fmt.Sprintf("answered %d %s", a.status, a.body)
		}},

		// 7. Token lifetime.
		{"token: lifetime beyond auth.max_token_lifetime", func(t *testing.T, h *escHarness) (bool, string) {
			a := send(t, h.traefik.Base, http.MethodGet, "/v1/me", "dana", h, nil, nil)
			return ok2xx(a), fmt.Sprintf("a 5-minute token against a 1-minute maximum answered %d", a.status)
		}},

		// 8. Replacing roles strips what the caller could not grant.
		{"grant: people.manage custom role strips a local Admin", func(t *testing.T, h *escHarness) (bool, string) {
			h.customRole(t, "Keeper", "people.view", "people.manage")
			h.grant(t, idOscar, map[string]any{"role": "Keeper"})
			h.grant(t, idNomail, map[string]any{"role": "Admin"})
			defer h.reset(t, idOscar, "oscar", "Keeper")
			defer h.grant(t, idNomail)
			h.waitRole(t, "oscar", "Keeper")
			a := send(t, h.nginx.Base, http.MethodPut, "/v1/people/"+idNomail+"/roles", "oscar", h,
				map[string]any{"roles": []map[string]any{{"role": "Viewer"}}}, nil)
			held, _ := h.localRole(t, idNomail, "Admin")
			return !held, fmt.Sprintf("answered %d; nomail still holds Admin: %v", a.status, held)
		}},

		// 9. Invitations into teams that carry roles.
		{"invite: a team that carries Developer, by a mere inviter", func(t *testing.T, h *escHarness) (bool, string) {
			h.customRole(t, "Inviter", "people.view", "people.invite")
			h.grant(t, idVictor, map[string]any{"role": "Inviter"})
			defer h.reset(t, idVictor, "victor", "Inviter")
			h.waitRole(t, "victor", "Inviter")
			email := fmt.Sprintf("esc-team-%d@acme.test", time.Now().UnixNano())
			defer deleteInvited(t, email)
			a := send(t, h.nginx.Base, http.MethodPost, "/v1/people/invite", "victor", h,
				map[string]any{"email": email, "name": "Esc Team", "role": "Viewer", "teams": []string{"/customers/acme/engineering"}}, nil)
			return ok2xx(a), fmt.Sprintf("answered %d %s", a.status, a.body)
		}},

		// 10. Slow exports starve the management API.
		{"export: 20 stalled exports block the management API", func(t *testing.T, h *escHarness) (bool, string) {
			h.fillAudit(t, 60000)
			var conns []net.Conn
			defer func() {
				for _, c := range conns {
					c.Close()
				}
			}()
			u, _ := url.Parse(h.nginx.Base)
			tok := h.token(t, "victor")
			for i := 0; i < 20; i++ {
				c, err := net.Dial("tcp", u.Host)
				if err != nil {
					t.Fatal(err)
				}
				conns = append(conns, c)
				fmt.Fprintf(c, "GET /v1/audit?format=ndjson HTTP/1.1\r\nHost: %s\r\nAuthorization: Bearer %s\r\n\r\n", u.Host, tok)
			}
			time.Sleep(time.Second) // let the exports start and stall
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			req, _ := http.NewRequestWithContext(ctx, http.MethodGet, h.nginx.Base+"/v1/people", nil)
			req.Header.Set("Authorization", "Bearer "+h.token(t, "alice"))
			res, err := http.DefaultClient.Do(req)
			if err != nil {
				return true, "alice's people list did not answer within 10 s: " + err.Error()
			}
			res.Body.Close()
			return res.StatusCode != http.StatusOK, fmt.Sprintf("alice's people list answered %d", res.StatusCode)
		}},

		// 11. One noisy client behind a trusted proxy.
		{"rate: one client behind the proxy exhausts everyone's budget", func(t *testing.T, h *escHarness) (bool, string) {
			hdr := func(ip string) map[string][]string {
				return map[string][]string{"X-Forwarded-Method": {"GET"}, "X-Forwarded-Uri": {"/public/x"}, "X-Forwarded-For": {ip}}
			}
			for i := 0; i < 40; i++ {
				send(t, h.traefik.Base, http.MethodGet, "/v1/forward-auth", "", h, nil, hdr("203.0.113.7"))
			}
			a := send(t, h.traefik.Base, http.MethodGet, "/v1/forward-auth", "", h, nil, hdr("203.0.113.8"))
			return a.status == http.StatusTooManyRequests, fmt.Sprintf("the quiet client got %d", a.status)
		}},

		// 12. Leaks across tenants.
		{"leak: invite reveals another tenant's email", func(t *testing.T, h *escHarness) (bool, string) {
			a := send(t, h.nginx.Base, http.MethodPost, "/v1/people/invite", "adam", h,
				map[string]any{"email": "gina@globex.test", "name": "Gina", "role": "Viewer"}, nil)
			leak := a.status == http.StatusConflict || strings.Contains(strings.ToLower(a.body), "exist")
			return leak, fmt.Sprintf("answered %d %s", a.status, a.body)
		}},
		{"leak: a tenant Admin reads the realm's sync runs", func(t *testing.T, h *escHarness) (bool, string) {
			a := send(t, h.nginx.Base, http.MethodGet, "/v1/sync/runs", "adam", h, nil, nil)
			return a.status == http.StatusOK && strings.Contains(a.body, "trigger"), fmt.Sprintf("answered %d", a.status)
		}},
		{"leak: a tenant Admin starts realm-wide syncs back to back", func(t *testing.T, h *escHarness) (bool, string) {
			first := send(t, h.nginx.Base, http.MethodPost, "/v1/sync", "adam", h, `{}`, nil)
			second := send(t, h.nginx.Base, http.MethodPost, "/v1/sync", "adam", h, `{}`, nil)
			return ok2xx(first) && ok2xx(second), fmt.Sprintf("answered %d then %d", first.status, second.status)
		}},
		{"leak: a tenant Admin forces a sync past the deletion guard", func(t *testing.T, h *escHarness) (bool, string) {
			a := send(t, h.nginx.Base, http.MethodPost, "/v1/sync", "adam", h, `{"force":true}`, nil)
			return ok2xx(a), fmt.Sprintf("answered %d", a.status)
		}},

		// 13. Identity headers that vanish and let the client's through.
		{"headers: public route answers without X-Auth-User", func(t *testing.T, h *escHarness) (bool, string) {
			a := send(t, h.envoy.Base, http.MethodGet, "/v1/forward-auth/public/x", "", h, nil, map[string][]string{"X-Auth-User": {idAlice}})
			_, has := a.header["X-Auth-User"]
			return ok2xx(a) && !has, fmt.Sprintf("answered %d, X-Auth-User present: %v", a.status, has)
		}},

		// Public: anonymous requests only where the config allows them.
		{"public: anonymous check", func(t *testing.T, h *escHarness) (bool, string) {
			a := send(t, h.nginx.Base, http.MethodPost, "/v1/check", "", h, `{"permission":"workflows.read"}`, nil)
			return ok2xx(a) && strings.Contains(a.body, `"allowed":true`), fmt.Sprintf("answered %d %s", a.status, a.body)
		}},
		{"public: anonymous protected route", func(t *testing.T, h *escHarness) (bool, string) {
			a := forward(t, h, "", http.MethodGet, "/workflows/1", nil)
			return ok2xx(a), fmt.Sprintf("answered %d", a.status)
		}},

		// Our own: privilege, tenant, header and encoding tricks.
		{"tenant: acme Owner reads a globex person", func(t *testing.T, h *escHarness) (bool, string) {
			a := send(t, h.nginx.Base, http.MethodGet, "/v1/people/"+idGina, "alice", h, nil, nil)
			return a.status == http.StatusOK, fmt.Sprintf("answered %d", a.status)
		}},
		{"tenant: acme Admin assigns roles to a globex person", func(t *testing.T, h *escHarness) (bool, string) {
			a := send(t, h.nginx.Base, http.MethodPut, "/v1/people/"+idGina+"/roles", "adam", h,
				map[string]any{"roles": []map[string]any{{"role": "Viewer"}}}, nil)
			return ok2xx(a), fmt.Sprintf("answered %d", a.status)
		}},
		{"tenant: acme Admin names globex in the body", func(t *testing.T, h *escHarness) (bool, string) {
			a := send(t, h.nginx.Base, http.MethodPut, "/v1/people/"+idGus+"/roles", "adam", h,
				map[string]any{"roles": []map[string]any{{"role": "Viewer"}}, "tenant": "globex"}, nil)
			return ok2xx(a), fmt.Sprintf("answered %d", a.status)
		}},
		{"tenant: a check names another tenant's resource", func(t *testing.T, h *escHarness) (bool, string) {
			a := send(t, h.nginx.Base, http.MethodPost, "/v1/check", "dana", h,
				`{"permission":"workflows.read","resource":{"type":"workflow","id":"1","tenant":"globex"}}`, nil)
			return strings.Contains(a.body, `"allowed":true`), fmt.Sprintf("answered %d %s", a.status, a.body)
		}},
		{"tenant: a header names a tenant the person is not in", func(t *testing.T, h *escHarness) (bool, string) {
			a := send(t, h.nginx.Base, http.MethodGet, "/v1/me", "dana", h, nil, map[string][]string{"X-Keybridge-Tenant": {"globex"}})
			return ok2xx(a) && strings.Contains(a.body, `"tenant":"globex"`), fmt.Sprintf("answered %d", a.status)
		}},
		{"tenant: globex Owner deletes an acme custom role", func(t *testing.T, h *escHarness) (bool, string) {
			id := h.customRole(t, "AcmeOnly", "workflows.read")
			a := send(t, h.nginx.Base, http.MethodDelete, "/v1/roles/"+id, "gina", h, nil, nil)
			return ok2xx(a), fmt.Sprintf("answered %d", a.status)
		}},
		{"tenant: globex Owner assigns an acme custom role", func(t *testing.T, h *escHarness) (bool, string) {
			h.customRole(t, "AcmeSecret", "workflows.read")
			a := send(t, h.nginx.Base, http.MethodPut, "/v1/people/"+idGus+"/roles", "gina", h,
				map[string]any{"roles": []map[string]any{{"role": "AcmeSecret"}}}, nil)
			return ok2xx(a), fmt.Sprintf("answered %d", a.status)
		}},
		{"tenant: acme Admin duplicates a role into globex", func(t *testing.T, h *escHarness) (bool, string) {
			var roles struct{ Items []struct{ ID, Name string } }
			_ = json.Unmarshal([]byte(send(t, h.nginx.Base, http.MethodGet, "/v1/roles", "adam", h, nil, nil).body), &roles)
			id := ""
			for _, r := range roles.Items {
				if r.Name == "Developer" {
					id = r.ID
				}
			}
			a := send(t, h.nginx.Base, http.MethodPost, "/v1/roles/"+id+"/duplicate", "adam", h, map[string]any{"name": "Dup", "tenant": "globex"}, nil)
			return ok2xx(a), fmt.Sprintf("answered %d", a.status)
		}},
		{"tenant: people filter injection", func(t *testing.T, h *escHarness) (bool, string) {
			a := send(t, h.nginx.Base, http.MethodGet, "/v1/people?role="+url.QueryEscape("' OR '1'='1")+"&q="+url.QueryEscape("%' OR 1=1 --"), "adam", h, nil, nil)
			return strings.Contains(a.body, "gina"), fmt.Sprintf("answered %d", a.status)
		}},
		{"privilege: Viewer creates a role", func(t *testing.T, h *escHarness) (bool, string) {
			a := send(t, h.nginx.Base, http.MethodPost, "/v1/roles", "victor", h, map[string]any{"name": "Mine", "permissions": []string{"billing.manage"}}, nil)
			return ok2xx(a), fmt.Sprintf("answered %d", a.status)
		}},
		{"privilege: Viewer makes itself Admin", func(t *testing.T, h *escHarness) (bool, string) {
			a := send(t, h.nginx.Base, http.MethodPut, "/v1/people/"+idVictor+"/roles", "victor", h,
				map[string]any{"roles": []map[string]any{{"role": "Admin"}}}, nil)
			return ok2xx(a), fmt.Sprintf("answered %d", a.status)
		}},
		{"privilege: Viewer deactivates a Developer", func(t *testing.T, h *escHarness) (bool, string) {
			a := send(t, h.nginx.Base, http.MethodPut, "/v1/people/"+idDana+"/status", "victor", h, map[string]any{"status": "inactive"}, nil)
			if ok2xx(a) {
				admin.Do(http.MethodPut, "/users/"+idDana, map[string]any{"enabled": true}, nil)
			}
			return ok2xx(a), fmt.Sprintf("answered %d", a.status)
		}},
		{"privilege: Admin deactivates the last Owner", func(t *testing.T, h *escHarness) (bool, string) {
			a := send(t, h.nginx.Base, http.MethodPut, "/v1/people/"+idAlice+"/status", "adam", h, map[string]any{"status": "inactive"}, nil)
			if ok2xx(a) {
				admin.Do(http.MethodPut, "/users/"+idAlice, map[string]any{"enabled": true}, nil)
			}
			return ok2xx(a), fmt.Sprintf("answered %d", a.status)
		}},
		{"privilege: End User reads the audit log", func(t *testing.T, h *escHarness) (bool, string) {
			a := send(t, h.nginx.Base, http.MethodGet, "/v1/audit", "erin", h, nil, nil)
			return a.status == http.StatusOK, fmt.Sprintf("answered %d", a.status)
		}},
		{"privilege: custom role with a permission outside the catalog", func(t *testing.T, h *escHarness) (bool, string) {
			a := send(t, h.nginx.Base, http.MethodPost, "/v1/roles", "alice", h, map[string]any{"name": "Tenants", "permissions": []string{"platform.tenants.manage"}}, nil)
			return ok2xx(a), fmt.Sprintf("answered %d", a.status)
		}},
		{"token: another realm's token", func(t *testing.T, h *escHarness) (bool, string) {
			tok := h.kc.Token(t, "other", "fastn-app", "mallory", h.kc.UserPassword)
			a := send(t, h.nginx.Base, http.MethodGet, "/v1/me", "", h, nil, map[string][]string{"Authorization": {"Bearer " + tok}})
			return ok2xx(a), fmt.Sprintf("answered %d", a.status)
		}},
		{"token: alg none", func(t *testing.T, h *escHarness) (bool, string) {
			a := send(t, h.nginx.Base, http.MethodGet, "/v1/me", "", h, nil, map[string][]string{"Authorization": {"Bearer " + noneAlg(h.token(t, "victor"))}})
			return ok2xx(a), fmt.Sprintf("answered %d", a.status)
		}},
		{"token: subject swapped in the payload", func(t *testing.T, h *escHarness) (bool, string) {
			a := send(t, h.nginx.Base, http.MethodGet, "/v1/me", "", h, nil, map[string][]string{"Authorization": {"Bearer " + tamper(h.token(t, "victor"))}})
			return ok2xx(a), fmt.Sprintf("answered %d", a.status)
		}},
		{"token: access_token in the query string", func(t *testing.T, h *escHarness) (bool, string) {
			a := send(t, h.nginx.Base, http.MethodGet, "/v1/me?access_token="+h.token(t, "victor"), "", h, nil, nil)
			return ok2xx(a), fmt.Sprintf("answered %d", a.status)
		}},
		{"token: two Authorization headers", func(t *testing.T, h *escHarness) (bool, string) {
			a := send(t, h.nginx.Base, http.MethodGet, "/v1/me", "", h, nil,
				map[string][]string{"Authorization": {"Bearer " + h.token(t, "victor"), "Bearer " + h.token(t, "alice")}})
			return ok2xx(a), fmt.Sprintf("answered %d", a.status)
		}},
		{"token: introspection without client credentials", func(t *testing.T, h *escHarness) (bool, string) {
			res, err := http.PostForm(h.nginx.Base+"/oauth2/introspect", url.Values{"token": {h.token(t, "victor")}})
			if err != nil {
				t.Fatal(err)
			}
			raw, _ := io.ReadAll(res.Body)
			res.Body.Close()
			return strings.Contains(string(raw), `"active":true`), fmt.Sprintf("answered %d", res.StatusCode)
		}},
		{"webhook: unsigned delivery", func(t *testing.T, h *escHarness) (bool, string) {
			a := send(t, h.nginx.Base, http.MethodPost, "/webhooks/keycloak", "", h, `{"type":"admin","operationType":"DELETE","resourceType":"USER","resourcePath":"users/`+idAlice+`"}`, nil)
			return ok2xx(a), fmt.Sprintf("answered %d", a.status)
		}},
	}
}

// waitRole waits until a demo user's grant shows role, as the daemon sees it.
func (h *escHarness) waitRole(t *testing.T, user, role string) {
	t.Helper()
	testenv.Eventually(t, user+" holds "+role, 10*time.Second, func() bool {
		a := send(t, h.nginx.Base, http.MethodGet, "/v1/me", user, h, nil, nil)
		return strings.Contains(a.body, `"`+role+`"`)
	})
}

// reset takes a person's local roles away and waits until the daemon no
// longer grants them role, so the next attempt starts from the realm's state.
func (h *escHarness) reset(t *testing.T, id, user, role string) {
	t.Helper()
	h.grant(t, id)
	testenv.Eventually(t, user+" no longer holds "+role, 10*time.Second, func() bool {
		a := send(t, h.nginx.Base, http.MethodGet, "/v1/me", user, h, nil, nil)
		return a.status == http.StatusOK && !strings.Contains(a.body, `"`+role+`"`)
	})
}

// auditMarker writes one audited denial and waits until it is in
// audit_log: the writer is first in, first out, so what was recorded before
// it is written too.
func (h *escHarness) auditMarker(t *testing.T) {
	t.Helper()
	marker := fmt.Sprintf("marker-%d", time.Now().UnixNano())
	// erin (End User) is never granted anything by the attempts, so this
	// check is always a denial, and denials are always audited.
	a := send(t, h.nginx.Base, http.MethodPost, "/v1/check", "erin", h,
		`{"permission":"billing.manage","resource":{"type":"marker","id":"`+marker+`"}}`, nil)
	if a.status != http.StatusOK {
		t.Fatalf("audit marker: %d %s", a.status, a.body)
	}
	defer func() {
		if !t.Failed() {
			return
		}
		t.Logf("audit rows %d, markers %d", h.auditInt(t, `SELECT count(*)::int FROM audit_log`), h.auditInt(t, `SELECT count(*)::int FROM audit_log WHERE resource_type = 'marker'`))
	}()
	testenv.Eventually(t, "audit marker written", 15*time.Second, func() bool {
		return h.auditInt(t, `SELECT count(*) FROM audit_log WHERE resource_id = $1`, marker) > 0
	})
}

// fillAudit gives the export something to stream: n old rows in acme. Only
// their volume matters, so the schema owner writes them directly.
func (h *escHarness) fillAudit(t *testing.T, n int) {
	t.Helper()
	h.auditInt(t, `WITH ins AS (INSERT INTO audit_log (occurred_at, tenant_id, action, outcome, entry_id, reason)
		SELECT now() - interval '1 day', 'acme', 'filler', 'success', gen_random_uuid(), repeat('x', 200)
		FROM generate_series(1, $1) RETURNING 1) SELECT count(*)::int FROM ins`, n)
}
