package main

import (
	"context"
	"errors"

	"github.com/keybridge/keybridge/internal/api"
	"github.com/keybridge/keybridge/internal/ratelimit"
	ksync "github.com/keybridge/keybridge/sync"
)

// newSyncService builds the service from the config.
func newSyncService(d *deps) *ksync.Service {
	cfg := d.cfg
	kc := ksync.NewKeycloak(ksync.KeycloakOptions{URL: cfg.Keycloak.URL, Realm: cfg.Keycloak.Realm, ClientID: cfg.Keycloak.ClientID,
		ClientSecret: cfg.Keycloak.ClientSecret, Timeout: cfg.Keycloak.Timeout, PageSize: cfg.Keycloak.PageSize,
		Retries: cfg.Keycloak.Retries, Concurrency: cfg.Keycloak.Concurrency, Metrics: d.metrics})
	return &ksync.Service{KC: kc, Store: d.store, Engine: d.engine, Metrics: d.metrics, Log: d.log, Audit: d.audit,
		Mode: cfg.Sync.Mode, MaxRemovalShare: cfg.Sync.MaxRemovalShare, Timeout: cfg.Sync.Timeout, Schedule: cfg.Sync.Schedule,
		Jitter: cfg.Sync.Jitter, OnStartup: cfg.Sync.OnStartup, EventsEnabled: cfg.Sync.Events.Enabled,
		EventsInterval: cfg.Sync.Events.Interval, EventsOverlap: cfg.Sync.Events.Overlap,
		RevocationKeep: cfg.Auth.MaxTokenLifetime + cfg.Auth.Leeway}
}

// wireSync wires the scheduler, the leader lock, the event poller, and the
// sync and webhook routes.
func wireSync(ctx context.Context, d *deps) (feature, error) {
	svc := newSyncService(d)
	// Tokens and syncs alike read the mapping's attributes: refuse to serve
	// while users can edit them (mapping.allow_user_edited_attributes aside).
	if err := svc.CheckAttributeSources(ctx); err != nil {
		return feature{}, err
	}
	mod := &api.Sync{Log: d.log, Metrics: d.metrics, Service: svc, Store: d.store, Gate: d.gate,
		Secret: []byte(d.cfg.Webhook.Secret), MaxBody: d.cfg.Webhook.MaxBodyBytes, Background: context.WithoutCancel(ctx),
		Limit: &ratelimit.Limiter{Rate: d.cfg.Webhook.Rate, Burst: d.cfg.Webhook.Burst}, Audit: d.audit}
	f := feature{modules: []api.Module{mod}}
	// What the tenant source needs of the service account (manage-realm for
	// organizations), probed now and by every full sync: a missing role is
	// named in the log and fails the readiness check keycloak_permissions,
	// rather than leaving each sync to fail on a bare 403.
	if err := svc.CheckAccess(ctx); err != nil && !errors.Is(err, ksync.ErrMissingAccess) {
		d.log.WarnContext(ctx, "could not check the keycloak service account's access yet; readiness checks again", "error", err)
	}
	f.ready = append(f.ready, api.ReadyCheck{Name: "keycloak_permissions", Check: svc.AccessReady})
	if !d.cfg.Sync.Enabled {
		return f, nil
	}
	f.background = append(f.background, svc.Loop)
	// Readiness waits for a first successful sync somewhere: this replica's,
	// or any replica's recorded run.
	f.ready = append(f.ready, api.ReadyCheck{Name: "first_sync", Check: func(ctx context.Context) error {
		select {
		case <-svc.FirstSync():
			return nil
		default:
		}
		var ok bool
		if err := d.store.SysPool().QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM sync_runs WHERE outcome = 'success' AND NOT dry_run)`).Scan(&ok); err != nil || !ok {
			return errors.New("no successful sync yet")
		}
		return nil
	}})
	return f, nil
}
