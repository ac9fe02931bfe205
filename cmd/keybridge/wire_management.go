package main

import (
	"context"

	"github.com/keybridge/keybridge/internal/api"
	"github.com/keybridge/keybridge/internal/kcadmin"
	"github.com/keybridge/keybridge/internal/manage"
)

// wireManagement wires the management API: people, invitations, roles,
// teams and the audit log, every route behind the five-step middleware.
func wireManagement(_ context.Context, d *deps) (feature, error) {
	cfg := d.cfg
	kc := kcadmin.New(cfg.Keycloak.URL, cfg.Keycloak.Realm, cfg.Keycloak.ClientID, cfg.Keycloak.ClientSecret, cfg.Keycloak.Timeout)
	m := &api.Management{
		Log:      d.log,
		Gate:     d.gate,
		Engine:   d.engine,
		Mapping:  cfg.Mapping,
		Keycloak: kc,
		System:   d.store,
		Audit:    d.audit,
		// Exports draw from the runtime pool, at most ExportMaxConcurrent
		// at once (validated below database.max_conns).
		Export: api.AuditExport{DB: d.store.AppPool(), MaxConcurrent: cfg.Audit.ExportMaxConcurrent, MaxDuration: cfg.Audit.ExportMaxDuration},
	}
	// Tenant administration (issue 16): the organizations or groups tenants
	// come from, changed in Keycloak and recorded at once.
	t := &api.Tenants{Log: d.log, Gate: d.gate, System: d.store, Audit: d.audit,
		Service: &manage.Tenants{Keycloak: kc, Source: cfg.Mapping.Tenant}}
	return feature{modules: []api.Module{m, t}}, nil
}
