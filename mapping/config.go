package mapping

// Config is the `mapping:` section of keybridge's YAML config.
type Config struct {
	// Preset selects the shipped catalog and roles: "fastn" or "endatix".
	// Empty means fastn, the product keybridge was first built for.
	Preset string `yaml:"preset"`
	// Tenant says where a subject's tenant comes from. Set at most one way;
	// none means a single-tenant deployment (or tenants pinned by rules).
	Tenant TenantSource `yaml:"tenant"`
	// Permissions adds catalog permissions beyond the preset's, named
	// {category}.{action}[.{scope}]; they can then be granted by rules and
	// custom roles.
	Permissions []string `yaml:"permissions"`
	// Rules grant roles or permissions, evaluated in order.
	Rules []Rule `yaml:"rules"`
	// Claims says where facts live in a token; Keycloak's layout by default.
	Claims ClaimPaths `yaml:"claims"`
	// AllowUserEditedAttributes lets keybridge start and sync although a
	// user attribute the mapping reads (tenant.attribute, tenant.claim, a
	// claim rule) is one users can edit themselves in Keycloak, so anyone
	// can pick their own tenant or role. Off, that refuses start-up and
	// every full sync; on, each is logged at WARN and counted in
	// keybridge_mapping_user_editable_attributes. See AttributeInputs.
	AllowUserEditedAttributes bool `yaml:"allow_user_edited_attributes"`
}

// TenantSource picks one way to find a subject's tenants, or, with
// Organization and Customers, two: organizations and their customers. Sync
// records them as memberships, placing stored assignments in the first in
// sorted order; a request acts in the one it names, else the one its token
// gives, else the only synced membership (Engine.ResolveIn).
type TenantSource struct {
	// Organization: the Keycloak organizations (aliases) the subject is a
	// member of. A token carries them only when its client asked for
	// Keycloak's organization scope; without it the synced membership
	// places the request.
	Organization bool `yaml:"organization"`
	// GroupPrefix: the path segment right under this prefix, for every group
	// under it (/customers/acme/engineering -> acme).
	GroupPrefix string `yaml:"group_prefix"`
	// Attribute: a user attribute holding the tenant id (in a token, the
	// top-level claim of the same name).
	Attribute string `yaml:"attribute"`
	// Claim: a dotted token claim path holding the tenant id (at sync time,
	// the user attribute of that name).
	Claim string `yaml:"claim"`
	// Customers, beside Organization: true, makes tenancy two levels
	// (DESIGN.md, "Data model"): the Keycloak organizations are the
	// organizations, and each group right under Customers.GroupPrefix is a
	// customer of the organization its group's keybridge.tenant.organization
	// attribute names. A role in OrganizationRoles held in an organization
	// holds in each of its customers too; every other role stays in the
	// tenant it is held in.
	Customers CustomerSource `yaml:"customers"`
	// OrganizationRoles, with Customers: the roles that, held in an
	// organization, hold in each of its customers. Unset, the preset's
	// (fastn: Owner and Admin); an empty list names none. System roles
	// only: a custom role belongs to the one tenant it was made in.
	OrganizationRoles []string `yaml:"organization_roles"`
}

// CustomerSource says where an organization's customers come from: the
// groups right under GroupPrefix, each placed in its organization by the
// attribute keybridge.tenant.organization of its own group (the alias of
// the Keycloak organization), which only an administrator allowed to
// manage the group can edit, never its members: a user cannot move
// themselves into another organization's customer. A
// customer group without the attribute, or naming no organization, is a
// customer of none: its members act there, and no organization's role
// reaches it. A group naming two organizations, or named like an
// organization, fails the sync run.
type CustomerSource struct {
	// GroupPrefix: the groups right under it are the customers, named by
	// their path segment (/customers/acme-eu -> acme-eu); a member of the
	// group or of any group below it is in the customer.
	GroupPrefix string `yaml:"group_prefix"`
}

