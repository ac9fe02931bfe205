package mapping

import (
	"sort"
	"strconv"
	"strings"
	"time"
)

// Facts are what is known about a subject: from sync (Keycloak's admin API)
// or from a verified token's claims. One Resolve serves both.
type Facts struct {
	Subject       string
	Username      string
	Email         string
	RealmRoles    []string            // effective: composites and group-inherited roles expanded
	ClientRoles   []string            // "client:role"
	Groups        []string            // full paths, "/customers/acme/engineering"
	Organizations []string            // organization aliases
	Attributes    map[string][]string // user attributes
	Claims        map[string]any      // raw claims at request time; nil at sync time
}

// Assignment is a stored grant: made by sync (source keycloak or rule), or
// in keybridge (local), possibly temporary.
type Assignment struct {
	Role       string
	Permission string
	Tenant     string    // "" applies in whatever tenant the subject acts
	Source     string    // keycloak, rule, local or temporary
	ExpiresAt  time.Time // zero: never
	Ref        string    // names the assignment in explanations and Decision.Grant
}

// source is one reason a subject holds something.
type source struct {
	role  string // role that carries the permission, "" for a direct grant
	rule  string // "rule #2: realm_role fastn-developer"
	grant string // assignment ref
	note  string // anything else: a pseudo role's reason
	until time.Time
	tail  string // explanation after the permission's name, written once per source
}

func (s *source) lasting() bool { return s.until.IsZero() }

// active reports whether a source counts at now: a temporary grant stops
// counting at the instant it expires.
func (s *source) active(now time.Time) bool { return s.until.IsZero() || now.Before(s.until) }

// better reports whether s explains a hold better than cur: lasting beats
// temporary, a later expiry beats an earlier one, and otherwise the first
// reason found (rule order) stays.
func (s *source) better(cur *source) bool {
	if cur == nil {
		return true
	}
	if cur.lasting() {
		return false
	}
	return s.lasting() || s.until.After(cur.until)
}

// hold is a permission held for one reason, with the explanation Decide
// returns already written, so the allow path formats nothing.
type hold struct {
	src    *source
	reason string
}

// bypass is a held bypass role.
type bypass struct {
	src *source  // the best reason it is held; nil when not held
	why []string // per permission id: the explanation when it passes
}

// Grant is a resolved subject: what it may do, and why. It never changes
// after Resolve, so it can be cached for the life of a token; temporary
// grants carry their expiry and Decide compares it with the request's time.
type Grant struct {
	Subject  string   `json:"subject"`
	Username string   `json:"username,omitempty"`
	Tenant   string   `json:"tenant,omitempty"`  // the tenant the subject acts in
	Tenants  []string `json:"tenants,omitempty"` // every tenant the subject may act in (MayActIn), sorted
	// TenantRequired: the subject may act in several tenants and nothing
	// chose one (ResolveIn): Tenant is "", and Decide denies every check
	// until the request names one.
	TenantRequired bool `json:"tenant_required,omitempty"`
	// Org is the organization the request acts in at the organization
	// level, app.org_id (a tenancy of organizations and customers only):
	// Tenant itself when it is an organization, or the organization of the
	// customer Tenant when the subject holds an organization-level role
	// there; "" for a subject confined to its customer.
	Org string `json:"org,omitempty"`
	// Customers are the customers a request acting in the organization
	// itself may read, app.tenant_ids: every customer of Org, for a holder
	// of an organization-level role there; nil otherwise (acting in a
	// customer, the request reads that customer: Tenant).
	Customers []string `json:"customers,omitempty"`
	// Roles are the roles held at resolve time, highest rank first.
	Roles []string `json:"roles"`
	// Permissions are the permissions held at resolve time, sorted.
	Permissions []string `json:"permissions"`
	Teams       []string `json:"teams"` // group paths, sorted

	idx     *index
	lasting []uint64 // bitset of permission ids held without expiry
	holds   [][]hold // per permission id: lasting hold first, then temporary ones
	roles   map[string]*source
	policy  []*source // per policy: why the caller holds its role, or nil
	global  bypass
	tenant  bypass
	primary string
}

