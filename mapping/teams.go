package mapping

import "strings"

// TenantTeams is what an answer about the subject's active tenant may list
// of its teams. With a group_prefix tenant source, the groups inside the
// active tenant only (prefix/<tenant> and below): another tenant's group
// paths name that tenant and its structure, and groups outside the prefix
// are realm-wide, which keybridge shows to platform callers only (their
// teams rows have no tenant). A subject in no tenant has none. The other
// tenant sources (organization, attribute, claim) do not place groups in
// tenants, so every group is tenant-neutral and all are listed. In a tree
// of organizations and customers, customers.group_prefix places groups as
// group_prefix does, and a subject acting in an organization lists none.
func (e *Engine) TenantTeams(g *Grant) []string {
	if g == nil {
		return nil
	}
	prefix := e.cfg.Tenant.TenantGroupPrefix()
	if prefix == "" {
		return g.Teams
	}
	out := []string{}
	if g.Tenant == "" {
		return out
	}
	root := strings.TrimRight(prefix, "/") + "/" + g.Tenant
	for _, t := range g.Teams {
		if t == root || strings.HasPrefix(t, root+"/") {
			out = append(out, t)
		}
	}
	return out
}
