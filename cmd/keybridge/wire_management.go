package main

import (
	"context"

	"github.com/keybridge/keybridge/internal/api"
	"github.com/keybridge/keybridge/internal/kcadmin"
)

// wireManagement wires the management API: people, invitations, roles,
// teams and the audit log, every route behind the five-step middleware.
func wireManagement(_ context.Context, d *deps) (feature, error) {
	cfg := d.cfg
	m := &api.Management{
		Log:      d.log,
		Gate:     d.gate,
		Engine:   d.engine,
		Mapping:  cfg.Mapping,
		Keycloak: kcadmin.New(cfg.Keycloak.URL, cfg.Keycloak.Realm, cfg.Keycloak.ClientID, cfg.Keycloak.ClientSecret, cfg.Keycloak.Timeout),
		System:   d.store,
		Audit:    d.audit,
		// Exports draw from the runtime pool, at most ExportMaxConcurrent
		// at once (validated below database.max_conns).
		Export: api.AuditExport{DB: d.store.AppPool(), MaxConcurrent: cfg.Audit.ExportMaxConcurrent, MaxDuration: cfg.Audit.ExportMaxDuration},
	}
	return feature{modules: []api.Module{m}}, nil
}