// PrimaryRole is the highest role held by the preset's order: app.role.
func (g *Grant) PrimaryRole() string {
	if g == nil {
		return ""
	}
	return g.primary
}

// Global reports a global-bypass role (PlatformAdmin) held at resolve time:
// it sets app.platform.
func (g *Grant) Global() bool { return g != nil && g.global.src != nil }

// HasRole reports whether the grant holds a role (temporary ones included
// until they expire at resolve time).
func (g *Grant) HasRole(name string) bool {
	if g == nil {
		return false
	}
	_, ok := g.roles[name]
	return ok
}

// Has reports whether the permission is held at now. Bypass roles are not
// consulted: Has answers "is it granted", Decide answers "may they".
func (g *Grant) Has(permission string, now time.Time) bool {
	if g == nil || g.idx == nil {
		return false
	}
	id, ok := g.idx.ids[permission]
	return ok && g.hasID(id, now) != nil
}

func (g *Grant) hasID(id int32, now time.Time) *hold {
	hs := g.holds[id]
	if g.lasting[id>>6]&(1<<(id&63)) != 0 {
		return &hs[0]
	}
	for i := range hs {
		if hs[i].src.active(now) {
			return &hs[i]
		}
	}
	return nil
}

// Resolve applies the rules to the facts, adds stored assignments and the
// Authenticated pseudo role, and returns the grant. Assignments already
// expired at now are left out; those still running carry their expiry.
//
// The tenant comes from the tenant source: the first of the facts' tenants
// in sorted order. A subject it places nowhere is placed by the first
// matching rule that pins a tenant. Rules pinned to another tenant, and
// assignments made in another tenant, do not count. This is sync's
// placement (the tenant its stored assignments are written in); a request
// acts in the tenant ResolveIn chooses.
func (e *Engine) Resolve(f Facts, stored []Assignment, now time.Time) *Grant {
	g, matched := e.start(&f)
	g.Tenants = e.tenants(&f, &e.cfg.Claims)
	if len(g.Tenants) > 0 {
		g.Tenant = g.Tenants[0]
	} else if t := e.pinnedTenant(matched); t != "" {
		g.Tenant = t
		g.Tenants = []string{t}
	}
	e.fill(g, &f, matched, stored, now)
	return g
}

// start begins a grant for the facts and matches every rule against them.
func (e *Engine) start(f *Facts) (*Grant, []bool) {
	x := e.idx
	g := &Grant{Subject: f.Subject, Username: f.Username, idx: x,
		lasting: make([]uint64, x.words()), holds: make([][]hold, len(x.names)),
		roles: map[string]*source{}, policy: make([]*source, len(x.policies))}
	matched := make([]bool, len(e.rules))
	for i := range e.rules {
		matched[i] = e.rules[i].matches(f, &e.cfg.Claims)
	}
	return g, matched
}

// pinnedTenant is the tenant of the first matching rule that pins one, or "".
func (e *Engine) pinnedTenant(matched []bool) string {
	if !e.pinned {
		return ""
	}
	for i := range e.rules {
		if matched[i] && e.rules[i].tenant != "" {
			return e.rules[i].tenant
		}
	}
	return ""
}

// fill grants, in g.Tenant, what the matched rules and the stored
// assignments give.
func (e *Engine) fill(g *Grant, f *Facts, matched []bool, stored []Assignment, now time.Time) {
	e.fillAt(g, f, matched, stored, now, &level{})
}

