package sync_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	mrand "math/rand/v2"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"slices"
	"sort"
	"strconv"
	"strings"
	gosync "sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gin-gonic/gin"
	"github.com/jackc/pgx/v5"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/keybridge/keybridge/internal/api"
	"github.com/keybridge/keybridge/internal/audit"
	"github.com/keybridge/keybridge/internal/metrics"
	"github.com/keybridge/keybridge/internal/ratelimit"
	"github.com/keybridge/keybridge/internal/store"
	"github.com/keybridge/keybridge/internal/testenv"
	"github.com/keybridge/keybridge/mapping"
	ksync "github.com/keybridge/keybridge/sync"
)

var demoMapping = mapping.Config{Preset: "fastn", Tenant: mapping.TenantSource{GroupPrefix: "/customers"}, Rules: []mapping.Rule{
	{RealmRole: "fastn-owner", GrantRole: "Owner"}, {RealmRole: "fastn-admin", GrantRole: "Admin"},
	{RealmRole: "fastn-developer", GrantRole: "Developer"}, {ClientRole: "portal:developer", GrantRole: "Developer"},
	{RealmRole: "fastn-operator", GrantRole: "Operator"}, {ClientRole: "portal:operator", GrantRole: "Operator"},
	{RealmRole: "fastn-viewer", GrantRole: "Viewer"}, {RealmRole: "fastn-enduser", GrantRole: "End User"},
}}

type fixture struct {
	kc  testenv.Keycloak
	db  testenv.Database
	st  *store.Store
	svc *ksync.Service
	m   *metrics.Metrics
}

func newFixture(t *testing.T, keycloakURL string) *fixture {
	t.Helper()
	kc := testenv.RequireKeycloak(t)
	db := testenv.NewDatabase(t)
	st, err := store.Open(context.Background(), db.AppURL, db.SyncURL, 8)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(st.Close)
	if keycloakURL == "" {
		keycloakURL = kc.URL
	}
	return &fixture{kc: kc, db: db, st: st, m: metrics.New("test", "test"), svc: newService(t, st, kc, keycloakURL)}
}

func newService(t *testing.T, st *store.Store, kc testenv.Keycloak, url string) *ksync.Service {
	engine, err := mapping.New(demoMapping)
	if err != nil {
		t.Fatal(err)
	}
	m := metrics.New("test", "test")
	return &ksync.Service{
		KC:    ksync.NewKeycloak(ksync.KeycloakOptions{URL: url, Realm: kc.Realm, ClientID: kc.ClientID, ClientSecret: kc.ClientSecret, Timeout: 5 * time.Second, PageSize: 50, Retries: 1, Metrics: m}),
		Store: st, Engine: func() *mapping.Engine { return engine }, Metrics: m, Log: slog.New(slog.NewTextHandler(io.Discard, nil)),
		Mode: "full", MaxRemovalShare: 0.2, Timeout: time.Minute, Schedule: "@every 1h", EventsInterval: 200 * time.Millisecond,
		EventsOverlap: 10 * time.Second, LeaderRetry: 300 * time.Millisecond,
	}
}

func (f *fixture) run(t *testing.T, o ksync.RunOptions) *ksync.Result {
	t.Helper()
	if o.Trigger == "" {
		o.Trigger = "cli"
	}
	res, err := f.svc.Run(context.Background(), o)
	if err != nil {
		t.Fatalf("sync: %v", err)
	}
	return res
}

// admin calls Keycloak's admin API as the master admin.
type admin struct{ *testenv.Admin }

func newAdmin(t testing.TB, kc testenv.Keycloak) *admin { return &admin{testenv.NewAdmin(t, kc)} }

func (a *admin) createUser(t testing.TB, name string, groups ...string) string {
	_, h := a.Do("POST", "/users", map[string]any{"username": name, "enabled": true, "firstName": "T", "lastName": name, "email": name + "@acme.test", "groups": groups}, nil)
	loc := h.Get("Location")
	id := loc[strings.LastIndex(loc, "/")+1:]
	t.Cleanup(func() { _, _, _, _ = a.Attempt("DELETE", "/users/"+id, nil) }) // a test may have deleted it already
	return id
}

func (f *fixture) query(t *testing.T, sql string, args ...any) []string {
	t.Helper()
	rows, err := f.st.SysPool().Query(context.Background(), sql, args...)
	if err != nil {
		t.Fatal(err)
	}
	out, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	sort.Strings(out)
	return out
}

