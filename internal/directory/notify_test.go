package directory_test

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	gosync "sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/keybridge/keybridge/internal/directory"
	"github.com/keybridge/keybridge/internal/testenv"
	"github.com/keybridge/keybridge/mapping"
)

// running is a directory with Run going on its own pool of maxConns
// connections, over a database with one active person, p1; notify sends
// on the channel from a connection of its own, as another replica would.
type running struct {
	db   testenv.Database
	pool *pgxpool.Pool
	dir  *directory.Directory
	logs *syncBuffer
}

type syncBuffer struct {
	mu gosync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func startDirectory(t *testing.T, maxConns int32) *running {
	t.Helper()
	db := testenv.NewDatabase(t)
	ctx := context.Background()
	cfg, err := pgxpool.ParseConfig(db.SyncURL)
	if err != nil {
		t.Fatal(err)
	}
	cfg.MaxConns = maxConns
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := pool.Exec(ctx, `INSERT INTO people (id, username, status) VALUES ('p1', 'pat', 'active')`); err != nil {
		t.Fatal(err)
	}
	engine, err := mapping.New(mapping.Config{Preset: "fastn", Tenant: mapping.TenantSource{GroupPrefix: "/customers"}})
	if err != nil {
		t.Fatal(err)
	}
	logs := &syncBuffer{}
	// An hour between periodic reloads: whatever the test sees, NOTIFY or
	// a reconnect brought.
	dir := &directory.Directory{Pool: pool, Base: engine, Log: slog.New(slog.NewTextHandler(logs, nil)), Interval: time.Hour}
	rctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = dir.Run(rctx)
	}()
	t.Cleanup(func() {
		cancel()
		<-done
		pool.Close()
	})
	testenv.Eventually(t, "the first load", 10*time.Second, dir.Loaded)
	return &running{db: db, pool: pool, dir: dir, logs: logs}
}

// exec runs statements on a connection of its own as role url.
func exec(t *testing.T, url string, stmts ...string) {
	t.Helper()
	ctx := context.Background()
	c, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(ctx)
	for _, q := range stmts {
		if _, err := c.Exec(ctx, q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
}

const (
	deactivate = `UPDATE people SET status = 'inactive' WHERE id = 'p1'`
	notifyP1   = `SELECT pg_notify('keybridge_changed', '{"kind":"person","id":"p1"}')`
)

func (r *running) revoked() bool {
	p, ok := r.dir.Lookup("p1")
	return ok && p.Revoked()
}

// A notification is applied even while every connection of the pool is
// taken (a burst of webhooks, a sync, audit writes): the reload reads
// through the listener's own connection instead of queueing for the pool.
func TestNotifyReloadsWhilePoolIsBusy(t *testing.T) {
	r := startDirectory(t, 1)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	busy, err := r.pool.Acquire(ctx)
	if err != nil {
		t.Fatalf("take the pool's one connection: %v (the listener holds it)", err)
	}
	defer busy.Release()
	exec(t, r.db.SyncURL, "BEGIN", deactivate, notifyP1, "COMMIT")
	took := testenv.Eventually(t, "p1 revoked with the pool busy", time.Second, r.revoked)
	t.Logf("applied in %v", took)
}

// A reload that fails (here: the sync role briefly cannot read
// role_assignments) is retried by listening again and reloading
// everything, within a second of the cause going away, not at the next
// periodic reload.
func TestNotifyReloadFailureIsRetried(t *testing.T) {
	r := startDirectory(t, 4)
	exec(t, r.db.OwnerURL, `REVOKE SELECT ON role_assignments FROM keybridge_sync`)
	exec(t, r.db.SyncURL, "BEGIN", deactivate, notifyP1, "COMMIT")
	testenv.Eventually(t, "the failed reload logged", 5*time.Second, func() bool {
		return strings.Contains(r.logs.String(), "permission denied")
	})
	if r.revoked() {
		t.Fatal("p1 revoked though the reload failed")
	}
	exec(t, r.db.OwnerURL, `GRANT SELECT ON role_assignments TO keybridge_sync`)
	took := testenv.Eventually(t, "p1 revoked after the failure", time.Second, r.revoked)
	t.Logf("recovered %v after the grant", took)
}

// The listener's reconnect backoff starts over once a listener was up: a
// sixth loss of the connection in a row (PostgreSQL restarts, failovers)
// is back and reloaded within a second, not after 3.2 s and more.
func TestNotifyListenerBackoffStartsOver(t *testing.T) {
	r := startDirectory(t, 4)
	kill := `SELECT pg_terminate_backend(pid) FROM pg_stat_activity
		WHERE datname = current_database() AND usename = current_user AND pid <> pg_backend_pid()`
	for range 5 {
		v := r.dir.Version()
		exec(t, r.db.SyncURL, kill)
		testenv.Eventually(t, "reconnected and reloaded", 10*time.Second, func() bool { return r.dir.Version() > v })
	}
	exec(t, r.db.SyncURL, kill)
	exec(t, r.db.SyncURL, deactivate) // no listener to tell: the reconnect's reload finds it
	took := testenv.Eventually(t, "p1 revoked after the sixth loss", time.Second, r.revoked)
	t.Logf("back after %v", took)
}

// Notifications of kinds the view does not hold (package revocation's)
// reload nothing: the version, which every cached grant keys on, stays.
func TestNotifyOfRevocationsKeepsTheView(t *testing.T) {
	r := startDirectory(t, 4)
	v := r.dir.Version()
	exec(t, r.db.SyncURL, `SELECT pg_notify('keybridge_changed', '{"kind":"revocation"}')`)
	exec(t, r.db.SyncURL, "BEGIN", deactivate, notifyP1, "COMMIT")
	testenv.Eventually(t, "p1 revoked", time.Second, r.revoked)
	if got := r.dir.Version(); got != v+1 {
		t.Errorf("version went from %d to %d for one revocation and one person notification; want one reload", v, got)
	}
}
