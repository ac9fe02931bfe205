package sync_test

import (
	"context"
	"fmt"
	"log/slog"
	mrand "math/rand/v2"
	"net/url"
	"slices"
	"strings"
	gosync "sync"
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

// BenchmarkEventStorm (make bench BENCH=EventStorm): a realm of 10,000
// users (scalerealm.Full, kept as keybridge-storm-10000 so the storm's
// changes never drift the realm the full-sync benchmark reads), synced
// whole into a fresh database; then the daemon's loop runs, leader with the
// event poller at the shipped sync.events (interval 2s, overlap 30s), while
// 200 random admin changes are made through the admin API one after
// another, as fast as Keycloak takes them: user updates, enabling and
// disabling, realm and client role mappings added and removed, groups
// joined and left, groups renamed (among the two deepest levels: a rename
// re-reads every member below the group), organization memberships added
// and removed. Reported: convergence, the time from the last change's
// answer until the last event was committed, against the poll interval;
// each event's lag from Keycloak's event time to its committed rows
// (median, p95). The store must then equal Keycloak, compared with the
// admin API and with a full run into a second database, and no full run
// may have been asked for.
func BenchmarkEventStorm(b *testing.B) {
	kc := testenv.RequireKeycloak(b)
	spec := scalerealm.Full("keybridge-storm-10000", 10000, kc.ClientID, kc.ClientSecret)
	adm := ensureScaleRealm(b, kc, spec)
	ctx := context.Background()
	realm := "/" + url.PathEscape(spec.Realm)
	do := func(method, path string, body, out any) {
		b.Helper()
		if _, err := adm.Do(ctx, method, realm+path, body, out); err != nil {
			b.Fatal(err)
		}
	}
	do("PUT", "", map[string]any{"adminEventsEnabled": true}, nil)
	def := config.Default()
	clients := []string{spec.ClientName(0), spec.ClientName(1), spec.ClientName(2)}
	engine, err := mapping.New(mapping.Config{Preset: "fastn", Tenant: mapping.TenantSource{Organization: true}, Rules: []mapping.Rule{
		{RealmRole: "popular", GrantRole: "Viewer"}, {ClientRole: clients[0] + ":c-role-1", GrantRole: "Developer"},
		{ClientRole: clients[1] + ":c-role-2", GrantRole: "Operator"}, {ClientRole: clients[2] + ":c-role-3", GrantRole: "Viewer"}}})
	if err != nil {
		b.Fatal(err)
	}
	service := func(st *store.Store, m *metrics.Metrics) *ksync.Service {
		return &ksync.Service{
			KC: ksync.NewKeycloak(ksync.KeycloakOptions{URL: kc.URL, Realm: spec.Realm, ClientID: kc.ClientID, ClientSecret: kc.ClientSecret,
				Timeout: def.Keycloak.Timeout, PageSize: def.Keycloak.PageSize, Retries: def.Keycloak.Retries, Concurrency: def.Keycloak.Concurrency, Metrics: m}),
			Store: st, Engine: func() *mapping.Engine { return engine }, Metrics: m, Log: slog.New(slog.DiscardHandler),
			Mode: def.Sync.Mode, MaxRemovalShare: def.Sync.MaxRemovalShare, Timeout: def.Sync.Timeout,
			// No scheduled run during the storm: every full run would be one
			// the events asked for.
			Schedule: "@every 24h", EventsEnabled: true, EventsInterval: def.Sync.Events.Interval, EventsOverlap: def.Sync.Events.Overlap,
			LeaderRetry: 200 * time.Millisecond,
		}
	}
	open := func() *store.Store {
		db := testenv.NewDatabase(b)
		st, err := store.Open(ctx, db.AppURL, db.SyncURL, 8)
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(st.Close)
		return st
	}
	for i := 0; i < b.N; i++ {
		st := open()
		m := metrics.New("bench", "bench")
		svc := service(st, m)
		if _, err := svc.Run(ctx, ksync.RunOptions{Trigger: "cli"}); err != nil {
			b.Fatalf("first full sync: %v", err)
		}
		s := newStorm(b, adm, spec, mrand.New(mrand.NewPCG(uint64(time.Now().UnixNano()), 1)))

		var mu gosync.Mutex
		var lags []time.Duration
		var lastCommit time.Time
		ksync.OnApplied(svc, func(_ ksync.AdminEvent, lag time.Duration) {
			mu.Lock()
			lags = append(lags, lag)
			lastCommit = time.Now()
			mu.Unlock()
		})
		lctx, stop := context.WithCancel(ctx)
		looped := make(chan struct{})
		go func() { defer close(looped); _ = svc.Loop(lctx) }()
		testenv.Eventually(b, "the service leads", 10*time.Second, svc.IsLeader)
		time.Sleep(def.Sync.Events.Interval) // its first round has read where the events stand

		begin := time.Now()
		const changes = 200
		for range changes {
			s.change()
		}
		last := time.Now()
		stormS := last.Sub(begin).Seconds()

		// Every admin event of the storm, as Keycloak lists them.
		var events []ksync.AdminEvent
		for first := 0; ; first += 500 {
			var page []ksync.AdminEvent
			do("GET", fmt.Sprintf("/admin-events?dateFrom=%d&first=%d&max=500", begin.Add(-time.Second).UnixMilli(), first), nil, &page)
			events = append(events, page...)
			if len(page) < 500 {
				break
			}
		}
		applied := func() int { mu.Lock(); defer mu.Unlock(); return len(lags) }
		deadline := time.Now().Add(2 * time.Minute)
		for applied() < len(events) && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
		}
		stop()
		<-looped
		mu.Lock()
		got, converged := slices.Clone(lags), lastCommit.Sub(last)
		mu.Unlock()
		if len(got) < len(events) {
			b.Fatalf("%d of the storm's %d admin events applied after two minutes", len(got), len(events))
		}

		// No full run: none asked for, none run.
		if n := testutil.CollectAndCount(m.SyncFullFallbacks); n != 0 {
			b.Errorf("full runs asked for: %d reasons counted", n)
		}
		if n := testutil.ToFloat64(m.KeycloakEvents.WithLabelValues("admin", "deferred")); n != 0 {
			b.Errorf("%v admin events deferred to a full run", n)
		}
		var runs int
		if err := st.SysPool().QueryRow(ctx, `SELECT count(*) FROM sync_runs`).Scan(&runs); err != nil {
			b.Fatal(err)
		}
		if runs != 1 {
			b.Errorf("%d sync runs, want only the first", runs)
		}
		// The store equals Keycloak: through the admin API, and as a full
		// run into a second database writes it.
		compareWithKeycloak(b, st, adm, spec)
		other := open()
		if _, err := service(other, metrics.New("bench", "bench")).Run(ctx, ksync.RunOptions{Trigger: "cli"}); err != nil {
			b.Fatal(err)
		}
		if onlyEvents, onlyFull := lineDiff(dump(b, st), dump(b, other)); len(onlyEvents)+len(onlyFull) > 0 {
			b.Fatalf("the events and a full run disagree\n  events only:\n    %.20s\n  full run only:\n    %.20s", onlyEvents, onlyFull)
		}

		slices.Sort(got)
		median, p95 := got[len(got)/2], got[len(got)*95/100]
		interval := def.Sync.Events.Interval
		b.ReportMetric(float64(changes)/stormS, "changes/s")
		b.ReportMetric(converged.Seconds(), "convergence-s")
		b.ReportMetric(converged.Seconds()/interval.Seconds(), "convergence/interval")
		b.ReportMetric(median.Seconds(), "lag-median-s")
		b.ReportMetric(p95.Seconds(), "lag-p95-s")
		b.ReportMetric(median.Seconds()/interval.Seconds(), "median/interval")
		b.ReportMetric(float64(runs-1), "full-runs")
		b.Logf("%d changes in %.1fs (%s), %d admin events: converged %.2fs after the last change (%.2fx the %s poll interval); lag median %.2fs (%.2fx), p95 %.2fs, max %.2fs; full runs %d",
			changes, stormS, s.summary(), len(events), converged.Seconds(), converged.Seconds()/interval.Seconds(), interval,
			median.Seconds(), median.Seconds()/interval.Seconds(), p95.Seconds(), got[len(got)-1].Seconds(), runs-1)
	}
}