func TestFullSyncEqualsKeycloak(t *testing.T) {
	f := newFixture(t, "")
	res := f.run(t, ksync.RunOptions{})
	a := newAdmin(t, f.kc)

	var users []struct {
		ID, Username string
		Enabled      bool
	}
	a.Do("GET", "/users?max=1000&briefRepresentation=true", nil, &users)
	var want []string
	for _, u := range users {
		status := "active"
		if !u.Enabled {
			status = "inactive"
		}
		want = append(want, u.ID+" "+u.Username+" "+status)
	}
	sort.Strings(want)
	if got := f.query(t, `SELECT id || ' ' || username || ' ' || status FROM people`); !slices.Equal(got, want) {
		t.Errorf("people:\n got %v\nwant %v", got, want)
	}

	// Teams: every group with its path and parent, walked through the admin API.
	var wantTeams, wantMembers []string
	var walk func(parent string, gs []map[string]any)
	walk = func(parent string, gs []map[string]any) {
		for _, g := range gs {
			id := g["id"].(string)
			wantTeams = append(wantTeams, fmt.Sprintf("%s %s %s", id, g["path"], parent))
			var members []struct{ ID string }
			a.Do("GET", "/groups/"+id+"/members?max=1000", nil, &members)
			for _, m := range members {
				wantMembers = append(wantMembers, id+" "+m.ID)
			}
			var children []map[string]any
			a.Do("GET", "/groups/"+id+"/children?max=1000", nil, &children)
			walk(id, children)
		}
	}
	var top []map[string]any
	a.Do("GET", "/groups?max=1000", nil, &top)
	walk("", top)
	sort.Strings(wantTeams)
	sort.Strings(wantMembers)
	if got := f.query(t, `SELECT id || ' ' || path || ' ' || coalesce(parent_id, '') FROM teams`); !slices.Equal(got, wantTeams) {
		t.Errorf("teams:\n got %v\nwant %v", got, wantTeams)
	}
	if got := f.query(t, `SELECT team_id || ' ' || person_id FROM team_members`); !slices.Equal(got, wantMembers) {
		t.Errorf("memberships:\n got %v\nwant %v", got, wantMembers)
	}

	// Roles, and each person's effective realm and client roles.
	var realmRoles []struct{ Name string }
	a.Do("GET", "/roles?max=1000", nil, &realmRoles)
	var clients []struct{ ID string }
	a.Do("GET", "/clients?clientId=portal", nil, &clients)
	var portalRoles []struct{ Name string }
	a.Do("GET", "/clients/"+clients[0].ID+"/roles", nil, &portalRoles)
	var wantRoles []string
	for _, r := range realmRoles {
		wantRoles = append(wantRoles, "|"+r.Name)
	}
	for _, r := range portalRoles {
		wantRoles = append(wantRoles, "portal|"+r.Name)
	}
	sort.Strings(wantRoles)
	if got := f.query(t, `SELECT client_id || '|' || name FROM roles WHERE kind = 'keycloak' AND status = 'active'`); !slices.Equal(got, wantRoles) {
		t.Errorf("roles:\n got %v\nwant %v", got, wantRoles)
	}
	for _, u := range users {
		var eff []struct{ Name string }
		a.Do("GET", "/users/"+u.ID+"/role-mappings/realm/composite", nil, &eff)
		var effClient []struct{ Name string }
		a.Do("GET", "/users/"+u.ID+"/role-mappings/clients/"+clients[0].ID+"/composite", nil, &effClient)
		var w []string
		for _, r := range eff {
			w = append(w, "|"+r.Name)
		}
		for _, r := range effClient {
			w = append(w, "portal|"+r.Name)
		}
		sort.Strings(w)
		got := f.query(t, `SELECT r.client_id || '|' || r.name FROM role_assignments ra JOIN roles r ON r.id = ra.role_id
			WHERE ra.person_id = $1 AND ra.source = 'keycloak'`, u.ID)
		if !slices.Equal(got, w) {
			t.Errorf("%s effective roles:\n got %v\nwant %v", u.Username, got, w)
		}
	}
	// The preset role each demo user holds through the rules.
	for user, role := range map[string]string{"alice": "Owner", "adam": "Admin", "dana": "Developer", "oscar": "Operator", "victor": "Viewer", "erin": "End User", "gus": "Developer"} {
		got := f.query(t, `SELECT r.name || '@' || ra.tenant_id FROM role_assignments ra JOIN roles r ON r.id = ra.role_id JOIN people p ON p.id = ra.person_id
			WHERE p.username = $1 AND ra.source = 'rule'`, user)
		if len(got) != 1 || !strings.HasPrefix(got[0], role+"@") {
			t.Errorf("%s rule roles %v, want %s", user, got, role)
		}
	}
	t.Logf("full sync of the demo realm: %d Keycloak requests, %d users", res.Requests, len(users))
}

// countWrites installs a counting trigger on every table but sync_runs.
func countWrites(t *testing.T, f *fixture) func() int {
	t.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, f.db.OwnerURL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close(ctx) })
	for _, q := range []string{
		`CREATE TABLE test_writes (n bigint NOT NULL)`,
		`INSERT INTO test_writes VALUES (0)`,
		`CREATE FUNCTION test_count() RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER AS $$ BEGIN UPDATE test_writes SET n = n + 1; RETURN NULL; END $$`,
	} {
		if _, err := conn.Exec(ctx, q); err != nil {
			t.Fatal(err)
		}
	}
	for _, table := range []string{"tenants", "people", "tenant_members", "teams", "team_members", "roles", "role_permissions", "role_composites", "role_assignments", "audit_log", "sync_state", "webhook_deliveries"} {
		if _, err := conn.Exec(ctx, fmt.Sprintf(`CREATE TRIGGER test_count AFTER INSERT OR UPDATE OR DELETE ON %s FOR EACH ROW EXECUTE FUNCTION test_count()`, table)); err != nil {
			t.Fatal(err)
		}
	}
	return func() int {
		var n int
		if err := conn.QueryRow(ctx, `SELECT n FROM test_writes`).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
}

func TestNoChangeSyncWritesOnlyItsRunRecord(t *testing.T) {
	f := newFixture(t, "")
	f.run(t, ksync.RunOptions{})
	writes := countWrites(t, f)
	runsBefore := len(f.query(t, `SELECT id::text FROM sync_runs`))
	res := f.run(t, ksync.RunOptions{})
	if n := writes(); n != 0 || len(res.Changes) != 0 {
		t.Errorf("a sync with no change wrote %d rows (changes %v)", n, res.Changes)
	}
	if runs := len(f.query(t, `SELECT id::text FROM sync_runs`)); runs != runsBefore+1 {
		t.Errorf("run records %d -> %d", runsBefore, runs)
	}
	t.Logf("no-change re-sync: 0 row writes besides its run record, %s", res.Duration)
}

