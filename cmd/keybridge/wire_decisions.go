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
	writer := &audit.Writer{Pool: d.store.SysPool(), QueueSize: cfg.Audit.QueueSize, BatchSize: cfg.Audit.BatchSize,
		FlushInterval: cfg.Audit.FlushInterval, Log: d.log, Depth: m.AuditQueueDepth, Dropped: m.AuditDropped,
		Written: m.AuditWritten, WriteErrors: m.AuditWriteErrors}
	d.audit = writer
	d.engine = dir.Engine

	keys := &lazyVerifier{opt: auth.Options{
		Issuer: cfg.IssuerURL(), Audiences: cfg.Auth.Audiences, Algorithms: cfg.Auth.Algorithms, Leeway: cfg.Auth.Leeway,
		MaxTokenBytes: cfg.Auth.MaxTokenBytes, RefreshInterval: cfg.Auth.JWKSRefreshInterval,
		OnRefresh: func(outcome string) { m.JWKSRefreshes.WithLabelValues(outcome).Inc() },
	}}
	var verifier auth.TokenVerifier = keys
	if cfg.Auth.RemoteIntrospection {
		verifier = &auth.Fallback{Local: keys, Remote: &auth.Remote{
			Endpoint: cfg.IssuerURL() + "/protocol/openid-connect/token/introspect",
			ClientID: cfg.Keycloak.ClientID, ClientSecret: cfg.Keycloak.ClientSecret, TTL: time.Minute}}
	}
	resolver := &identity.Resolver{
		Verifier: &auth.Cached{Next: verifier, Size: cfg.Auth.CacheSize},
		Dir:      dir,
		MaxCache: cfg.Auth.CacheSize,
		OnRefuse: func(ctx context.Context, reason auth.Reason, err error) {
			m.TokenFailures.WithLabelValues(string(reason)).Inc()
			d.log.InfoContext(ctx, "token refused", "reason", string(reason), "detail", err.Error())
		},
		OnAccept: m.TokensVerified.Inc,
	}
	perSubject := &ratelimit.Limiter{Rate: cfg.RateLimit.PerSubject.Rate, Burst: cfg.RateLimit.PerSubject.Burst}
	perClient := &ratelimit.Limiter{Rate: cfg.RateLimit.PerClient.Rate, Burst: cfg.RateLimit.PerClient.Burst}
	d.gate = &middleware.Middleware{
		Auth:      resolver,
		Decider:   func() middleware.Decider { return dir.Engine() },
		DB:        d.store.AppPool(),
		Limiter:   perSubject,
		RequestID: func(r *http.Request) string { return r.Header.Get("X-Request-Id") },
		Audit: func(ctx context.Context, e middleware.Event) {
			en := audit.Entry{OccurredAt: time.Now(), Action: e.Action, Outcome: e.Outcome, Reason: e.Reason, RequestID: e.RequestID, ActorName: "anonymous"}
			if e.Grant != nil {
				en.TenantID, en.ActorID, en.ActorName = e.Grant.Tenant, e.Grant.Subject, e.Grant.Username
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
		Clients: cfg.Auth.IntrospectionClients, MaxBatch: cfg.Check.MaxBatch, ForwardAuth: cfg.ForwardAuth,
		AuditAllow: cfg.Audit.AllowedChecks, PerSubject: perSubject, PerClient: perClient}
	return feature{
		modules: []api.Module{dec},
		ready: []api.ReadyCheck{
			{Name: "directory", Check: func(context.Context) error {
				if !dir.Loaded() {
					return errors.New("people and assignments not loaded yet")
				}
				return nil
			}},
			{Name: "signing_keys", Check: func(ctx context.Context) error { _, err := keys.get(ctx); return err }},
		},
		background: []func(context.Context) error{dir.Run, writer.Run},
	}, nil
}

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

func (l *lazyVerifier) Verify(ctx context.Context, raw string) (*auth.Token, error) {
	v, err := l.get(ctx)
	if err != nil {
		return nil, &auth.Error{Reason: auth.KeysUnavailable, Detail: err.Error()}
	}
	return v.Verify(ctx, raw)
}
