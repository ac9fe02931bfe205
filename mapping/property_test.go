package mapping_test

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/keybridge/keybridge/mapping"
)

// The pools are small so random facts and random rules meet often.
var (
	poolRealm   = []string{"fastn-owner", "fastn-developer", "fastn-viewer", "offline_access", "ops"}
	poolClient  = []string{"portal:dev", "portal:operator", "crm:x", "portal:x"}
	poolGroups  = []string{"/customers/acme", "/customers/globex/ops", "/customers/acme/engineering/api", "/engineering/backend", "/staff", "/x/y/z"}
	poolGlobs   = []string{"/customers/*", "/customers/**", "/engineering/**", "/**/ops", "/*/*/engineering/**", "/staff", "/**"}
	poolOrgs    = []string{"acme", "globex", "initech"}
	poolAttrVal = []string{"ops", "eng", "acme", "globex", "3", "1000000", "true"}
	poolAttrs   = []string{"department", "tenant_id", "level"}
	poolRoles   = []string{"Owner", "Admin", "Developer", "Operator", "Viewer", "End User"}
	poolPerms   = []string{"billing.view", "widget.use", "workflows.deploy_prod", "people.invite", "connections.share"}
	poolTenants = []string{"", "", "acme", "globex"}
)

func pick[T any](r *rand.Rand, pool []T) T { return pool[r.IntN(len(pool))] }

func some(r *rand.Rand, pool []string) []string {
	var out []string
	for _, p := range pool {
		if r.IntN(3) == 0 {
			out = append(out, p)
		}
	}
	return out
}

// randomFacts builds facts as sync reads them from Keycloak's admin API.
func randomFacts(r *rand.Rand) mapping.Facts {
	f := mapping.Facts{
		Subject:       "u-" + strconv.Itoa(r.IntN(5)),
		Username:      pick(r, []string{"dana", "victor", ""}),
		Email:         pick(r, []string{"dana@acme.test", "v@globex.test", ""}),
		RealmRoles:    some(r, poolRealm),
		ClientRoles:   some(r, poolClient),
		Groups:        some(r, poolGroups),
		Organizations: some(r, poolOrgs),
		Attributes:    map[string][]string{},
	}
	for _, a := range poolAttrs {
		switch r.IntN(3) {
		case 1:
			f.Attributes[a] = []string{pick(r, poolAttrVal)}
		case 2:
			f.Attributes[a] = []string{pick(r, poolAttrVal), pick(r, poolAttrVal)}
		}
	}
	return f
}

func randomRule(r *rand.Rand) mapping.Rule {
	var rule mapping.Rule
	switch r.IntN(6) {
	case 0:
		rule.RealmRole = pick(r, poolRealm)
	case 1:
		rule.ClientRole = pick(r, poolClient)
	case 2:
		rule.Group = pick(r, poolGlobs)
	case 3:
		rule.Organization = pick(r, poolOrgs)
	case 4:
		rule.Claim = pick(r, append(slices.Clone(poolAttrs), "email", "sub", "groups", "organization", "realm_access.roles", "preferred_username"))
		switch r.IntN(4) {
		case 0:
			rule.Equals = ptr(pick(r, append(slices.Clone(poolAttrVal), "/staff", "fastn-owner")))
		case 1:
			rule.In = some(r, poolAttrVal)
			if len(rule.In) == 0 {
				rule.In = []string{"ops"}
			}
		case 2:
			rule.Regex = pick(r, []string{"^a", "@acme", "^[0-9]+$", "^/customers/", "o"})
		}
	default:
		rule.RealmRole = "ops"
	}
	if r.IntN(2) == 0 {
		rule.GrantRole = pick(r, poolRoles)
	} else {
		rule.GrantPermissions = some(r, poolPerms)
		if len(rule.GrantPermissions) == 0 {
			rule.GrantRoles = []string{pick(r, poolRoles), pick(r, poolRoles)}
		}
	}
	rule.Tenant = pick(r, poolTenants)
	return rule
}

