package mapping_test

import (
	"slices"
	"testing"

	"github.com/keybridge/keybridge/mapping"
)

// A regex rule compares the whole value: "admin" must not match
// "not-an-admin", or anyone who can put a word into a claim gets the role.
func TestRegexRulesMatchTheWholeValue(t *testing.T) {
	tests := []struct {
		regex, value string
		match        bool
	}{
		{"admin", "admin", true},
		{"admin", "not-an-admin", false},
		{"admin", "admin2", false},
		{"ops|admin", "admin", true},
		{"ops|admin", "devops", false}, // the alternation is anchored as a whole
		{"ops|admin", "administrator", false},
		{`.*@acme\.test`, "dana@acme.test", true},
		{`.*@acme\.test`, "dana@acme.test.evil.example", false},
		{`^[a-z]+$`, "abc", true}, // anchors of its own still work
		{`[0-9]+`, "12", true},
		{`[0-9]+`, "x12", false},
	}
	for _, tt := range tests {
		t.Run(tt.regex+" "+tt.value, func(t *testing.T) {
			e := engine(t, "fastn", mapping.Rule{Claim: "dept", Regex: tt.regex, GrantRole: "Viewer"})
			sync := e.Resolve(mapping.Facts{Subject: "s", Attributes: map[string][]string{"dept": {tt.value}}}, nil, now)
			req := e.Resolve(mapping.FactsFromClaims(map[string]any{"sub": "s", "dept": tt.value}, mapping.ClaimPaths{}), nil, now)
			if got := sync.HasRole("Viewer"); got != tt.match {
				t.Errorf("sync: regex %q on %q: %v, want %v", tt.regex, tt.value, got, tt.match)
			}
			if got := req.HasRole("Viewer"); got != tt.match {
				t.Errorf("request: regex %q on %q: %v, want %v", tt.regex, tt.value, got, tt.match)
			}
		})
	}
}

// A rule on the top-level group /admins grants its role to members of
// /admins only. Keycloak's group mapper with "Full group path" off puts the
// bare name "admins" into the token for /customers/x/admins as for /admins,
// so a bare name is not a path and matches no group rule; nor does a path
// that merely ends in /admins.
func TestBareGroupNamesAreExactTopLevelPaths(t *testing.T) {
	e := engine(t, "fastn", mapping.Rule{Group: "/admins", GrantRole: "Admin"})
	for _, groups := range [][]any{{"/customers/x/admins"}, {"admins"}, {"customers/x/admins"}} {
		g := e.Resolve(mapping.FactsFromClaims(map[string]any{"sub": "s", "groups": groups}, mapping.ClaimPaths{}), nil, now)
		if g.HasRole("Admin") {
			t.Errorf("token groups %v: granted Admin by the rule on /admins", groups)
		}
		if slices.Contains(g.Teams, "/admins") {
			t.Errorf("token groups %v: team /admins", groups)
		}
	}
	if g := e.Resolve(mapping.Facts{Subject: "s", Groups: []string{"admins"}}, nil, now); g.HasRole("Admin") {
		t.Error("a group fact without a leading slash matched /admins")
	}
	if g := e.Resolve(mapping.FactsFromClaims(map[string]any{"sub": "s", "groups": []any{"/admins"}}, mapping.ClaimPaths{}), nil, now); !g.HasRole("Admin") {
		t.Error("a member of /admins is not granted Admin")
	}
}

// A group rule without a leading slash is refused, naming the rule: it
// could mean the top-level group or a group of that name anywhere.
func TestGroupRuleWithoutLeadingSlashIsRefused(t *testing.T) {
	c := parseConfig(t, "rules: [{realm_role: x, grant_role: Viewer}, {group: admins, grant_role: Admin}]")
	errs := c.Validate()
	if len(errs) != 1 || errs[0].Error() != `mapping.rules[1].group: "admins" must start with / (a full group path): write /admins to start at the top level, /**/admins to match at any depth` {
		t.Errorf("errors %v", errs)
	}
}

// AttributeInputs lists every user attribute the mapping reads, by the key
// that reads it: the sync checks each against Keycloak's user profile.
func TestAttributeInputsNameEveryAttributeTheMappingReads(t *testing.T) {
	e, err := mapping.New(mapping.Config{Tenant: mapping.TenantSource{Claim: "org.tenant"}, Rules: []mapping.Rule{
		{RealmRole: "x", GrantRole: "Viewer"},
		{Claim: "department", Equals: ptr("ops"), GrantRole: "Operator"},
		{Claim: "email", Regex: `.*@acme\.test`, GrantRole: "Viewer"},
		{Claim: "preferred_username", In: []string{"dana"}, GrantRole: "Viewer"},
		{Claim: "groups", Equals: ptr("/ops"), GrantRole: "Viewer"}, // a fact, no attribute
		{Claim: "sub", Equals: ptr("s"), GrantRole: "Viewer"},
	}})
	if err != nil {
		t.Fatal(err)
	}
	want := []mapping.AttributeInput{
		{Key: "mapping.tenant.claim", Attribute: "org.tenant", Claim: "org.tenant"},
		{Key: "mapping.rules[1].claim", Attribute: "department", Claim: "department"},
		{Key: "mapping.rules[2].claim", Attribute: "email", Claim: "email"},
		{Key: "mapping.rules[3].claim", Attribute: "username", Claim: "preferred_username"},
	}
	if got := e.AttributeInputs(); !slices.Equal(got, want) {
		t.Errorf("inputs\n got %+v\nwant %+v", got, want)
	}
	e, _ = mapping.New(mapping.Config{Tenant: mapping.TenantSource{Attribute: "tenant_id"}})
	if got := e.AttributeInputs(); !slices.Equal(got, []mapping.AttributeInput{{Key: "mapping.tenant.attribute", Attribute: "tenant_id", Claim: "tenant_id"}}) {
		t.Errorf("attribute tenant: %+v", got)
	}
	e, _ = mapping.New(mapping.Config{Tenant: mapping.TenantSource{GroupPrefix: "/customers"}, Rules: []mapping.Rule{{Group: "/a", GrantRole: "Viewer"}}})
	if got := e.AttributeInputs(); len(got) != 0 {
		t.Errorf("group tenant and rules: %+v", got)
	}
}
