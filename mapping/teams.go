package mapping

import "strings"

// TenantTeams is what an answer about the subject's active tenant may list
// of its teams. With a group_prefix tenant source, the groups inside the
// active tenant only (prefix/<tenant> and below): another tenant's group
// paths name that tenant and its structure, and groups outside the prefix
// are realm-wide, which keybridge shows to platform callers only (their
// teams rows have no tenant). A subject in no tenant has none. The other
// tenant sources (organization, attribute, claim) do not place groups in
// tenants, so every group is tenant-neutral and all are listed.
func (e *Engine) TenantTeams(g *Grant) []string {
	if g == nil {
		return nil
	}
	if e.cfg.Tenant.GroupPrefix == "" {
		return g.Teams
	}
	out := []string{}
	if g.Tenant == "" {
		return out
	}
	root := strings.TrimRight(e.cfg.Tenant.GroupPrefix, "/") + "/" + g.Tenant
	for _, t := range g.Teams {
		if t == root || strings.HasPrefix(t, root+"/") {
			out = append(out, t)
		}
	}
	return out
}