// Tree reports a two-level tenancy: organizations and their customers.
func (t TenantSource) Tree() bool { return t.Organization && t.Customers.GroupPrefix != "" }

// TenantGroupPrefix is the group path whose children are tenants:
// group_prefix, or customers.group_prefix in a tree; "" when groups place
// no tenant.
func (t TenantSource) TenantGroupPrefix() string {
	if t.GroupPrefix != "" {
		return t.GroupPrefix
	}
	if t.Tree() {
		return t.Customers.GroupPrefix
	}
	return ""
}

// Rule matches one fact and grants roles or permissions. Exactly one
// matcher, at least one grant.
type Rule struct {
	// RealmRole matches an effective realm role (composites and roles
	// inherited through groups included).
	RealmRole string `yaml:"realm_role"`
	// ClientRole matches a client role written "client:role".
	ClientRole string `yaml:"client_role"`
	// Group matches a group path: a literal segment matches itself, * any
	// one segment, ** any number of segments (none included), so
	// "/engineering/**" matches /engineering and everything under it. A
	// pattern is a full path from the top: "/admins" is the top-level group
	// only, never /customers/x/admins ("/**/admins" is that). In a token,
	// only full paths count: a bare group name (Keycloak's group mapper with
	// "Full group path" off) could be any group of that name and is ignored.
	Group string `yaml:"group"`
	// Organization matches a Keycloak organization alias.
	Organization string `yaml:"organization"`
	// Claim matches a dotted claim path (at sync time, the user attribute of
	// that name; sub, preferred_username, email, roles, groups and
	// organization are read from the facts themselves so both agree).
	// Without equals, in or regex it matches when the claim has a value.
	Claim string `yaml:"claim"`
	// Equals, In and Regex compare the claim's value; a list claim matches
	// when any element does. Set at most one. Regex must match the whole
	// value: it is compiled as ^(?:Regex)$, so "admin" does not match
	// "not-an-admin" (write ".*admin.*" to match a part).
	Equals *string  `yaml:"equals"`
	In     []string `yaml:"in"`
	Regex  string   `yaml:"regex"`

	// GrantRole and GrantRoles name system roles of the preset;
	// GrantPermissions names catalog permissions.
	GrantRole        string   `yaml:"grant_role"`
	GrantRoles       []string `yaml:"grant_roles"`
	GrantPermissions []string `yaml:"grant_permissions"`
	// Tenant pins the grant to one tenant: it counts only when the subject
	// acts in that tenant, and places a subject whom the tenant source puts
	// nowhere.
	Tenant string `yaml:"tenant"`
}

// ClaimPaths says where a token carries each fact. Paths are dotted; empty
// fields take Keycloak's defaults.
type ClaimPaths struct {
	// RealmRoles defaults to realm_access.roles.
	RealmRoles string `yaml:"realm_roles"`
	// ClientRoles is the object keyed by client whose values hold "roles";
	// defaults to resource_access.
	ClientRoles string `yaml:"client_roles"`
	// Groups defaults to groups (Keycloak's group membership mapper with
	// full paths).
	Groups string `yaml:"groups"`
	// Organization defaults to organization: Keycloak 26 emits a list of
	// aliases, or an object keyed by alias when attributes are included.
	Organization string `yaml:"organization"`
	// Username defaults to preferred_username.
	Username string `yaml:"username"`
	// Email defaults to email.
	Email string `yaml:"email"`
}

func (p ClaimPaths) withDefaults() ClaimPaths {
	def := func(s *string, d string) {
		if *s == "" {
			*s = d
		}
	}
	def(&p.RealmRoles, "realm_access.roles")
	def(&p.ClientRoles, "resource_access")
	def(&p.Groups, "groups")
	def(&p.Organization, "organization")
	def(&p.Username, "preferred_username")
	def(&p.Email, "email")
	return p
}

// Validate reports every problem in the section at once, each naming its
// key, so an operator fixes a config in one round.
func (c Config) Validate() []error {
	_, errs := compile(c)
	return errs
}
