package mapping

import (
	"errors"
	"fmt"
	"regexp"
	"sort"
	"strings"
)

// Sentinel errors.
var (
	ErrImmutable         = errors.New("system roles are immutable")
	ErrUnknownPermission = errors.New("unknown permission")
	ErrUnknownRole       = errors.New("unknown role")
	ErrLastOwner         = errors.New("the last owner of a tenant can't be removed or demoted")
	ErrInvalidRole       = errors.New("invalid role")
)

// Role is a named set of permissions.
type Role struct {
	Name        string   `json:"name"`
	Description string   `json:"description,omitempty"`
	Kind        string   `json:"kind"` // system, pseudo, custom, keycloak
	Tenant      string   `json:"tenant,omitempty"`
	BasedOn     string   `json:"based_on,omitempty"`
	Permissions []string `json:"permissions"`
	// Bypass: "tenant" passes every check inside its tenant, "global" every check.
	Bypass string `json:"bypass,omitempty"`
}

// Engine is a compiled preset, config and custom roles. It is immutable and
// safe for concurrent use; WithCustomRoles returns a new one.
type Engine struct {
	cfg        Config
	preset     string
	catalog    []string
	known      map[string]bool
	categories []Category
	matrixCats []string
	protected  string
	policies   []Policy
	system     []*Role          // preset order: highest first
	rank       map[string]int   // role name -> rank (lower is higher)
	roles      map[string]*Role // system and pseudo roles by name
	custom     map[string]*Role // tenant + "\x00" + name
	authn      string           // Authenticated pseudo role, "" if none
	public     string
	rules      []compiledRule
}

type compiledRule struct {
	Rule
	index  int
	ref    string // "rule #2: realm_role fastn-developer"
	group  []string
	regex  *regexp.Regexp
	grants []string // role names
	perms  []string
}

// New compiles a config: preset, extra permissions and rules.
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
	e := &Engine{cfg: cfg, preset: p.Name, known: map[string]bool{}, rank: map[string]int{},
		roles: map[string]*Role{}, custom: map[string]*Role{}, protected: p.ProtectedRole,
		policies: p.Policies, matrixCats: p.MatrixCategories}
	for _, c := range p.Categories {
		cat := Category{Name: c.Name, Actions: c.Actions}
		for _, a := range c.Actions {
			name := c.Name + "." + a
			cat.Permissions = append(cat.Permissions, name)
			e.known[name] = true
			e.catalog = append(e.catalog, name)
		}
		e.categories = append(e.categories, cat)
	}
	for i, extra := range cfg.Permissions {
		if err := ValidPermissionName(extra); err != nil {
			add(fmt.Sprintf("mapping.permissions[%d]", i), "%v", err)
			continue
		}
		if e.known[extra] {
			continue
		}
		e.known[extra] = true
		e.catalog = append(e.catalog, extra)
		cat, action, _ := strings.Cut(extra, ".")
		found := false
		for j := range e.categories {
			if e.categories[j].Name == cat {
				e.categories[j].Actions = append(e.categories[j].Actions, action)
				e.categories[j].Permissions = append(e.categories[j].Permissions, extra)
				found = true
			}
		}
		if !found {
			e.categories = append(e.categories, Category{Name: cat, Actions: []string{action}, Permissions: []string{extra}})
		}
	}
	sort.Strings(e.catalog)
	for i, pr := range p.Roles {
		perms, err := expand(pr.Permissions, e.catalog, e.known)
		if err != nil {
			add("preset "+p.Name+" role "+pr.Name, "%v", err)
			continue
		}
		r := &Role{Name: pr.Name, Description: pr.Description, Kind: "system", Permissions: perms, Bypass: pr.Bypass}
		e.system = append(e.system, r)
		e.roles[r.Name] = r
		e.rank[r.Name] = i
	}
	for _, pr := range p.Pseudo {
		perms, err := expand(pr.Permissions, e.catalog, e.known)
		if err != nil {
			add("preset "+p.Name+" pseudo role "+pr.Name, "%v", err)
			continue
		}
		r := &Role{Name: pr.Name, Description: pr.Description, Kind: "pseudo", Permissions: perms}
		e.roles[r.Name] = r
		e.rank[r.Name] = len(p.Roles) + 1
		switch pr.Kind {
		case "authenticated":
			e.authn = r.Name
		case "public":
			e.public = r.Name
		}
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
	if ts.GroupPrefix != "" && !strings.HasPrefix(ts.GroupPrefix, "/") {
		add("mapping.tenant.group_prefix", "%q must start with /", ts.GroupPrefix)
	}

	for i, r := range cfg.Rules {
		cr, rerrs := e.compileRule(i, r)
		errs = append(errs, rerrs...)
		if len(rerrs) == 0 {
			e.rules = append(e.rules, cr)
		}
	}
	return e, errs
}