// flaky is a proxy in front of the real Keycloak that fails every admin
// request after the first `after`, or answers empty lists.
type flaky struct {
	after atomic.Int64
	n     atomic.Int64
	empty atomic.Bool
}

func (fl *flaky) server(t *testing.T, target string) *httptest.Server {
	u, _ := url.Parse(target)
	proxy := httputil.NewSingleHostReverseProxy(u)
	s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.Contains(r.URL.Path, "/admin/") {
			n := fl.n.Add(1)
			if a := fl.after.Load(); a > 0 && n > a {
				hj, ok := w.(http.Hijacker)
				if ok {
					c, _, _ := hj.Hijack()
					c.Close() // as if Keycloak died mid-request
					return
				}
			}
			if fl.empty.Load() && (strings.HasSuffix(r.URL.Path, "/users") || strings.HasSuffix(r.URL.Path, "/groups") || strings.HasSuffix(r.URL.Path, "/roles")) && r.URL.Query().Get("idpAlias") == "" {
				w.Header().Set("Content-Type", "application/json")
				_, _ = w.Write([]byte("[]"))
				return
			}
		}
		proxy.ServeHTTP(w, r)
	}))
	t.Cleanup(s.Close)
	return s
}

func TestFaultKeycloakDyingMidSync(t *testing.T) {
	kc := testenv.RequireKeycloak(t)
	fl := &flaky{}
	srv := fl.server(t, kc.URL)
	f := newFixture(t, srv.URL)
	points := []int64{3, 9, 17, 25}
	if os.Getenv("KEYBRIDGE_RELIABILITY") != "" {
		points = nil
		for i := 0; i < 25; i++ {
			points = append(points, 1+mrand.Int64N(25)) // the demo realm takes ~31 admin requests
		}
	}
	for _, after := range points {
		fl.n.Store(0)
		fl.after.Store(after)
		before, _ := store.LoadSyncState(context.Background(), f.st.SysPool())
		res, err := f.svc.Run(context.Background(), ksync.RunOptions{Trigger: "cli"})
		if err == nil || res.Outcome != "failure" {
			t.Fatalf("cut after %d requests: run did not fail: %+v %v", after, res, err)
		}
		after2, _ := store.LoadSyncState(context.Background(), f.st.SysPool())
		if len(after2.People) != len(before.People) || len(after2.Assignments) != len(before.Assignments) {
			t.Fatalf("a failed run applied changes")
		}
	}
	fl.after.Store(0)
	res := f.run(t, ksync.RunOptions{})
	if res.Outcome != "success" || len(f.query(t, `SELECT id FROM people`)) < 11 {
		t.Fatalf("next run did not converge: %+v", res)
	}
	runs := f.query(t, `SELECT outcome FROM sync_runs`)
	if strings.Count(strings.Join(runs, ","), "failure") != len(points) {
		t.Errorf("failed runs not recorded: %v", runs)
	}
	fmt.Printf("RELIABILITY faults tried=%d bad=0 note=Keycloak connection cut at random points of a full sync\n", len(points))
}

// TestFaultKeycloakSlow: responses slower than the timeout fail the run
// cleanly, with the error in the metrics and the run record.
func TestFaultKeycloakSlow(t *testing.T) {
	kc := testenv.RequireKeycloak(t)
	target, _ := url.Parse(kc.URL)
	proxy := httputil.NewSingleHostReverseProxy(target)
	slow := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.Contains(r.URL.Path, "/admin/") && strings.HasSuffix(r.URL.Path, "/groups") {
			select {
			case <-r.Context().Done():
				return
			case <-time.After(3 * time.Second):
			}
		}
		proxy.ServeHTTP(w, r)
	}))
	defer slow.Close()
	f := newFixture(t, "")
	f.svc.KC = ksync.NewKeycloak(ksync.KeycloakOptions{URL: slow.URL, Realm: kc.Realm, ClientID: kc.ClientID, ClientSecret: kc.ClientSecret,
		Timeout: 500 * time.Millisecond, Retries: 1, Metrics: f.m})
	start := time.Now()
	res, err := f.svc.Run(context.Background(), ksync.RunOptions{Trigger: "cli"})
	if err == nil || res.Outcome != "failure" || time.Since(start) > 10*time.Second {
		t.Fatalf("slow Keycloak: %+v %v after %s", res, err, time.Since(start))
	}
	if n := testutil.ToFloat64(f.m.KeycloakRequests.WithLabelValues("list_groups", "error")); n < 1 {
		t.Errorf("timeouts not counted: %v", n)
	}
	if people := f.query(t, `SELECT id FROM people`); len(people) != 0 {
		t.Errorf("a failed run applied %d people", len(people))
	}
	fmt.Printf("RELIABILITY faults tried=1 bad=0 note=Keycloak slower than the timeout\n")
}

