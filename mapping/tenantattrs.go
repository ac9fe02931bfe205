package mapping

// Group attributes by which tenant administration marks the group a tenant
// comes from under TenantSource.GroupPrefix (issue 16). The group's name is
// the tenant's id, as every path under it and every token's groups claim
// spell it, so a tenant is renamed through its display name here and
// disabled by a mark, never by renaming or removing its group. Sync reads
// both (tenants.name, tenants.status).
const (
	// GroupAttrTenantName holds the tenant's display name; the group's name
	// when absent.
	GroupAttrTenantName = "keybridge.tenant.name"
	// GroupAttrTenantDisabled is "true" on the group of a disabled tenant.
	GroupAttrTenantDisabled = "keybridge.tenant.disabled"
)
