package manage

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/keybridge/keybridge/internal/kcadmin"
	"github.com/keybridge/keybridge/internal/store"
	"github.com/keybridge/keybridge/mapping"
)

// Tenant administration (issue 16): list the tenants with their member
// counts, create one, rename it, disable or enable it. A tenant comes from
// Keycloak, so each change is made there first — the organization, or the
// group under mapping.tenant.group_prefix — and the tenant's row is then
// written as sync would write it from Keycloak, so the change shows at once
// and the next sync finds nothing to do. Attribute and claim tenants have no
// Keycloak object to change: they exist while a user carries them.
//
// Who may call it is the front end's question: the API allows holders of
// platform.tenants.manage (Endatix: PlatformAdmin only, by the preset's
// policy; fastn: no system role, a platform operator granted it by a rule),
// the CLI the operator at the database.

// TenantKeycloak is what tenant administration changes in Keycloak
// (kcadmin.Admin).
type TenantKeycloak interface {
	CreateOrganization(ctx context.Context, alias, name string) (string, error)
	UpdateOrganization(ctx context.Context, id, name string, enabled *bool) error
	CreateGroup(ctx context.Context, parentPath, name string, attributes map[string][]string) (string, error)
	UpdateGroupAttributes(ctx context.Context, id string, set map[string][]string, remove []string) error
}

// Tenants is the tenant administration service.
type Tenants struct {
	Keycloak TenantKeycloak
	// Source is mapping.tenant: where tenants come from.
	Source mapping.TenantSource
}

// KeycloakError is a change Keycloak refused or failed (HTTP 502); Op says
// which, Err why (for the log: it may name Keycloak's own message).
type KeycloakError struct {
	Op  string
	Err error
}

func (e *KeycloakError) Error() string { return "keycloak could not " + e.Op + ": " + e.Err.Error() }
func (e *KeycloakError) Unwrap() error { return e.Err }

// TenantChange is a PATCH: nil fields stay as they are.
type TenantChange struct {
	Name     *string
	Disabled *bool
}

// source is the tenant source tenant administration changes in Keycloak:
// "organization" or "group"; an error for the others.
func (s *Tenants) source() (string, error) {
	switch {
	case s.Source.Organization:
		return "organization", nil
	case s.Source.GroupPrefix != "":
		return "group", nil
	case s.Source.Attribute != "":
		return "", fmt.Errorf("%w: tenants come from the user attribute %s (mapping.tenant.attribute): a tenant exists while a user carries it, "+
			"and there is no Keycloak object to create, rename or disable", store.ErrConflict, s.Source.Attribute)
	case s.Source.Claim != "":
		return "", fmt.Errorf("%w: tenants come from the token claim %s (mapping.tenant.claim): there is no Keycloak object to create, rename or disable",
			store.ErrConflict, s.Source.Claim)
	}
	return "", fmt.Errorf("%w: no tenant source is configured (mapping.tenant)", store.ErrConflict)
}

// ValidTenantID checks the id of a tenant to create: it becomes the
// organization's alias or the group's name, and every token and path spells
// it, so 1 to 63 letters, digits, '-', '_' or '.', starting with a letter or
// digit.
func ValidTenantID(id string) error {
	if id == "" || len(id) > 63 {
		return errors.New("id: 1 to 63 characters")
	}
	for i, r := range id {
		alnum := r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9'
		if !alnum && (i == 0 || !strings.ContainsRune("-_.", r)) {
			return errors.New("id: letters, digits, '-', '_' and '.' only, starting with a letter or digit")
		}
	}
	return nil
}

func validName(name string) error {
	if strings.TrimSpace(name) != name || name == "" {
		return errors.New("name: required, without leading or trailing spaces")
	}
	if err := mapping.ValidTenantName(name); err != nil {
		return errors.New("name" + strings.TrimPrefix(err.Error(), "tenant"))
	}
	return nil
}

// List lists every tenant q sees (a transaction across tenants: the sync
// role's, or the owner's) with its member count.
func (s *Tenants) List(ctx context.Context, q store.Querier) ([]store.Tenant, error) {
	return store.ListTenants(ctx, q)
}

