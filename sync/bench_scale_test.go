package sync_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"runtime"
	"runtime/debug"
	"runtime/pprof"
	"strconv"
	"strings"
	gosync "sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/keybridge/keybridge/config"
	"github.com/keybridge/keybridge/internal/store"
	"github.com/keybridge/keybridge/internal/testenv"
	"github.com/keybridge/keybridge/internal/testenv/scalerealm"
	"github.com/keybridge/keybridge/mapping"
	ksync "github.com/keybridge/keybridge/sync"
)

// BenchmarkFullSyncScale (make bench-scale SIZE=100000): a full sync of a
// generated realm of KEYBRIDGE_BENCH_SIZE users (scalerealm.Full: every
// user holds the default role, groups six deep, 200 realm roles, client
// roles on three clients, 20 organizations; built once and kept as
// keybridge-scale-<size>) with the shipped defaults, beside
// reference_plain_read: the same objects read the cheapest way (listings
// paged, every user's role mappings, as many requests in flight as
// keycloak.concurrency) with nothing planned or written. Then a no-change
// re-sync. Reported: wall seconds and ratios to the plain read, Keycloak
// requests, and the process's peak RSS during each part, with the
// collector's target the daemon ships (server.gc_percent).
func BenchmarkFullSyncScale(b *testing.B) {
	size := 2000
	if v := os.Getenv("KEYBRIDGE_BENCH_SIZE"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			b.Fatalf("KEYBRIDGE_BENCH_SIZE=%q: want a positive number of users", v)
		}
		size = n
	}
	kc := testenv.RequireKeycloak(b)
	spec := scalerealm.Full(fmt.Sprintf("keybridge-scale-%d", size), size, kc.ClientID, kc.ClientSecret)
	ensureScaleRealm(b, kc, spec)
	def := config.Default()
	ctx := context.Background()
	clients := []string{spec.ClientName(0), spec.ClientName(1), spec.ClientName(2)}
	engine, err := mapping.New(mapping.Config{Preset: "fastn", Tenant: mapping.TenantSource{Organization: true}, Rules: []mapping.Rule{
		{RealmRole: "popular", GrantRole: "Viewer"}, {ClientRole: clients[0] + ":c-role-1", GrantRole: "Developer"},
		{ClientRole: clients[1] + ":c-role-2", GrantRole: "Operator"}, {ClientRole: clients[2] + ":c-role-3", GrantRole: "Viewer"}}})
	if err != nil {
		b.Fatal(err)
	}
	// The daemon's collector target, not go test's: what RSS a daemon
	// would show.
	defer debug.SetGCPercent(debug.SetGCPercent(def.Server.GCPercent))
	plain := &plainReader{base: kc.URL, realm: spec.Realm, clientID: kc.ClientID, secret: kc.ClientSecret, clients: clients,
		conc: def.Keycloak.Concurrency, page: def.Keycloak.PageSize, http: &http.Client{Timeout: def.Keycloak.Timeout}}
	// Warm Keycloak's caches once, untimed, so every part reads from the
	// same warm server.
	if _, err := plain.read(ctx); err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		resetPeakRSS()
		before := plain.requests.Load()
		start := time.Now()
		objects, err := plain.read(ctx)
		if err != nil {
			b.Fatal(err)
		}
		plainS, plainRSS := time.Since(start).Seconds(), peakRSSMB()
		plainReq := plain.requests.Load() - before

		db := testenv.NewDatabase(b)
		st, err := store.Open(ctx, db.AppURL, db.SyncURL, 8)
		if err != nil {
			b.Fatal(err)
		}
		svc := &ksync.Service{
			KC: ksync.NewKeycloak(ksync.KeycloakOptions{URL: kc.URL, Realm: spec.Realm, ClientID: kc.ClientID, ClientSecret: kc.ClientSecret,
				Timeout: def.Keycloak.Timeout, PageSize: def.Keycloak.PageSize, Retries: def.Keycloak.Retries, Concurrency: def.Keycloak.Concurrency}),
			Store: st, Engine: func() *mapping.Engine { return engine }, Log: slog.New(slog.DiscardHandler),
			Mode: def.Sync.Mode, MaxRemovalShare: def.Sync.MaxRemovalShare, Timeout: def.Sync.Timeout,
		}
		resetPeakRSS()
		heap := watchHeap()
		res, err := svc.Run(ctx, ksync.RunOptions{Trigger: "cli"})
		syncHeap := heap()
		if err != nil {
			b.Fatalf("full sync of %d users: %v", size, err)
		}
		syncRSS := peakRSSMB()
		if res.Objects["people"] != objects.users {
			b.Fatalf("full sync read %d people, the plain read %d", res.Objects["people"], objects.users)
		}
		resetPeakRSS()
		heap = watchHeap()
		again, err := svc.Run(ctx, ksync.RunOptions{Trigger: "cli"})
		resyncHeap := heap()
		if err != nil || len(again.Changes) != 0 {
			b.Fatalf("no-change re-sync: %v, changes %v", err, again.Changes)
		}
		resyncRSS := peakRSSMB()
		st.Close()

		syncS, resyncS := res.Duration.Seconds(), again.Duration.Seconds()
		b.ReportMetric(float64(size), "users")
		b.ReportMetric(plainS, "plain-read-s")
		b.ReportMetric(syncS, "full-sync-s")
		b.ReportMetric(syncS/plainS, "sync/plain")
		b.ReportMetric(resyncS, "resync-s")
		b.ReportMetric(resyncS/plainS, "resync/plain")
		b.ReportMetric(float64(plainReq), "plain-requests")
		b.ReportMetric(float64(res.Requests), "sync-requests")
		b.ReportMetric(plainRSS, "plain-peak-rss-MB")
		b.ReportMetric(syncRSS, "sync-peak-rss-MB")
		b.ReportMetric(resyncRSS, "resync-peak-rss-MB")
		b.ReportMetric(syncHeap, "sync-peak-heap-MB")
		b.ReportMetric(resyncHeap, "resync-peak-heap-MB")
		b.Logf("%d users, %d groups, %d roles, %d organizations: plain read %.1fs (%d requests, peak RSS %.0f MB); full sync %.1fs = %.2fx (%d requests, phases %v, peak RSS %.0f MB, heap %.0f MB); no-change re-sync %.1fs = %.2fx (phases %v, peak RSS %.0f MB, heap %.0f MB)",
			objects.users, objects.groups, objects.roles, objects.orgs, plainS, plainReq, plainRSS, syncS, syncS/plainS, res.Requests, res.Phases, syncRSS, syncHeap,
			resyncS, resyncS/plainS, again.Phases, resyncRSS, resyncHeap)
	}
}

