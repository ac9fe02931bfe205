package api

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	gosync "sync"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/keybridge/keybridge/internal/audit"
	"github.com/keybridge/keybridge/internal/metrics"
	"github.com/keybridge/keybridge/internal/ratelimit"
	"github.com/keybridge/keybridge/internal/store"
	"github.com/keybridge/keybridge/mapping"
	ksync "github.com/keybridge/keybridge/sync"
)

// Sync serves the sync trigger, the run history and Keycloak webhooks.
type Sync struct {
	Log     *slog.Logger
	Metrics *metrics.Metrics
	Service *ksync.Service
	Store   *store.Store
	Gate    Gatekeeper
	Secret  []byte
	MaxBody int64
	// Limit bounds deliveries per sender; nil means unlimited.
	Limit *ratelimit.Limiter
	// Background runs full syncs a webhook asks for, without holding the
	// delivery's request open.
	Background context.Context
	// Audit records every sync triggered over the API.
	Audit audit.Recorder
	// TenantInterval is the least time between two syncs that tenant
	// callers start over the API, per tenant: a sync reads the whole realm,
	// for every tenant, so one tenant may not start them back to back. A
	// platform caller is not limited. 0 means one minute. Kept per replica.
	TenantInterval time.Duration

	tenantOnce  gosync.Once
	tenantLimit *ratelimit.Limiter
}

var permSync = []string{"settings.manage", "platform.settings.manage"}

// Register adds the routes.
func (s *Sync) Register(r gin.IRouter) {
	r.POST("/v1/sync", s.Gate.Require("sync.trigger", permSync...), s.trigger)
	r.GET("/v1/sync/runs", s.Gate.Require("sync.runs", append(permSync, "settings.view", "tenant.settings.view")...), s.runs)
	r.POST("/webhooks/keycloak", s.webhook)
}

func (s *Sync) trigger(c *gin.Context) {
	var req struct {
		DryRun bool   `json:"dry_run"`
		Force  bool   `json:"force"`
		Mode   string `json:"mode"`
	}
	if c.Request.ContentLength != 0 {
		if err := decodeJSON(c, &req); err != nil {
			Error(c, http.StatusBadRequest, "invalid_request", err.Error())
			return
		}
	}
	if req.Mode != "" && req.Mode != "full" && req.Mode != "additive" {
		Error(c, http.StatusBadRequest, "invalid_request", "mode: use full or additive")
		return
	}
	// A sync reads the whole realm for every tenant, and force lifts the
	// deletion guard for all of them: only a platform caller may force over
	// the API (operators have keybridge sync --force).
	if req.Force && !s.Gate.Platform(c) {
		s.record(c, audit.Denied, "force needs a platform caller", nil)
		Error(c, http.StatusForbidden, "forbidden", "force lifts the deletion guard for every tenant: only a platform caller may use it, or an operator with keybridge sync --force")
		return
	}
	if !s.Gate.Platform(c) {
		if ok, wait := s.tenantLimiter().Allow("tenant:" + callerTenant(s.Gate.Grant(c))); !ok {
			s.record(c, audit.Denied, "a sync was started from this tenant less than "+s.tenantInterval().String()+" ago", nil)
			c.Header("Retry-After", strconv.Itoa(int(wait/time.Second)+1))
			Error(c, http.StatusTooManyRequests, "rate_limited", "a sync reads the whole realm: a tenant may start one every "+s.tenantInterval().String()+"; retry later")
			return
		}
	}
	// The answer waits for the run, which may take up to sync.timeout:
	// longer than server.write_timeout allows an ordinary answer.
	if s.Service.Timeout > 0 {
		if err := http.NewResponseController(c.Writer).SetWriteDeadline(time.Now().Add(s.Service.Timeout + 30*time.Second)); err != nil && !errors.Is(err, http.ErrNotSupported) {
			s.Log.Warn("cannot extend the write deadline of a sync request", "error", err)
		}
	}
	res, err := s.Service.Run(c.Request.Context(), ksync.RunOptions{Trigger: "api", DryRun: req.DryRun, Force: req.Force, Mode: req.Mode})
	outcome, reason := audit.Success, ""
	if err != nil {
		outcome, reason = audit.Failure, err.Error()
	}
	s.record(c, outcome, reason, map[string]any{"dry_run": req.DryRun, "force": req.Force, "mode": req.Mode, "run": res})
	switch {
	case errors.Is(err, ksync.ErrBusy):
		Error(c, http.StatusConflict, "busy", err.Error())
	case errors.Is(err, ksync.ErrGuard):
		c.JSON(http.StatusConflict, gin.H{"error": ErrorDetail{Code: "guard_abort", Message: err.Error()}, "run": res})
	case err != nil && res == nil:
		Error(c, http.StatusInternalServerError, "internal", "sync could not start")
	case err != nil:
		c.JSON(http.StatusBadGateway, gin.H{"error": ErrorDetail{Code: "sync_failed", Message: "the run failed and applied nothing; see the run record"}, "run": res})
	default:
		c.JSON(http.StatusOK, res)
	}
}