// storm makes random admin changes to a pool of users it read first, each
// one a toggle of what it knows of them.
type storm struct {
	b      *testing.B
	adm    *scalerealm.Admin
	realm  string
	rnd    *mrand.Rand
	users  []*stormUser
	roles  []map[string]any // realm roles to map
	client string           // the first client's internal id
	cRoles []map[string]any // its roles
	groups []string         // ids, among the two deepest levels
	orgs   []string         // ids
	done   map[string]int   // changes made, by kind
}

type stormUser struct {
	id                    string
	enabled               bool
	realm, client, groups map[string]bool // role names; group ids
	orgs                  map[string]bool
}

func newStorm(b *testing.B, adm *scalerealm.Admin, spec scalerealm.Spec, rnd *mrand.Rand) *storm {
	ctx := context.Background()
	s := &storm{b: b, adm: adm, realm: "/" + url.PathEscape(spec.Realm), rnd: rnd, done: map[string]int{}}
	get := func(path string, out any) {
		b.Helper()
		if _, err := adm.Do(ctx, "GET", s.realm+path, nil, out); err != nil {
			b.Fatal(err)
		}
	}
	var users []struct {
		ID      string
		Enabled bool
	}
	get(fmt.Sprintf("/users?briefRepresentation=true&first=%d&max=100", rnd.IntN(spec.Users-100)), &users)
	var clients []struct{ ID string }
	get("/clients?clientId="+url.QueryEscape(spec.ClientName(0)), &clients)
	s.client = clients[0].ID
	for _, u := range users {
		su := &stormUser{id: u.ID, enabled: u.Enabled, realm: map[string]bool{}, client: map[string]bool{}, groups: map[string]bool{}, orgs: map[string]bool{}}
		var rs, cs, gs, os []struct{ ID, Name string }
		get("/users/"+u.ID+"/role-mappings/realm", &rs)
		get("/users/"+u.ID+"/role-mappings/clients/"+s.client, &cs)
		get("/users/"+u.ID+"/groups?briefRepresentation=true", &gs)
		get("/organizations/members/"+u.ID+"/organizations?briefRepresentation=true", &os)
		for _, r := range rs {
			su.realm[r.Name] = true
		}
		for _, r := range cs {
			su.client[r.Name] = true
		}
		for _, g := range gs {
			su.groups[g.ID] = true
		}
		for _, o := range os {
			su.orgs[o.ID] = true
		}
		s.users = append(s.users, su)
	}
	for i := 1; i < spec.RealmRoles; i += 7 {
		var r map[string]any
		get("/roles/"+url.PathEscape(spec.RoleName(i)), &r)
		s.roles = append(s.roles, r)
	}
	get("/clients/"+s.client+"/roles?briefRepresentation=true", &s.cRoles)
	for _, p := range spec.GroupPaths() {
		if strings.Count(p, "/") < spec.GroupDepth-1 {
			continue
		}
		var segs []string
		for _, seg := range strings.Split(strings.TrimPrefix(p, "/"), "/") {
			segs = append(segs, url.PathEscape(seg))
		}
		var g struct{ ID string }
		get("/group-by-path/"+strings.Join(segs, "/"), &g)
		s.groups = append(s.groups, g.ID)
	}
	var orgs []struct{ ID string }
	get("/organizations?briefRepresentation=true&max=100", &orgs)
	for _, o := range orgs {
		s.orgs = append(s.orgs, o.ID)
	}
	return s
}

