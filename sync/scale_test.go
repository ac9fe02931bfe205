package sync_test

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"sort"
	"strconv"
	"strings"
	gosync "sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/keybridge/keybridge/config"
	"github.com/keybridge/keybridge/internal/metrics"
	"github.com/keybridge/keybridge/internal/store"
	"github.com/keybridge/keybridge/internal/testenv"
	"github.com/keybridge/keybridge/internal/testenv/scalerealm"
	"github.com/keybridge/keybridge/mapping"
	ksync "github.com/keybridge/keybridge/sync"
)

// scaleAdmin signs in to the master realm for scalerealm, which signs in
// again when its token nears expiry (a large realm outlasts one token).
func scaleAdmin(kc testenv.Keycloak) *scalerealm.Admin {
	return &scalerealm.Admin{Base: kc.URL, Username: kc.AdminUser, Password: kc.AdminPassword}
}

// ensureScaleRealm builds spec's realm unless it is already there (it is
// kept between runs: building 2,000 users takes about 15 s).
func ensureScaleRealm(t testing.TB, kc testenv.Keycloak, spec scalerealm.Spec) *scalerealm.Admin {
	t.Helper()
	a := scaleAdmin(kc)
	start := time.Now()
	built, err := scalerealm.Ensure(context.Background(), a, spec, nil)
	if err != nil {
		t.Fatal(err)
	}
	if built {
		t.Logf("realm %s with %d users built in %s (cached for later runs)", spec.Realm, spec.Users, time.Since(start).Round(time.Millisecond))
	}
	return a
}

// holderOffsets is a proxy in front of Keycloak that records the largest
// offset (first) any role-holder listing asked for, and counts requests.
type holderOffsets struct {
	maxFirst atomic.Int64
	requests atomic.Int64
}

func (h *holderOffsets) server(t *testing.T) *httptest.Server {
	proxy := keycloakProxy(t)
	s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.Contains(r.URL.Path, "/admin/") {
			h.requests.Add(1)
			// /roles/{name}/users and /clients/{id}/roles/{name}/users
			if parts := strings.Split(r.URL.Path, "/"); len(parts) > 2 && parts[len(parts)-1] == "users" && parts[len(parts)-3] == "roles" {
				first, _ := strconv.ParseInt(r.URL.Query().Get("first"), 10, 64)
				for {
					cur := h.maxFirst.Load()
					if first <= cur || h.maxFirst.CompareAndSwap(cur, first) {
						break
					}
				}
			}
		}
		proxy.ServeHTTP(w, r)
	}))
	t.Cleanup(s.Close)
	return s
}

// captured keeps the messages of the log records a handler sees.
type captured struct {
	mu   gosync.Mutex
	recs []map[string]any
}

func (c *captured) Enabled(context.Context, slog.Level) bool { return true }
func (c *captured) Handle(_ context.Context, r slog.Record) error {
	m := map[string]any{"msg": r.Message, "level": r.Level.String()}
	r.Attrs(func(a slog.Attr) bool { m[a.Key] = a.Value.Any(); return true })
	c.mu.Lock()
	c.recs = append(c.recs, m)
	c.mu.Unlock()
	return nil
}
func (c *captured) WithAttrs([]slog.Attr) slog.Handler { return c }
func (c *captured) WithGroup(string) slog.Handler      { return c }