// fillAt is fill at a level of a tenant tree: in a customer the subject
// reaches only through an organization-level role, the rules that pin no
// tenant grant nothing (a role they give in the organization stays there,
// unless it is an organization-level one), and the organization-level roles
// of lv.up hold beside what is granted in the customer itself.
func (e *Engine) fillAt(g *Grant, f *Facts, matched []bool, stored []Assignment, now time.Time, lv *level) {
	x := e.idx
	g.Teams = append([]string{}, f.Groups...)
	sort.Strings(g.Teams)
	g.Teams = dedupe(g.Teams)

	for i := range e.rules {
		r := &e.rules[i]
		if !matched[i] || (r.tenant != "" && r.tenant != g.Tenant) || (lv.reachOnly && r.tenant == "") {
			continue
		}
		src := &source{rule: r.ref}
		for _, name := range r.roles {
			g.addRole(e.role(name, g.Tenant), src)
		}
		for _, p := range r.perms {
			g.addPerm(x.ids[p], src)
		}
	}
	for _, a := range stored {
		if !a.ExpiresAt.IsZero() && !now.Before(a.ExpiresAt) {
			continue
		}
		if a.Tenant != "" && a.Tenant != g.Tenant {
			continue
		}
		src := &source{grant: a.Ref, until: a.ExpiresAt}
		if src.grant == "" {
			src.grant = strings.TrimSpace(a.Source + " assignment")
		}
		if a.Role != "" {
			if r := e.role(a.Role, g.Tenant); r != nil && r.Kind != KindPseudo {
				g.addRole(r, src)
			}
		}
		if id, ok := x.ids[a.Permission]; ok {
			g.addPerm(id, src)
		}
	}
	if lv.up != nil {
		for i, r := range lv.up.roles {
			g.addRole(r, lv.up.srcs[i])
		}
	}
	if e.authn != nil && f.Subject != "" {
		g.addRole(e.authn, &source{note: "pseudo role of every verified subject"})
	}
	e.finish(g, now)
}

func (g *Grant) addRole(r *role, src *source) {
	if r == nil {
		return
	}
	if src.better(g.roles[r.Name]) {
		g.roles[r.Name] = src
	}
	rs := &source{role: r.Name, rule: src.rule, grant: src.grant, note: src.note, until: src.until}
	for _, id := range r.ids {
		g.addPerm(id, rs)
	}
	for k, pol := range g.idx.policies {
		if pol.RequireRole == r.Name && src.better(g.policy[k]) {
			g.policy[k] = src
		}
	}
	var b *bypass
	switch r.Bypass {
	case BypassGlobal:
		b = &g.global
	case BypassTenant:
		b = &g.tenant
	default:
		return
	}
	if rs.better(b.src) {
		b.src = rs
	}
}

func (g *Grant) addPerm(id int32, src *source) {
	hs := g.holds[id]
	held := g.lasting[id>>6]&(1<<(id&63)) != 0
	switch {
	case held:
		return // the first lasting reason explains it; more add nothing
	case src.lasting():
		g.lasting[id>>6] |= 1 << (id & 63)
		g.holds[id] = append([]hold{{src: src}}, hs...)
	default:
		g.holds[id] = append(hs, hold{src: src})
	}
}

// finish writes explanations and the exported lists.
func (e *Engine) finish(g *Grant, now time.Time) {
	x := g.idx
	g.Permissions = []string{}
	for id := range g.holds {
		for i := range g.holds[id] {
			h := &g.holds[id][i]
			if h.src.tail == "" {
				h.src.tail = explainTail(h.src)
			}
			h.reason = x.lead[id] + h.src.tail
		}
		if g.hasID(int32(id), now) != nil {
			g.Permissions = append(g.Permissions, x.names[id]) // ids are in name order
		}
	}
	for _, b := range []*bypass{&g.global, &g.tenant} {
		if b.src == nil {
			continue
		}
		tail := explainBypassTail(b.src, b == &g.global)
		b.why = make([]string, len(x.names))
		for id := range x.names {
			b.why[id] = x.lead[id] + tail
		}
	}
	g.Roles = make([]string, 0, len(g.roles))
	for name := range g.roles {
		g.Roles = append(g.Roles, name)
	}
	sort.Slice(g.Roles, func(i, j int) bool {
		ri, rj := e.rankOf(g.Roles[i], g.Tenant), e.rankOf(g.Roles[j], g.Tenant)
		if ri != rj {
			return ri < rj
		}
		return g.Roles[i] < g.Roles[j]
	})
	if len(g.Roles) > 0 {
		g.primary = g.Roles[0]
	}
}

