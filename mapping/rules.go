package mapping

import (
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"
)

type compiledRule struct {
	Rule
	index  int
	ref    string // "rule #2: realm_role fastn-developer", for explanations
	group  glob
	regex  *regexp.Regexp
	roles  []string // system roles granted
	perms  []string // permissions granted
	tenant string   // pinned tenant, or ""
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
	cr := compiledRule{Rule: r, index: i, tenant: r.Tenant}
	var set []string
	var what string
	for _, m := range []struct{ key, val string }{
		{"realm_role", r.RealmRole}, {"client_role", r.ClientRole}, {"group", r.Group},
		{"organization", r.Organization}, {"claim", r.Claim},
	} {
		if m.val != "" {
			set = append(set, m.key)
			what = m.key + " " + m.val
		}
	}
	switch {
	case len(set) == 0:
		add("", "no matcher: set one of realm_role, client_role, group, organization, claim")
	case len(set) > 1:
		add("", "more than one matcher (%s): a rule matches exactly one fact; split it into several rules", strings.Join(set, ", "))
	}
	if r.ClientRole != "" {
		if c, role, ok := strings.Cut(r.ClientRole, ":"); !ok || c == "" || role == "" {
			add("client_role", "%q is not client:role", r.ClientRole)
		}
	}
	if r.Group != "" {
		g, err := compileGlob(r.Group)
		if err != nil {
			add("group", "%v", err)
		}
		cr.group = g
	}
	if r.Claim != "" {
		if err := validPath(r.Claim); err != nil {
			add("claim", "%v", err)
		}
	} else if r.Equals != nil || len(r.In) > 0 || r.Regex != "" {
		add("", "equals, in and regex compare a claim: set claim, or drop them")
	}
	conds := 0
	if r.Equals != nil {
		conds++
		what += " equals " + strconv.Quote(*r.Equals)
	}
	if len(r.In) > 0 {
		conds++
		what += " in [" + strings.Join(r.In, " ") + "]"
	}
	if r.Regex != "" {
		conds++
		what += " regex " + r.Regex
		// The pattern must match the whole value: unanchored, "admin" would
		// match "not-an-admin" and any value a user can put into a claim.
		// The pattern compiles on its own first, so the wrapping can't
		// rebalance a stray parenthesis into a different, valid pattern.
		if _, err := regexp.Compile(r.Regex); err != nil {
			add("regex", "%q does not compile: %v", r.Regex, err)
		} else if re, err := regexp.Compile(`^(?:` + r.Regex + `)$`); err != nil {
			add("regex", "%q does not compile anchored: %v", r.Regex, err)
		} else {
			cr.regex = re
		}
	}
	if conds > 1 {
		add("", "use only one of equals, in, regex")
	}

	if r.GrantRole == "" && len(r.GrantRoles) == 0 && len(r.GrantPermissions) == 0 {
		add("", "grants nothing: set grant_role, grant_roles or grant_permissions")
	}
	checkRole := func(k, name string) {
		if rr, ok := e.roles[name]; !ok || rr.Kind != KindSystem {
			add(k, "unknown role %q (known: %s)", name, strings.Join(e.SystemRoleNames(), ", "))
			return
		}
		cr.roles = append(cr.roles, name)
	}
	if r.GrantRole != "" {
		checkRole("grant_role", r.GrantRole)
	}
	for j, name := range r.GrantRoles {
		checkRole(fmt.Sprintf("grant_roles[%d]", j), name)
	}
	for j, p := range r.GrantPermissions {
		if !e.Known(p) {
			add(fmt.Sprintf("grant_permissions[%d]", j), "unknown permission %q (see `keybridge roles` or mapping.permissions to add one)", p)
			continue
		}
		cr.perms = append(cr.perms, p)
	}
	if r.Tenant != "" && strings.TrimSpace(r.Tenant) != r.Tenant {
		add("tenant", "%q has surrounding spaces", r.Tenant)
	}
	cr.ref = fmt.Sprintf("rule #%d: %s", i, what)
	return cr, errs
}

// validPath checks a dotted claim path: no empty segments, which would
// never match and are always a typo.
func validPath(p string) error {
	for _, s := range strings.Split(p, ".") {
		if s == "" {
			return fmt.Errorf("%q has an empty segment", p)
		}
	}
	return nil
}

// glob is a group pattern split into segments: a literal, "*" (one segment)
// or "**" (any number, none included).
type glob []string