// resetPeakRSS resets the kernel's peak RSS (VmHWM) of this process to
// what it holds now, having handed back to the system what the part before
// left free, so the next peak is the next part's own.
func resetPeakRSS() {
	debug.FreeOSMemory()
	_ = os.WriteFile("/proc/self/clear_refs", []byte("5"), 0)
}

// watchHeap samples the Go heap in use every 50 ms until the returned
// function is called, which reports the largest sample in MB. With
// KEYBRIDGE_BENCH_HEAPPROFILE set to a path prefix, the heap profile at
// the largest sample is written to <prefix>-<n>.pprof for the n-th watch.
func watchHeap() func() float64 {
	done := make(chan struct{})
	peak := make(chan float64)
	profile := ""
	if p := os.Getenv("KEYBRIDGE_BENCH_HEAPPROFILE"); p != "" {
		profile = fmt.Sprintf("%s-%d.pprof", p, heapWatches.Add(1))
	}
	go func() {
		var most uint64
		t := time.NewTicker(50 * time.Millisecond)
		defer t.Stop()
		for {
			var m runtime.MemStats
			runtime.ReadMemStats(&m)
			if profile != "" && m.HeapInuse > most+most/20 {
				if f, err := os.Create(profile); err == nil {
					_ = pprof.WriteHeapProfile(f)
					_ = f.Close()
				}
			}
			most = max(most, m.HeapInuse)
			select {
			case <-done:
				peak <- float64(most) / (1 << 20)
				return
			case <-t.C:
			}
		}
	}()
	return func() float64 { close(done); return <-peak }
}

var heapWatches atomic.Int64

// peakRSSMB is this process's peak RSS since the last resetPeakRSS, in MB
// (0 where /proc is not there).
func peakRSSMB() float64 {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "VmHWM:"); ok {
			kb, _ := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 64)
			return kb / 1024
		}
	}
	return 0
}

// plainReader reads what a snapshot reads, the cheapest way and nothing
// else: the listings paged, group members per group, composites per
// composite role, every user's direct role mappings, organizations and
// their members, conc requests in flight.
type plainReader struct {
	base, realm, clientID, secret string
	clients                       []string
	conc, page                    int
	http                          *http.Client
	requests                      atomic.Int64
	token                         string
}

type plainObjects struct{ users, groups, roles, orgs int }

