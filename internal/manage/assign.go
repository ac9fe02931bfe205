// Package manage holds the management rules that more than one front end
// applies — the HTTP API and the operator CLI — so that each rule exists
// once: the grant ceiling on assignments, the tenant's last Owner.
package manage

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/keybridge/keybridge/internal/store"
	"github.com/keybridge/keybridge/mapping"
)

// Authority is who changes assignments.
type Authority struct {
	// Grant is the caller's resolved grant, which the grant ceiling
	// (mapping.Engine.MayGrantUntil) bounds. nil is the platform operator:
	// the CLI, connected as the database owner, which already holds every
	// tenant's data and may grant anything; the tenant rules (expiries,
	// the last Owner) still apply to it.
	Grant *mapping.Grant
	// Actor is recorded as the created_by of the assignments it makes.
	Actor string
}

// Requested is one assignment asked for: a role by name, for good or until
// ExpiresAt.
type Requested struct {
	Role      string
	ExpiresAt *time.Time
}

// Refusal is an action the authority may not take (HTTP 403); Reason says
// why, for the caller and the audit log.
type Refusal struct{ Reason string }

func (r *Refusal) Error() string { return r.Reason }

// Invalid is a request that names something wrong (HTTP 400); the message
// names the field.
type Invalid struct{ Message string }

func (e *Invalid) Error() string { return e.Message }

// RoleOf is the role a stored row stands for, as the grant ceiling judges
// it: a system role as the preset defines it (its bypass included), a
// custom role with the permissions stored in the same transaction, so a
// role created or edited a moment ago is judged by what it holds now, not
// by the last view the engine loaded.
func RoleOf(e *mapping.Engine, row store.RoleRow) mapping.Role {
	if row.Kind != "custom" {
		if r, ok := e.Role(row.Name, ""); ok && r.Kind == row.Kind {
			return r
		}
	}
	return mapping.Role{Name: row.Name, Kind: row.Kind, Tenant: row.Tenant, Permissions: row.Permissions}
}

// MayAssign applies the grant ceiling for an authority: "" when it may give
// the role in tenant until expires (zero: for good), else why not.
func MayAssign(e *mapping.Engine, by Authority, r mapping.Role, tenant string, expires, now time.Time) string {
	if by.Grant == nil {
		return ""
	}
	return e.MayGrantUntil(by.Grant, r, tenant, expires, now)
}