func (s *Sync) tenantInterval() time.Duration {
	if s.TenantInterval > 0 {
		return s.TenantInterval
	}
	return time.Minute
}

func (s *Sync) tenantLimiter() *ratelimit.Limiter {
	s.tenantOnce.Do(func() {
		s.tenantLimit = &ratelimit.Limiter{Rate: 1 / s.tenantInterval().Seconds(), Burst: 1, Idle: max(10*time.Minute, 2*s.tenantInterval())}
	})
	return s.tenantLimit
}

func callerTenant(g *mapping.Grant) string {
	if g == nil {
		return ""
	}
	return g.Tenant
}

// record audits a sync triggered over the API.
func (s *Sync) record(c *gin.Context, outcome, reason string, details map[string]any) {
	if s.Audit == nil {
		return
	}
	e := audit.Entry{Action: "sync.trigger", ResourceType: "realm", Outcome: outcome, Reason: reason, RequestID: RequestID(c)}
	if run, ok := details["run"].(*ksync.Result); ok && run != nil {
		e.ResourceID = strconv.FormatInt(run.RunID, 10)
		details["run"] = run.Outcome
	} else {
		delete(details, "run")
	}
	e.Details = details
	if g := s.Gate.Grant(c); g != nil {
		e.TenantID, e.ActorID, e.ActorName = g.Tenant, g.Subject, g.Username
	}
	s.Audit.Record(c.Request.Context(), e)
}

// runs lists recent sync runs. They are realm-wide (every tenant's counts
// and errors), so only platform callers read them; a tenant caller is
// refused, and the refusal audited. PostgreSQL's policy on sync_runs says
// the same (migration 00008).
func (s *Sync) runs(c *gin.Context) {
	if !s.Gate.Platform(c) {
		const why = "sync runs cover the whole realm: only platform callers may read them"
		if s.Audit != nil {
			e := audit.Entry{OccurredAt: time.Now(), Action: "sync.runs", ResourceType: "realm", Outcome: audit.Denied, Reason: why, RequestID: RequestID(c), ActorName: "system"}
			if g := s.Gate.Grant(c); g != nil {
				e.TenantID, e.ActorID, e.ActorName = g.Tenant, g.Subject, g.Username
			}
			s.Audit.Record(c.Request.Context(), e)
		}
		Error(c, http.StatusForbidden, "forbidden", why)
		return
	}
	limit := 20
	if v := c.Query("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 500 {
			Error(c, http.StatusBadRequest, "invalid_request", "limit: a number from 1 to 500")
			return
		}
		limit = n
	}
	runs, err := store.ListRuns(c.Request.Context(), s.Gate.Tx(c), limit)
	if err != nil {
		s.Log.ErrorContext(c.Request.Context(), "list runs", "error", err)
		Error(c, http.StatusInternalServerError, "internal", "internal error")
		return
	}
	// The run under way on this replica (the leader) also shows its phase;
	// on other replicas its record carries the counts written so far.
	type runView struct {
		store.SyncRun
		Progress *ksync.Progress `json:"progress,omitempty"`
	}
	items := make([]runView, len(runs))
	p, running := s.Service.Progress()
	for i, r := range runs {
		items[i].SyncRun = r
		if running && r.ID == p.RunID {
			items[i].Progress = &p
		}
	}
	c.JSON(http.StatusOK, gin.H{"items": items})
}