func (s *storm) do(kind, method, path string, body any) {
	s.b.Helper()
	if _, err := s.adm.Do(context.Background(), method, s.realm+path, body, nil); err != nil {
		s.b.Fatalf("%s: %v", kind, err)
	}
	s.done[kind]++
}

// change makes one random change.
func (s *storm) change() {
	u := s.users[s.rnd.IntN(len(s.users))]
	base := "/users/" + u.id
	switch s.rnd.IntN(7) {
	case 0:
		s.do("user update", "PUT", base, map[string]any{"firstName": fmt.Sprintf("Sturm %d", s.rnd.IntN(1e6))})
	case 1:
		u.enabled = !u.enabled
		s.do("enable/disable", "PUT", base, map[string]any{"enabled": u.enabled})
	case 2:
		r := s.roles[s.rnd.IntN(len(s.roles))]
		name := r["name"].(string)
		if u.realm[name] {
			delete(u.realm, name)
			s.do("realm role removed", "DELETE", base+"/role-mappings/realm", []any{r})
		} else {
			u.realm[name] = true
			s.do("realm role added", "POST", base+"/role-mappings/realm", []any{r})
		}
	case 3:
		r := s.cRoles[s.rnd.IntN(len(s.cRoles))]
		name := r["name"].(string)
		if u.client[name] {
			delete(u.client, name)
			s.do("client role removed", "DELETE", base+"/role-mappings/clients/"+s.client, []any{r})
		} else {
			u.client[name] = true
			s.do("client role added", "POST", base+"/role-mappings/clients/"+s.client, []any{r})
		}
	case 4:
		g := s.groups[s.rnd.IntN(len(s.groups))]
		if u.groups[g] {
			delete(u.groups, g)
			s.do("group left", "DELETE", base+"/groups/"+g, nil)
		} else {
			u.groups[g] = true
			s.do("group joined", "PUT", base+"/groups/"+g, nil)
		}
	case 5:
		g := s.groups[s.rnd.IntN(len(s.groups))]
		s.do("group renamed", "PUT", "/groups/"+g, map[string]any{"name": fmt.Sprintf("Sturmgruppe %d", s.rnd.IntN(1e9))})
	case 6:
		o := s.orgs[s.rnd.IntN(len(s.orgs))]
		if u.orgs[o] {
			delete(u.orgs, o)
			s.do("organization left", "DELETE", "/organizations/"+o+"/members/"+u.id, nil)
		} else {
			u.orgs[o] = true
			s.do("organization joined", "POST", "/organizations/"+o+"/members", u.id)
		}
	}
}

func (s *storm) summary() string {
	var parts []string
	for k, n := range s.done {
		parts = append(parts, fmt.Sprintf("%s %d", k, n))
	}
	slices.Sort(parts)
	return strings.Join(parts, ", ")
}