func (e *Engine) rankOf(name, tenant string) int {
	if r := e.role(name, tenant); r != nil {
		return r.rank
	}
	return len(e.system)
}

// Anonymous is the grant of a caller without a token: the Public pseudo
// role, when the preset has one.
func (e *Engine) Anonymous() *Grant {
	x := e.idx
	g := &Grant{idx: x, lasting: make([]uint64, x.words()), holds: make([][]hold, len(x.names)),
		roles: map[string]*source{}, policy: make([]*source, len(x.policies))}
	if e.public != nil {
		g.addRole(e.public, &source{note: "pseudo role of anonymous callers"})
	}
	e.finish(g, time.Time{})
	return g
}

// explainTail is what follows `permission "name"` in an allow reason.
func explainTail(s *source) string {
	var b strings.Builder
	if s.role != "" {
		b.WriteString(" granted by role ")
		b.WriteString(strconv.Quote(s.role))
	} else {
		b.WriteString(" granted directly")
	}
	writeSource(&b, s)
	return b.String()
}

func explainBypassTail(s *source, global bool) string {
	var b strings.Builder
	b.WriteString(" passed by bypass role ")
	b.WriteString(strconv.Quote(s.role))
	if global {
		b.WriteString(", which passes every check everywhere")
	} else {
		b.WriteString(", which passes every check inside its own tenant")
	}
	writeSource(&b, s)
	return b.String()
}

func writeSource(b *strings.Builder, s *source) {
	switch {
	case s.rule != "":
		b.WriteString(" (" + s.rule + ")")
	case s.grant != "":
		b.WriteString(" (" + s.grant)
		if !s.until.IsZero() {
			b.WriteString(", until " + s.until.UTC().Format(time.RFC3339))
		}
		b.WriteString(")")
	case s.note != "":
		b.WriteString(" (" + s.note + ")")
	}
}

// tenants lists the subject's tenants by the configured source, sorted and
// without duplicates, so the first is stable whatever order Keycloak or the
// token listed them in.
func (e *Engine) tenants(f *Facts, paths *ClaimPaths) []string {
	ts := e.cfg.Tenant
	var out []string
	switch {
	case ts.Organization:
		out = append(out, f.Organizations...)
		if ts.Tree() {
			out = groupTenants(out, f.Groups, ts.Customers.GroupPrefix)
		}
	case ts.GroupPrefix != "":
		out = groupTenants(out, f.Groups, ts.GroupPrefix)
	case ts.Attribute != "":
		out = append(out, f.Attributes[ts.Attribute]...)
	case ts.Claim != "":
		out = append(out, factValues(f, ts.Claim, paths)...)
	}
	sort.Strings(out)
	return dedupe(out)
}

// groupTenants appends the tenant of every group under prefix: the path
// segment right under it (/customers/acme/engineering -> acme).
func groupTenants(out, groups []string, prefix string) []string {
	prefix = strings.TrimRight(prefix, "/") + "/"
	for _, g := range groups {
		if rest, ok := strings.CutPrefix(g, prefix); ok {
			if t, _, _ := strings.Cut(rest, "/"); t != "" {
				out = append(out, t)
			}
		}
	}
	return out
}

// dedupe drops empty strings and repeats from a sorted slice, in place.
func dedupe(s []string) []string {
	out := s[:0]
	for _, v := range s {
		if v != "" && (len(out) == 0 || v != out[len(out)-1]) {
			out = append(out, v)
		}
	}
	return out
}