// webhook verifies the HMAC over the raw body before anything else, then
// deduplicates by delivery uid and event id, then applies the change the
// same way the event poller does.
func (s *Sync) webhook(c *gin.Context) {
	ctx := c.Request.Context()
	count := func(class, outcome string) { s.Metrics.WebhookEvents.WithLabelValues(class, outcome).Inc() }
	if ok, wait := s.Limit.Allow("webhook:" + c.ClientIP()); !ok {
		count("unknown", "rate_limited")
		s.Metrics.RateLimited.WithLabelValues("client", "/webhooks/keycloak").Inc()
		c.Header("Retry-After", strconv.Itoa(int(wait/time.Second)+1))
		Error(c, http.StatusTooManyRequests, "rate_limited", "too many deliveries; retry later")
		return
	}
	if len(s.Secret) == 0 {
		count("unknown", "rejected")
		Error(c, http.StatusServiceUnavailable, "webhooks_disabled", "webhook.secret is not configured")
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(c.Writer, c.Request.Body, s.MaxBody))
	if err != nil {
		count("unknown", "rejected")
		Error(c, http.StatusRequestEntityTooLarge, "too_large", "the body exceeds webhook.max_body_bytes")
		return
	}
	if err := ksync.VerifySignature(s.Secret, body, c.GetHeader("X-Keycloak-Signature")); err != nil {
		count("unknown", "rejected")
		s.Log.WarnContext(ctx, "webhook refused", "reason", err.Error(), "request_id", RequestID(c))
		Error(c, http.StatusUnauthorized, "bad_signature", "the signature is missing or does not match")
		return
	}
	w, err := ksync.DecodeWebhook(body)
	if err != nil {
		count("unknown", "rejected")
		Error(c, http.StatusBadRequest, "malformed", err.Error())
		return
	}
	class := w.Class()
	uid := w.UID
	if uid == "" {
		uid = "id:" + w.ID
	}
	if w.ID != "" {
		var dup bool
		if err := s.Store.SysPool().QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM webhook_deliveries WHERE event_id = $1)`, w.ID).Scan(&dup); err == nil && dup {
			count(class, "duplicate")
			c.JSON(http.StatusOK, gin.H{"status": "duplicate"})
			return
		}
	}
	outcome := "applied"
	if class == "unknown" {
		outcome = "ignored"
	}
	first, err := store.RecordDelivery(ctx, s.Store.SysPool(), uid, w.ID, w.Type, outcome)
	if err != nil {
		count(class, "failed")
		Error(c, http.StatusServiceUnavailable, "unavailable", "could not record the delivery; retry")
		return
	}
	if !first {
		count(class, "duplicate")
		c.JSON(http.StatusOK, gin.H{"status": "duplicate"})
		return
	}
	at := time.UnixMilli(w.Time)
	if w.Time == 0 {
		at = time.Now()
	}
	switch class {
	case "admin":
		// The poller's own path: applied to what it names, re-read from
		// Keycloak; a full run only for an event it cannot place.
		e := ksync.AdminEvent{ID: w.ID, Time: at.UnixMilli(), OperationType: w.OperationType, ResourceType: w.ResourceType, ResourcePath: w.ResourcePath}
		full, err := s.Service.ApplyAdminEvent(ctx, e, "webhook")
		if err != nil {
			_, _ = s.Store.SysPool().Exec(ctx, `DELETE FROM webhook_deliveries WHERE uid = $1`, uid)
			count(class, "failed")
			Error(c, http.StatusServiceUnavailable, "unavailable", "could not apply the change; retry")
			return
		}
		if full {
			s.Service.RequestFull(s.Background, "webhook")
		}
	case "access":
		// Keyed by Keycloak's event id when the delivery has one, as the
		// event poller keys it, so a login seen by both is audited once.
		key := "w:" + uid
		if w.ID != "" {
			key = w.ID
		}
		if err := s.Service.ApplyUserEvent(ctx, key, w.Type[len("access."):], w.UserID, w.Error, at); err != nil {
			// Forget the delivery so Keycloak's retry applies it.
			_, _ = s.Store.SysPool().Exec(ctx, `DELETE FROM webhook_deliveries WHERE uid = $1`, uid)
			count(class, "failed")
			Error(c, http.StatusServiceUnavailable, "unavailable", "could not apply the event; retry")
			return
		}
	default:
		count(class, "ignored")
		c.JSON(http.StatusAccepted, gin.H{"status": "ignored"})
		return
	}
	count(class, "applied")
	c.JSON(http.StatusOK, gin.H{"status": "applied"})
}

// OpenAPIPaths documents the sync routes.
func (s *Sync) OpenAPIPaths() map[string]map[string]any {
	return map[string]map[string]any{
		"/v1/sync": {"post": op("Run a full sync now (dry_run, force, mode). A sync reads the whole realm: a tenant caller may start one per tenant a minute "+
			"(429 with Retry-After), and only a platform caller may force", permSync, "200", "400", "409", "429", "502")},
		"/v1/sync/runs": {"get": op("Recent sync runs with counts, duration and trigger; realm-wide, so platform callers only (403 for a tenant caller)", permSync, "200")},
		"/webhooks/keycloak": {"post": map[string]any{"summary": "Signed Keycloak event (HMAC-SHA256 of the body in X-Keycloak-Signature), deduplicated by uid and id",
			"responses": map[string]any{"200": map[string]any{"description": "applied or duplicate"}, "202": map[string]any{"description": "unknown type, ignored"},
				"400": map[string]any{"description": "malformed"}, "401": map[string]any{"description": "bad or missing signature"}, "413": map[string]any{"description": "too large"}}}},
	}
}
