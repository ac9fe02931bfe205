package main

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"time"

	"github.com/keybridge/keybridge/internal/api"
	"github.com/keybridge/keybridge/internal/audit"
	"github.com/keybridge/keybridge/internal/auth"
	"github.com/keybridge/keybridge/internal/directory"
	"github.com/keybridge/keybridge/internal/identity"
	"github.com/keybridge/keybridge/internal/ratelimit"
	"github.com/keybridge/keybridge/internal/revocation"
	"github.com/keybridge/keybridge/mapping"
	"github.com/keybridge/keybridge/middleware"
)

// wireDecisions wires token verification, the directory, the audit writer,
// rate limits, the middleware and the decision routes.
func wireDecisions(ctx context.Context, d *deps) (feature, error) {
	cfg, m := d.cfg, d.metrics
	engine, err := mapping.New(cfg.Mapping)
	if err != nil {
		return feature{}, fmt.Errorf("mapping: %w", err)
	}
	dir := &directory.Directory{Pool: d.store.SysPool(), Base: engine, Log: d.log, Interval: time.Minute}
	// Sessions Keycloak ended and its not-befores, as the event poller and
	// full syncs record them (docs/operations.md, "Session ends and revocation").
	revoked := &revocation.List{Pool: d.store.SysPool(), Log: d.log, Keep: cfg.Auth.MaxTokenLifetime + cfg.Auth.Leeway, Interval: time.Minute}
	writer := &audit.Writer{Pool: d.store.SysPool(), QueueSize: cfg.Audit.QueueSize, BatchSize: cfg.Audit.BatchSize,
		FlushInterval: cfg.Audit.FlushInterval, Log: d.log, Depth: m.AuditQueueDepth, Dropped: m.AuditDropped,
		Written: m.AuditWritten, WriteErrors: m.AuditWriteErrors, DroppedUnauthenticated: m.AuditDroppedUnauthenticated}
	d.audit = writer
	d.engine = dir.Engine

	keys := &lazyVerifier{opt: auth.Options{
		Issuer: cfg.IssuerURL(), Audiences: cfg.Auth.Audiences, Algorithms: cfg.Auth.Algorithms, Leeway: cfg.Auth.Leeway,
		MaxTokenBytes: cfg.Auth.MaxTokenBytes, RefreshInterval: cfg.Auth.JWKSRefreshInterval,
		MaxKeyAge: cfg.Auth.JWKSMaxAge, MaxLifetime: cfg.Auth.MaxTokenLifetime,
		OnRefresh: func(outcome string) { m.JWKSRefreshes.WithLabelValues(outcome).Inc() },
	}}
	var verifier auth.TokenVerifier = keys
	if cfg.Auth.RemoteIntrospection {
		verifier = &auth.Fallback{Local: keys, Remote: &auth.Remote{
			Endpoint: cfg.IssuerURL() + "/protocol/openid-connect/token/introspect",
			ClientID: cfg.Keycloak.ClientID, ClientSecret: cfg.Keycloak.ClientSecret, TTL: time.Minute}}
	}
	resolver := &identity.Resolver{
		Verifier:    &auth.Cached{Next: verifier, Size: cfg.Auth.CacheSize},
		Dir:         dir,
		Revocations: revoked,
		MaxCache:    cfg.Auth.CacheSize,
		OnRefuse: func(ctx context.Context, reason auth.Reason, err error) {
			m.TokenFailures.WithLabelValues(string(reason)).Inc()
			d.log.InfoContext(ctx, "token refused", "reason", string(reason), "detail", err.Error())
		},
		OnAccept: m.TokensVerified.Inc,
	}
	perSubject := &ratelimit.Limiter{Rate: cfg.RateLimit.PerSubject.Rate, Burst: cfg.RateLimit.PerSubject.Burst}
	perClient := &ratelimit.Limiter{Rate: cfg.RateLimit.PerClient.Rate, Burst: cfg.RateLimit.PerClient.Burst}
	// One bucket per client address (IPv6 by /64) for refusals before
	// authentication, shared by the management and decision routes; at most
	// unauthenticatedKeys addresses are tracked, so endless addresses
	// cannot grow it.
	unauthenticated := &ratelimit.Limiter{Rate: cfg.RateLimit.Unauthenticated.Rate, Burst: cfg.RateLimit.Unauthenticated.Burst, MaxKeys: unauthenticatedKeys}
	d.gate = &middleware.Middleware{
		Auth:    resolver,
		Decider: func() middleware.Decider { return dir.Engine() },
		DB:      d.store.AppPool(),
		Limiter: perSubject,
		// The id the server accepted (audit.ValidRequestID) or generated,
		// never the caller's header as sent.
		RequestID:       api.RequestIDOf,
		TenantHeader:    cfg.Server.TenantHeader,
		Unauthenticated: ratelimit.ByAddress{L: unauthenticated},
		Throttled: func(_ context.Context, e middleware.Event) {
			m.RateLimited.WithLabelValues("unauthenticated", e.Action).Inc()
		},
		Audit: func(ctx context.Context, e middleware.Event) {
			en := audit.Entry{OccurredAt: time.Now(), Action: e.Action, Outcome: e.Outcome, Reason: e.Reason, RequestID: e.RequestID,
				ClientAddr: e.Client, ActorName: "anonymous", Class: audit.Unauthenticated}
			if e.Grant != nil {
				en.TenantID, en.ActorID, en.ActorName, en.Class = e.Grant.Tenant, e.Grant.Subject, e.Grant.Username, audit.Authenticated
			}
			if e.Status == http.StatusTooManyRequests {
				m.RateLimited.WithLabelValues("subject", e.Action).Inc()
			}
			if e.Outcome == audit.Denied {
				m.Decisions.WithLabelValues("middleware", "denied").Inc()
			}
			writer.Record(ctx, en)
		},
	}
	dec := &api.Decisions{Log: d.log, Metrics: m, Identify: resolver, Engine: dir.Engine, Audit: writer,
		Clients: cfg.Auth.IntrospectionClients, MaxBatch: cfg.Check.MaxBatch, AllowAnonymousChecks: cfg.Check.AllowAnonymous, ForwardAuth: cfg.ForwardAuth,
		AuditAllow: cfg.Audit.AllowedChecks, PerSubject: perSubject, PerClient: perClient,
		Unauthenticated: unauthenticated, TenantHeader: cfg.Server.TenantHeader}
	return feature{
		modules: []api.Module{dec},
		ready: []api.ReadyCheck{
			{Name: "directory", Check: func(context.Context) error {
				if !dir.Loaded() {
					return errors.New("people and assignments not loaded yet")
				}
				return nil
			}},
			{Name: "revocations", Check: func(context.Context) error {
				if !revoked.Loaded() {
					return errors.New("ended sessions and not-befores not loaded yet")
				}
				return nil
			}},
			{Name: "signing_keys", Check: func(ctx context.Context) error { _, err := keys.get(ctx); return err }},
		},
		background: []func(context.Context) error{dir.Run, writer.Run, revoked.Run},
		close:      keys.close,
	}, nil
}

