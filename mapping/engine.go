package mapping

import (
	"errors"
	"fmt"
	"slices"
	"sort"
	"strconv"
	"strings"
)

// Sentinel errors, for errors.Is at the API and CLI edges.
var (
	ErrImmutable         = errors.New("system roles are immutable")
	ErrUnknownPermission = errors.New("unknown permission")
	ErrUnknownRole       = errors.New("unknown role")
	ErrLastOwner         = errors.New("the last owner of a tenant can't be removed or demoted")
	ErrInvalidRole       = errors.New("invalid role")
)

// Role kinds.
const (
	KindSystem   = "system"
	KindPseudo   = "pseudo"
	KindCustom   = "custom"
	KindKeycloak = "keycloak"
)

// Bypass reaches.
const (
	BypassTenant = "tenant" // passes every check inside its own tenant
	BypassGlobal = "global" // passes every check everywhere
)

// Role is a named set of permissions.
type Role struct {
	Name        string   `json:"name"`
	Description string   `json:"description,omitempty"`
	Kind        string   `json:"kind"` // system, pseudo, custom, keycloak
	Tenant      string   `json:"tenant,omitempty"`
	BasedOn     string   `json:"based_on,omitempty"`
	Permissions []string `json:"permissions"`
	// Bypass is "", "tenant" or "global"; see BypassTenant, BypassGlobal.
	Bypass string `json:"bypass,omitempty"`
}

// role is a Role with its permissions as catalog ids, so Resolve sets bits
// instead of hashing names.
type role struct {
	Role
	ids  []int32
	rank int // lower is higher: the preset's order
}

func (r *role) public() Role {
	out := r.Role
	out.Permissions = slices.Clone(r.Permissions)
	return out
}

type customKey struct{ tenant, name string }

// index is the compiled catalog. An engine, the engines WithCustomRoles
// derives from it and every grant they resolve share one, so a grant cached
// across a reload is still decided against the catalog that built it.
type index struct {
	preset   string
	names    []string // id -> permission, sorted
	lead     []string // id -> `permission "name"`, the start of every allow reason
	ids      map[string]int32
	owned    []bool  // id -> ".owned" scope: the caller must own the resource
	policy   []int16 // id -> index into policies, or -1
	policies []Policy
}

func (x *index) words() int { return (len(x.names) + 63) / 64 }

// Engine is a compiled preset, config and set of custom roles. It never
// changes after New, so any number of goroutines may share it;
// WithCustomRoles returns a new one.
type Engine struct {
	cfg        Config
	idx        *index
	categories []Category
	matrixCats []string
	protected  string
	system     []*role          // the preset's order: highest first
	roles      map[string]*role // system and pseudo roles by name
	roleNames  []string         // the keys of roles, which no custom role may take in any case
	custom     map[customKey]*role
	authn      *role // the pseudo role every verified subject holds, or nil
	public     *role // the pseudo role of anonymous callers, or nil
	rules      []compiledRule
	pinned     bool // some rule pins a tenant
	// orgRoles are the roles that, held in an organization, hold in each
	// of its customers; nil unless the tenancy is a tree.
	orgRoles map[string]bool
	// tree is the organization -> customers tree sync stored
	// (WithTenantTree); nil before one is loaded.
	tree *TenantTree
}

// New compiles a config: preset, extra permissions and rules. Its error
// joins every problem Validate reports.
func New(cfg Config) (*Engine, error) {
	e, errs := compile(cfg)
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return e, nil
}

