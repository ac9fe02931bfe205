package mapping

import (
	"errors"
	"fmt"
	"sort"
	"strings"
)

// WithCustomRoles returns an engine that also knows these tenant custom
// roles. A role that fails NewCustomRole's checks (say, a permission the
// catalog no longer has) is left out and reported in the error, but the
// returned engine is usable with the others: one bad row must not take every
// tenant's custom roles down.
func (e *Engine) WithCustomRoles(roles []Role) (*Engine, error) {
	n := *e
	n.custom = make(map[customKey]*role, len(roles))
	var errs []error
	for _, r := range roles {
		c, err := NewCustomRole(e, r.Name, r.Tenant, r.Permissions)
		if err == nil {
			if _, dup := n.custom[customKey{c.Tenant, c.Name}]; dup {
				err = fmt.Errorf("%w: defined twice", ErrInvalidRole)
			}
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("custom role %q of tenant %q: %w", r.Name, r.Tenant, err))
			continue
		}
		c.BasedOn, c.Description = r.BasedOn, r.Description
		n.custom[customKey{c.Tenant, c.Name}] = &role{Role: c, ids: idsOf(e.idx, c.Permissions), rank: len(e.system)}
	}
	return &n, errors.Join(errs...)
}

// ProtectedRole names the role whose last holder in a tenant can't be
// removed or demoted (fastn: Owner), or "" when the preset protects none.
func ProtectedRole(e *Engine) string { return e.protected }

// CheckLastOwner refuses removing the protected role from its last holder
// in a tenant: ownersInTenant counts holders before the change.
func CheckLastOwner(e *Engine, ownersInTenant int, removingOwner bool) error {
	if e.protected != "" && removingOwner && ownersInTenant <= 1 {
		return fmt.Errorf("%w: %s is held by no one else in the tenant; make someone else %s first", ErrLastOwner, e.protected, e.protected)
	}
	return nil
}

// NewCustomRole builds a tenant's custom role from catalog permissions. Its
// name must pass ValidCustomRoleName and is never trimmed or rewritten: it
// may not be a reserved word or a system or pseudo role's name in any case,
// since assignments, app.role, app.roles and X-Auth-Roles carry role names
// and one name must mean one set.
func NewCustomRole(e *Engine, name, tenant string, perms []string) (Role, error) {
	if err := validCustomRoleName(name, e.roleNames); err != nil {
		return Role{}, err
	}
	if tenant == "" {
		return Role{}, fmt.Errorf("%w: a custom role belongs to a tenant", ErrInvalidRole)
	}
	set := map[string]bool{}
	for _, p := range perms {
		if !e.Known(p) {
			return Role{}, fmt.Errorf("%w %q: custom roles hold catalog permissions only", ErrUnknownPermission, p)
		}
		set[p] = true
	}
	if len(set) == 0 {
		return Role{}, fmt.Errorf("%w: a custom role needs at least one permission", ErrInvalidRole)
	}
	out := make([]string, 0, len(set))
	for p := range set {
		out = append(out, p)
	}
	sort.Strings(out)
	return Role{Name: name, Kind: KindCustom, Tenant: tenant, Permissions: out}, nil
}

// DuplicateRole is "Duplicate as Custom": a tenant's editable copy of a
// system role. A bypass is not copied: it belongs to the preset's role, and
// a copy edited down must not keep passing everything.
func DuplicateRole(e *Engine, system, newName, tenant string) (Role, error) {
	src, ok := e.roles[system]
	if !ok || src.Kind != KindSystem {
		return Role{}, fmt.Errorf("%w: %q is not a system role (known: %s)", ErrUnknownRole, system, strings.Join(e.SystemRoleNames(), ", "))
	}
	r, err := NewCustomRole(e, newName, tenant, src.Permissions)
	if err != nil {
		return Role{}, err
	}
	r.BasedOn = system
	r.Description = "Duplicated from " + system
	return r, nil
}

// ValidateRoleEdit accepts an edit of a custom role and refuses any edit of
// a system, pseudo or Keycloak role with ErrImmutable.
func ValidateRoleEdit(e *Engine, r Role) error {
	if cur, ok := e.roles[r.Name]; ok {
		return fmt.Errorf("%w: %s is a %s role; duplicate it as custom to change it", ErrImmutable, cur.Name, cur.Kind)
	}
	if r.Kind != KindCustom {
		return fmt.Errorf("%w: only custom roles can be edited, not %q", ErrImmutable, r.Kind)
	}
	_, err := NewCustomRole(e, r.Name, r.Tenant, r.Permissions)
	return err
}