// TestFullSyncOfARealmMadeThroughTheAdminAPI (issue 14): 2,000 users
// holding the realm's default role directly, as every user the admin API
// creates does, in nested groups with unicode names, some disabled, some
// without email, some in organizations. With the shipped defaults
// (keycloak.timeout, page_size, concurrency, sync.timeout) the full sync
// succeeds, PostgreSQL then equals Keycloak, no role's holders are paged
// at an offset whose cost grows with the realm, and the run reported its
// progress while it went.
func TestFullSyncOfARealmMadeThroughTheAdminAPI(t *testing.T) {
	kc := testenv.RequireKeycloak(t)
	spec := scalerealm.Spec{Realm: "keybridge-scale-test-2k", Users: 2000, TopGroups: 3, Fanout: 2, GroupDepth: 3, RealmRoles: 12,
		Clients: 2, ClientRoles: 4, Organizations: 3, EveryoneGroup: "Alle Mitarbeitenden", ClientID: kc.ClientID, ClientSecret: kc.ClientSecret}
	a := ensureScaleRealm(t, kc, spec)
	ctx := context.Background()

	db := testenv.NewDatabase(t)
	st, err := store.Open(ctx, db.AppURL, db.SyncURL, 8)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(st.Close)
	offsets := &holderOffsets{}
	front := offsets.server(t)
	def := config.Default()
	m := metrics.New("test", "test")
	logs := &captured{}
	engine, err := mapping.New(mapping.Config{Preset: "fastn", Tenant: mapping.TenantSource{Organization: true}, Rules: []mapping.Rule{
		{RealmRole: "popular", GrantRole: "Viewer"}, {ClientRole: spec.ClientName(0) + ":c-role-1", GrantRole: "Developer"}}})
	if err != nil {
		t.Fatal(err)
	}
	svc := &ksync.Service{
		KC: ksync.NewKeycloak(ksync.KeycloakOptions{URL: front.URL, Realm: spec.Realm, ClientID: kc.ClientID, ClientSecret: kc.ClientSecret,
			Timeout: def.Keycloak.Timeout, PageSize: def.Keycloak.PageSize, Retries: def.Keycloak.Retries, Concurrency: def.Keycloak.Concurrency, Metrics: m}),
		Store: st, Engine: func() *mapping.Engine { return engine }, Metrics: m, Log: slog.New(logs),
		Mode: def.Sync.Mode, MaxRemovalShare: def.Sync.MaxRemovalShare, Timeout: def.Sync.Timeout,
	}

	// Watch the run while it goes: the service's progress, and the run's
	// record as GET /v1/sync/runs reads it.
	type seen struct {
		phases      map[string]int // largest object count seen per phase
		recorded    int            // largest keycloak_requests of the running record
		recordedObj map[string]int
	}
	watch := seen{phases: map[string]int{}}
	done := make(chan struct{})
	watched := make(chan struct{})
	go func() {
		defer close(watched)
		for {
			if p, ok := svc.Progress(); ok {
				watch.phases[p.Phase] = max(watch.phases[p.Phase], p.Objects)
			}
			var reqs int
			var objs []byte
			if err := st.SysPool().QueryRow(ctx, `SELECT keycloak_requests, objects FROM sync_runs WHERE outcome = 'running' ORDER BY id DESC LIMIT 1`).Scan(&reqs, &objs); err == nil && reqs > watch.recorded {
				watch.recorded = reqs
				_ = json.Unmarshal(objs, &watch.recordedObj)
			}
			select {
			case <-done:
				return
			case <-time.After(20 * time.Millisecond):
			}
		}
	}()
	start := time.Now()
	res, err := svc.Run(ctx, ksync.RunOptions{Trigger: "cli"})
	took := time.Since(start)
	close(done)
	<-watched
	if err != nil {
		t.Fatalf("full sync of %d users failed after %s: %v", spec.Users, took, err)
	}
	if res.Outcome != "success" || res.Objects["people"] != spec.Users {
		t.Fatalf("run: outcome %s, %d people, want success and %d", res.Outcome, res.Objects["people"], spec.Users)
	}
	if got := offsets.maxFirst.Load(); got >= ksync.HolderPagingLimit {
		t.Errorf("a role's holders were paged at first=%d: Keycloak's cost for that grows with the offset, so a realm whose users all hold one role costs quadratic time", got)
	}
	t.Logf("full sync of %d users: %s, %d Keycloak requests (%d through the proxy), phases %v", spec.Users, took.Round(time.Millisecond), res.Requests, offsets.requests.Load(), res.Phases)

	// Progress: every user's mappings were read, and it was visible on the
	// way in the service, the gauge, the log and the run's record.
	if n := testutil.ToFloat64(m.SyncProgress.WithLabelValues(ksync.PhaseRoleMappings)); n != float64(spec.Users) {
		t.Errorf("keybridge_sync_progress_objects{phase=role_mappings} = %v, want %d (one read per user)", n, spec.Users)
	}
	if watch.phases[ksync.PhaseRoleMappings] == 0 {
		t.Errorf("Progress() never showed phase %s under way; saw %v", ksync.PhaseRoleMappings, watch.phases)
	}
	if watch.recorded == 0 || watch.recordedObj[ksync.PhaseUsers] != spec.Users {
		t.Errorf("the running run's record never showed progress: keycloak_requests %d, objects %v", watch.recorded, watch.recordedObj)
	}
	progressLines := 0
	logs.mu.Lock()
	for _, r := range logs.recs {
		if r["msg"] == "sync progress" && r["level"] == "INFO" && r["phase"] != nil {
			progressLines++
		}
	}
	logs.mu.Unlock()
	if progressLines == 0 {
		t.Error("no 'sync progress' log line during the run")
	}
	if _, ok := svc.Progress(); ok {
		t.Error("Progress() still reports a run after it finished")
	}

	compareWithKeycloak(t, st, a, spec)
}