func TestDeletionGuardRefusesAnEmptiedRealm(t *testing.T) {
	kc := testenv.RequireKeycloak(t)
	fl := &flaky{}
	srv := fl.server(t, kc.URL)
	f := newFixture(t, srv.URL)
	f.run(t, ksync.RunOptions{})
	fl.empty.Store(true)
	aborts := func() (n float64) {
		for _, kind := range []string{"tenants", "people", "teams", "roles"} {
			n += testutil.ToFloat64(f.svc.Metrics.SyncGuardAborts.WithLabelValues(kind))
		}
		return n
	}
	// A dry run shows the verdict without counting an abort (which pages).
	if res, err := f.svc.Run(context.Background(), ksync.RunOptions{Trigger: "cli", DryRun: true}); err == nil || res.Outcome != "guard_abort" {
		t.Fatalf("dry run: %+v %v", res, err)
	}
	if n := aborts(); n != 0 {
		t.Fatalf("a dry run counted %v guard aborts", n)
	}
	res, err := f.svc.Run(context.Background(), ksync.RunOptions{Trigger: "cli"})
	if err == nil || res.Outcome != "guard_abort" || !strings.Contains(err.Error(), "deletion guard") {
		t.Fatalf("guard did not trip: %+v %v", res, err)
	}
	if n := aborts(); n != 1 {
		t.Fatalf("guard aborts %v, want 1", n)
	}
	if active := f.query(t, `SELECT id FROM people WHERE status <> 'deleted'`); len(active) < 11 {
		t.Fatalf("guard aborted but %d people remain active", len(active))
	}
	res = f.run(t, ksync.RunOptions{Force: true})
	if deleted := f.query(t, `SELECT id FROM people WHERE status = 'deleted'`); len(deleted) < 11 || res.Outcome != "success" {
		t.Fatalf("forced run: %d deleted, %+v", len(deleted), res)
	}
	if n := f.query(t, `SELECT id FROM people`); len(n) < 11 {
		t.Errorf("people were hard-deleted")
	}
}

func TestAdditiveModeNeverDeactivates(t *testing.T) {
	kc := testenv.RequireKeycloak(t)
	fl := &flaky{}
	srv := fl.server(t, kc.URL)
	f := newFixture(t, srv.URL)
	f.run(t, ksync.RunOptions{})
	fl.empty.Store(true)
	res := f.run(t, ksync.RunOptions{Mode: "additive", Force: true})
	if deleted := f.query(t, `SELECT id FROM people WHERE status = 'deleted'`); len(deleted) != 0 || res.Outcome != "success" {
		t.Fatalf("additive run deactivated %d people", len(deleted))
	}
}

// keycloakProxy forwards to the real Keycloak; tests put a fault or an
// edit in front of it.
func keycloakProxy(t *testing.T) *httputil.ReverseProxy {
	kc := testenv.RequireKeycloak(t)
	u, err := url.Parse(kc.URL)
	if err != nil {
		t.Fatal(err)
	}
	return httputil.NewSingleHostReverseProxy(u)
}

// An admin event the poller cannot apply (Keycloak fails the read of that
// one user) is not dropped: it is left to a full run, which the poller then
// owes and runs, so the change still lands within seconds.
func TestEventPollerLeavesAnEventItCannotApplyToAFullRun(t *testing.T) {
	var failID atomic.Value
	failID.Store("")
	proxy := keycloakProxy(t)
	front := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if id := failID.Load().(string); id != "" && strings.HasSuffix(r.URL.Path, "/users/"+id) {
			http.Error(w, "injected", http.StatusInternalServerError)
			return
		}
		proxy.ServeHTTP(w, r)
	}))
	t.Cleanup(front.Close)
	f := newFixture(t, front.URL)
	a := newAdmin(t, f.kc)
	id := a.createUser(t, "evfail-"+fmt.Sprint(time.Now().UnixNano()%100000))
	f.run(t, ksync.RunOptions{})
	failID.Store(id)

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	f.svc.EventsEnabled = true
	go func() { _ = f.svc.Loop(ctx) }()
	testenv.Eventually(t, "leadership", 10*time.Second, f.svc.IsLeader)

	var user map[string]any
	a.Do("GET", "/users/"+id, nil, &user)
	user["enabled"] = false
	a.Do("PUT", "/users/"+id, user, nil)
	took := testenv.Eventually(t, "the disabled user, through a full run", 15*time.Second, func() bool {
		return len(f.query(t, `SELECT id FROM people WHERE id = $1 AND status = 'inactive'`, id)) == 1
	})
	t.Logf("applied %s after the change, with the user's own read failing", took)
	if n := testutil.ToFloat64(f.svc.Metrics.KeycloakEvents.WithLabelValues("admin", "deferred")); n < 1 {
		t.Errorf("deferred admin events = %v, want at least 1", n)
	}
	// The run's apply commits before the run is counted: wait for the count.
	testenv.Eventually(t, "an event-triggered successful run counted", 10*time.Second, func() bool {
		return testutil.ToFloat64(f.svc.Metrics.SyncRuns.WithLabelValues("event", "success")) >= 1
	})
}

