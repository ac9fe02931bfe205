package mapping

import "fmt"

// AttributeInput is a user attribute whose value the mapping reads: the
// tenant source or a claim rule. Whoever can edit the attribute chooses the
// tenant or role it decides, so the sync checks Keycloak's user profile for
// each (see sync.CheckAttributeSources).
type AttributeInput struct {
	// Key is the config key that reads it: "mapping.tenant.attribute",
	// "mapping.rules[3].claim".
	Key string
	// Attribute is the user attribute read at sync time. Username and email
	// are the profile attributes "username" and "email".
	Attribute string
	// Claim is the token claim path read at request time. Keycloak puts the
	// attribute there through a protocol mapper, which may map an attribute
	// of another name: the same name is assumed unless the realm's mappers
	// say otherwise.
	Claim string
}

// AttributeInputs lists the user attributes the mapping reads, in config
// order. Subject, roles, groups and organizations are not attributes: users
// can't edit them, and they are absent.
func (e *Engine) AttributeInputs() []AttributeInput {
	var out []AttributeInput
	add := func(key, claim string) {
		if attr := e.attributeOf(claim); attr != "" {
			out = append(out, AttributeInput{Key: key, Attribute: attr, Claim: claim})
		}
	}
	if a := e.cfg.Tenant.Attribute; a != "" {
		// At request time the top-level claim of the same name.
		out = append(out, AttributeInput{Key: "mapping.tenant.attribute", Attribute: a, Claim: a})
	}
	if c := e.cfg.Tenant.Claim; c != "" {
		add("mapping.tenant.claim", c)
	}
	for i, r := range e.cfg.Rules {
		if r.Claim != "" {
			add(fmt.Sprintf("mapping.rules[%d].claim", i), r.Claim)
		}
	}
	return out
}

// attributeOf is the user attribute behind a claim path as factValues reads
// it at sync time, or "" for a fact that is no attribute.
func (e *Engine) attributeOf(path string) string {
	p := &e.cfg.Claims
	switch path {
	case "sub", p.RealmRoles, p.ClientRoles, p.Groups, p.Organization:
		return ""
	case p.Username:
		return "username"
	case p.Email:
		return "email"
	}
	return path
}
