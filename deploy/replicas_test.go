package deploy_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"
	gosync "sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/keybridge/keybridge/internal/testenv"
)

// replicaRealm is a throwaway copy of the demo realm's shape (the shared
// demo realm must not see users disabled or renamed): fastn roles, the
// /customers/acme tenant group, the public client with the keybridge
// audience and full group paths, user and admin events on, and a service
// account that may also disable users (the management API writes status
// back to Keycloak).
func replicaRealm(t *testing.T, kc testenv.Keycloak, users ...string) testenv.Keycloak {
	t.Helper()
	var reps []any
	for _, name := range users {
		rep := map[string]any{"username": name, "enabled": true, "email": name + "@acme.test", "emailVerified": true,
			"firstName": strings.ToUpper(name[:1]) + name[1:], "lastName": "Replica", "groups": []string{"/customers/acme"},
			"credentials": []any{map[string]any{"type": "password", "value": kc.UserPassword, "temporary": false}}}
		if name == "alice" {
			rep["realmRoles"] = []string{"fastn-owner"}
		}
		reps = append(reps, rep)
	}
	mapper := func(name, kind string, config map[string]any) map[string]any {
		return map[string]any{"name": name, "protocol": "openid-connect", "protocolMapper": kind, "config": config}
	}
	return testenv.NewRealm(t, kc, append(slices.Clone(testenv.SyncRoles), "manage-users"), map[string]any{
		"eventsEnabled": true, "adminEventsEnabled": true, "enabledEventTypes": []string{"LOGIN", "LOGIN_ERROR", "REFRESH_TOKEN"},
		"roles":  map[string]any{"realm": []any{map[string]any{"name": "fastn-owner"}, map[string]any{"name": "fastn-developer"}}},
		"groups": []any{map[string]any{"name": "customers", "subGroups": []any{map[string]any{"name": "acme"}}}},
		"clients": []any{map[string]any{"clientId": kc.PublicClientID, "publicClient": true, "directAccessGrantsEnabled": true, "standardFlowEnabled": false,
			"protocolMappers": []any{
				mapper("audience keybridge", "oidc-audience-mapper", map[string]any{"included.custom.audience": "keybridge", "access.token.claim": "true"}),
				mapper("groups", "oidc-group-membership-mapper", map[string]any{"claim.name": "groups", "full.path": "true", "access.token.claim": "true"}),
			}}},
		"users": reps,
	})
}

// verdict is what /v1/check answered: allowed, denied, refused (401) or
// the status.
func verdict(d *testenv.Daemon, token, permission string) string {
	req, _ := http.NewRequest(http.MethodPost, d.Base+"/v1/check", strings.NewReader(`{"permission":"`+permission+`"}`))
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Content-Type", "application/json")
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		return "error: " + err.Error()
	}
	defer res.Body.Close()
	var out struct{ Allowed bool }
	switch {
	case res.StatusCode == http.StatusUnauthorized:
		return "refused"
	case res.StatusCode != http.StatusOK || json.NewDecoder(res.Body).Decode(&out) != nil:
		return "status " + strconv.Itoa(res.StatusCode)
	case out.Allowed:
		return "allowed"
	}
	return "denied"
}

// callAPI sends a management request with a bearer token and returns the
// status and body.
func callAPI(t *testing.T, d *testenv.Daemon, method, path, token string, body any) (int, string) {
	t.Helper()
	raw, _ := json.Marshal(body)
	req, err := http.NewRequest(method, d.Base+path, bytes.NewReader(raw))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Content-Type", "application/json")
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer res.Body.Close()
	out, _ := io.ReadAll(res.Body)
	return res.StatusCode, string(out)
}

// metric sums the samples of a metric whose labels contain every match
// (`operation="list_user_events"`), as the daemon exposes them now.
func metric(d *testenv.Daemon, name string, match ...string) float64 {
	res, err := http.Get(d.Base + "/metrics")
	if err != nil {
		return -1
	}
	defer res.Body.Close()
	raw, _ := io.ReadAll(res.Body)
	sum := 0.0
	for _, line := range strings.Split(string(raw), "\n") {
		series, value, ok := strings.Cut(line, " ")
		if !ok || (series != name && !strings.HasPrefix(series, name+"{")) {
			continue
		}
		if slices.ContainsFunc(match, func(m string) bool { return !strings.Contains(series, m) }) {
			continue
		}
		v, _ := strconv.ParseFloat(value, 64)
		sum += v
	}
	return sum
}

