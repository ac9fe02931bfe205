package audit

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cenkalti/backoff/v5"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
)

// Writer queues entries and writes them in batches. Record never blocks:
// while PostgreSQL is unreachable entries wait in a bounded queue and are
// written on recovery; only a full queue drops, and that is counted.
//
// Every entry is capped field by field (see the Max* constants) before it
// is queued. Refusals before authentication (Class Unauthenticated) never
// enter the queue one by one: identical ones (client address, action,
// outcome, reason) are counted into one row per Window, written when the
// window ends or at shutdown, and those rows may hold only
// UnauthenticatedShare of QueueSize; beyond it new ones are dropped and
// counted in DroppedUnauthenticated. The rest of QueueSize is reserved for
// authenticated entries, which noise can therefore never crowd out.
type Writer struct {
	Pool          *pgxpool.Pool
	QueueSize     int
	BatchSize     int
	FlushInterval time.Duration
	Log           *slog.Logger
	Depth         prometheus.Gauge
	Dropped       prometheus.Counter
	Written       prometheus.Counter
	WriteErrors   prometheus.Counter
	// DroppedUnauthenticated counts unauthenticated entries dropped beyond
	// their share of the queue; nil counts them in Dropped.
	DroppedUnauthenticated prometheus.Counter
	// UnauthenticatedShare is the share of QueueSize that rows of
	// unauthenticated refusals may hold (default DefaultUnauthenticatedShare).
	UnauthenticatedShare float64
	// Window is the period identical unauthenticated refusals are counted
	// over before their row is written (default AggregateWindow).
	Window time.Duration

	once sync.Once
	ch   chan Entry
	done chan struct{}

	mu      sync.Mutex
	pending map[aggKey]*Entry // rows of unauthenticated refusals being counted
	oldest  int64             // the earliest window in pending, UnixNano; 0 when empty
	maxAgg  int               // most rows pending may hold
	warned  atomic.Int64      // when dropping noise was last logged, UnixNano
}

// aggKey is what makes refusals before authentication identical.
type aggKey struct {
	window                          int64 // start, UnixNano
	client, action, outcome, reason string
}

func (w *Writer) init() {
	w.once.Do(func() {
		share := w.UnauthenticatedShare
		if share <= 0 || share >= 1 {
			share = DefaultUnauthenticatedShare
		}
		w.maxAgg = max(int(float64(w.QueueSize)*share), 1)
		w.ch = make(chan Entry, max(w.QueueSize-w.maxAgg, 1))
		w.pending = map[aggKey]*Entry{}
		w.done = make(chan struct{})
	})
}

func (w *Writer) window() time.Duration {
	if w.Window > 0 {
		return w.Window
	}
	return AggregateWindow
}

// Record implements Recorder.
func (w *Writer) Record(_ context.Context, e Entry) {
	w.init()
	prepare(&e)
	if e.Class == Unauthenticated {
		w.aggregate(e)
		return
	}
	select {
	case w.ch <- e:
		w.Depth.Inc()
	default:
		w.Dropped.Inc()
		if w.Log != nil {
			w.Log.Error("audit queue full: entry dropped", "action", e.Action, "outcome", e.Outcome)
		}
	}
}

// prepare fills what an entry may leave out and bounds it (sanitize).
func prepare(e *Entry) {
	if e.ID == "" {
		e.ID = uuid.NewString()
	}
	if e.OccurredAt.IsZero() {
		e.OccurredAt = time.Now()
	}
	if e.ActorName == "" {
		e.ActorName = "system"
	}
	sanitize(e)
}

// WriteNow writes one entry at once, bypassing the queue, and reports
// whether PostgreSQL has it: for callers that must not record something as
// done before its audit row is durable (the event poller marks an event
// applied only after this). Idempotent by entry id, like every write.
func (w *Writer) WriteNow(ctx context.Context, e Entry) error {
	w.init()
	prepare(&e)
	if err := w.write(ctx, []Entry{e}); err != nil {
		w.WriteErrors.Inc()
		return fmt.Errorf("write audit entry %s: %w", e.Action, err)
	}
	w.Written.Inc()
	return nil
}

