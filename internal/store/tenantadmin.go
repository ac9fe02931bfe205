package store

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
)

// Tenant is a tenant as tenant administration shows it (issue 16).
type Tenant struct {
	ID     string `json:"id"`
	Name   string `json:"name"`
	Source string `json:"source"` // organization, group, attribute, claim, local
	// Status is active, disabled (keybridge acts in it for platform
	// callers only) or deleted (gone from Keycloak).
	Status string `json:"status"`
	// KeycloakID is the id of the organization or group the tenant comes
	// from; "" for attribute and claim tenants, which have none.
	KeycloakID string    `json:"keycloak_id,omitempty"`
	Members    int       `json:"member_count"` // people not deleted
	CreatedAt  time.Time `json:"created_at"`
	UpdatedAt  time.Time `json:"updated_at"`
}

const tenantColumns = `t.id, t.name, t.source, t.status, coalesce(t.keycloak_id, ''),
	(SELECT count(*) FROM tenant_members m JOIN people p ON p.id = m.person_id WHERE m.tenant_id = t.id AND p.status <> 'deleted'),
	t.created_at, t.updated_at`

func scanTenant(r pgx.Row) (Tenant, error) {
	var t Tenant
	err := r.Scan(&t.ID, &t.Name, &t.Source, &t.Status, &t.KeycloakID, &t.Members, &t.CreatedAt, &t.UpdatedAt)
	return t, err
}

// ListTenants lists the tenants q sees, deleted ones last, each with its
// member count.
func ListTenants(ctx context.Context, q Querier) ([]Tenant, error) {
	rows, err := q.Query(ctx, `SELECT `+tenantColumns+` FROM tenants t ORDER BY t.status = 'deleted', t.id`)
	if err != nil {
		return nil, fmt.Errorf("list tenants: %w", err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (Tenant, error) { return scanTenant(r) })
	if err != nil {
		return nil, fmt.Errorf("list tenants: %w", err)
	}
	return out, nil
}

// GetTenant reads one tenant; ErrNotFound when q sees none.
func GetTenant(ctx context.Context, q Querier, id string) (Tenant, error) {
	t, err := scanTenant(q.QueryRow(ctx, `SELECT `+tenantColumns+` FROM tenants t WHERE t.id = $1`, id))
	if errors.Is(err, pgx.ErrNoRows) {
		return Tenant{}, fmt.Errorf("tenant %q: %w", id, ErrNotFound)
	}
	if err != nil {
		return Tenant{}, fmt.Errorf("get tenant: %w", err)
	}
	return t, nil
}

// RecordTenant writes a tenant's row as sync would write it from Keycloak
// (a tenant administration change made there a moment ago), and tells
// every replica to reload, so a disabled tenant is refused at once.
func RecordTenant(ctx context.Context, q Querier, t TenantRow) error {
	if _, err := q.Exec(ctx, `INSERT INTO tenants (id, name, source, status, keycloak_id) VALUES ($1, $2, $3, $4, nullif($5, ''))
		ON CONFLICT (id) DO UPDATE SET name = excluded.name, source = excluded.source, status = excluded.status,
		keycloak_id = excluded.keycloak_id, updated_at = now()`, t.ID, t.Name, t.Source, t.Status, t.KeycloakID); err != nil {
		return fmt.Errorf("record tenant: %w", err)
	}
	if _, err := q.Exec(ctx, `SELECT pg_notify('keybridge_changed', '{"kind":"full"}')`); err != nil {
		return fmt.Errorf("record tenant: notify: %w", err)
	}
	return nil
}
