package mapping_test

import (
	"encoding/json"
	"slices"
	"strings"
	"testing"

	"github.com/keybridge/keybridge/mapping"
)

func claimsJSON(t *testing.T, s string) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal([]byte(s), &m); err != nil {
		t.Fatal(err)
	}
	return m
}

func TestFactsFromKeycloakClaims(t *testing.T) {
	tests := []struct {
		name   string
		claims string
		paths  mapping.ClaimPaths
		check  func(f mapping.Facts) bool
	}{
		{"a Keycloak access token", `{"sub":"3f2a","preferred_username":"dana","email":"dana@acme.test",
			"realm_access":{"roles":["offline_access","fastn-developer"]},
			"resource_access":{"portal":{"roles":["dev","ops"]},"account":{"roles":["view-profile"]}},
			"groups":["/customers/acme/engineering"]}`, mapping.ClaimPaths{},
			func(f mapping.Facts) bool {
				return f.Subject == "3f2a" && f.Username == "dana" && f.Email == "dana@acme.test" &&
					slices.Equal(f.RealmRoles, []string{"offline_access", "fastn-developer"}) &&
					slices.Equal(f.ClientRoles, []string{"account:view-profile", "portal:dev", "portal:ops"}) &&
					slices.Equal(f.Groups, []string{"/customers/acme/engineering"})
			}},
		{"organization as a list of aliases", `{"organization":["globex","acme"]}`, mapping.ClaimPaths{},
			func(f mapping.Facts) bool { return slices.Equal(f.Organizations, []string{"globex", "acme"}) }},
		{"organization as an object keyed by alias (Keycloak 26 with attributes)", `{"organization":{"globex":{"id":"1"},"acme":{"id":"2","region":["eu"]}}}`, mapping.ClaimPaths{},
			func(f mapping.Facts) bool { return slices.Equal(f.Organizations, []string{"acme", "globex"}) }},
		{"organization as one string", `{"organization":"acme"}`, mapping.ClaimPaths{},
			func(f mapping.Facts) bool { return slices.Equal(f.Organizations, []string{"acme"}) }},
		{"group names without full path are no paths and are dropped", `{"groups":["engineering","/sales"]}`, mapping.ClaimPaths{},
			func(f mapping.Facts) bool { return slices.Equal(f.Groups, []string{"/sales"}) }},
		{"numbers print as Keycloak stores attributes", `{"employee_no":1000000,"ratio":0.5,"active":true}`, mapping.ClaimPaths{},
			func(f mapping.Facts) bool {
				return slices.Equal(f.Attributes["employee_no"], []string{"1000000"}) &&
					slices.Equal(f.Attributes["ratio"], []string{"0.5"}) && slices.Equal(f.Attributes["active"], []string{"true"})
			}},
		{"custom claim paths", `{"sub":"x","roles":["a"],"clients":{"c":{"roles":["r"]}},"memberOf":["/g"],"orgs":["o"],"upn":"u@x","mail":"m@x"}`,
			mapping.ClaimPaths{RealmRoles: "roles", ClientRoles: "clients", Groups: "memberOf", Organization: "orgs", Username: "upn", Email: "mail"},
			func(f mapping.Facts) bool {
				return slices.Equal(f.RealmRoles, []string{"a"}) && slices.Equal(f.ClientRoles, []string{"c:r"}) &&
					slices.Equal(f.Groups, []string{"/g"}) && slices.Equal(f.Organizations, []string{"o"}) && f.Username == "u@x" && f.Email == "m@x"
			}},
		{"wrong types yield nothing, not a panic", `{"sub":7,"realm_access":["x"],"resource_access":{"p":"roles"},"groups":{"a":1},"organization":5,"email":{"x":1}}`, mapping.ClaimPaths{},
			func(f mapping.Facts) bool {
				return f.Subject == "" && f.RealmRoles == nil && f.ClientRoles == nil && f.Groups == nil && f.Email == "" &&
					slices.Equal(f.Organizations, []string{"5"})
			}},
		{"lists keep their scalars and drop the rest", `{"realm_access":{"roles":["a",{"b":1},["c"],null,2]}}`, mapping.ClaimPaths{},
			func(f mapping.Facts) bool { return slices.Equal(f.RealmRoles, []string{"a", "2"}) }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := mapping.FactsFromClaims(claimsJSON(t, tt.claims), tt.paths)
			if !tt.check(f) {
				t.Errorf("facts %+v", f)
			}
		})
	}
}

func TestOrganizationTenantFromEitherClaimShape(t *testing.T) {
	e, err := mapping.New(mapping.Config{Tenant: mapping.TenantSource{Organization: true}, Rules: []mapping.Rule{{Organization: "globex", GrantRole: "Viewer"}}})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []string{`{"sub":"s","organization":["globex","acme"]}`, `{"sub":"s","organization":{"globex":{},"acme":{"id":"x"}}}`} {
		g := e.Resolve(mapping.FactsFromClaims(claimsJSON(t, c), mapping.ClaimPaths{}), nil, now)
		if g.Tenant != "acme" || !slices.Equal(g.Tenants, []string{"acme", "globex"}) || !g.HasRole("Viewer") {
			t.Errorf("%s: tenant %q tenants %v roles %v", c, g.Tenant, g.Tenants, g.Roles)
		}
	}
}

func TestClaimRulesOnWellKnownClaimsReadTheParsedFacts(t *testing.T) {
	// The rule sees the parsed facts, as sync does: full group paths only
	// (a bare name such as "admins" could be any group of that name).
	e, err := mapping.New(mapping.Config{Rules: []mapping.Rule{
		{Claim: "groups", Equals: ptr("/ops"), GrantRole: "Operator"},
		{Claim: "organization", In: []string{"acme"}, GrantRole: "Viewer"},
	}})
	if err != nil {
		t.Fatal(err)
	}
	g := e.Resolve(mapping.FactsFromClaims(claimsJSON(t, `{"sub":"s","groups":["/ops","admins"],"organization":{"acme":{}}}`), mapping.ClaimPaths{}), nil, now)
	if !slices.Equal(g.Roles, []string{"Operator", "Viewer"}) {
		t.Errorf("roles %v", g.Roles)
	}
	if strings.Join(g.Teams, ",") != "/ops" {
		t.Errorf("teams %v", g.Teams)
	}
}
