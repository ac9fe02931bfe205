package store

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// RoleRow is a role as stored: system and pseudo roles from the preset,
// Keycloak roles from sync, custom roles per tenant.
type RoleRow struct {
	ID          string   `json:"id"`
	Name        string   `json:"name"`
	Kind        string   `json:"kind"`
	Tenant      string   `json:"tenant,omitempty"`
	ClientID    string   `json:"client_id,omitempty"`
	BasedOn     string   `json:"based_on,omitempty"`
	Description string   `json:"description"`
	Permissions []string `json:"permissions"`
	Members     int      `json:"member_count"`
}

// PermissionCount is what the Roles screen shows beside each role.
func (r RoleRow) PermissionCount() int { return len(r.Permissions) }

const roleSelect = `SELECT r.id::text, r.name, r.kind, coalesce(r.tenant_id, ''), r.client_id, coalesce(r.based_on, ''), r.description,
	coalesce((SELECT array_agg(rp.permission ORDER BY rp.permission) FROM role_permissions rp WHERE rp.role_id = r.id), '{}'),
	(SELECT count(DISTINCT ra.person_id) FROM role_assignments ra WHERE ra.role_id = r.id AND (ra.expires_at IS NULL OR ra.expires_at > now()))
	FROM roles r`

func scanRole(r pgx.CollectableRow) (RoleRow, error) {
	var x RoleRow
	err := r.Scan(&x.ID, &x.Name, &x.Kind, &x.Tenant, &x.ClientID, &x.BasedOn, &x.Description, &x.Permissions, &x.Members)
	return x, err
}

// ListRoles returns every active role visible to the caller, optionally of one kind.
func ListRoles(ctx context.Context, q Querier, kind string) ([]RoleRow, error) {
	rows, err := q.Query(ctx, roleSelect+` WHERE r.status = 'active' AND ($1 = '' OR r.kind = $1)
		ORDER BY CASE r.kind WHEN 'system' THEN 0 WHEN 'pseudo' THEN 1 WHEN 'custom' THEN 2 ELSE 3 END, r.name`, kind)
	if err != nil {
		return nil, fmt.Errorf("list roles: %w", err)
	}
	out, err := pgx.CollectRows(rows, scanRole)
	if err != nil {
		return nil, fmt.Errorf("list roles: %w", err)
	}
	return out, nil
}

// GetRole returns one role by id, or ErrNotFound when RLS hides it.
func GetRole(ctx context.Context, q Querier, id string) (RoleRow, error) {
	rows, err := q.Query(ctx, roleSelect+` WHERE r.id::text = $1 AND r.status = 'active'`, id)
	if err != nil {
		return RoleRow{}, fmt.Errorf("get role: %w", err)
	}
	r, err := pgx.CollectExactlyOneRow(rows, scanRole)
	if errors.Is(err, pgx.ErrNoRows) {
		return RoleRow{}, ErrNotFound
	}
	if err != nil {
		return RoleRow{}, fmt.Errorf("get role: %w", err)
	}
	return r, nil
}

// FindRole returns the role a name means for a tenant: the tenant's custom
// role of that name, else the system role.
func FindRole(ctx context.Context, q Querier, name, tenant string) (RoleRow, error) {
	rows, err := q.Query(ctx, roleSelect+` WHERE r.name = $1 AND r.status = 'active' AND r.kind IN ('system', 'custom')
		AND (r.tenant_id IS NULL OR r.tenant_id = $2) ORDER BY r.tenant_id NULLS LAST LIMIT 1`, name, tenant)
	if err != nil {
		return RoleRow{}, fmt.Errorf("find role: %w", err)
	}
	r, err := pgx.CollectExactlyOneRow(rows, scanRole)
	if errors.Is(err, pgx.ErrNoRows) {
		return RoleRow{}, ErrNotFound
	}
	if err != nil {
		return RoleRow{}, fmt.Errorf("find role: %w", err)
	}
	return r, nil
}

// CreateCustomRole stores a validated custom role of a tenant.
func CreateCustomRole(ctx context.Context, q Querier, r RoleRow) (RoleRow, error) {
	var basedOn *string
	if r.BasedOn != "" {
		basedOn = &r.BasedOn
	}
	err := q.QueryRow(ctx, `INSERT INTO roles (name, kind, tenant_id, based_on, description) VALUES ($1, 'custom', $2, $3, $4) RETURNING id::text`,
		r.Name, r.Tenant, basedOn, r.Description).Scan(&r.ID)
	if err != nil {
		return RoleRow{}, wrapWrite("create role", err)
	}
	if err := setPermissions(ctx, q, r); err != nil {
		return RoleRow{}, err
	}
	r.Kind = "custom"
	return r, nil
}

// UpdateCustomRole replaces a custom role's name, description and permissions.
func UpdateCustomRole(ctx context.Context, q Querier, r RoleRow) error {
	tag, err := q.Exec(ctx, `UPDATE roles SET name = $2, description = $3, updated_at = now() WHERE id::text = $1 AND kind = 'custom'`, r.ID, r.Name, r.Description)
	if err != nil {
		return wrapWrite("update role", err)
	}
	if tag.RowsAffected() == 0 {
		return ErrNotFound
	}
	if _, err := q.Exec(ctx, `DELETE FROM role_permissions WHERE role_id::text = $1`, r.ID); err != nil {
		return wrapWrite("update role permissions", err)
	}
	return setPermissions(ctx, q, r)
}

