package main

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/keybridge/keybridge/config"
	"github.com/keybridge/keybridge/internal/api"
	"github.com/keybridge/keybridge/internal/metrics"
	"github.com/keybridge/keybridge/internal/store"
	"github.com/keybridge/keybridge/internal/testenv"
)

// wired is the daemon's HTTP handler as serve wires it (decisions and
// management), on a fresh database; stop ends its loops as serve does at
// shutdown, so the audit writer drains.
type wired struct {
	h     http.Handler
	owner *pgxpool.Pool
	stop  func()
}

func wireForTest(t *testing.T, edit func(*config.Config)) *wired {
	t.Helper()
	db := testenv.NewDatabase(t)
	ctx := context.Background()
	cfg := config.Default()
	cfg.Keycloak.URL, cfg.Keycloak.Realm = "http://127.0.0.1:1", "fastn" // never reached: no request here carries a token
	if edit != nil {
		edit(&cfg)
	}
	st, err := store.Open(ctx, db.AppURL, db.SyncURL, 4)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(st.Close)
	owner, err := pgxpool.New(ctx, db.OwnerURL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(owner.Close)
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	d := &deps{cfg: &cfg, log: log, metrics: metrics.New("test", "test"), store: st}
	srv := &api.Server{Log: log, Metrics: d.metrics, TrustedProxies: cfg.Server.TrustedProxies}
	loopCtx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	for _, wire := range []func(context.Context, *deps) (feature, error){wireDecisions, wireManagement} {
		f, err := wire(ctx, d)
		if err != nil {
			t.Fatal(err)
		}
		srv.Modules = append(srv.Modules, f.modules...)
		for _, run := range f.background {
			wg.Add(1)
			go func() { defer wg.Done(); _ = run(loopCtx) }()
		}
	}
	var once sync.Once
	stop := func() { once.Do(func() { cancel(); wg.Wait() }) }
	t.Cleanup(stop)
	return &wired{h: srv.Handler(), owner: owner, stop: stop}
}

func (w *wired) do(method, path, remote string, header map[string]string) *httptest.ResponseRecorder {
	req := httptest.NewRequest(method, path, strings.NewReader(`{"permission":"workflows.read"}`))
	req.RemoteAddr = remote
	for k, v := range header {
		req.Header.Set(k, v)
	}
	rec := httptest.NewRecorder()
	w.h.ServeHTTP(rec, req)
	return rec
}

// Security item 4: an unauthenticated request with an 80,000-byte
// X-Request-Id is refused, and neither the answer nor its audit row carries
// the client's id: both carry a generated one of bounded length.
func TestOversizeRequestIDNeverReachesTheAuditLog(t *testing.T) {
	w := wireForTest(t, nil)
	huge := strings.Repeat("a", 80000)
	rec := w.do("GET", "/v1/people", "192.0.2.7:4000", map[string]string{"X-Request-Id": huge})
	if rec.Code != http.StatusUnauthorized {
		t.Fatalf("status %d, want 401", rec.Code)
	}
	answered := rec.Header().Get("X-Request-Id")
	if answered == huge || answered == "" || len(answered) > 128 {
		t.Errorf("answered request id of %d bytes", len(answered))
	}
	w.stop() // the writer drains at shutdown
	var n, longest int
	var id string
	if err := w.owner.QueryRow(context.Background(),
		`SELECT count(*), coalesce(max(octet_length(request_id)), 0), coalesce(max(request_id), '') FROM audit_log WHERE action = 'people.list'`).Scan(&n, &longest, &id); err != nil {
		t.Fatal(err)
	}
	if n != 1 || longest > 128 || id != answered {
		t.Errorf("%d people.list rows, longest request_id %d bytes (%q), want 1 row carrying the answered id %q", n, longest, id[:min(len(id), 40)], answered)
	}
}

// Security item 4: refusals before authentication are limited per client
// address (the one behind a trusted proxy), answered 429 with Retry-After
// beyond the default bucket and not audited; a flood of identical refusals
// is one audit row carrying its count. Another client is not affected.
func TestUnauthenticatedFloodIsLimitedAndCountedNotWritten(t *testing.T) {
	w := wireForTest(t, func(c *config.Config) { c.Server.TrustedProxies = []string{"10.0.0.0/8"} })
	const flood = 300 // beyond the default burst
	codes := map[int]int{}
	throttled := map[string]int{}
	retryAfter := ""
	for i := range flood {
		path := "/v1/people"
		method := "GET"
		if i%2 == 1 {
			path, method = "/v1/check", "POST" // the decision routes share the client's bucket
		}
		rec := w.do(method, path, "10.1.2.3:5000", map[string]string{"X-Forwarded-For": "198.51.100.9"})
		codes[rec.Code]++
		if rec.Code == http.StatusTooManyRequests {
			retryAfter = rec.Header().Get("Retry-After")
			throttled[path]++
		}
	}
	if codes[http.StatusUnauthorized] == 0 || codes[http.StatusTooManyRequests] == 0 || codes[http.StatusUnauthorized]+codes[http.StatusTooManyRequests] != flood {
		t.Fatalf("answers %v: want 401 up to the bucket, then 429", codes)
	}
	if retryAfter == "" {
		t.Error("429 without Retry-After")
	}
	if throttled["/v1/people"] == 0 || throttled["/v1/check"] == 0 {
		t.Errorf("429s by route %v: want both the management and the decision route limited", throttled)
	}
	// The proxy's other clients and other addresses keep their own buckets.
	if rec := w.do("GET", "/v1/people", "10.1.2.3:5000", map[string]string{"X-Forwarded-For": "198.51.100.10"}); rec.Code != http.StatusUnauthorized {
		t.Errorf("another client behind the trusted proxy got %d, want 401", rec.Code)
	}
	if rec := w.do("GET", "/v1/people", "203.0.113.5:5000", nil); rec.Code != http.StatusUnauthorized {
		t.Errorf("another client address got %d, want 401", rec.Code)
	}
	w.stop()
	var rows int
	var total int64
	if err := w.owner.QueryRow(context.Background(),
		`SELECT count(*), coalesce(sum(count), 0) FROM audit_log WHERE action = 'people.list' AND details->>'client_addr' = '198.51.100.9'`).Scan(&rows, &total); err != nil {
		t.Fatal(err)
	}
	// The people.list refusals of the flood that were answered 401.
	if rows != 1 || total == 0 || total > int64(codes[http.StatusUnauthorized]) {
		t.Errorf("%d audit rows carrying %d refusals for the flooding client, want 1 row counting the 401s (%d answers 401 in all)", rows, total, codes[http.StatusUnauthorized])
	}
	var all int
	_ = w.owner.QueryRow(context.Background(), `SELECT count(*) FROM audit_log`).Scan(&all)
	if all != 3 { // the flood, the client behind the proxy, the other address
		t.Errorf("%d audit rows in all, want 3", all)
	}
}
