package api_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/keybridge/keybridge/internal/api"
	"github.com/keybridge/keybridge/internal/audit"
	"github.com/keybridge/keybridge/internal/auth"
	"github.com/keybridge/keybridge/internal/identity"
	"github.com/keybridge/keybridge/internal/kcadmin"
	"github.com/keybridge/keybridge/internal/ratelimit"
	"github.com/keybridge/keybridge/internal/testenv"
	"github.com/keybridge/keybridge/middleware"
)

// TestPeopleAndRolesScreensEndToEnd walks the fastn seed's People and Roles
// screens against the real Keycloak with keybridge wired as in serve.
func TestPeopleAndRolesScreensEndToEnd(t *testing.T) {
	e := newDecEnv(t, "")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	writer := &audit.Writer{Pool: e.st.SysPool(), QueueSize: 1000, BatchSize: 100, FlushInterval: 50 * time.Millisecond,
		Depth: e.m.AuditQueueDepth, Dropped: e.m.AuditDropped, Written: e.m.AuditWritten, WriteErrors: e.m.AuditWriteErrors}
	go func() { _ = writer.Run(ctx) }()
	go func() { _ = e.dir.Run(ctx) }()
	e.svc.Audit = writer
	e.svc.EventsEnabled = true
	e.svc.Schedule = "@every 1h"
	e.svc.LeaderRetry = 200 * time.Millisecond
	go func() { _ = e.svc.Loop(ctx) }()

	resolver := &identity.Resolver{Verifier: &auth.Cached{Next: e.verifier, Size: 100}, Dir: e.dir, MaxCache: 100}
	gate := &middleware.Middleware{Auth: resolver, Decider: func() middleware.Decider { return e.dir.Engine() }, DB: e.st.AppPool(),
		Limiter: &ratelimit.Limiter{}, Audit: func(ctx context.Context, ev middleware.Event) {
			en := audit.Entry{Action: ev.Action, Outcome: ev.Outcome, Reason: ev.Reason}
			if ev.Grant != nil {
				en.TenantID, en.ActorID, en.ActorName = ev.Grant.Tenant, ev.Grant.Subject, ev.Grant.Username
			}
			writer.Record(ctx, en)
		}}
	mgmt := &api.Management{Log: log, Gate: gate, Engine: e.dir.Engine, Mapping: demoRules, System: e.st, Audit: writer,
		Keycloak: kcadmin.New(e.kc.URL, e.kc.Realm, e.kc.ClientID, e.kc.ClientSecret, 10*time.Second)}
	dec := &api.Decisions{Log: log, Metrics: e.m, Identify: resolver, Engine: e.dir.Engine, Audit: writer, MaxBatch: 100,
		PerSubject: &ratelimit.Limiter{}, PerClient: &ratelimit.Limiter{}}
	h := (&api.Server{Log: log, Metrics: e.m, Modules: []api.Module{mgmt, dec}}).Handler()
	call := func(token, method, path string, body any) (int, map[string]any) {
		t.Helper()
		var rd io.Reader
		if body != nil {
			b, _ := json.Marshal(body)
			rd = bytes.NewReader(b)
		}
		req := httptest.NewRequest(method, path, rd)
		req.Header.Set("Authorization", "Bearer "+token)
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		var out map[string]any
		_ = json.Unmarshal(rec.Body.Bytes(), &out)
		return rec.Code, out
	}
	names := func(out map[string]any) string {
		var n []string
		items, _ := out["items"].([]any)
		for _, it := range items {
			n = append(n, it.(map[string]any)["username"].(string))
		}
		return strings.Join(n, ",")
	}
	admin := userToken(t, e.kc, e.kc.Realm, e.kc.PublicClientID, "adam")

	// People: each filter.
	for _, f := range []struct{ query, want string }{
		{"role=Developer", "dana,dave"}, {"status=inactive", "dave"}, {"team=/customers/acme/support", "erin"}, {"q=ali", "alice"},
		{"sort=name&limit=3", "adam,alice,dana"},
	} {
		if code, out := call(admin, "GET", "/v1/people?"+f.query, nil); code != 200 || names(out) != f.want {
			t.Errorf("people?%s: %d %q, want %q", f.query, code, names(out), f.want)
		}
	}

	// Invite: created in Keycloak with the role and groups, invited here.
	email := fmt.Sprintf("new%d@acme.test", time.Now().UnixNano()%1000000)
	code, inv := call(admin, "POST", "/v1/people/invite", map[string]any{"email": email, "name": "New Person", "role": "Viewer", "teams": []string{"/customers/acme/support"}})
	if code != 201 || inv["status"] != "invited" || inv["email_sent"] != false || !strings.Contains(fmt.Sprint(inv["email_error"]), "SMTP") {
		t.Fatalf("invite: %d %v", code, inv)
	}
	id := inv["id"].(string)
	kcAdm := testenv.NewAdmin(t, e.kc)
	t.Cleanup(func() { kcAdm.Do("DELETE", "/users/"+id, nil, nil) })
	var roles []struct{ Name string }
	kcAdm.Do("GET", "/users/"+id+"/role-mappings/realm", nil, &roles)
	hasViewer := false
	for _, r := range roles {
		hasViewer = hasViewer || r.Name == "fastn-viewer"
	}
	if !hasViewer {
		t.Errorf("invited user's Keycloak roles: %v", roles)
	}
	if code, _ := call(admin, "POST", "/v1/people/invite", map[string]any{"email": email, "role": "Viewer"}); code != 409 {
		t.Errorf("second invite: %d, want 409", code)
	}
	if _, out := call(admin, "GET", "/v1/people/"+id, nil); out["status"] != "invited" {
		var st, tm string
		_ = e.st.SysPool().QueryRow(context.Background(), `SELECT coalesce((SELECT status FROM people WHERE id = $1), 'none'), coalesce((SELECT string_agg(tenant_id, ',') FROM tenant_members WHERE person_id = $1), 'none')`, id).Scan(&st, &tm)
		t.Fatalf("invited person: %v (row status %s, tenants %s, invite answer %v)", out, st, tm, inv)
	}

	// First login: the person completes Keycloak's actions and signs in;
	// the LOGIN event turns them active.
	kcAdm.Do("PUT", "/users/"+id+"/reset-password", map[string]any{"type": "password", "value": e.kc.UserPassword, "temporary": false}, nil)
	var u map[string]any
	kcAdm.Do("GET", "/users/"+id, nil, &u)
	u["requiredActions"], u["emailVerified"], u["firstName"], u["lastName"] = []string{}, true, "New", "Person"
	kcAdm.Do("PUT", "/users/"+id, u, nil)
	invitee := e.kc.Token(t, e.kc.Realm, e.kc.PublicClientID, email, e.kc.UserPassword) // the invited person signs in
	deadline := time.Now().Add(20 * time.Second)
	for {
		_, out := call(admin, "GET", "/v1/people/"+id, nil)
		if out["status"] == "active" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("invited person not active after the first login: %v", out)
		}
		time.Sleep(200 * time.Millisecond)
	}

	// Roles: duplicate Developer as custom, remove two permissions, assign.
	_, rl := call(admin, "GET", "/v1/roles", nil)
	var devID string
	for _, r := range rl["items"].([]any) {
		if m := r.(map[string]any); m["name"] == "Developer" && m["kind"] == "system" {
			devID = m["id"].(string)
		}
	}
	code, dup := call(admin, "POST", "/v1/roles/"+devID+"/duplicate", map[string]any{"name": "Developer Lite"})
	if code != 201 {
		t.Fatalf("duplicate: %d %v", code, dup)
	}
	var keep []string
	for _, p := range dup["permissions"].([]any) {
		if p != "workflows.deploy_prod" && p != "connectors.deploy_prod" {
			keep = append(keep, p.(string))
		}
	}
	if code, out := call(admin, "PATCH", "/v1/roles/"+dup["id"].(string), map[string]any{"permissions": keep}); code != 200 || out["permission_count"].(float64) != 32 {
		t.Fatalf("patch: %d %v", code, out)
	}
	if code, out := call(admin, "PUT", "/v1/people/"+id+"/roles", map[string]any{"roles": []any{map[string]any{"role": "Developer Lite"}}}); code != 200 {
		t.Fatalf("assign: %d %v", code, out)
	}
	check := func(perm string) bool {
		var last map[string]any
		for i := 0; i < 50; i++ {
			_, out := call(invitee, "POST", "/v1/check", map[string]any{"permission": perm})
			last = out
			if out["allowed"] == true {
				return true
			}
			time.Sleep(100 * time.Millisecond) // the directory reloads on NOTIFY
		}
		t.Logf("%s: %v", perm, last)
		return false
	}
	if !check("workflows.update") {
		t.Error("the assigned custom role does not grant workflows.update")
	}
	if _, out := call(invitee, "POST", "/v1/check", map[string]any{"permission": "workflows.deploy_prod"}); out["allowed"] != false {
		t.Errorf("deploy_prod allowed although removed from the custom role: %v", out)
	}
	call(admin, "PATCH", "/v1/roles/"+dup["id"].(string), map[string]any{"permissions": append(keep, "workflows.deploy_prod")})
	if !check("workflows.deploy_prod") {
		t.Error("the decision did not change after editing the custom role")
	}
	// A viewer cannot invite; the denial is audited.
	victor := userToken(t, e.kc, e.kc.Realm, e.kc.PublicClientID, "victor")
	if code, _ := call(victor, "POST", "/v1/people/invite", map[string]any{"email": "x@acme.test", "role": "Viewer"}); code != 403 {
		t.Errorf("viewer invited: %d", code)
	}
	var denied, invited int
	audited := func() bool {
		_ = e.st.SysPool().QueryRow(context.Background(), `SELECT count(*) FILTER (WHERE outcome = 'denied' AND action = 'people.invite'), count(*) FILTER (WHERE outcome = 'success' AND action = 'people.invite') FROM audit_log`).Scan(&denied, &invited)
		return denied >= 1 && invited >= 1
	}
	testenv.Eventually(t, "the invitation and the refused one in the audit log", 10*time.Second, audited)
	time.Sleep(200 * time.Millisecond) // a duplicate row, if any, would land by now
	if audited(); denied != 1 || invited != 1 {
		t.Errorf("audit: %d denied and %d successful invitations, want 1 and 1", denied, invited)
	}
	// The audit export streams from the request's transaction through the
	// real middleware: every row arrives, in both formats.
	for _, format := range []string{"ndjson", "csv"} {
		req := httptest.NewRequest("GET", "/v1/audit?format="+format, nil)
		req.Header.Set("Authorization", "Bearer "+admin)
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		var want int
		_ = e.st.SysPool().QueryRow(context.Background(), `SELECT count(*) FROM audit_log WHERE tenant_id = 'acme'`).Scan(&want)
		lines := strings.Count(strings.TrimSpace(rec.Body.String()), "\n") + 1
		if format == "csv" {
			lines-- // the header
		}
		if rec.Code != 200 || lines != want || want < 2 {
			t.Errorf("audit export %s: %d, %d rows of %d: %.200s", format, rec.Code, lines, want, rec.Body)
		}
	}
}