func setPermissions(ctx context.Context, q Querier, r RoleRow) error {
	_, err := q.Exec(ctx, `INSERT INTO role_permissions (role_id, permission, tenant_id)
		SELECT $1::uuid, p, $3 FROM unnest($2::text[]) AS p`, r.ID, r.Permissions, r.Tenant)
	return wrapWrite("set role permissions", err)
}

// DeleteCustomRole deletes a custom role. A role still assigned is refused
// with ErrConflict unless force, which removes its local assignments too.
func DeleteCustomRole(ctx context.Context, q Querier, id string, force bool) error {
	var assigned int
	if err := q.QueryRow(ctx, `SELECT count(*) FROM role_assignments WHERE role_id::text = $1`, id).Scan(&assigned); err != nil {
		return fmt.Errorf("count assignments: %w", err)
	}
	if assigned > 0 && !force {
		return fmt.Errorf("role is assigned to %d people: unassign it or delete with force: %w", assigned, ErrConflict)
	}
	if _, err := q.Exec(ctx, `DELETE FROM role_assignments WHERE role_id::text = $1 AND source = 'local'`, id); err != nil {
		return wrapWrite("delete assignments", err)
	}
	tag, err := q.Exec(ctx, `DELETE FROM roles WHERE id::text = $1 AND kind = 'custom'`, id)
	if err != nil {
		return wrapWrite("delete role", err)
	}
	if tag.RowsAffected() == 0 {
		return ErrNotFound
	}
	return nil
}

// LocalAssignment is a role given to a person inside keybridge, possibly
// temporary.
type LocalAssignment struct {
	RoleID    string
	Tenant    string
	ExpiresAt *time.Time
	CreatedBy string
}

// ReplaceLocalAssignments sets a person's local assignments within a tenant;
// Keycloak- and rule-sourced assignments are untouched.
func ReplaceLocalAssignments(ctx context.Context, q Querier, person, tenant string, as []LocalAssignment) error {
	return ReplaceLocalAssignmentsKeeping(ctx, q, person, tenant, nil, as)
}

// ReplaceLocalAssignmentsKeeping sets a person's local assignments within a
// tenant to the ones named in keep (assignment ids, left as they are, author
// and time included) plus as; every other local assignment there goes.
// Keycloak- and rule-sourced assignments are untouched.
func ReplaceLocalAssignmentsKeeping(ctx context.Context, q Querier, person, tenant string, keep []string, as []LocalAssignment) error {
	if keep == nil {
		keep = []string{}
	}
	if _, err := q.Exec(ctx, `DELETE FROM role_assignments WHERE person_id = $1 AND tenant_id = $2 AND source = 'local' AND NOT (id::text = ANY ($3))`,
		person, tenant, keep); err != nil {
		return wrapWrite("clear local assignments", err)
	}
	for _, a := range as {
		if _, err := q.Exec(ctx, `INSERT INTO role_assignments (person_id, role_id, tenant_id, source, expires_at, created_by)
			VALUES ($1, $2::uuid, $3, 'local', $4, $5)`, person, a.RoleID, tenant, a.ExpiresAt, a.CreatedBy); err != nil {
			return wrapWrite("assign role", err)
		}
	}
	return nil
}

// CountHolders counts people holding a role name in a tenant right now, from
// any source: the last-Owner rule counts Keycloak-granted owners too.
func CountHolders(ctx context.Context, q Querier, roleName, tenant string) (int, error) {
	var n int
	err := q.QueryRow(ctx, `SELECT count(DISTINCT ra.person_id) FROM role_assignments ra JOIN roles r ON r.id = ra.role_id
		JOIN people p ON p.id = ra.person_id
		WHERE r.name = $1 AND r.kind IN ('system', 'custom') AND ra.tenant_id = $2 AND p.status = 'active' AND (ra.expires_at IS NULL OR ra.expires_at > now())`, roleName, tenant).Scan(&n)
	if err != nil {
		return 0, fmt.Errorf("count %s holders: %w", roleName, err)
	}
	return n, nil
}

// wrapWrite maps PostgreSQL's refusals to sentinels: a unique violation is a
// conflict; an RLS refusal is not found, so a tenant learns nothing about
// another tenant's objects.
func wrapWrite(what string, err error) error {
	if err == nil {
		return nil
	}
	var pg *pgconn.PgError
	if errors.As(err, &pg) {
		switch pg.Code {
		case "23505":
			return fmt.Errorf("%s: already exists: %w", what, ErrConflict)
		case "42501":
			return fmt.Errorf("%s: %w", what, ErrNotFound)
		case "23503":
			return fmt.Errorf("%s: refers to something that does not exist: %w", what, ErrInvalid)
		}
	}
	return fmt.Errorf("%s: %w", what, err)
}
