package audit_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/url"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/keybridge/keybridge/internal/audit"
	"github.com/keybridge/keybridge/internal/testenv"
)

// cutter is a TCP proxy to PostgreSQL that can cut every connection and
// refuse new ones, as a database restart would.
type cutter struct {
	target string
	ln     net.Listener
	addr   string
	mu     sync.Mutex
	conns  []net.Conn
	down   bool
}

func newCutter(t *testing.T, target string) *cutter {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	c := &cutter{target: target, ln: ln, addr: ln.Addr().String()}
	go c.accept()
	t.Cleanup(func() { ln.Close() })
	return c
}

func (c *cutter) accept() {
	for {
		in, err := c.ln.Accept()
		if err != nil {
			return
		}
		c.mu.Lock()
		down := c.down
		c.mu.Unlock()
		if down {
			in.Close()
			continue
		}
		out, err := net.Dial("tcp", c.target)
		if err != nil {
			in.Close()
			continue
		}
		c.mu.Lock()
		c.conns = append(c.conns, in, out)
		c.mu.Unlock()
		go func() { _, _ = io.Copy(out, in); out.Close() }()
		go func() { _, _ = io.Copy(in, out); in.Close() }()
	}
}

func (c *cutter) cut(down bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.down = down
	if down {
		for _, x := range c.conns {
			x.Close()
		}
		c.conns = nil
	}
}

func TestFaultAuditDuringPostgresOutage(t *testing.T) {
	db := testenv.NewDatabase(t)
	u, _ := url.Parse(db.SyncURL)
	cut := newCutter(t, u.Host)
	u.Host = cut.addr
	ctx := context.Background()
	pool, err := pgxpool.New(ctx, u.String())
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	direct, err := pgxpool.New(ctx, db.OwnerURL)
	if err != nil {
		t.Fatal(err)
	}
	defer direct.Close()
	w := &audit.Writer{Pool: pool, QueueSize: 10000, BatchSize: 100, FlushInterval: 20 * time.Millisecond,
		Depth: prometheus.NewGauge(prometheus.GaugeOpts{Name: "d"}), Dropped: prometheus.NewCounter(prometheus.CounterOpts{Name: "x"}),
		Written: prometheus.NewCounter(prometheus.CounterOpts{Name: "w"}), WriteErrors: prometheus.NewCounter(prometheus.CounterOpts{Name: "e"})}
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { _ = w.Run(runCtx); close(done) }()

	const total = 3000
	for i := 0; i < total; i++ {
		if i == 1000 {
			cut.cut(true) // PostgreSQL goes away mid-burst
		}
		if i == 2500 {
			cut.cut(false)
		}
		w.Record(ctx, audit.Entry{Action: "check.workflows.read", Outcome: audit.Denied, TenantID: "acme", ActorID: fmt.Sprint(i)})
		if i%100 == 0 {
			time.Sleep(10 * time.Millisecond)
		}
	}
	deadline := time.Now().Add(30 * time.Second)
	var n int
	for time.Now().Before(deadline) {
		_ = direct.QueryRow(ctx, `SELECT count(*) FROM audit_log`).Scan(&n)
		if n >= total {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	stop()
	<-done
	_ = direct.QueryRow(ctx, `SELECT count(*) FROM audit_log`).Scan(&n)
	if n != total {
		t.Fatalf("%d audit rows after the outage, want %d", n, total)
	}
	if d := testutil.ToFloat64(w.Dropped); d != 0 {
		t.Errorf("%v entries dropped", d)
	}
	fmt.Printf("RELIABILITY faults tried=1 bad=%d note=audit rows lost across a PostgreSQL outage (%d written, %v write errors retried)\n", total-n, n, testutil.ToFloat64(w.WriteErrors))
}

func newWriter(pool *pgxpool.Pool) *audit.Writer {
	return &audit.Writer{Pool: pool, QueueSize: 1000, BatchSize: 50, FlushInterval: 20 * time.Millisecond,
		Depth: prometheus.NewGauge(prometheus.GaugeOpts{Name: "d"}), Dropped: prometheus.NewCounter(prometheus.CounterOpts{Name: "x"}),
		Written: prometheus.NewCounter(prometheus.CounterOpts{Name: "w"}), WriteErrors: prometheus.NewCounter(prometheus.CounterOpts{Name: "e"})}
}

// An entry carrying bytes PostgreSQL refuses in text (an X-Request-Id of
// 0xff, a NUL in a reason or in details) is stored cleaned, and neither it
// nor the entries after it are held up. One PostgreSQL refuses anyway is
// dropped alone, and counted, instead of blocking every later entry.
func TestAuditEntryWithBytesPostgresRefuses(t *testing.T) {
	db := testenv.NewDatabase(t)
	ctx := context.Background()
	pool, err := pgxpool.New(ctx, db.SyncURL)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	w := newWriter(pool)
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { _ = w.Run(runCtx); close(done) }()
	w.Record(ctx, audit.Entry{Action: "people.list", Outcome: audit.Denied, RequestID: "\xff\xfe", Reason: "no\x00token",
		Details: map[string]any{"k": "v\x00"}})
	for i := range 20 {
		w.Record(ctx, audit.Entry{Action: "check.workflows.read", Outcome: audit.Denied, ActorID: fmt.Sprint(i)})
		if i == 10 { // refused for its data whatever is cleaned: dropped alone, and counted
			w.Record(ctx, audit.Entry{ID: "not-a-uuid", Action: "check.workflows.read", Outcome: audit.Denied})
		}
	}
	var n int
	testenv.Eventually(t, "21 audit rows", 10*time.Second, func() bool {
		_ = pool.QueryRow(ctx, `SELECT count(*) FROM audit_log`).Scan(&n)
		return n == 21
	})
	stop()
	<-done
	var req, reason string
	if err := pool.QueryRow(ctx, `SELECT request_id, reason FROM audit_log WHERE action = 'people.list'`).Scan(&req, &reason); err != nil {
		t.Fatal(err)
	}
	if req != "\uFFFD" || reason != "no\uFFFDtoken" {
		t.Errorf("stored request_id %q, reason %q", req, reason)
	}
	if d := testutil.ToFloat64(w.Dropped); d != 1 {
		t.Errorf("%v entries dropped, want 1 (the one with a malformed id)", d)
	}
}

// An entry interrupted by shutdown in the middle of its write is written by
// the drain, not discarded uncounted.
func TestAuditShutdownDuringAWriteLosesNothing(t *testing.T) {
	db := testenv.NewDatabase(t)
	ctx := context.Background()
	u, _ := url.Parse(db.SyncURL)
	cut := newCutter(t, u.Host)
	u.Host = cut.addr
	pool, err := pgxpool.New(ctx, u.String())
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	w := newWriter(pool)
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { _ = w.Run(runCtx); close(done) }()
	cut.cut(true) // the write that starts now fails and is retried
	for i := range 5 {
		w.Record(ctx, audit.Entry{Action: "people.assign", Outcome: audit.Success, ActorID: fmt.Sprint(i)})
	}
	testenv.Eventually(t, "a failed write", 10*time.Second, func() bool { return testutil.ToFloat64(w.WriteErrors) > 0 })
	stop() // shutdown while the batch waits for its retry
	cut.cut(false)
	<-done
	var n int
	if err := pool.QueryRow(ctx, `SELECT count(*) FROM audit_log`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != 5 {
		t.Fatalf("%d of 5 entries written after shutdown (dropped counted: %v)", n, testutil.ToFloat64(w.Dropped))
	}
}