func (e *Engine) compileRule(i int, r Rule) (compiledRule, []error) {
	key := fmt.Sprintf("mapping.rules[%d]", i)
	var errs []error
	add := func(sub, format string, args ...any) {
		k := key
		if sub != "" {
			k += "." + sub
		}
		errs = append(errs, fmt.Errorf("%s: %s", k, fmt.Sprintf(format, args...)))
	}
	cr := compiledRule{Rule: r, index: i}
	matchers := 0
	var what string
	for _, m := range []struct{ key, val string }{
		{"realm_role", r.RealmRole}, {"client_role", r.ClientRole}, {"group", r.Group},
		{"organization", r.Organization}, {"claim", r.Claim},
	} {
		if m.val != "" {
			matchers++
			what = m.key + " " + m.val
		}
	}
	switch {
	case matchers == 0:
		add("", "no matcher: set one of realm_role, client_role, group, organization, claim")
	case matchers > 1:
		add("", "more than one matcher: a rule matches exactly one fact; split it into several rules")
	}
	if r.ClientRole != "" {
		if c, role, ok := strings.Cut(r.ClientRole, ":"); !ok || c == "" || role == "" {
			add("client_role", "%q is not client:role", r.ClientRole)
		}
	}
	if r.Group != "" {
		segs, err := compileGlob(r.Group)
		if err != nil {
			add("group", "%v", err)
		}
		cr.group = segs
	}
	if r.Claim == "" && (r.Equals != nil || len(r.In) > 0 || r.Regex != "") {
		add("", "equals, in and regex apply to claim only")
	}
	conds := 0
	if r.Equals != nil {
		conds++
	}
	if len(r.In) > 0 {
		conds++
	}
	if r.Regex != "" {
		conds++
		re, err := regexp.Compile(r.Regex)
		if err != nil {
			add("regex", "%q does not compile: %v", r.Regex, err)
		}
		cr.regex = re
	}
	if conds > 1 {
		add("", "use only one of equals, in, regex")
	}
	if r.GrantRole != "" {
		cr.grants = append(cr.grants, r.GrantRole)
	}
	cr.grants = append(cr.grants, r.GrantRoles...)
	if len(cr.grants) == 0 && len(r.GrantPermissions) == 0 {
		add("", "grants nothing: set grant_role, grant_roles or grant_permissions")
	}
	for j, g := range cr.grants {
		k := "grant_role"
		if r.GrantRole == "" || j > 0 {
			k = fmt.Sprintf("grant_roles[%d]", j-boolInt(r.GrantRole != ""))
		}
		if rr, ok := e.roles[g]; !ok || rr.Kind != "system" {
			add(k, "unknown role %q (known: %s)", g, strings.Join(e.SystemRoleNames(), ", "))
		}
	}
	for j, p := range r.GrantPermissions {
		if !e.known[p] {
			add(fmt.Sprintf("grant_permissions[%d]", j), "unknown permission %q", p)
		}
	}
	cr.perms = r.GrantPermissions
	cr.ref = fmt.Sprintf("rule #%d: %s", i, what)
	return cr, errs
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

// compileGlob splits a group glob into segments; * is one segment, ** any.
func compileGlob(g string) ([]string, error) {
	if !strings.HasPrefix(g, "/") {
		return nil, fmt.Errorf("%q must start with /", g)
	}
	segs := strings.Split(strings.TrimPrefix(g, "/"), "/")
	for _, s := range segs {
		if s == "" {
			return nil, fmt.Errorf("%q has an empty segment", g)
		}
		if s != "*" && s != "**" && strings.ContainsAny(s, "*?[]") {
			return nil, fmt.Errorf("%q: * and ** must be whole segments", g)
		}
	}
	return segs, nil
}

func matchGlob(pattern []string, path string) bool {
	return matchSegs(pattern, strings.Split(strings.TrimPrefix(path, "/"), "/"))
}

func matchSegs(p, s []string) bool {
	for len(p) > 0 {
		if p[0] == "**" {
			if len(p) == 1 {
				return true
			}
			for i := 0; i <= len(s); i++ {
				if matchSegs(p[1:], s[i:]) {
					return true
				}
			}
			return false
		}
		if len(s) == 0 || (p[0] != "*" && p[0] != s[0]) {
			return false
		}
		p, s = p[1:], s[1:]
	}
	return len(s) == 0
}

// ValidPermissionName checks {category}.{action}[.{scope}].
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

// Config returns the config the engine was compiled from.
func (e *Engine) Config() Config { return e.cfg }

// Preset names the preset.
func (e *Engine) Preset() string { return e.preset }

// Catalog lists permissions by category.
func (e *Engine) Catalog() Catalog {
	return Catalog{Preset: e.preset, Categories: e.categories, Permissions: e.catalog}
}

// Known reports whether a permission is in the catalog.
func (e *Engine) Known(p string) bool { return e.known[p] }

// SystemRoleNames lists the preset's system roles, highest first.
func (e *Engine) SystemRoleNames() []string {
	out := make([]string, len(e.system))
	for i, r := range e.system {
		out[i] = r.Name
	}
	return out
}

// Roles lists system, pseudo and custom roles.
func (e *Engine) Roles() []Role {
	var out []Role
	for _, r := range e.system {
		out = append(out, *r)
	}
	var pseudo []Role
	for _, r := range e.roles {
		if r.Kind == "pseudo" {
			pseudo = append(pseudo, *r)
		}
	}
	sort.Slice(pseudo, func(i, j int) bool { return pseudo[i].Name < pseudo[j].Name })
	out = append(out, pseudo...)
	var custom []Role
	for _, r := range e.custom {
		custom = append(custom, *r)
	}
	sort.Slice(custom, func(i, j int) bool {
		if custom[i].Tenant != custom[j].Tenant {
			return custom[i].Tenant < custom[j].Tenant
		}
		return custom[i].Name < custom[j].Name
	})
	return append(out, custom...)
}

// Role finds a role by name: the tenant's custom role first, then a system
// or pseudo role.
func (e *Engine) Role(name, tenant string) (Role, bool) {
	if r, ok := e.custom[tenant+"\x00"+name]; ok {
		return *r, true
	}
	if r, ok := e.roles[name]; ok {
		return *r, true
	}
	return Role{}, false
}

// WithCustomRoles returns an engine that also knows these custom roles;
// roles naming permissions outside the catalog are refused.
func (e *Engine) WithCustomRoles(roles []Role) (*Engine, error) {
	n := *e
	n.custom = make(map[string]*Role, len(roles))
	var errs []error
	for _, r := range roles {
		c, err := NewCustomRole(e, r.Name, r.Tenant, r.Permissions)
		if err != nil {
			errs = append(errs, fmt.Errorf("custom role %q of tenant %q: %w", r.Name, r.Tenant, err))
			continue
		}
		c.BasedOn, c.Description = r.BasedOn, r.Description
		n.custom[c.Tenant+"\x00"+c.Name] = &c
	}
	return &n, errors.Join(errs...)
}

// ProtectedRole names the role whose last holder in a tenant can't be
// removed (fastn: Owner), or "".
func ProtectedRole(e *Engine) string { return e.protected }

// CheckLastOwner refuses removing the protected role from the last holder.
func CheckLastOwner(e *Engine, ownersInTenant int, removingOwner bool) error {
	if e.protected != "" && removingOwner && ownersInTenant <= 1 {
		return fmt.Errorf("%w: %s is held by no one else", ErrLastOwner, e.protected)
	}
	return nil
}

// NewCustomRole builds a tenant's custom role: any catalog permissions, a
// name that is not a system or pseudo role's.
func NewCustomRole(e *Engine, name, tenant string, perms []string) (Role, error) {
	name = strings.TrimSpace(name)
	switch {
	case name == "" || len(name) > 64:
		return Role{}, fmt.Errorf("%w: name must be 1 to 64 characters", ErrInvalidRole)
	case tenant == "":
		return Role{}, fmt.Errorf("%w: a custom role belongs to a tenant", ErrInvalidRole)
	}
	if _, ok := e.roles[name]; ok {
		return Role{}, fmt.Errorf("%w: %q is a %s role: choose another name", ErrImmutable, name, e.roles[name].Kind)
	}
	set := map[string]bool{}
	for _, p := range perms {
		if !e.known[p] {
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
	return Role{Name: name, Kind: "custom", Tenant: tenant, Permissions: out}, nil
}

// DuplicateRole is "Duplicate as Custom": a tenant's copy of a system role.
func DuplicateRole(e *Engine, system, newName, tenant string) (Role, error) {
	src, ok := e.roles[system]
	if !ok || src.Kind != "system" {
		return Role{}, fmt.Errorf("%w: %q is not a system role", ErrUnknownRole, system)
	}
	r, err := NewCustomRole(e, newName, tenant, src.Permissions)
	if err != nil {
		return Role{}, err
	}
	r.BasedOn = system
	r.Description = "Duplicated from " + system
	return r, nil
}

// ValidateRoleEdit refuses edits to system and pseudo roles.
func ValidateRoleEdit(e *Engine, r Role) error {
	if cur, ok := e.roles[r.Name]; ok && r.Kind != "custom" {
		return fmt.Errorf("%w: %s", ErrImmutable, cur.Name)
	}
	if r.Kind != "custom" {
		return ErrImmutable
	}
	_, err := NewCustomRole(e, r.Name, r.Tenant, r.Permissions)
	return err
}