func TestEventPollerAppliesChangesWithinSeconds(t *testing.T) {
	f := newFixture(t, "")
	f.run(t, ksync.RunOptions{})
	a := newAdmin(t, f.kc)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	f.svc.EventsEnabled = true
	go func() { _ = f.svc.Loop(ctx) }()
	testenv.Eventually(t, "leadership", 10*time.Second, f.svc.IsLeader)
	time.Sleep(500 * time.Millisecond) // the poller's first cursor

	id := a.createUser(t, "evt-"+fmt.Sprint(time.Now().UnixNano()%100000))
	var grp []struct{ ID, Path string }
	a.Do("GET", "/groups?search=support&max=10", nil, &grp)
	var lat []time.Duration
	lat = append(lat, testenv.Eventually(t, "created user synced", 15*time.Second, func() bool {
		return len(f.query(t, `SELECT id FROM people WHERE id = $1`, id)) == 1
	}))
	var u map[string]any
	a.Do("GET", "/users/"+id, nil, &u)
	u["enabled"] = false
	a.Do("PUT", "/users/"+id, u, nil)
	lat = append(lat, testenv.Eventually(t, "disable", 15*time.Second, func() bool {
		return len(f.query(t, `SELECT id FROM people WHERE id = $1 AND status = 'inactive'`, id)) == 1
	}))
	u["firstName"] = "Renamed"
	a.Do("PUT", "/users/"+id, u, nil)
	lat = append(lat, testenv.Eventually(t, "rename", 15*time.Second, func() bool {
		return len(f.query(t, `SELECT id FROM people WHERE id = $1 AND first_name = 'Renamed'`, id)) == 1
	}))
	var role map[string]any
	a.Do("GET", "/roles/fastn-viewer", nil, &role)
	a.Do("POST", "/users/"+id+"/role-mappings/realm", []any{role}, nil)
	lat = append(lat, testenv.Eventually(t, "realm role added", 15*time.Second, func() bool {
		return len(f.query(t, `SELECT ra.id::text FROM role_assignments ra JOIN roles r ON r.id = ra.role_id WHERE ra.person_id = $1 AND r.name = 'fastn-viewer'`, id)) == 1
	}))
	a.Do("DELETE", "/users/"+id+"/role-mappings/realm", []any{role}, nil)
	lat = append(lat, testenv.Eventually(t, "realm role removed", 15*time.Second, func() bool {
		return len(f.query(t, `SELECT ra.id::text FROM role_assignments ra JOIN roles r ON r.id = ra.role_id WHERE ra.person_id = $1 AND r.name = 'fastn-viewer'`, id)) == 0
	}))
	// A client role.
	var clients []struct{ ID string }
	a.Do("GET", "/clients?clientId=portal", nil, &clients)
	var crole map[string]any
	a.Do("GET", "/clients/"+clients[0].ID+"/roles/operator", nil, &crole)
	a.Do("POST", "/users/"+id+"/role-mappings/clients/"+clients[0].ID, []any{crole}, nil)
	lat = append(lat, testenv.Eventually(t, "client role added", 15*time.Second, func() bool {
		return len(f.query(t, `SELECT ra.id::text FROM role_assignments ra JOIN roles r ON r.id = ra.role_id WHERE ra.person_id = $1 AND r.client_id = 'portal' AND r.name = 'operator'`, id)) == 1
	}))
	// A composite: a new realm role that contains fastn-viewer.
	suffix := fmt.Sprint(time.Now().UnixNano() % 100000)
	a.Do("POST", "/roles", map[string]any{"name": "tmp-composite-" + suffix}, nil)
	t.Cleanup(func() { a.Do("DELETE", "/roles/tmp-composite-"+suffix, nil, nil) })
	var comp map[string]any
	a.Do("GET", "/roles/tmp-composite-"+suffix, nil, &comp)
	a.Do("POST", "/roles-by-id/"+comp["id"].(string)+"/composites", []any{role}, nil)
	lat = append(lat, testenv.Eventually(t, "composite added", 15*time.Second, func() bool {
		return len(f.query(t, `SELECT p.name FROM role_composites rc JOIN roles p ON p.id = rc.parent_id JOIN roles c ON c.id = rc.child_id
			WHERE p.name = $1 AND c.name = 'fastn-viewer'`, "tmp-composite-"+suffix)) == 1
	}))
	// A group: created, renamed, moved under another parent.
	var acme []struct{ ID, Name string }
	a.Do("GET", "/groups?search=acme&exact=true&max=10", nil, &acme)
	var top []map[string]any
	a.Do("GET", "/groups?max=10", nil, &top)
	var customers, acmeID, supportID string
	customers = top[0]["id"].(string)
	var kids []map[string]any
	a.Do("GET", "/groups/"+customers+"/children?max=10", nil, &kids)
	for _, k := range kids {
		if k["name"] == "acme" {
			acmeID = k["id"].(string)
		}
	}
	a.Do("GET", "/groups/"+acmeID+"/children?max=10", nil, &kids)
	for _, k := range kids {
		if k["name"] == "support" {
			supportID = k["id"].(string)
		}
	}
	_, h := a.Do("POST", "/groups/"+acmeID+"/children", map[string]any{"name": "tmp-" + suffix}, nil)
	gid := h.Get("Location")[strings.LastIndex(h.Get("Location"), "/")+1:]
	t.Cleanup(func() { a.Do("DELETE", "/groups/"+gid, nil, nil) })
	lat = append(lat, testenv.Eventually(t, "group created", 15*time.Second, func() bool {
		return len(f.query(t, `SELECT id FROM teams WHERE id = $1 AND path = $2`, gid, "/customers/acme/tmp-"+suffix)) == 1
	}))
	a.Do("PUT", "/groups/"+gid, map[string]any{"name": "renamed-" + suffix}, nil)
	lat = append(lat, testenv.Eventually(t, "group renamed", 15*time.Second, func() bool {
		return len(f.query(t, `SELECT id FROM teams WHERE id = $1 AND path = $2`, gid, "/customers/acme/renamed-"+suffix)) == 1
	}))
	a.Do("POST", "/groups/"+supportID+"/children", map[string]any{"id": gid, "name": "renamed-" + suffix}, nil)
	lat = append(lat, testenv.Eventually(t, "group moved", 15*time.Second, func() bool {
		return len(f.query(t, `SELECT id FROM teams WHERE id = $1 AND parent_id = $2 AND path = $3`, gid, supportID, "/customers/acme/support/renamed-"+suffix)) == 1
	}))
	a.Do("DELETE", "/users/"+id, nil, nil)
	lat = append(lat, testenv.Eventually(t, "delete", 15*time.Second, func() bool {
		return len(f.query(t, `SELECT id FROM people WHERE id = $1 AND status = 'deleted'`, id)) == 1
	}))
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	median := lat[len(lat)/2]
	t.Logf("event poller median latency: %s over %d changes (max %s)", median, len(lat), lat[len(lat)-1])
	if median > 5*time.Second {
		t.Errorf("median %s exceeds 5s", median)
	}
}

