package sync

import (
	"encoding/json"

	"github.com/keybridge/keybridge/mapping"
)

// AttrTenantOrganization is the group attribute naming the organization
// (its alias) a customer's group belongs to (tenanttree.go).
const AttrTenantOrganization = "keybridge.tenant.organization"

// TenantMarks are the keybridge.tenant.* attributes of a group
// (mapping.GroupAttrTenantName, mapping.GroupAttrTenantDisabled), by which
// tenant administration renames and disables a group tenant. Decoding a
// group's attributes keeps only these: a realm's other group attributes
// cost the snapshot nothing.
type TenantMarks struct {
	Name     string
	Disabled bool
	// Organizations are the values of keybridge.tenant.organization: one
	// for a customer of an organization (tenanttree.go).
	Organizations []string
}

// UnmarshalJSON reads a group's "attributes" object.
func (m *TenantMarks) UnmarshalJSON(b []byte) error {
	var attrs map[string][]string
	if err := json.Unmarshal(b, &attrs); err != nil {
		return err
	}
	*m = TenantMarks{}
	if v := attrs[mapping.GroupAttrTenantName]; len(v) > 0 {
		m.Name = v[0]
	}
	if v := attrs[mapping.GroupAttrTenantDisabled]; len(v) > 0 {
		m.Disabled = v[0] == "true"
	}
	m.Organizations = attrs[AttrTenantOrganization]
	return nil
}

// MarshalJSON writes the marks back as the attributes they were read
// from, so a group encoded and decoded again keeps them.
func (m TenantMarks) MarshalJSON() ([]byte, error) {
	attrs := map[string][]string{}
	if m.Name != "" {
		attrs[mapping.GroupAttrTenantName] = []string{m.Name}
	}
	if m.Disabled {
		attrs[mapping.GroupAttrTenantDisabled] = []string{"true"}
	}
	if len(m.Organizations) > 0 {
		attrs[AttrTenantOrganization] = m.Organizations
	}
	return json.Marshal(attrs)
}

// tenantStatus is a tenant's status as its organization or group says.
func tenantStatus(disabled bool) string {
	if disabled {
		return "disabled"
	}
	return "active"
}