// aggregate counts a refusal before authentication into its window's row,
// or starts that row while the unauthenticated share has room.
func (w *Writer) aggregate(e Entry) {
	now := time.Now()
	k := aggKey{window: now.Truncate(w.window()).UnixNano(), client: e.ClientAddr, action: e.Action, outcome: e.Outcome, reason: e.Reason}
	n := max(e.Count, 1)
	w.mu.Lock()
	if p, ok := w.pending[k]; ok {
		p.Count = min(p.Count+n, math.MaxInt32)
		w.mu.Unlock()
		return
	}
	if len(w.pending) >= w.maxAgg {
		w.mu.Unlock()
		w.dropped(e)
		if last := w.warned.Load(); now.UnixNano()-last > int64(time.Minute) && w.warned.CompareAndSwap(last, now.UnixNano()) && w.Log != nil {
			w.Log.Warn("audit: refusals before authentication beyond their share of the queue are dropped (counted in keybridge_audit_dropped_total{class=\"unauthenticated\"})",
				"rows_held", w.maxAgg)
		}
		return
	}
	e.Count = n
	w.pending[k] = &e
	if w.oldest == 0 || k.window < w.oldest {
		w.oldest = k.window
	}
	w.mu.Unlock()
	w.Depth.Inc()
}

// takeAggregated removes and returns the rows whose window has ended by
// now, or every row when all is set (shutdown).
func (w *Writer) takeAggregated(now time.Time, all bool) []Entry {
	w.mu.Lock()
	defer w.mu.Unlock()
	win := w.window()
	if len(w.pending) == 0 || (!all && now.Before(time.Unix(0, w.oldest).Add(win))) {
		return nil
	}
	var out []Entry
	w.oldest = 0
	for k, e := range w.pending {
		if all || !now.Before(time.Unix(0, k.window).Add(win)) {
			out = append(out, *e)
			delete(w.pending, k)
		} else if w.oldest == 0 || k.window < w.oldest {
			w.oldest = k.window
		}
	}
	return out
}

// dropped counts a dropped entry by its class.
func (w *Writer) dropped(e Entry) {
	if e.Class == Unauthenticated && w.DroppedUnauthenticated != nil {
		w.DroppedUnauthenticated.Inc()
		return
	}
	w.Dropped.Inc()
}

// Run writes until ctx ends, then drains what is queued (bounded by a
// grace period) before returning.
func (w *Writer) Run(ctx context.Context) error {
	w.init()
	defer close(w.done)
	ticker := time.NewTicker(w.FlushInterval)
	defer ticker.Stop()
	batch := make([]Entry, 0, w.BatchSize)
	// A batch interrupted by shutdown stays in batch and goes out with the
	// drain; only what the drain cannot write is dropped, and counted.
	flush := func(ctx context.Context) {
		if len(batch) > 0 && w.writeWithRetry(ctx, batch) {
			batch = batch[:0]
		}
	}
	add := func(ctx context.Context, e Entry) {
		batch = append(batch, e)
		if len(batch) >= w.BatchSize {
			flush(ctx)
		}
	}
	for {
		select {
		case e := <-w.ch:
			add(ctx, e)
		case now := <-ticker.C:
			// Counted refusals go out once their window has ended.
			for _, e := range w.takeAggregated(now, false) {
				add(ctx, e)
			}
			flush(ctx)
		case <-ctx.Done():
			drain, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
			defer cancel()
			// The windows still open are written as they stand.
			for _, e := range w.takeAggregated(time.Now(), true) {
				add(drain, e)
			}
			for {
				select {
				case e := <-w.ch:
					add(drain, e)
				default:
					flush(drain)
					if len(batch) > 0 {
						for _, e := range batch {
							w.dropped(e)
						}
						w.Depth.Sub(float64(len(batch)))
						if w.Log != nil {
							w.Log.Error("audit entries not written at shutdown", "entries", len(batch))
						}
					}
					return nil
				}
			}
		}
	}
}

// writeWithRetry keeps a batch until it is written or ctx ends, and
// reports whether it was written: entry ids make a retry after an ambiguous
// failure idempotent. A batch PostgreSQL refuses for its data (SQLSTATE
// classes 22 and 23) is never retried whole, since it would block every
// later entry: its rows are written one by one and only a refused one is
// dropped, and counted.
func (w *Writer) writeWithRetry(ctx context.Context, batch []Entry) bool {
	b := backoff.NewExponentialBackOff()
	b.InitialInterval = 50 * time.Millisecond
	b.MaxInterval = 2 * time.Second
	for {
		err := w.write(ctx, batch)
		if err == nil {
			w.Written.Add(float64(len(batch)))
			w.Depth.Sub(float64(len(batch)))
			return true
		}
		w.WriteErrors.Inc()
		if dataError(err) {
			w.writeEach(ctx, batch)
			return true
		}
		if w.Log != nil {
			w.Log.WarnContext(ctx, "audit write failed; retrying", "entries", len(batch), "error", err)
		}
		select {
		case <-ctx.Done():
			return false
		case <-time.After(b.NextBackOff()):
		}
	}
}