// Create creates the tenant's organization (alias id) or its group
// (group_prefix/id, the display name in an attribute when it differs from
// id), then records the tenant. A tenant that exists and is not deleted is
// a conflict; so is an organization or group Keycloak already has under
// that name (sync shows it as a tenant).
func (s *Tenants) Create(ctx context.Context, q store.Querier, id, name string) (store.Tenant, error) {
	if err := ValidTenantID(id); err != nil {
		return store.Tenant{}, &Invalid{err.Error()}
	}
	if name == "" {
		name = id
	}
	if err := validName(name); err != nil {
		return store.Tenant{}, &Invalid{err.Error()}
	}
	source, err := s.source()
	if err != nil {
		return store.Tenant{}, err
	}
	cur, err := store.GetTenant(ctx, q, id)
	switch {
	case err == nil && cur.Status != "deleted":
		return store.Tenant{}, fmt.Errorf("%w: tenant %s exists", store.ErrConflict, strconv.Quote(id))
	case err != nil && !errors.Is(err, store.ErrNotFound):
		return store.Tenant{}, err
	}
	var kcID string
	switch source {
	case "organization":
		kcID, err = s.Keycloak.CreateOrganization(ctx, id, name)
	default:
		var attrs map[string][]string
		if name != id {
			attrs = map[string][]string{mapping.GroupAttrTenantName: {name}}
		}
		kcID, err = s.Keycloak.CreateGroup(ctx, s.Source.GroupPrefix, id, attrs)
	}
	if errors.Is(err, kcadmin.ErrConflict) {
		return store.Tenant{}, fmt.Errorf("%w: Keycloak already has the %s %s: it becomes a tenant with the next sync", store.ErrConflict, source, strconv.Quote(id))
	}
	if err != nil {
		return store.Tenant{}, &KeycloakError{Op: "create the " + source + " of tenant " + strconv.Quote(id), Err: err}
	}
	row := store.TenantRow{ID: id, Name: name, Source: source, Status: "active", KeycloakID: kcID}
	if err := store.RecordTenant(ctx, q, row); err != nil {
		return store.Tenant{}, err
	}
	return store.GetTenant(ctx, q, id)
}

// Update renames a tenant (the organization's name; a group tenant's
// display-name attribute, its group and paths unchanged) and disables or
// enables it (the organization's enabled flag; a group tenant's disabled
// attribute), then records it. A deleted tenant, or one whose Keycloak
// object sync has not seen, cannot be changed.
func (s *Tenants) Update(ctx context.Context, q store.Querier, id string, c TenantChange) (store.Tenant, error) {
	if c.Name == nil && c.Disabled == nil {
		return store.Tenant{}, &Invalid{"name or disabled: nothing to change"}
	}
	if c.Name != nil {
		if err := validName(*c.Name); err != nil {
			return store.Tenant{}, &Invalid{err.Error()}
		}
	}
	if _, err := s.source(); err != nil {
		return store.Tenant{}, err
	}
	cur, err := store.GetTenant(ctx, q, id)
	if err != nil {
		return store.Tenant{}, err
	}
	// The row's own source says what to change: with organizations and
	// their customers, an organization's tenant or a customer's group.
	source := cur.Source
	switch {
	case cur.Status == "deleted":
		return store.Tenant{}, fmt.Errorf("%w: tenant %s is gone from Keycloak", store.ErrConflict, strconv.Quote(id))
	case source == "organization" && !s.Source.Organization, source == "group" && s.Source.TenantGroupPrefix() == "",
		source != "organization" && source != "group", cur.KeycloakID == "":
		return store.Tenant{}, fmt.Errorf("%w: tenant %s has no Keycloak organization or group that keybridge knows of under mapping.tenant (source %s): sync, then try again",
			store.ErrConflict, strconv.Quote(id), cur.Source)
	}
	row := store.TenantRow{ID: cur.ID, Name: cur.Name, Source: cur.Source, Status: cur.Status, KeycloakID: cur.KeycloakID}
	if c.Name != nil {
		row.Name = *c.Name
	}
	if c.Disabled != nil {
		row.Status = "active"
		if *c.Disabled {
			row.Status = "disabled"
		}
	}
	switch source {
	case "organization":
		var enabled *bool
		if c.Disabled != nil {
			on := !*c.Disabled
			enabled = &on
		}
		name := ""
		if c.Name != nil {
			name = *c.Name
		}
		err = s.Keycloak.UpdateOrganization(ctx, cur.KeycloakID, name, enabled)
	default:
		set, remove := map[string][]string{}, []string(nil)
		if c.Name != nil && *c.Name != id {
			set[mapping.GroupAttrTenantName] = []string{*c.Name}
		} else if c.Name != nil {
			remove = append(remove, mapping.GroupAttrTenantName)
		}
		if c.Disabled != nil && *c.Disabled {
			set[mapping.GroupAttrTenantDisabled] = []string{"true"}
		} else if c.Disabled != nil {
			remove = append(remove, mapping.GroupAttrTenantDisabled)
		}
		err = s.Keycloak.UpdateGroupAttributes(ctx, cur.KeycloakID, set, remove)
	}
	if errors.Is(err, kcadmin.ErrConflict) {
		return store.Tenant{}, fmt.Errorf("%w: Keycloak has another %s named %s", store.ErrConflict, source, strconv.Quote(row.Name))
	}
	if err != nil {
		return store.Tenant{}, &KeycloakError{Op: "change the " + source + " of tenant " + strconv.Quote(id), Err: err}
	}
	if err := store.RecordTenant(ctx, q, row); err != nil {
		return store.Tenant{}, err
	}
	return store.GetTenant(ctx, q, id)
}