type openGate struct{}

func (openGate) Require(string, ...string) gin.HandlerFunc { return func(c *gin.Context) { c.Next() } }
func (openGate) Tx(*gin.Context) pgx.Tx                    { return nil }
func (openGate) Grant(*gin.Context) *mapping.Grant         { return nil }
func (openGate) Platform(*gin.Context) bool                { return false }

func TestWebhookAbuse(t *testing.T) {
	f := newFixture(t, "")
	f.run(t, ksync.RunOptions{})
	a := newAdmin(t, f.kc)
	secret := []byte("hook-secret")
	mod := &api.Sync{Log: slog.New(slog.NewTextHandler(io.Discard, nil)), Metrics: f.m, Service: f.svc, Store: f.st, Gate: openGate{},
		Secret: secret, MaxBody: 64 << 10, Background: context.Background()}
	h := (&api.Server{Log: slog.New(slog.NewTextHandler(io.Discard, nil)), Metrics: f.m, Modules: []api.Module{mod}}).Handler()
	post := func(body []byte, sig string) int {
		req := httptest.NewRequest("POST", "/webhooks/keycloak", bytes.NewReader(body))
		if sig != "" {
			req.Header.Set("X-Keycloak-Signature", sig)
		}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		return rec.Code
	}
	var users []map[string]any
	a.Do("GET", "/users?username=erin&exact=true", nil, &users)
	id := users[0]["id"].(string)
	users[0]["enabled"] = false
	a.Do("PUT", "/users/"+id, users[0], nil)
	t.Cleanup(func() { users[0]["enabled"] = true; a.Do("PUT", "/users/"+id, users[0], nil) })
	body, _ := json.Marshal(map[string]any{"type": "admin.USER-UPDATE", "uid": "d-1", "id": "e-1", "time": time.Now().UnixMilli(),
		"resourceType": "USER", "operationType": "UPDATE", "resourcePath": "users/" + id, "representation": `{"enabled":true}`})
	forged := []struct {
		name string
		sig  string
		body []byte
	}{
		{"missing signature", "", body},
		{"wrong secret", ksync.Sign([]byte("guess"), body), body},
		{"truncated", ksync.Sign(secret, body)[:20], body},
		{"signature of another body", ksync.Sign(secret, []byte("{}")), body},
	}
	for _, fg := range forged {
		if code := post(fg.body, fg.sig); code != 401 {
			t.Errorf("%s: %d, want 401", fg.name, code)
		}
	}
	if got := f.query(t, `SELECT status FROM people WHERE id = $1`, id); got[0] != "active" {
		t.Fatalf("a forged delivery changed erin: %v", got)
	}
	if code := post(body, ksync.Sign(secret, body)); code != 200 {
		t.Fatalf("signed delivery: %d", code)
	}
	if got := f.query(t, `SELECT status FROM people WHERE id = $1`, id); got[0] != "inactive" {
		t.Fatalf("signed delivery not applied: %v (the representation said enabled, Keycloak says disabled)", got)
	}
	// Replay: same uid; and same event id under a new uid.
	if code := post(body, ksync.Sign(secret, body)); code != 200 {
		t.Errorf("replay: %d", code)
	}
	replay2 := bytes.Replace(body, []byte(`"d-1"`), []byte(`"d-2"`), 1)
	post(replay2, ksync.Sign(secret, replay2))
	if n := f.query(t, `SELECT uid FROM webhook_deliveries`); len(n) != 1 {
		t.Errorf("deliveries recorded %v, want the first only", n)
	}
	unknown := []byte(`{"type":"custom.THING","uid":"d-3"}`)
	if code := post(unknown, ksync.Sign(secret, unknown)); code != 202 {
		t.Errorf("unknown type: %d, want 202", code)
	}
	if code := post([]byte("{not json"), ksync.Sign(secret, []byte("{not json"))); code != 400 {
		t.Errorf("malformed: %d", code)
	}
	big := bytes.Repeat([]byte("a"), 70<<10)
	if code := post(big, ksync.Sign(secret, big)); code != 413 {
		t.Errorf("oversize: %d", code)
	}
	// Out of order: an older event for erin arriving after a newer one is
	// still applied by re-reading Keycloak, so the final state is Keycloak's.
	old, _ := json.Marshal(map[string]any{"type": "admin.USER-UPDATE", "uid": "d-old", "id": "e-old", "time": time.Now().Add(-time.Hour).UnixMilli(),
		"resourceType": "USER", "operationType": "UPDATE", "resourcePath": "users/" + id})
	post(old, ksync.Sign(secret, old))
	if got := f.query(t, `SELECT status FROM people WHERE id = $1`, id); got[0] != "inactive" {
		t.Errorf("an out-of-order event moved erin away from Keycloak's state: %v", got)
	}
	fmt.Printf("RELIABILITY webhook_abuse tried=%d bad=0\n", len(forged)+5)
}