// unauthenticatedKeys bounds the client addresses rate_limit.unauthenticated
// tracks (about 200 bytes each).
const unauthenticatedKeys = 50000

// lazyVerifier discovers the issuer on first use and retries at most every
// few seconds while Keycloak is unreachable; once it has keys, verification
// never needs Keycloak again until a new kid appears.
type lazyVerifier struct {
	opt  auth.Options
	mu   sync.Mutex
	v    *auth.Verifier
	last time.Time
	err  error
}

func (l *lazyVerifier) get(ctx context.Context) (*auth.Verifier, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.v != nil {
		return l.v, nil
	}
	if time.Since(l.last) < 3*time.Second && l.err != nil {
		return nil, l.err
	}
	l.last = time.Now()
	dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	v, err := auth.NewVerifier(dctx, l.opt)
	if err != nil {
		l.err = fmt.Errorf("signing keys unavailable: %w", err)
		return nil, l.err
	}
	l.v, l.err = v, nil
	return v, nil
}

// close stops the verifier's scheduled JWKS refreshes.
func (l *lazyVerifier) close() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.v != nil {
		l.v.Close()
	}
}

func (l *lazyVerifier) Verify(ctx context.Context, raw string) (*auth.Token, error) {
	v, err := l.get(ctx)
	if err != nil {
		return nil, &auth.Error{Reason: auth.KeysUnavailable, Detail: err.Error()}
	}
	return v.Verify(ctx, raw)
}