func compile(cfg Config) (*Engine, []error) {
	var errs []error
	add := func(key, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: %s", key, fmt.Sprintf(format, args...)))
	}
	if cfg.Preset == "" {
		cfg.Preset = "fastn"
	}
	p, err := loadPreset(cfg.Preset)
	if err != nil {
		add("mapping.preset", "%v", err)
		return nil, errs
	}
	cfg.Claims = cfg.Claims.withDefaults()
	cfg.Permissions = slices.Clone(cfg.Permissions)
	cfg.Rules = slices.Clone(cfg.Rules)
	e := &Engine{cfg: cfg, roles: map[string]*role{}, custom: map[customKey]*role{},
		protected: p.ProtectedRole, matrixCats: p.MatrixCategories}

	presetKey := "preset " + p.Name
	known := map[string]bool{}
	var catalog []string
	for _, c := range p.Categories {
		cat := Category{Name: c.Name, Actions: slices.Clone(c.Actions)}
		for _, a := range c.Actions {
			name := c.Name + "." + a
			if err := ValidPermissionName(name); err != nil {
				add(presetKey, "%v", err)
				continue
			}
			cat.Permissions = append(cat.Permissions, name)
			known[name] = true
			catalog = append(catalog, name)
		}
		e.categories = append(e.categories, cat)
	}
	for i, extra := range cfg.Permissions {
		if err := ValidPermissionName(extra); err != nil {
			add(fmt.Sprintf("mapping.permissions[%d]", i), "%v", err)
			continue
		}
		if known[extra] {
			continue
		}
		known[extra] = true
		catalog = append(catalog, extra)
		cat, action, _ := strings.Cut(extra, ".")
		j := slices.IndexFunc(e.categories, func(c Category) bool { return c.Name == cat })
		if j < 0 {
			e.categories = append(e.categories, Category{Name: cat})
			j = len(e.categories) - 1
		}
		e.categories[j].Actions = append(e.categories[j].Actions, action)
		e.categories[j].Permissions = append(e.categories[j].Permissions, extra)
	}
	sort.Strings(catalog)

	x := &index{preset: p.Name, names: catalog, ids: make(map[string]int32, len(catalog)),
		owned: make([]bool, len(catalog)), policy: make([]int16, len(catalog)), policies: p.Policies}
	for id, name := range catalog {
		x.ids[name] = int32(id)
		x.lead = append(x.lead, "permission "+strconv.Quote(name))
		x.owned[id] = strings.HasSuffix(name, ownedSuffix)
		x.policy[id] = -1
		for k, pol := range p.Policies {
			if strings.HasPrefix(name, pol.Prefix) {
				x.policy[id] = int16(k)
				break
			}
		}
	}
	e.idx = x
	isKnown := func(s string) bool { _, ok := x.ids[s]; return ok }

	for i, pr := range p.Roles {
		key := presetKey + " role " + pr.Name
		perms, err := expand(pr.Permissions, catalog, isKnown)
		if err != nil {
			add(key, "%v", err)
			continue
		}
		if pr.Bypass != "" && pr.Bypass != BypassTenant && pr.Bypass != BypassGlobal {
			add(key, "bypass %q is not tenant or global", pr.Bypass)
		}
		if _, dup := e.roles[pr.Name]; dup || pr.Name == "" {
			add(key, "role names must be unique and non-empty")
			continue
		}
		if err := ValidRoleName(pr.Name); err != nil {
			add(key, "%v", err)
			continue
		}
		r := &role{Role: Role{Name: pr.Name, Description: pr.Description, Kind: KindSystem, Permissions: perms, Bypass: pr.Bypass}, rank: i}
		r.ids = idsOf(x, perms)
		e.system = append(e.system, r)
		e.roles[r.Name] = r
	}
	for _, pr := range p.Pseudo {
		key := presetKey + " pseudo role " + pr.Name
		perms, err := expand(pr.Permissions, catalog, isKnown)
		if err != nil {
			add(key, "%v", err)
			continue
		}
		if _, dup := e.roles[pr.Name]; dup || pr.Name == "" {
			add(key, "role names must be unique and non-empty")
			continue
		}
		if err := ValidRoleName(pr.Name); err != nil {
			add(key, "%v", err)
			continue
		}
		r := &role{Role: Role{Name: pr.Name, Description: pr.Description, Kind: KindPseudo, Permissions: perms}, rank: len(p.Roles) + 1}
		r.ids = idsOf(x, perms)
		e.roles[r.Name] = r
		switch pr.Kind {
		case "authenticated":
			e.authn = r
		case "public":
			e.public = r
		default:
			add(key, "kind %q is not authenticated or public", pr.Kind)
		}
	}
	for name := range e.roles {
		e.roleNames = append(e.roleNames, name)
	}
	sort.Strings(e.roleNames)
	for k, pol := range p.Policies {
		if r, ok := e.roles[pol.RequireRole]; pol.Prefix == "" || !ok || r.Kind != KindSystem {
			add(fmt.Sprintf("%s policies[%d]", presetKey, k), "needs a prefix and a system role, not %q", pol.RequireRole)
		}
	}
	if r, ok := e.roles[p.ProtectedRole]; p.ProtectedRole != "" && (!ok || r.Kind != KindSystem) {
		add(presetKey, "protected_role %q is not a system role", p.ProtectedRole)
	}

	ts := cfg.Tenant
	n := 0
	for _, set := range []bool{ts.Organization, ts.GroupPrefix != "", ts.Attribute != "", ts.Claim != ""} {
		if set {
			n++
		}
	}
	if n > 1 {
		add("mapping.tenant", "set only one of organization, group_prefix, attribute, claim")
	}
	if ts.GroupPrefix != "" && (!strings.HasPrefix(ts.GroupPrefix, "/") || strings.Contains(ts.GroupPrefix, "*")) {
		add("mapping.tenant.group_prefix", "%q must be a group path starting with /, such as /customers", ts.GroupPrefix)
	}
	if ts.Claim != "" {
		if err := validPath(ts.Claim); err != nil {
			add("mapping.tenant.claim", "%v", err)
		}
	}
	e.orgRoles = compileTree(ts, p, e.roles, add)
	for _, p := range []struct{ key, path string }{
		{"realm_roles", cfg.Claims.RealmRoles}, {"client_roles", cfg.Claims.ClientRoles}, {"groups", cfg.Claims.Groups},
		{"organization", cfg.Claims.Organization}, {"username", cfg.Claims.Username}, {"email", cfg.Claims.Email},
	} {
		if err := validPath(p.path); err != nil {
			add("mapping.claims."+p.key, "%v", err)
		}
	}

	for i, r := range cfg.Rules {
		cr, rerrs := e.compileRule(i, r)
		errs = append(errs, rerrs...)
		if len(rerrs) == 0 {
			e.rules = append(e.rules, cr)
			e.pinned = e.pinned || r.Tenant != ""
		}
	}
	return e, errs
}