// writeEach writes a refused batch row by row, dropping only rows that are
// refused for their data; a row that fails otherwise is retried.
func (w *Writer) writeEach(ctx context.Context, batch []Entry) {
	for i := range batch {
		one := batch[i : i+1]
		err := w.write(ctx, one)
		if err != nil && !dataError(err) {
			if !w.writeWithRetry(ctx, one) {
				w.Depth.Dec()
				w.dropped(one[0])
			}
			continue
		}
		w.Depth.Dec()
		if err == nil {
			w.Written.Inc()
			continue
		}
		w.dropped(one[0])
		if w.Log != nil {
			w.Log.ErrorContext(ctx, "audit entry refused by the database: dropped", "action", one[0].Action, "outcome", one[0].Outcome, "error", err)
		}
	}
}

func dataError(err error) bool {
	var pe *pgconn.PgError
	return errors.As(err, &pe) && (strings.HasPrefix(pe.Code, "22") || strings.HasPrefix(pe.Code, "23"))
}

// sanitize is the one place an entry is made storable and bounded:
// PostgreSQL refuses invalid UTF-8 and NUL in text, which a header can
// carry, and no field may exceed its cap (limits.go), whatever a client
// sent. Details are encoded here, once, with the client address.
func sanitize(e *Entry) {
	for _, f := range []struct {
		v   *string
		max int
	}{
		{&e.TenantID, MaxTenantBytes}, {&e.ActorID, MaxUserBytes}, {&e.ActorName, MaxUserBytes}, {&e.Action, MaxActionBytes},
		{&e.ResourceType, MaxResourceTypeBytes}, {&e.ResourceID, MaxResourceIDBytes}, {&e.Outcome, MaxOutcomeBytes},
		{&e.RequestID, MaxRequestIDBytes}, {&e.Reason, MaxReasonBytes}, {&e.ClientAddr, MaxClientAddrBytes},
	} {
		*f.v = capText(*f.v, f.max)
	}
	e.details = capDetails(e.Details, e.ClientAddr)
	e.Details = nil // encoded: the caller's map is not read again
}

func (w *Writer) write(ctx context.Context, batch []Entry) error {
	n := len(batch)
	ids, tenants, actors, names, actions := make([]string, n), make([]*string, n), make([]string, n), make([]string, n), make([]string, n)
	types, resIDs, outcomes, reqs, reasons := make([]string, n), make([]string, n), make([]string, n), make([]string, n), make([]string, n)
	times, details, counts := make([]time.Time, n), make([]string, n), make([]int32, n)
	for i, e := range batch {
		ids[i], actors[i], names[i], actions[i] = e.ID, e.ActorID, e.ActorName, e.Action
		if e.TenantID != "" {
			t := e.TenantID
			tenants[i] = &t
		}
		types[i], resIDs[i], outcomes[i], reqs[i], reasons[i], times[i] = e.ResourceType, e.ResourceID, e.Outcome, e.RequestID, e.Reason, e.OccurredAt
		details[i] = e.details
		if details[i] == "" {
			details[i] = "{}"
		}
		counts[i] = int32(min(max(e.Count, 1), math.MaxInt32))
	}
	wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	_, err := w.Pool.Exec(wctx, `INSERT INTO audit_log (entry_id, occurred_at, tenant_id, actor_id, actor_name, action, resource_type, resource_id, outcome, request_id, reason, details, count)
		SELECT * FROM unnest($1::uuid[], $2::timestamptz[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[], $8::text[], $9::text[], $10::text[], $11::text[], $12::jsonb[], $13::int[])
		ON CONFLICT (entry_id) DO NOTHING`,
		ids, times, tenants, actors, names, actions, types, resIDs, outcomes, reqs, reasons, details, counts)
	return err
}

// Wait blocks until Run has returned.
func (w *Writer) Wait() {
	w.init()
	<-w.done
}
