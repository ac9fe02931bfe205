package audit_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/url"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/keybridge/keybridge/internal/audit"
	"github.com/keybridge/keybridge/internal/testenv"
)

func syncPool(t *testing.T) *pgxpool.Pool {
	t.Helper()
	db := testenv.NewDatabase(t)
	pool, err := pgxpool.New(context.Background(), db.SyncURL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	return pool
}

// run starts w and returns the function that shuts it down and waits.
func run(w *audit.Writer) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = w.Run(ctx); close(done) }()
	return func() { cancel(); <-done }
}

// Security item 5: every audit field has a cap, enforced by the writer
// whoever made the entry; a cut value ends in the truncation mark within
// the cap, and a value at its cap is kept whole.
func TestAuditFieldsAreCapped(t *testing.T) {
	pool := syncPool(t)
	w := newWriter(pool)
	stop := run(w)
	huge := strings.Repeat("é", 600000) // 1.2 MB of two-byte characters: cuts must keep UTF-8 whole
	w.Record(context.Background(), audit.Entry{Action: "check." + huge, TenantID: huge, ActorID: huge, ActorName: huge,
		ResourceType: huge, ResourceID: huge, Outcome: audit.Denied, RequestID: huge, Reason: huge, ClientAddr: huge,
		Details: map[string]any{"k": huge}})
	atCap := strings.Repeat("r", audit.MaxResourceIDBytes)
	w.Record(context.Background(), audit.Entry{Action: "at.cap", ResourceID: atCap, Outcome: audit.Denied})
	stop()

	var tenant, actor, name, action, rtype, rid, req, reason, client, details string
	if err := pool.QueryRow(context.Background(), `SELECT tenant_id, actor_id, actor_name, action, resource_type, resource_id, request_id, reason,
		coalesce(details->>'client_addr', ''), details::text FROM audit_log WHERE action LIKE 'check.%'`).
		Scan(&tenant, &actor, &name, &action, &rtype, &rid, &req, &reason, &client, &details); err != nil {
		t.Fatal(err)
	}
	for _, f := range []struct {
		name  string
		value string
		limit int
	}{
		{"tenant", tenant, audit.MaxTenantBytes}, {"actor_id", actor, audit.MaxUserBytes}, {"actor_name", name, audit.MaxUserBytes},
		{"action", action, audit.MaxActionBytes}, {"resource_type", rtype, audit.MaxResourceTypeBytes},
		{"resource_id", rid, audit.MaxResourceIDBytes}, {"request_id", req, audit.MaxRequestIDBytes},
		{"reason", reason, audit.MaxReasonBytes}, {"client_addr", client, audit.MaxClientAddrBytes},
	} {
		if len(f.value) > f.limit || len(f.value) < f.limit-len(audit.TruncatedSuffix)-1 || !strings.HasSuffix(f.value, audit.TruncatedSuffix) || !utf8.ValidString(f.value) {
			t.Errorf("%s: %d bytes, want at most %d ending in %q", f.name, len(f.value), f.limit, audit.TruncatedSuffix)
		}
	}
	if !strings.HasPrefix(action, "check.éé") {
		t.Errorf("action %q lost its start", action[:min(20, len(action))])
	}
	if len(details) > audit.MaxDetailsBytes+64 || !strings.Contains(details, "truncated") || !json.Valid([]byte(details)) {
		t.Errorf("details: %d bytes, want at most about %d and marked truncated", len(details), audit.MaxDetailsBytes)
	}
	var kept string
	if err := pool.QueryRow(context.Background(), `SELECT resource_id FROM audit_log WHERE action = 'at.cap'`).Scan(&kept); err != nil {
		t.Fatal(err)
	}
	if kept != atCap {
		t.Errorf("a resource id of exactly %d bytes was changed to %d bytes", audit.MaxResourceIDBytes, len(kept))
	}
}

