package mapping

// Config is the `mapping:` section of keybridge's configuration.
type Config struct {
	// Preset is the shipped catalog and roles: fastn or endatix.
	Preset string `yaml:"preset"`
	// Tenant says where a subject's tenant comes from.
	Tenant TenantSource `yaml:"tenant"`
	// Permissions adds catalog permissions beyond the preset's.
	Permissions []string `yaml:"permissions"`
	// Rules grant roles or permissions, evaluated in order.
	Rules []Rule `yaml:"rules"`
	// Claims says where facts live in a token; Keycloak's layout by default.
	Claims ClaimPaths `yaml:"claims"`
}

// TenantSource picks one way to find a subject's tenant.
type TenantSource struct {
	// Organization: the Keycloak organization (alias) the subject belongs to.
	Organization bool `yaml:"organization"`
	// GroupPrefix: the group path segment right under this prefix
	// (/customers/acme/... -> acme).
	GroupPrefix string `yaml:"group_prefix"`
	// Attribute: a user attribute holding the tenant id.
	Attribute string `yaml:"attribute"`
	// Claim: a token claim path holding the tenant id (at sync time, the
	// user attribute of the same name).
	Claim string `yaml:"claim"`
}

// Rule matches one fact and grants roles or permissions.
type Rule struct {
	// RealmRole matches an effective realm role.
	RealmRole string `yaml:"realm_role"`
	// ClientRole matches "client:role".
	ClientRole string `yaml:"client_role"`
	// Group matches a group path; * is one segment, ** any number.
	Group string `yaml:"group"`
	// Organization matches an organization alias.
	Organization string `yaml:"organization"`
	// Claim matches a dotted claim path (at sync time, the user attribute).
	Claim string `yaml:"claim"`
	// Equals, In and Regex compare the claim's value (any element of a list).
	Equals *string  `yaml:"equals"`
	In     []string `yaml:"in"`
	Regex  string   `yaml:"regex"`

	// GrantRole, GrantRoles and GrantPermissions are what a match grants.
	GrantRole        string   `yaml:"grant_role"`
	GrantRoles       []string `yaml:"grant_roles"`
	GrantPermissions []string `yaml:"grant_permissions"`
	// Tenant pins the grant to one tenant: it applies only there.
	Tenant string `yaml:"tenant"`
}

// ClaimPaths says where a token carries each fact.
type ClaimPaths struct {
	RealmRoles   string `yaml:"realm_roles"`  // default realm_access.roles
	ClientRoles  string `yaml:"client_roles"` // default resource_access
	Groups       string `yaml:"groups"`       // default groups
	Organization string `yaml:"organization"` // default organization
	Username     string `yaml:"username"`     // default preferred_username
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
	return p
}

// Validate reports every problem in the section, each naming its key.
func (c Config) Validate() []error {
	_, errs := compile(c)
	return errs
}
