package api

import (
	"context"
	"errors"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/gin-gonic/gin"
	"github.com/jackc/pgx/v5"

	"github.com/keybridge/keybridge/internal/audit"
	"github.com/keybridge/keybridge/middleware"
	"github.com/keybridge/keybridge/rls"
)

// AuditExport bounds the audit log's CSV and NDJSON exports, which stream
// for as long as their reader takes: a handful of slow readers must not hold
// the connections decisions and the management API need.
type AuditExport struct {
	// DB is where each export begins its own read-only transaction, under
	// the caller's RLS session (the runtime pool). The request's transaction
	// is released first, so an export holds this one connection and no
	// other. nil streams from the request's transaction.
	DB rls.Beginner
	// MaxConcurrent is how many exports stream at once (2 when zero);
	// another is answered 503 with Retry-After at once rather than waiting.
	MaxConcurrent int
	// MaxDuration cuts an export still streaming after it (5 minutes when
	// zero): the query is cancelled and the connection's write deadline —
	// which otherwise is the server's write timeout — is moved to it.
	MaxDuration time.Duration

	once  sync.Once
	slots chan struct{}
}

// exportRetryAfter is the Retry-After of an export refused for the budget.
const exportRetryAfter = 10 * time.Second

// errExportCut is the cause of an export's context ending at MaxDuration.
var errExportCut = errors.New("audit export cut at its maximum duration")

// acquire takes a slot for an export, without waiting; release gives it back.
func (x *AuditExport) acquire() (release func(), ok bool) {
	x.once.Do(func() {
		n := x.MaxConcurrent
		if n <= 0 {
			n = 2
		}
		x.slots = make(chan struct{}, n)
	})
	select {
	case x.slots <- struct{}{}:
		return func() { <-x.slots }, true
	default:
		return nil, false
	}
}

func (x *AuditExport) maxDuration() time.Duration {
	if x.MaxDuration > 0 {
		return x.MaxDuration
	}
	return 5 * time.Minute
}

// releaser is a Gatekeeper that can end the request's transaction before
// the handler does (*middleware.Middleware).
type releaser interface {
	Release(c *gin.Context) error
}

// exportAudit streams the rows of the filter through stream (which writes
// the format), on a budget slot, within the export's maximum duration, on a
// transaction of its own when it can. It reports the cut or failure in the
// log and the audit log; the answer has started by then.
func (m *Management) exportAudit(c *gin.Context, stream func(ctx context.Context, q pgx.Tx) error) {
	const action = "audit.list"
	x := &m.Export
	release, ok := x.acquire()
	if !ok {
		m.record(c, action, "audit", "", audit.Failure, "export refused: audit.export_max_concurrent exports are streaming")
		c.Header("Retry-After", strconv.Itoa(int(exportRetryAfter/time.Second)))
		Error(c, http.StatusServiceUnavailable, "export_busy", "too many audit exports are running; retry later")
		return
	}
	defer release()
	limit := x.maxDuration()
	ctx, cancel := context.WithTimeoutCause(c.Request.Context(), limit, errExportCut)
	defer cancel()
	// The server's write timeout would cut a long export its reader is
	// reading; a stalled reader is cut at the export's own limit instead.
	// (Not every ResponseWriter has a connection: httptest's recorder.)
	if err := http.NewResponseController(c.Writer).SetWriteDeadline(time.Now().Add(limit)); err != nil && !errors.Is(err, http.ErrNotSupported) {
		m.Log.WarnContext(ctx, "audit export: write deadline", "error", err, "request_id", RequestID(c))
	}

	tx := m.Gate.Tx(c)
	if r, ok := m.Gate.(releaser); ok && x.DB != nil {
		// The request's transaction goes back to the pool; the export runs
		// under the same RLS session on a transaction of its own.
		if err := r.Release(c); err != nil {
			m.storeError(c, action, "audit", "", err)
			return
		}
		session, ok := rls.FromContext(ctx)
		if !ok {
			session = middleware.SessionFor(m.Gate.Grant(c))
		}
		own, err := rls.Begin(rls.WithSession(ctx, session), x.DB, pgx.TxOptions{AccessMode: pgx.ReadOnly})
		if err != nil {
			m.storeError(c, action, "audit", "", err)
			return
		}
		// Read-only: ending it either way keeps nothing.
		defer func() { _ = own.Rollback(context.WithoutCancel(ctx)) }()
		tx = own
	}
	err := stream(ctx, tx)
	if err == nil {
		return
	}
	cut := errors.Is(context.Cause(ctx), errExportCut) || isTimeout(err)
	switch {
	case cut:
		m.Log.WarnContext(ctx, "audit export cut at audit.export_max_duration", "max_duration", limit.String(), "error", err, "request_id", RequestID(c))
		m.record(c, action, "audit", "", audit.Failure, "export cut at audit.export_max_duration ("+limit.String()+")")
	case c.Request.Context().Err() != nil:
		m.Log.InfoContext(ctx, "audit export: client went away", "error", err, "request_id", RequestID(c))
	default:
		m.Log.ErrorContext(ctx, "audit export", "error", err, "request_id", RequestID(c))
		m.record(c, action, "audit", "", audit.Failure, "export failed")
	}
	if !c.Writer.Written() {
		// Nothing sent yet (CSV buffers its first rows): a plain error.
		h := c.Writer.Header()
		h.Del("Content-Type")
		h.Del("Content-Disposition")
		if cut {
			Error(c, http.StatusServiceUnavailable, "export_cut", "the export reached audit.export_max_duration")
		} else {
			Error(c, http.StatusInternalServerError, "internal", "internal error")
		}
		return
	}
	// Part of the export is out: end the connection without the end of the
	// stream, so the client sees a broken answer, never a short export that
	// looks whole.
	panic(http.ErrAbortHandler)
}

// isTimeout reports a write that failed on its connection's deadline.
func isTimeout(err error) bool {
	var ne interface{ Timeout() bool }
	return errors.As(err, &ne) && ne.Timeout()
}