// claimsOf renders facts as Keycloak puts them in an access token: realm
// and client roles, full group paths, organization in either of Keycloak
// 26's shapes, and user attributes as top-level claims (a list when
// multivalued, a JSON number when the mapper is numeric).
func claimsOf(r *rand.Rand, f mapping.Facts) map[string]any {
	list := func(s []string) []any {
		out := make([]any, len(s))
		for i, v := range s {
			out[i] = v
		}
		return out
	}
	ra := map[string]any{}
	for _, cr := range f.ClientRoles {
		c, role, _ := strings.Cut(cr, ":")
		m, _ := ra[c].(map[string]any)
		if m == nil {
			m = map[string]any{"roles": []any{}}
			ra[c] = m
		}
		m["roles"] = append(m["roles"].([]any), role)
	}
	c := map[string]any{"sub": f.Subject, "realm_access": map[string]any{"roles": list(f.RealmRoles)}, "resource_access": ra}
	if f.Username != "" {
		c["preferred_username"] = f.Username
	}
	if f.Email != "" {
		c["email"] = f.Email
	}
	if len(f.Groups) > 0 {
		c["groups"] = list(f.Groups)
	}
	if len(f.Organizations) > 0 {
		if r.IntN(2) == 0 {
			c["organization"] = list(f.Organizations)
		} else {
			orgs := map[string]any{}
			for _, o := range f.Organizations {
				orgs[o] = map[string]any{"id": "id-" + o}
			}
			c["organization"] = orgs
		}
	}
	for k, v := range f.Attributes {
		var vals []any
		for _, s := range v {
			if n, err := strconv.Atoi(s); err == nil && r.IntN(2) == 0 {
				vals = append(vals, float64(n)) // what encoding/json gives for a number
			} else {
				vals = append(vals, s)
			}
		}
		if len(vals) == 1 {
			c[k] = vals[0]
		} else {
			c[k] = vals
		}
	}
	return c
}

func TestSyncAndRequestResolutionAgree(t *testing.T) {
	sources := []mapping.TenantSource{{GroupPrefix: "/customers"}, {Organization: true}, {Attribute: "tenant_id"}, {Claim: "tenant_id"}, {Claim: "email"}, {}}
	for seed := uint64(1); seed <= 40; seed++ {
		r := rand.New(rand.NewPCG(seed, 0x6b6579))
		cfg := mapping.Config{Preset: "fastn", Tenant: pick(r, sources)}
		for range 1 + r.IntN(12) {
			cfg.Rules = append(cfg.Rules, randomRule(r))
		}
		e, err := mapping.New(cfg)
		if err != nil {
			t.Fatalf("seed %d: generated an invalid config: %v", seed, err)
		}
		perms := e.Catalog().Permissions
		for i := range 150 {
			f := randomFacts(r)
			claims := claimsOf(r, f)
			sync := e.Resolve(f, nil, now)
			req := e.Resolve(mapping.FactsFromClaims(claims, mapping.ClaimPaths{}), nil, now)
			if diff := grantDiff(sync, req); diff != "" {
				t.Fatalf("seed %d case %d: %s\ntenant source %+v\nrules %+v\nfacts %+v\nclaims %v", seed, i, diff, cfg.Tenant, cfg.Rules, f, claims)
			}
			for _, p := range perms {
				res := mapping.Resource{Tenant: pick(r, poolTenants)}
				a, b := decide(e, sync, res, p), decide(e, req, res, p)
				if a != b {
					t.Fatalf("seed %d case %d: %s decided %+v at sync, %+v at request", seed, i, p, a, b)
				}
			}
		}
	}
}

func grantDiff(a, b *mapping.Grant) string {
	switch {
	case a.Tenant != b.Tenant:
		return fmt.Sprintf("tenant %q vs %q", a.Tenant, b.Tenant)
	case !slices.Equal(a.Tenants, b.Tenants):
		return fmt.Sprintf("tenants %v vs %v", a.Tenants, b.Tenants)
	case !slices.Equal(a.Roles, b.Roles):
		return fmt.Sprintf("roles %v vs %v", a.Roles, b.Roles)
	case !slices.Equal(a.Permissions, b.Permissions):
		return fmt.Sprintf("permissions %v vs %v", a.Permissions, b.Permissions)
	case !slices.Equal(a.Teams, b.Teams):
		return fmt.Sprintf("teams %v vs %v", a.Teams, b.Teams)
	case a.PrimaryRole() != b.PrimaryRole() || a.Subject != b.Subject || a.Username != b.Username:
		return fmt.Sprintf("primary/subject/username %q %q %q vs %q %q %q", a.PrimaryRole(), a.Subject, a.Username, b.PrimaryRole(), b.Subject, b.Username)
	}
	return ""
}

// TestThePropertyCanFail guards the property test against proving nothing:
// a token that drops a fact must make the two resolutions differ.
func TestThePropertyCanFail(t *testing.T) {
	e := engine(t, "fastn", mapping.Rule{RealmRole: "fastn-owner", GrantRole: "Owner"})
	r := rand.New(rand.NewPCG(1, 2))
	f := mapping.Facts{Subject: "s", RealmRoles: []string{"fastn-owner"}, Groups: []string{"/customers/acme"}}
	claims := claimsOf(r, f)
	delete(claims, "realm_access")
	if grantDiff(e.Resolve(f, nil, now), e.Resolve(mapping.FactsFromClaims(claims, mapping.ClaimPaths{}), nil, now)) == "" {
		t.Error("grantDiff saw no difference between an Owner and a subject without roles")
	}
}