// ReplaceLocalRoles sets person's local role assignments in tenant to the
// requested ones, within what by may grant:
//
//   - an assignment requested exactly as the person already holds it (same
//     role, same expiry) is kept as it is, with its author;
//   - every other requested assignment must pass the grant ceiling for its
//     expiry (mapping.Engine.MayGrantUntil), or the whole change is refused;
//   - a current local assignment that by could not have made (the ceiling
//     refuses its role at its expiry) is kept as it is, whatever the request
//     says: replacing someone's roles touches only what the caller could
//     grant. Asking to change such an assignment is refused;
//   - the tenant's last holder of the protected role (fastn: Owner) keeps it,
//     for good if they held it for good.
//
// Keycloak- and rule-sourced assignments are never touched. It writes in q,
// the caller's transaction, and returns the names of the roles kept because
// by could not change them.
func ReplaceLocalRoles(ctx context.Context, q store.Querier, e *mapping.Engine, by Authority, person store.Person, tenant string, req []Requested, now time.Time) (kept []string, err error) {
	type wanted struct {
		row     store.RoleRow
		expires *time.Time
	}
	want := make([]wanted, 0, len(req))
	named := map[string]bool{}
	for i, r := range req {
		field := "roles[" + strconv.Itoa(i) + "]"
		row, err := store.FindRole(ctx, q, r.Role, tenant)
		if errors.Is(err, store.ErrNotFound) {
			return nil, &Invalid{field + ".role: no role " + strconv.Quote(r.Role) + " in this tenant"}
		}
		if err != nil {
			return nil, err
		}
		if named[row.Name] {
			return nil, &Invalid{field + ".role: " + strconv.Quote(row.Name) + " is named twice"}
		}
		named[row.Name] = true
		if r.ExpiresAt != nil && !r.ExpiresAt.After(now) {
			return nil, &Invalid{field + ".expires_at: must be in the future"}
		}
		want = append(want, wanted{row, r.ExpiresAt})
	}

	// The person's current local assignments here, and which of them the
	// authority could not have made.
	var keep []string
	held := map[string]store.RoleBadge{}
	locked := map[string]bool{}
	for _, b := range person.Roles {
		if b.Source != "local" || b.Tenant != tenant {
			continue
		}
		held[b.Name] = b
		row, err := store.GetRole(ctx, q, b.RoleID)
		if errors.Is(err, store.ErrNotFound) {
			continue // a role gone since: nothing to protect
		}
		if err != nil {
			return nil, err
		}
		if MayAssign(e, by, RoleOf(e, row), tenant, deref(b.ExpiresAt), now) != "" {
			locked[b.Name] = true
			keep = append(keep, b.AssignmentID)
			kept = append(kept, b.Name)
		}
	}

	var add []store.LocalAssignment
	final, lasting := map[string]bool{}, map[string]bool{}
	for name := range locked {
		final[name], lasting[name] = true, held[name].ExpiresAt == nil
	}
	for i, w := range want {
		final[w.row.Name], lasting[w.row.Name] = true, w.expires == nil
		if b, ok := held[w.row.Name]; ok && sameExpiry(b.ExpiresAt, w.expires) {
			if !locked[w.row.Name] {
				keep = append(keep, b.AssignmentID)
			}
			continue
		}
		if locked[w.row.Name] {
			return nil, &Refusal{fmt.Sprintf("roles[%d]: %s is assigned here %s by someone with authority you lack; you may keep it as it is, not change it",
				i, w.row.Name, describe(held[w.row.Name].ExpiresAt))}
		}
		if why := MayAssign(e, by, RoleOf(e, w.row), tenant, deref(w.expires), now); why != "" {
			return nil, &Refusal{why}
		}
		add = append(add, store.LocalAssignment{RoleID: w.row.ID, Tenant: tenant, ExpiresAt: w.expires, CreatedBy: by.Actor})
	}

	// The last Owner of a tenant can't be demoted, nor turned temporary:
	// count the owners who remain once this person's local Owner
	// assignment is gone (or lasts no more).
	if protected := mapping.ProtectedRole(e); protected != "" {
		cur, holdsLocal := held[protected]
		removing := holdsLocal && (!final[protected] || (cur.ExpiresAt == nil && !lasting[protected]))
		holdsOther := false
		for _, b := range person.Roles {
			holdsOther = holdsOther || (b.Name == protected && b.Tenant == tenant && b.Source != "local")
		}
		if removing && !holdsOther {
			owners, err := store.CountHolders(ctx, q, protected, tenant)
			if err != nil {
				return nil, err
			}
			if err := mapping.CheckLastOwner(e, owners, true); err != nil {
				return nil, err
			}
		}
	}
	if err := store.ReplaceLocalAssignmentsKeeping(ctx, q, person.ID, tenant, keep, add); err != nil {
		return nil, err
	}
	if _, err := q.Exec(ctx, `SELECT pg_notify('keybridge_changed', json_build_object('kind', 'person', 'id', $1::text)::text)`, person.ID); err != nil {
		return nil, fmt.Errorf("notify: %w", err)
	}
	return kept, nil
}

func deref(t *time.Time) time.Time {
	if t == nil {
		return time.Time{}
	}
	return *t
}

// sameExpiry compares expiries at PostgreSQL's precision (microseconds), so
// an expiry read back from the API and sent again is the same.
func sameExpiry(a, b *time.Time) bool {
	if a == nil || b == nil {
		return a == nil && b == nil
	}
	return a.Truncate(time.Microsecond).Equal(b.Truncate(time.Microsecond))
}

func describe(t *time.Time) string {
	if t == nil {
		return "for good"
	}
	return "until " + t.UTC().Format(time.RFC3339)
}