// compareWithKeycloak asserts that PostgreSQL holds what Keycloak's admin
// API says, read by other routes than the sync's: people (status, email),
// group memberships, organization memberships, and each person's effective
// realm roles and roles of the first client, as Keycloak itself expands
// them (GET /users/{id}/role-mappings/.../composite).
func compareWithKeycloak(t testing.TB, st *store.Store, a *scalerealm.Admin, spec scalerealm.Spec) {
	t.Helper()
	ctx := context.Background()
	realm := "/" + url.PathEscape(spec.Realm)
	query := func(sql string, args ...any) []string {
		rows, err := st.SysPool().Query(ctx, sql, args...)
		if err != nil {
			t.Fatal(err)
		}
		defer rows.Close()
		var out []string
		for rows.Next() {
			var s string
			if err := rows.Scan(&s); err != nil {
				t.Fatal(err)
			}
			out = append(out, s)
		}
		sort.Strings(out)
		return out
	}
	get := func(path string, out any) {
		t.Helper()
		if _, err := a.Do(ctx, "GET", realm+path, nil, out); err != nil {
			t.Fatal(err)
		}
	}
	diff := func(what string, got, want []string) {
		t.Helper()
		sort.Strings(want)
		if !slices.Equal(got, want) {
			var missing, extra []string
			for _, w := range want {
				if _, ok := slices.BinarySearch(got, w); !ok {
					missing = append(missing, w)
				}
			}
			for _, g := range got {
				if _, ok := slices.BinarySearch(want, g); !ok {
					extra = append(extra, g)
				}
			}
			t.Errorf("%s: %d in PostgreSQL, %d in Keycloak; missing %.5v, unexpected %.5v", what, len(got), len(want), missing, extra)
		}
	}

	type user struct {
		ID, Username, Email string
		Enabled             bool
	}
	var users []user
	for first := 0; ; first += 500 {
		var page []user
		get(fmt.Sprintf("/users?briefRepresentation=true&first=%d&max=500", first), &page)
		users = append(users, page...)
		if len(page) < 500 {
			break
		}
	}
	var want []string
	disabled, noEmail := 0, 0
	for _, u := range users {
		status := "active"
		if !u.Enabled {
			status, disabled = "inactive", disabled+1
		}
		if u.Email == "" {
			noEmail++
		}
		want = append(want, u.ID+" "+u.Username+" "+status+" "+u.Email)
	}
	if len(users) != spec.Users || disabled == 0 || noEmail == 0 {
		t.Fatalf("realm %s: %d users, %d disabled, %d without email; the generator should give %d, some of each", spec.Realm, len(users), disabled, noEmail, spec.Users)
	}
	diff("people", query(`SELECT id || ' ' || username || ' ' || status || ' ' || coalesce(email, '') FROM people`), want)

	// Groups and their members, walked through the admin API.
	want = nil
	var walk func(gs []map[string]any)
	walk = func(gs []map[string]any) {
		for _, g := range gs {
			id := g["id"].(string)
			for first := 0; ; first += 500 {
				var members []struct{ ID string }
				get(fmt.Sprintf("/groups/%s/members?briefRepresentation=true&first=%d&max=500", id, first), &members)
				for _, m := range members {
					want = append(want, g["path"].(string)+" "+m.ID)
				}
				if len(members) < 500 {
					break
				}
			}
			var children []map[string]any
			get("/groups/"+id+"/children?max=1000", &children)
			walk(children)
		}
	}
	var top []map[string]any
	get("/groups?max=1000", &top)
	walk(top)
	diff("group memberships", query(`SELECT t.path || ' ' || tm.person_id FROM team_members tm JOIN teams t ON t.id = tm.team_id`), want)

	// Organizations are the tenants.
	want = nil
	var orgs []struct{ ID, Alias string }
	get("/organizations?max=1000", &orgs)
	for _, o := range orgs {
		var members []struct{ ID string }
		get("/organizations/"+o.ID+"/members?max=10000", &members)
		for _, m := range members {
			want = append(want, o.Alias+" "+m.ID)
		}
	}
	diff("organization memberships", query(`SELECT tenant_id || ' ' || person_id FROM tenant_members`), want)

	// Effective roles, as Keycloak expands them, four users at a time.
	var clients []struct{ ID string }
	get("/clients?clientId="+url.QueryEscape(spec.ClientName(0)), &clients)
	if len(clients) != 1 {
		t.Fatalf("client %s: %d found", spec.ClientName(0), len(clients))
	}
	roles := make([][]string, len(users))
	errs := make(chan error, len(users))
	var next atomic.Int64
	var wg gosync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for i := int(next.Add(1) - 1); i < len(users); i = int(next.Add(1) - 1) {
				var realmRoles, clientRoles []struct{ Name string }
				if _, err := a.Do(ctx, "GET", realm+"/users/"+users[i].ID+"/role-mappings/realm/composite", nil, &realmRoles); err != nil {
					errs <- err
					return
				}
				if _, err := a.Do(ctx, "GET", realm+"/users/"+users[i].ID+"/role-mappings/clients/"+clients[0].ID+"/composite", nil, &clientRoles); err != nil {
					errs <- err
					return
				}
				for _, r := range realmRoles {
					roles[i] = append(roles[i], users[i].ID+" |"+r.Name)
				}
				for _, r := range clientRoles {
					roles[i] = append(roles[i], users[i].ID+" "+spec.ClientName(0)+"|"+r.Name)
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	want = slices.Concat(roles...)
	defaultHolders := 0
	for _, w := range want {
		if strings.HasSuffix(w, " |"+spec.DefaultRole()) {
			defaultHolders++
		}
	}
	if defaultHolders != spec.Users {
		t.Fatalf("%d users hold %s in Keycloak, want every one of %d", defaultHolders, spec.DefaultRole(), spec.Users)
	}
	diff("effective roles", query(`SELECT ra.person_id || ' ' || r.client_id || '|' || r.name FROM role_assignments ra JOIN roles r ON r.id = ra.role_id
		WHERE ra.source = 'keycloak'`), want)
}