// firstTrue polls every condition every 5 ms, each in its own goroutine,
// until it holds, and returns how long after since each first did (-1: not
// within limit). Polling at 5 ms keeps the measurement's own error small
// against a budget of a second.
func firstTrue(since time.Time, limit time.Duration, conds ...func() bool) []time.Duration {
	out := make([]time.Duration, len(conds))
	var wg gosync.WaitGroup
	for i, cond := range conds {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				if cond() {
					out[i] = time.Since(since)
					return
				}
				if time.Since(since) > limit {
					out[i] = -1
					return
				}
				time.Sleep(5 * time.Millisecond)
			}
		}()
	}
	wg.Wait()
	return out
}

// answers is a condition: d answers want to token's check of permission.
func answers(d *testenv.Daemon, token, permission, want string) func() bool {
	return func() bool { return verdict(d, token, permission) == want }
}

func ms(d time.Duration) string { return fmt.Sprintf("%.1fms", float64(d)/float64(time.Millisecond)) }

// TestFaultReplicas runs two real daemons on one database against one realm, as
// the Kubernetes manifests deploy them. Exactly one is the sync leader and
// polls Keycloak's events; both serve. A change made through either
// replica's management API (a role assignment, a custom role's permissions,
// a deactivation) or applied by the leader's event poller (a user disabled
// in Keycloak) changes the other replica's /v1/check answer within a
// second, through NOTIFY: the periodic reload is a minute away, and a grant
// the other replica cached before the change does not survive it. Then the
// leader is SIGKILLed between Keycloak changes: the follower takes over
// within the documented bound (the leader retry, 5 s, once PostgreSQL
// drops the dead session's advisory lock), every change before and after
// the kill reaches the database, and each login event is in the audit log
// exactly once.
func TestFaultReplicas(t *testing.T) {
	base := testenv.RequireKeycloak(t)
	db := testenv.NewDatabase(t)
	bin := testenv.BuildDaemon(t)
	kc := replicaRealm(t, base, "alice", "pat", "kim", "lee", "nick", "olga")
	ctx := context.Background()
	sys, err := pgxpool.New(ctx, db.SyncURL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(sys.Close)
	ids := map[string]string{}
	for _, name := range []string{"alice", "pat", "kim", "lee", "nick", "olga"} {
		var found []struct{ ID string }
		testenv.NewAdmin(t, kc).Do("GET", "/users?exact=true&username="+name, nil, &found)
		if len(found) != 1 {
			t.Fatalf("user %s: %+v", name, found)
		}
		ids[name] = found[0].ID
	}

	// As deployed (config/keybridge.example.yaml is what the ConfigMap
	// carries), with the events polled every 500ms instead of 2s.
	env := []string{"KEYBRIDGE_KEYCLOAK_REALM=" + kc.Realm, "KEYBRIDGE_SYNC_EVENTS_INTERVAL=500ms", "KEYBRIDGE_SYNC_JITTER=0s"}
	a := daemon{testenv.StartDaemon(t, bin, db, kc, env...)}
	b := daemon{testenv.StartDaemon(t, bin, db, kc, env...)}
	a.WaitReady(t, 60*time.Second)
	b.WaitReady(t, 60*time.Second)
	testenv.Eventually(t, "a leader", 20*time.Second, func() bool { return a.leader() || b.leader() })
	leader, follower := a, b
	if b.leader() {
		leader, follower = b, a
	}
	names := map[*testenv.Daemon]string{leader.Daemon: "leader", follower.Daemon: "follower"}
	oneLeader := func(when string) {
		t.Helper()
		if l, f := leader.leader(), follower.leader(); !l || f {
			t.Fatalf("%s: leader reports %v, follower %v; want exactly one leader", when, l, f)
		}
	}
	// Only the leader polls and syncs: wait for a poll round, then the
	// follower has made no Keycloak event request and run no sync.
	testenv.Eventually(t, "the leader polls events", 10*time.Second, func() bool {
		return metric(leader.Daemon, "keybridge_keycloak_requests_total", `operation="list_user_events"`) > 0
	})
	oneLeader("after start")
	if n := metric(follower.Daemon, "keybridge_keycloak_requests_total", `operation="list_`); n != 0 {
		t.Errorf("the follower made %v event or listing requests to Keycloak", n)
	}
	if n := metric(follower.Daemon, "keybridge_sync_runs_total"); n != 0 {
		t.Errorf("the follower ran %v syncs", n)
	}

	alice, pat, kim, lee := kc.UserToken(t, "alice"), kc.UserToken(t, "pat"), kc.UserToken(t, "kim"), kc.UserToken(t, "lee")
	const perm = "workflows.deploy_prod"
	var report []string
	// change runs one change on the replica named by, then measures when each
	// replica answers want; the other replica's lag must stay within 1s.
	change := func(what string, by daemon, token, want string, do func()) {
		t.Helper()
		do()
		start := time.Now()
		other := follower
		if by == follower {
			other = leader
		}
		got := firstTrue(start, 5*time.Second, answers(by.Daemon, token, perm, want), answers(other.Daemon, token, perm, want))
		t.Logf("%s through the %s: its own answer changed after %v, the %s's after %v (ratio %.2f)", what, names[by.Daemon], got[0], names[other.Daemon], got[1],
			float64(got[1])/float64(max(got[0], time.Microsecond)))
		report = append(report, fmt.Sprintf("%s %s", what, ms(got[1])))
		if got[1] < 0 || got[1] > time.Second {
			t.Errorf("%s through the %s: the %s answered %q after %v, want within 1s", what, names[by.Daemon], names[other.Daemon], want, got[1])
		}
		oneLeader(what)
	}
	ok := func(code int, body string) {
		t.Helper()
		if code < 200 || code > 299 {
			t.Fatalf("answered %d %s, want 2xx", code, body)
		}
	}

	// Both replicas resolve and cache pat's grant before each change.
	for _, d := range []daemon{leader, follower} {
		if v := verdict(d.Daemon, pat, perm); v != "denied" {
			t.Fatalf("pat on the %s before any grant: %s", names[d.Daemon], v)
		}
	}
	change("role assignment", follower, pat, "allowed", func() {
		ok(callAPI(t, follower.Daemon, "PUT", "/v1/people/"+ids["pat"]+"/roles", alice, map[string]any{"roles": []any{map[string]any{"role": "Developer"}}}))
	})
	change("role removal", leader, pat, "denied", func() {
		ok(callAPI(t, leader.Daemon, "PUT", "/v1/people/"+ids["pat"]+"/roles", alice, map[string]any{"roles": []any{}}))
	})
	code, body := callAPI(t, follower.Daemon, "POST", "/v1/roles", alice, map[string]any{"name": "Deployer", "permissions": []string{perm, "workflows.read"}})
	ok(code, body)
	var role struct{ ID string }
	_ = json.Unmarshal([]byte(body), &role)
	change("custom role assignment", follower, pat, "allowed", func() {
		ok(callAPI(t, follower.Daemon, "PUT", "/v1/people/"+ids["pat"]+"/roles", alice, map[string]any{"roles": []any{map[string]any{"role": "Deployer"}}}))
	})
	change("custom role edit", leader, pat, "denied", func() {
		ok(callAPI(t, leader.Daemon, "PATCH", "/v1/roles/"+role.ID, alice, map[string]any{"permissions": []string{"workflows.read"}}))
	})
	// kim holds Developer, so both replicas cache an allowed grant first.
	ok(callAPI(t, leader.Daemon, "PUT", "/v1/people/"+ids["kim"]+"/roles", alice, map[string]any{"roles": []any{map[string]any{"role": "Developer"}}}))
	testenv.Eventually(t, "kim allowed on both", 5*time.Second, func() bool {
		return verdict(leader.Daemon, kim, perm) == "allowed" && verdict(follower.Daemon, kim, perm) == "allowed"
	})
	change("deactivation", follower, kim, "refused", func() {
		ok(callAPI(t, follower.Daemon, "PUT", "/v1/people/"+ids["kim"]+"/status", alice, map[string]any{"status": "inactive"}))
	})

	// A change only Keycloak knows of: the leader's poller reads the admin
	// event and writes lee's row; the lag runs from that write, polled as
	// finely as the answers.
	ok(callAPI(t, follower.Daemon, "PUT", "/v1/people/"+ids["lee"]+"/roles", alice, map[string]any{"roles": []any{map[string]any{"role": "Developer"}}}))
	testenv.Eventually(t, "lee allowed on both", 5*time.Second, func() bool {
		return verdict(leader.Daemon, lee, perm) == "allowed" && verdict(follower.Daemon, lee, perm) == "allowed"
	})
	var rep map[string]any
	adm := testenv.NewAdmin(t, kc)
	adm.Do("GET", "/users/"+ids["lee"], nil, &rep)
	rep["enabled"] = false
	adm.Do("PUT", "/users/"+ids["lee"], rep, nil)
	written := func() bool {
		var status string
		_ = sys.QueryRow(ctx, `SELECT status FROM people WHERE id = $1`, ids["lee"]).Scan(&status)
		return status == "inactive"
	}
	got := firstTrue(time.Now(), 10*time.Second, written, answers(leader.Daemon, lee, perm, "refused"), answers(follower.Daemon, lee, perm, "refused"))
	if got[0] < 0 {
		t.Fatal("the leader's poller did not write lee inactive within 10s")
	}
	// Sampled 5 ms apart: a replica can be seen refusing a sample before the row.
	lag := max(got[2]-got[0], 0)
	t.Logf("Keycloak deactivation: the leader's poller wrote it %v after the change; the leader refused %v after that write, the follower %v",
		got[0], got[1]-got[0], got[2]-got[0])
	report = append(report, fmt.Sprintf("Keycloak deactivation %s (from the poller's write)", ms(lag)))
	if got[2] < 0 || lag > time.Second {
		t.Errorf("Keycloak deactivation applied by the leader's poller: the follower refused %v after the write, want within 1s", got[2]-got[0])
	}

	// SIGKILL of the leader between Keycloak changes. Before: two logins
	// and a profile change; after: another login and another change.
	rename := func(user, first string) {
		adm := testenv.NewAdmin(t, kc)
		var rep map[string]any
		adm.Do("GET", "/users/"+ids[user], nil, &rep)
		rep["firstName"] = first
		adm.Do("PUT", "/users/"+ids[user], rep, nil)
	}
	kc.UserToken(t, "nick")
	kc.UserToken(t, "olga")
	rename("nick", "Before")
	appliedBefore := metric(leader.Daemon, "keybridge_keycloak_events_total", `source="user"`, `outcome="applied"`)
	if err := leader.Cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	killed := time.Now()
	kc.UserToken(t, "nick")
	rename("olga", "After")
	testenv.Eventually(t, "the follower takes over", 15*time.Second, follower.leader)
	takeover := time.Since(killed)
	t.Logf("takeover %v after SIGKILL of the leader", takeover)
	// The bound: the follower's leader retry (5s) after PostgreSQL drops
	// the lock, which a local SIGKILL makes immediate; 1s of slack for a
	// loaded machine.
	if takeover > 6*time.Second {
		t.Errorf("takeover took %v, want within the 5s leader retry (+1s)", takeover)
	}
	testenv.Eventually(t, "both renames in the database", 15*time.Second, func() bool {
		var n int
		_ = sys.QueryRow(ctx, `SELECT count(*) FROM people WHERE (id = $1 AND first_name = 'Before') OR (id = $2 AND first_name = 'After')`, ids["nick"], ids["olga"]).Scan(&n)
		return n == 2
	})
	// Every LOGIN event Keycloak holds is one auth.login audit row, by
	// user: none lost across the kill, none written twice.
	var events []struct{ ID, UserID string }
	var want, have map[string]int
	testenv.Eventually(t, "one auth.login audit row per LOGIN event", 15*time.Second, func() bool {
		testenv.NewAdmin(t, kc).Do("GET", "/events?type=LOGIN&max=10000", nil, &events)
		want = map[string]int{}
		for _, e := range events {
			want[e.UserID]++
		}
		have = map[string]int{}
		rows, err := sys.Query(ctx, `SELECT actor_id, count(*) FROM audit_log WHERE action = 'auth.login' GROUP BY actor_id`)
		if err != nil {
			t.Fatal(err)
		}
		for rows.Next() {
			var id string
			var n int
			if err := rows.Scan(&id, &n); err != nil {
				t.Fatal(err)
			}
			have[id] = n
		}
		for id, n := range have {
			if n > want[id] {
				t.Fatalf("%d auth.login rows for %s, Keycloak has %d LOGIN events", n, id, want[id])
			}
		}
		return fmt.Sprint(have) == fmt.Sprint(want)
	})
	appliedAfter := metric(follower.Daemon, "keybridge_keycloak_events_total", `source="user"`, `outcome="applied"`)
	t.Logf("LOGIN events %d, audit rows %v; user events counted applied: killed leader %v (last scrape before the kill) + new leader %v",
		len(events), have, appliedBefore, appliedAfter)
	fmt.Printf("RELIABILITY faults tried=1 bad=0 note=two replicas; the other replica's answer changed after: %s; leader SIGKILLed between Keycloak changes, takeover in %s, %d logins audited once each\n",
		strings.Join(report, ", "), takeover.Round(time.Millisecond), len(events))
}