// Unauthenticated noise cannot take the room of authenticated entries: with
// nothing written (PostgreSQL away), refusals from thousands of addresses
// get only their share of the queue and are dropped beyond it, counted by
// class, while every authenticated entry the rest can hold is accepted and
// written.
func TestUnauthenticatedNoiseLeavesRoomForAuthenticated(t *testing.T) {
	db := testenv.NewDatabase(t)
	u, _ := url.Parse(db.SyncURL)
	cut := newCutter(t, u.Host)
	u.Host = cut.addr
	pool, err := pgxpool.New(context.Background(), u.String())
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	w := newWriter(pool) // QueueSize 1000
	w.DroppedUnauthenticated = prometheus.NewCounter(prometheus.CounterOpts{Name: "u"})
	cut.cut(true)
	stop := run(w)
	ctx := context.Background()
	for i := range 20000 {
		w.Record(ctx, audit.Entry{Action: "people.list", Outcome: audit.Denied, Reason: "no bearer token", ActorName: "anonymous",
			ClientAddr: fmt.Sprintf("2001:db8::%x", i), Class: audit.Unauthenticated})
	}
	held := 20000 - int(testutil.ToFloat64(w.DroppedUnauthenticated))
	if held > 100 {
		t.Errorf("%d unauthenticated rows held, want at most 10%% of the queue (100)", held)
	}
	const authenticated = 850 // the queue's rest (900) less a batch in flight
	for i := range authenticated {
		w.Record(ctx, audit.Entry{Action: "people.assign", Outcome: audit.Success, ActorID: fmt.Sprint(i)})
	}
	if d := testutil.ToFloat64(w.Dropped); d != 0 {
		t.Fatalf("%v authenticated entries dropped behind unauthenticated noise", d)
	}
	cut.cut(false)
	stop()
	var n int
	if err := pool.QueryRow(ctx, `SELECT count(*) FROM audit_log WHERE action = 'people.assign'`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != authenticated {
		t.Errorf("%d of %d authenticated entries written", n, authenticated)
	}
}

// A flood of identical refusals before authentication is one row per
// client address, action, outcome and reason per window, carrying the
// count: written when its window ends, and at shutdown for the window
// still open.
func TestUnauthenticatedRefusalsAreCountedPerWindow(t *testing.T) {
	pool := syncPool(t)
	w := newWriter(pool)
	w.Window = 2 * time.Second
	ctx := context.Background()
	// Start at the beginning of a window so the bursts below fall in one.
	time.Sleep(time.Until(time.Now().Truncate(w.Window).Add(w.Window)))
	stop := run(w)
	refuse := func(client, reason string, n int) {
		for range n {
			w.Record(ctx, audit.Entry{Action: "people.list", Outcome: audit.Denied, Reason: reason, ActorName: "anonymous",
				ClientAddr: client, RequestID: "r", Class: audit.Unauthenticated})
		}
	}
	refuse("192.0.2.1", "no bearer token", 500)
	refuse("192.0.2.1", "invalid token", 200)
	refuse("192.0.2.2", "no bearer token", 100)
	w.Record(ctx, audit.Entry{Action: "people.assign", Outcome: audit.Success, ActorID: "u1"}) // authenticated: not counted with them
	counts := func() map[string]int64 {
		rows, err := pool.Query(ctx, `SELECT details->>'client_addr' || ' ' || reason, count FROM audit_log WHERE action = 'people.list' ORDER BY 1`)
		if err != nil {
			t.Fatal(err)
		}
		defer rows.Close()
		out := map[string]int64{}
		for rows.Next() {
			var k string
			var c int64
			if err := rows.Scan(&k, &c); err != nil {
				t.Fatal(err)
			}
			out[k] += c
			out["rows"]++
		}
		return out
	}
	testenv.Eventually(t, "the window's rows written when it ends", 5*time.Second, func() bool { return counts()["rows"] == 3 })
	got := counts()
	if got["192.0.2.1 no bearer token"] != 500 || got["192.0.2.1 invalid token"] != 200 || got["192.0.2.2 no bearer token"] != 100 {
		t.Errorf("counts %v", got)
	}
	refuse("192.0.2.1", "no bearer token", 30) // a new window, still open at shutdown
	stop()
	got = counts()
	if got["rows"] != 4 || got["192.0.2.1 no bearer token"] != 530 {
		t.Errorf("after shutdown: counts %v, want a 4th row of 30", got)
	}
	var authenticatedRows, authenticatedCount int
	_ = pool.QueryRow(ctx, `SELECT count(*), sum(count) FROM audit_log WHERE action = 'people.assign'`).Scan(&authenticatedRows, &authenticatedCount)
	if authenticatedRows != 1 || authenticatedCount != 1 {
		t.Errorf("authenticated entry: %d rows, count %d", authenticatedRows, authenticatedCount)
	}
}