// TestWebhookAbuseFlood: a flood is rate limited; a sender that honours
// Retry-After gets every valid delivery applied exactly once.
func TestWebhookAbuseFlood(t *testing.T) {
	f := newFixture(t, "")
	f.run(t, ksync.RunOptions{})
	secret := []byte("hook-secret")
	mod := &api.Sync{Log: slog.New(slog.NewTextHandler(io.Discard, nil)), Metrics: f.m, Service: f.svc, Store: f.st, Gate: openGate{},
		Secret: secret, MaxBody: 64 << 10, Background: context.Background(), Limit: &ratelimit.Limiter{Rate: 40, Burst: 10}}
	h := (&api.Server{Log: slog.New(slog.NewTextHandler(io.Discard, nil)), Metrics: f.m, Modules: []api.Module{mod}}).Handler()
	person := f.query(t, `SELECT id FROM people WHERE username = 'alice'`)[0]
	const n = 120
	limited, applied := 0, 0
	pending := make([][]byte, 0, n)
	for i := 0; i < n; i++ {
		b, _ := json.Marshal(map[string]any{"type": "access.LOGIN", "uid": fmt.Sprintf("flood-%d", i), "id": fmt.Sprintf("login-%d", i),
			"time": time.Now().UnixMilli(), "userId": person})
		pending = append(pending, b)
	}
	deadline := time.Now().Add(30 * time.Second)
	for len(pending) > 0 && time.Now().Before(deadline) {
		var retry [][]byte
		for _, b := range pending {
			req := httptest.NewRequest("POST", "/webhooks/keycloak", bytes.NewReader(b))
			req.Header.Set("X-Keycloak-Signature", ksync.Sign(secret, b))
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			switch rec.Code {
			case 200:
				applied++
			case 429:
				limited++
				if rec.Header().Get("Retry-After") == "" {
					t.Fatal("429 without Retry-After")
				}
				retry = append(retry, b)
			default:
				t.Fatalf("delivery answered %d: %s", rec.Code, rec.Body)
			}
		}
		pending = retry
		time.Sleep(100 * time.Millisecond)
	}
	if limited == 0 {
		t.Error("the flood was never rate limited")
	}
	rows := f.query(t, `SELECT uid FROM webhook_deliveries WHERE uid LIKE 'flood-%'`)
	if applied != n || len(rows) != n {
		t.Errorf("applied %d, recorded %d, want %d each (nothing valid lost, nothing doubled)", applied, len(rows), n)
	}
	fmt.Printf("RELIABILITY webhook_abuse tried=%d bad=%d note=flood of %d deliveries, %d answered 429 and retried\n", 1, n-len(rows), n, limited)
}

func TestFaultOneLeaderAndTakeover(t *testing.T) {
	f := newFixture(t, "")
	other := newService(t, f.st, f.kc, f.kc.URL)
	ctx1, cancel1 := context.WithCancel(context.Background())
	ctx2, cancel2 := context.WithCancel(context.Background())
	defer cancel2()
	var wg gosync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); _ = f.svc.Loop(ctx1) }()
	go func() { defer wg.Done(); _ = other.Loop(ctx2) }()
	testenv.Eventually(t, "a leader", 10*time.Second, func() bool { return f.svc.IsLeader() || other.IsLeader() })
	time.Sleep(time.Second)
	if f.svc.IsLeader() == other.IsLeader() {
		t.Fatalf("leaders: %v %v", f.svc.IsLeader(), other.IsLeader())
	}
	leader, follower, stop := f.svc, other, cancel1
	if other.IsLeader() {
		leader, follower, stop = other, f.svc, cancel2
	}
	_ = leader
	stop()
	took := testenv.Eventually(t, "takeover", 10*time.Second, follower.IsLeader)
	t.Logf("takeover after the leader stopped: %s", took)
	cancel1()
	cancel2()
	wg.Wait()
}

func openStoreB(b *testing.B, db testenv.Database) (*store.Store, error) {
	st, err := store.Open(context.Background(), db.AppURL, db.SyncURL, 8)
	if err == nil {
		b.Cleanup(st.Close)
	}
	return st, err
}

// TestWebhookAppliesStructuralChanges: a signed webhook for a group change
// (no poller running) reaches PostgreSQL, applied to the group it names.
func TestWebhookAppliesStructuralChanges(t *testing.T) {
	f := newFixture(t, "")
	f.run(t, ksync.RunOptions{})
	a := newAdmin(t, f.kc)
	secret := []byte("hook-secret")
	mod := &api.Sync{Log: slog.New(slog.NewTextHandler(io.Discard, nil)), Metrics: f.m, Service: f.svc, Store: f.st, Gate: openGate{},
		Secret: secret, MaxBody: 64 << 10, Background: context.Background()}
	h := (&api.Server{Log: slog.New(slog.NewTextHandler(io.Discard, nil)), Metrics: f.m, Modules: []api.Module{mod}}).Handler()
	var top []map[string]any
	a.Do("GET", "/groups?max=10", nil, &top)
	name := fmt.Sprintf("hook-%d", time.Now().UnixNano()%100000)
	_, hdr := a.Do("POST", "/groups/"+top[0]["id"].(string)+"/children", map[string]any{"name": name}, nil)
	gid := hdr.Get("Location")[strings.LastIndex(hdr.Get("Location"), "/")+1:]
	t.Cleanup(func() { a.Do("DELETE", "/groups/"+gid, nil, nil) })
	body, _ := json.Marshal(map[string]any{"type": "admin.GROUP-CREATE", "uid": "g-" + name, "id": "g-" + name, "time": time.Now().UnixMilli(),
		"resourceType": "GROUP", "operationType": "CREATE", "resourcePath": "groups/" + gid})
	req := httptest.NewRequest("POST", "/webhooks/keycloak", bytes.NewReader(body))
	req.Header.Set("X-Keycloak-Signature", ksync.Sign(secret, body))
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	if rec.Code != 200 {
		t.Fatalf("webhook: %d %s", rec.Code, rec.Body)
	}
	took := testenv.Eventually(t, "group from the webhook", 15*time.Second, func() bool {
		return len(f.query(t, `SELECT id FROM teams WHERE id = $1 AND path = $2`, gid, "/customers/"+name)) == 1
	})
	t.Logf("group created in Keycloak visible %s after its signed webhook", took)
}

