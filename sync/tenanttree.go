package sync

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"

	"github.com/keybridge/keybridge/internal/store"
	"github.com/keybridge/keybridge/mapping"
)

// A tenant tree of two levels (issue 16, mapping.tenant.customers): the
// Keycloak organizations are tenants, and so is each group right under
// customers.group_prefix, a customer, whose own group names its
// organization in the attribute keybridge.tenant.organization
// (AttrTenantOrganization). Sync stores the organization in the customer's
// tenant row (tenants.org_id); the directory hands the tree to the mapping
// engine, which lets an organization-level role act in each customer.

// ErrTenantTree is a realm whose tenant tree is ambiguous: sync refuses to
// guess, and applies nothing.
var ErrTenantTree = errors.New("tenant tree")

// FallbackTenantTree: an event would change a tenant from organization to
// customer or back, or read an ambiguous customer group; the full run
// decides, or fails naming the group.
const FallbackTenantTree = "tenant_tree"

// customerGroups maps each customer, in a tree, to its own group's index in
// the snapshot.
func customerGroups(s *Snapshot, ts mapping.TenantSource) map[string]int {
	if !ts.Tree() {
		return nil
	}
	prefix := strings.TrimRight(ts.Customers.GroupPrefix, "/") + "/"
	out := map[string]int{}
	for i := range s.Groups {
		if name, ok := strings.CutPrefix(s.Groups[i].Path, prefix); ok && name != "" && !strings.Contains(name, "/") {
			out[name] = i
		}
	}
	return out
}

// organizationsOf lists the distinct organizations a customer's group
// names, sorted.
func organizationsOf(g *Group) []string {
	var out []string
	for _, v := range g.Marks.Organizations {
		if v = strings.TrimSpace(v); v != "" {
			out = append(out, v)
		}
	}
	sort.Strings(out)
	return slices.Compact(out)
}

// placeCustomers marks, in a tree, each customer's tenant row as a group
// tenant of its organization: the one alias its group's
// keybridge.tenant.organization holds, or none when it holds none, several
// (checkTenantTree refuses that run) or the customer itself. The
// organization need not exist: the directory places a customer only under
// an active organization tenant.
func placeCustomers(rows []store.TenantRow, s *Snapshot, ts mapping.TenantSource) {
	groups := customerGroups(s, ts)
	if len(groups) == 0 {
		return
	}
	for i := range rows {
		gi, ok := groups[rows[i].ID]
		if !ok {
			continue
		}
		rows[i].Source = "group"
		if orgs := organizationsOf(&s.Groups[gi]); len(orgs) == 1 && orgs[0] != rows[i].ID {
			rows[i].OrgID = orgs[0]
		}
	}
}

// checkTenantTree refuses a snapshot whose tree is ambiguous: a customer
// group named like an organization's alias (both would be one tenant), or
// one naming several organizations.
func checkTenantTree(s *Snapshot, ts mapping.TenantSource) error {
	groups := customerGroups(s, ts)
	if len(groups) == 0 {
		return nil
	}
	orgs := make(map[string]bool, len(s.Orgs))
	for _, o := range s.Orgs {
		orgs[o.Alias] = true
	}
	names := make([]string, 0, len(groups))
	for name := range groups {
		names = append(names, name)
	}
	sort.Strings(names)
	var errs []error
	for _, name := range names {
		g := &s.Groups[groups[name]]
		if orgs[name] {
			errs = append(errs, fmt.Errorf("%w: customer group %s and organization %s would both be tenant %q: rename one", ErrTenantTree, g.Path, name, name))
		}
		if o := organizationsOf(g); len(o) > 1 {
			errs = append(errs, fmt.Errorf("%w: customer group %s names %d organizations in %s (%s): keep one", ErrTenantTree, g.Path, len(o),
				AttrTenantOrganization, strings.Join(o, ", ")))
		}
	}
	return errors.Join(errs...)
}

// checkTenantRows refuses, for an event's partial snapshot, tenant rows
// that would turn a stored organization into a customer or a stored
// customer into an organization: the event saw only part of the realm, and
// a full run decides.
func checkTenantRows(cur, want []store.TenantRow, ts mapping.TenantSource) error {
	if !ts.Tree() {
		return nil
	}
	stored := make(map[string]string, len(cur))
	for _, t := range cur {
		if t.Status != "deleted" {
			stored[t.ID] = t.Source
		}
	}
	for _, t := range want {
		if was, ok := stored[t.ID]; ok && was != t.Source && (was == "organization" || t.Source == "organization") {
			return fmt.Errorf("%w: tenant %q is stored as a %s tenant and read as a %s tenant", ErrTenantTree, t.ID, was, t.Source)
		}
	}
	return nil
}

// tenantTreeHolds checks an event's rows against the tree: anything
// ambiguous, or a tenant that would change level, is left to a full run.
func (s *Service) tenantTreeHolds(ctx context.Context, snap *Snapshot, cur, want *store.SyncState) error {
	ts := s.Engine().Config().Tenant
	err := checkTenantTree(snap, ts)
	if err == nil {
		err = checkTenantRows(cur.Tenants, want.Tenants, ts)
	}
	if err == nil {
		return nil
	}
	if s.Log != nil {
		s.Log.WarnContext(ctx, "event left to a full sync", "reason", FallbackTenantTree, "error", err)
	}
	return errFallback{FallbackTenantTree}
}
