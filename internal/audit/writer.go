package audit

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/cenkalti/backoff/v5"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
)

// Writer queues entries and writes them in batches. Record never blocks:
// while PostgreSQL is unreachable entries wait in a bounded queue and are
// written on recovery; only a full queue drops, and that is counted.
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

	once sync.Once
	ch   chan Entry
	done chan struct{}
}

func (w *Writer) init() {
	w.once.Do(func() {
		w.ch = make(chan Entry, w.QueueSize)
		w.done = make(chan struct{})
	})
}

// Record implements Recorder.
func (w *Writer) Record(_ context.Context, e Entry) {
	w.init()
	if e.ID == "" {
		e.ID = uuid.NewString()
	}
	if e.OccurredAt.IsZero() {
		e.OccurredAt = time.Now()
	}
	if e.ActorName == "" {
		e.ActorName = "system"
	}
	sanitize(&e)
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
	for {
		select {
		case e := <-w.ch:
			batch = append(batch, e)
			if len(batch) >= w.BatchSize {
				flush(ctx)
			}
		case <-ticker.C:
			flush(ctx)
		case <-ctx.Done():
			drain, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
			defer cancel()
			for {
				select {
				case e := <-w.ch:
					batch = append(batch, e)
					if len(batch) >= w.BatchSize {
						flush(drain)
					}
				default:
					flush(drain)
					if len(batch) > 0 {
						w.Dropped.Add(float64(len(batch)))
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
				w.Dropped.Inc()
			}
			continue
		}
		w.Depth.Dec()
		if err == nil {
			w.Written.Inc()
			continue
		}
		w.Dropped.Inc()
		if w.Log != nil {
			w.Log.ErrorContext(ctx, "audit entry refused by the database: dropped", "action", one[0].Action, "outcome", one[0].Outcome, "error", err)
		}
	}
}

func dataError(err error) bool {
	var pe *pgconn.PgError
	return errors.As(err, &pe) && (strings.HasPrefix(pe.Code, "22") || strings.HasPrefix(pe.Code, "23"))
}

// sanitize makes an entry's text storable: PostgreSQL refuses invalid
// UTF-8 and NUL in text, and a header such as X-Request-Id can carry both.
func sanitize(e *Entry) {
	for _, f := range []*string{&e.TenantID, &e.ActorID, &e.ActorName, &e.Action, &e.ResourceType, &e.ResourceID, &e.Outcome, &e.RequestID, &e.Reason} {
		*f = cleanText(*f)
	}
}

func cleanText(s string) string {
	if utf8.ValidString(s) && !strings.ContainsRune(s, 0) {
		return s
	}
	return strings.ReplaceAll(strings.ToValidUTF8(s, "\uFFFD"), "\x00", "\uFFFD")
}

func (w *Writer) write(ctx context.Context, batch []Entry) error {
	n := len(batch)
	ids, tenants, actors, names, actions := make([]string, n), make([]*string, n), make([]string, n), make([]string, n), make([]string, n)
	types, resIDs, outcomes, reqs, reasons := make([]string, n), make([]string, n), make([]string, n), make([]string, n), make([]string, n)
	times, details := make([]time.Time, n), make([]string, n)
	for i, e := range batch {
		ids[i], actors[i], names[i], actions[i] = e.ID, e.ActorID, e.ActorName, e.Action
		if e.TenantID != "" {
			t := e.TenantID
			tenants[i] = &t
		}
		types[i], resIDs[i], outcomes[i], reqs[i], reasons[i], times[i] = e.ResourceType, e.ResourceID, e.Outcome, e.RequestID, e.Reason, e.OccurredAt
		details[i] = "{}"
		if len(e.Details) > 0 {
			if b, err := json.Marshal(e.Details); err == nil {
				// jsonb refuses \u0000, which json.Marshal writes for NUL.
				details[i] = strings.ReplaceAll(string(b), `\u0000`, `\ufffd`)
			}
		}
	}
	wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	_, err := w.Pool.Exec(wctx, `INSERT INTO audit_log (entry_id, occurred_at, tenant_id, actor_id, actor_name, action, resource_type, resource_id, outcome, request_id, reason, details)
		SELECT * FROM unnest($1::uuid[], $2::timestamptz[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[], $8::text[], $9::text[], $10::text[], $11::text[], $12::jsonb[])
		ON CONFLICT (entry_id) DO NOTHING`,
		ids, times, tenants, actors, names, actions, types, resIDs, outcomes, reqs, reasons, details)
	return err
}

// Wait blocks until Run has returned.
func (w *Writer) Wait() {
	w.init()
	<-w.done
}