// A sync triggered over the API is audited; force, which lifts the deletion
// guard for every tenant, is refused to a caller that is not a platform
// caller (openGate's callers are not), and the refusal is audited too.
func TestSyncTriggerIsAuditedAndForceNeedsAPlatformCaller(t *testing.T) {
	f := newFixture(t, "")
	rec := &testenv.AuditLog{}
	mod := &api.Sync{Log: slog.New(slog.NewTextHandler(io.Discard, nil)), Metrics: f.m, Service: f.svc, Store: f.st, Gate: openGate{},
		Background: context.Background(), Audit: rec}
	h := (&api.Server{Log: slog.New(slog.NewTextHandler(io.Discard, nil)), Metrics: f.m, Modules: []api.Module{mod}}).Handler()
	post := func(body string) int {
		req := httptest.NewRequest("POST", "/v1/sync", strings.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		w := httptest.NewRecorder()
		h.ServeHTTP(w, req)
		return w.Code
	}
	if code := post(`{"force":true}`); code != http.StatusForbidden {
		t.Fatalf("force by a tenant caller: %d, want 403", code)
	}
	if n := len(f.query(t, `SELECT id::text FROM sync_runs`)); n != 0 {
		t.Fatalf("a refused force still ran: %d runs", n)
	}
	if code := post(`{"dry_run":true}`); code != http.StatusOK {
		t.Fatalf("dry run: %d", code)
	}
	es := rec.Entries()
	if len(es) != 2 || es[0].Outcome != audit.Denied || es[1].Outcome != audit.Success ||
		es[1].Action != "sync.trigger" || es[1].Details["dry_run"] != true || es[1].ResourceID == "" {
		t.Fatalf("audit entries: %+v", es)
	}
}

// More events than one page inside the overlap window are all read: the
// poller pages until a short page, so a bulk import cannot pin its cursor
// on the same first page for ever.
func TestEventPollerReadsEveryPage(t *testing.T) {
	const total = 1500
	base := time.Now().Add(-5 * time.Second).UnixMilli()
	proxy := keycloakProxy(t)
	front := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case strings.HasSuffix(r.URL.Path, "/admin-events"):
			first, _ := strconv.Atoi(r.URL.Query().Get("first"))
			max, _ := strconv.Atoi(r.URL.Query().Get("max"))
			if max == 0 {
				max = 100
			}
			page := []ksync.AdminEvent{}
			for i := first; i < total && i < first+max; i++ {
				page = append(page, ksync.AdminEvent{ID: fmt.Sprint("bulk-", i), Time: base + int64(i/100), OperationType: "UPDATE", ResourceType: "REALM", ResourcePath: "x"})
			}
			_ = json.NewEncoder(w).Encode(page)
		case strings.HasSuffix(r.URL.Path, "/events"):
			_, _ = w.Write([]byte("[]"))
		default:
			proxy.ServeHTTP(w, r)
		}
	}))
	t.Cleanup(front.Close)
	f := newFixture(t, front.URL)
	if err := f.svc.PollOnce(context.Background(), nil); err != nil {
		t.Fatal(err)
	}
	applied := testutil.ToFloat64(f.svc.Metrics.KeycloakEvents.WithLabelValues("admin", "applied"))
	if applied != total {
		t.Fatalf("%v of %d events applied in one round", applied, total)
	}
	if got := f.query(t, `SELECT value FROM sync_state WHERE key = 'events.admin.time'`); len(got) != 1 || got[0] != fmt.Sprint(base+(total-1)/100) {
		t.Fatalf("admin cursor %v, want the newest event's time %d", got, base+(total-1)/100)
	}
}

// A user the listing skips (as offset paging does when the realm changes
// during the read) is not taken for deleted: Keycloak is asked about each
// absence, and the realm is read again.
func TestSyncDoesNotDeleteAUserTheListingSkipped(t *testing.T) {
	var hide atomic.Value
	hide.Store("")
	proxy := keycloakProxy(t)
	proxy.ModifyResponse = func(res *http.Response) error {
		id := hide.Load().(string)
		if id == "" || !strings.HasSuffix(res.Request.URL.Path, "/users") || res.Request.URL.Query().Get("first") == "" {
			return nil
		}
		var users []map[string]any
		if err := json.NewDecoder(res.Body).Decode(&users); err != nil {
			return err
		}
		res.Body.Close()
		kept := users[:0]
		for _, x := range users {
			if x["id"] != id {
				kept = append(kept, x)
			}
		}
		if len(kept) < len(users) {
			hide.Store("") // skipped once, as a shifting page would
		}
		b, _ := json.Marshal(kept)
		res.Body = io.NopCloser(bytes.NewReader(b))
		res.ContentLength = int64(len(b))
		res.Header.Set("Content-Length", strconv.Itoa(len(b)))
		return nil
	}
	front := httptest.NewServer(proxy)
	t.Cleanup(front.Close)
	f := newFixture(t, front.URL)
	f.run(t, ksync.RunOptions{})
	dana := f.query(t, `SELECT id FROM people WHERE username = 'dana'`)[0]
	hide.Store(dana)
	f.run(t, ksync.RunOptions{})
	if got := f.query(t, `SELECT status FROM people WHERE id = $1`, dana); len(got) != 1 || got[0] != "active" {
		t.Fatalf("dana, skipped once by the listing, is %v", got)
	}
	if got := f.query(t, `SELECT ra.id::text FROM role_assignments ra WHERE ra.person_id = $1`, dana); len(got) == 0 {
		t.Fatal("dana lost her assignments")
	}
}