func compileGlob(g string) (glob, error) {
	if !strings.HasPrefix(g, "/") {
		return nil, fmt.Errorf("%q must start with / (a full group path): write /%s to start at the top level, /**/%s to match at any depth", g, g, g)
	}
	segs := strings.Split(g[1:], "/")
	var out glob
	for _, s := range segs {
		switch {
		case s == "":
			return nil, fmt.Errorf("%q has an empty segment", g)
		case s == "**" && len(out) > 0 && out[len(out)-1] == "**":
			continue // "**/**" is "**"
		case s != "*" && s != "**" && strings.ContainsAny(s, "*?[]"):
			return nil, fmt.Errorf("%q: * and ** must be whole segments", g)
		}
		out = append(out, s)
	}
	return out, nil
}

// match runs the pattern as a set of states over the path's segments, so
// its cost is bounded by len(pattern) x len(path) however many ** a config
// holds (backtracking would be exponential in them).
func (g glob) match(path string) bool {
	if !strings.HasPrefix(path, "/") {
		return false // a bare group name is no path: it could sit anywhere in the tree
	}
	var buf [2][17]bool
	cur, next := buf[0][:], buf[1][:]
	if len(g)+1 > len(cur) {
		cur, next = make([]bool, len(g)+1), make([]bool, len(g)+1)
	}
	cur, next = cur[:len(g)+1], next[:len(g)+1]
	clear(cur)
	cur[0] = true
	g.skipEmpty(cur)
	rest := strings.TrimPrefix(path, "/")
	for {
		seg, tail, more := strings.Cut(rest, "/")
		clear(next)
		alive := false
		for i, p := range g {
			if !cur[i] {
				continue
			}
			switch {
			case p == "**":
				next[i] = true
				alive = true
			case p == "*" || p == seg:
				next[i+1] = true
				alive = true
			}
		}
		if !alive {
			return false
		}
		g.skipEmpty(next)
		cur, next = next, cur
		if !more {
			break
		}
		rest = tail
	}
	return cur[len(g)]
}

// skipEmpty lets ** match no segment at all.
func (g glob) skipEmpty(states []bool) {
	for i, p := range g {
		if p == "**" && states[i] {
			states[i+1] = true
		}
	}
}

func (r *compiledRule) matches(f *Facts, paths *ClaimPaths) bool {
	switch {
	case r.RealmRole != "":
		return slices.Contains(f.RealmRoles, r.RealmRole)
	case r.ClientRole != "":
		return slices.Contains(f.ClientRoles, r.ClientRole)
	case r.Organization != "":
		return slices.Contains(f.Organizations, r.Organization)
	case r.Group != "":
		for _, g := range f.Groups {
			if r.group.match(g) {
				return true
			}
		}
		return false
	case r.Claim != "":
		return matchValues(factValues(f, r.Claim, paths), r.Equals, r.In, r.regex)
	}
	return false
}

// factValues reads a claim path from the facts. Paths that name a fact
// keybridge already parsed (roles, groups, organization, sub, username,
// email) read the parsed fact, at sync time and at request time alike;
// anything else reads the token's claim, or at sync time the user
// attribute. That is what keeps sync and request resolution equal.
func factValues(f *Facts, path string, paths *ClaimPaths) []string {
	switch path {
	case "sub":
		return nonEmpty(f.Subject)
	case paths.Username:
		return nonEmpty(f.Username)
	case paths.Email:
		return nonEmpty(f.Email)
	case paths.RealmRoles:
		return f.RealmRoles
	case paths.ClientRoles:
		return f.ClientRoles
	case paths.Groups:
		return f.Groups
	case paths.Organization:
		return f.Organizations
	}
	if f.Claims != nil {
		return claimStrings(lookup(f.Claims, path))
	}
	return f.Attributes[path]
}

func nonEmpty(s string) []string {
	if s == "" {
		return nil
	}
	return []string{s}
}

func matchValues(vals []string, equals *string, in []string, re *regexp.Regexp) bool {
	if equals == nil && len(in) == 0 && re == nil {
		for _, v := range vals {
			if v != "" {
				return true // presence
			}
		}
		return false
	}
	for _, v := range vals {
		switch {
		case equals != nil && v == *equals:
			return true
		case len(in) > 0 && slices.Contains(in, v):
			return true
		case re != nil && re.MatchString(v):
			return true
		}
	}
	return false
}