func (p *plainReader) get(ctx context.Context, path string, out any) error {
	req, err := http.NewRequestWithContext(ctx, "GET", p.base+"/admin/realms/"+url.PathEscape(p.realm)+path, nil)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+p.token)
	p.requests.Add(1)
	res, err := p.http.Do(req)
	if err != nil {
		return err
	}
	defer res.Body.Close()
	raw, err := io.ReadAll(res.Body)
	if err != nil {
		return err
	}
	if res.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: status %d", path, res.StatusCode)
	}
	return json.Unmarshal(raw, out)
}

func plainPages[T any](ctx context.Context, p *plainReader, path string) ([]T, error) {
	sep := "?"
	if strings.Contains(path, "?") {
		sep = "&"
	}
	var all []T
	for first := 0; ; first += p.page {
		var page []T
		if err := p.get(ctx, fmt.Sprintf("%s%sfirst=%d&max=%d", path, sep, first, p.page), &page); err != nil {
			return nil, err
		}
		all = append(all, page...)
		if len(page) < p.page {
			return all, nil
		}
	}
}

// each runs fn for 0 <= i < n, p.conc at a time, and returns the first error.
func (p *plainReader) each(n int, fn func(i int) error) error {
	var next atomic.Int64
	var wg gosync.WaitGroup
	errs := make(chan error, p.conc)
	for range min(p.conc, n) {
		wg.Go(func() {
			for i := int(next.Add(1) - 1); i < n; i = int(next.Add(1) - 1) {
				if err := fn(i); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	return <-errs
}

func (p *plainReader) read(ctx context.Context) (plainObjects, error) {
	form := url.Values{"grant_type": {"client_credentials"}, "client_id": {p.clientID}, "client_secret": {p.secret}}
	res, err := p.http.PostForm(p.base+"/realms/"+url.PathEscape(p.realm)+"/protocol/openid-connect/token", form)
	if err != nil {
		return plainObjects{}, err
	}
	var tok struct {
		AccessToken string `json:"access_token"`
	}
	err = json.NewDecoder(res.Body).Decode(&tok)
	res.Body.Close()
	if err != nil || tok.AccessToken == "" {
		return plainObjects{}, fmt.Errorf("service account token: status %d", res.StatusCode)
	}
	p.token = tok.AccessToken

	type obj struct {
		ID            string `json:"id"`
		Composite     bool   `json:"composite"`
		SubGroupCount int    `json:"subGroupCount"`
	}
	var o plainObjects
	users, err := plainPages[obj](ctx, p, "/users?briefRepresentation=false")
	if err != nil {
		return o, err
	}
	o.users = len(users)
	queue, err := plainPages[obj](ctx, p, "/groups?briefRepresentation=false")
	if err != nil {
		return o, err
	}
	var groups []obj
	for len(queue) > 0 {
		g := queue[0]
		queue = queue[1:]
		groups = append(groups, g)
		if g.SubGroupCount > 0 {
			children, err := plainPages[obj](ctx, p, "/groups/"+g.ID+"/children?briefRepresentation=false")
			if err != nil {
				return o, err
			}
			queue = append(queue, children...)
		}
	}
	o.groups = len(groups)
	if err := p.each(len(groups), func(i int) error {
		_, err := plainPages[obj](ctx, p, "/groups/"+groups[i].ID+"/members?briefRepresentation=true")
		return err
	}); err != nil {
		return o, err
	}
	roles, err := plainPages[obj](ctx, p, "/roles?briefRepresentation=false")
	if err != nil {
		return o, err
	}
	for _, c := range p.clients {
		var found []obj
		if err := p.get(ctx, "/clients?clientId="+url.QueryEscape(c), &found); err != nil {
			return o, err
		}
		for _, f := range found {
			rs, err := plainPages[obj](ctx, p, "/clients/"+f.ID+"/roles?briefRepresentation=false")
			if err != nil {
				return o, err
			}
			roles = append(roles, rs...)
		}
	}
	o.roles = len(roles)
	if err := p.each(len(roles), func(i int) error {
		if !roles[i].Composite {
			return nil
		}
		var children []obj
		return p.get(ctx, "/roles-by-id/"+roles[i].ID+"/composites", &children)
	}); err != nil {
		return o, err
	}
	if err := p.each(len(users), func(i int) error {
		var m map[string]any
		return p.get(ctx, "/users/"+users[i].ID+"/role-mappings", &m)
	}); err != nil {
		return o, err
	}
	orgs, err := plainPages[obj](ctx, p, "/organizations?briefRepresentation=true")
	if err != nil {
		return o, err
	}
	o.orgs = len(orgs)
	err = p.each(len(orgs), func(i int) error {
		_, err := plainPages[obj](ctx, p, "/organizations/"+orgs[i].ID+"/members")
		return err
	})
	return o, err
}