func idsOf(x *index, perms []string) []int32 {
	out := make([]int32, 0, len(perms))
	for _, p := range perms {
		if id, ok := x.ids[p]; ok {
			out = append(out, id)
		}
	}
	return out
}

// ValidPermissionName checks the {category}.{action}[.{scope}] shape:
// lower-case words, so names compare byte for byte everywhere.
func ValidPermissionName(p string) error {
	parts := strings.Split(p, ".")
	if len(parts) < 2 || len(parts) > 4 {
		return fmt.Errorf("%q is not {category}.{action}[.{scope}]", p)
	}
	for _, s := range parts {
		if s == "" {
			return fmt.Errorf("%q has an empty part", p)
		}
		for _, c := range s {
			if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '_' || c == '-') {
				return fmt.Errorf("%q: use lower-case letters, digits, _ and -", p)
			}
		}
	}
	return nil
}

// Config returns the config the engine was compiled from, claim paths
// defaulted.
func (e *Engine) Config() Config {
	c := e.cfg
	c.Permissions = slices.Clone(c.Permissions)
	c.Rules = slices.Clone(c.Rules)
	return c
}

// Preset names the preset.
func (e *Engine) Preset() string { return e.idx.preset }

// Catalog lists every permission by category.
func (e *Engine) Catalog() Catalog {
	cats := make([]Category, len(e.categories))
	for i, c := range e.categories {
		cats[i] = Category{Name: c.Name, Actions: slices.Clone(c.Actions), Permissions: slices.Clone(c.Permissions)}
	}
	return Catalog{Preset: e.idx.preset, Categories: cats, Permissions: slices.Clone(e.idx.names)}
}

// Known reports whether a permission is in the catalog.
func (e *Engine) Known(p string) bool { _, ok := e.idx.ids[p]; return ok }

// Policies lists the preset's policies.
func (e *Engine) Policies() []Policy { return slices.Clone(e.idx.policies) }

// SystemRoleNames lists the preset's system roles, highest first.
func (e *Engine) SystemRoleNames() []string {
	out := make([]string, len(e.system))
	for i, r := range e.system {
		out[i] = r.Name
	}
	return out
}

// Roles lists system roles (highest first), pseudo roles, then custom roles
// by tenant and name.
func (e *Engine) Roles() []Role {
	out := make([]Role, 0, len(e.roles)+len(e.custom))
	for _, r := range e.system {
		out = append(out, r.public())
	}
	for _, r := range []*role{e.authn, e.public} {
		if r != nil {
			out = append(out, r.public())
		}
	}
	custom := make([]Role, 0, len(e.custom))
	for _, r := range e.custom {
		custom = append(custom, r.public())
	}
	sort.Slice(custom, func(i, j int) bool {
		if custom[i].Tenant != custom[j].Tenant {
			return custom[i].Tenant < custom[j].Tenant
		}
		return custom[i].Name < custom[j].Name
	})
	return append(out, custom...)
}

// Role finds a role by name: the tenant's custom role, else a system or
// pseudo role.
func (e *Engine) Role(name, tenant string) (Role, bool) {
	if r := e.role(name, tenant); r != nil {
		return r.public(), true
	}
	return Role{}, false
}

func (e *Engine) role(name, tenant string) *role {
	if r, ok := e.custom[customKey{tenant, name}]; ok {
		return r
	}
	return e.roles[name]
}
