package sync

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/keybridge/keybridge/mapping"
)

// The user profile check. A tenant or role read from a user attribute is
// only as trustworthy as the people who can write that attribute: if
// Keycloak's user profile lets users edit it in the account console, anyone
// picks their own tenant or role. CheckAttributeSources reads the realm's
// user profile (and the protocol mappers that put attributes into tokens)
// at start-up and before every full sync, and refuses both while an
// attribute the mapping reads is user-editable, unless
// mapping.allow_user_edited_attributes says to go on.

// UserProfile is the part of a realm's user profile configuration (UPConfig,
// GET /admin/realms/{realm}/users/profile) that says who edits what.
type UserProfile struct {
	// UnmanagedAttributePolicy governs attributes the profile does not
	// declare: ENABLED (users and admins edit them), ADMIN_EDIT (admins
	// only), ADMIN_VIEW (admins read them, nobody writes them), or absent
	// (disabled: hidden from the admin API and the account console alike).
	UnmanagedAttributePolicy string             `json:"unmanagedAttributePolicy"`
	Attributes               []ProfileAttribute `json:"attributes"`
}

// ProfileAttribute is one declared attribute. Without permissions nobody
// edits it.
type ProfileAttribute struct {
	Name        string `json:"name"`
	Permissions *struct {
		View []string `json:"view"`
		Edit []string `json:"edit"`
	} `json:"permissions"`
}

// UserEditable is a user attribute the mapping reads that users can edit
// themselves.
type UserEditable struct {
	Input mapping.AttributeInput
	// Attribute is the editable attribute: Input.Attribute, or the one a
	// protocol mapper (Mapper) puts into Input.Claim.
	Attribute string
	Mapper    string
	Reason    string // why users can edit it
	Fix       string // the Keycloak setting that stops them
}

func (u UserEditable) String() string {
	what := fmt.Sprintf("user attribute %q", u.Attribute)
	if u.Mapper != "" {
		what = fmt.Sprintf("claim %q, which %s fills from user attribute %q", u.Input.Claim, u.Mapper, u.Attribute)
	}
	return fmt.Sprintf("%s reads %s, which users can edit (%s): in Keycloak, %s", u.Input.Key, what, u.Reason, u.Fix)
}

// ErrUserEditable is returned, wrapped in a *UserEditableError, when an
// attribute the mapping reads is user-editable and the config does not
// allow it.
var ErrUserEditable = errors.New("the mapping reads user attributes that users can edit themselves")

// UserEditableError lists every user-editable attribute the mapping reads,
// each with the Keycloak setting to change.
type UserEditableError struct{ Found []UserEditable }

func (e *UserEditableError) Error() string {
	items := make([]string, len(e.Found))
	for i, f := range e.Found {
		items[i] = f.String()
	}
	return fmt.Sprintf("%v, so anyone could choose their own tenant or role: %s; or set mapping.allow_user_edited_attributes: true to accept that",
		ErrUserEditable, strings.Join(items, "; "))
}

func (e *UserEditableError) Unwrap() error { return ErrUserEditable }

// attributeSettings is what Keycloak says about who writes the attributes
// the mapping reads.
type attributeSettings struct {
	profile             UserProfile
	editUsernameAllowed *bool // nil: not read
	mappers             []claimMapper
}

// claimMapper is an OIDC protocol mapper that copies a user attribute (or
// user property: username, email, firstName, lastName) into a claim.
type claimMapper struct {
	owner, name, claim, attribute string
}

type protocolMapper struct {
	Name           string            `json:"name"`
	Protocol       string            `json:"protocol"`
	ProtocolMapper string            `json:"protocolMapper"`
	Config         map[string]string `json:"config"`
}

type mappedClient struct {
	ClientID        string           `json:"clientId"`
	ProtocolMappers []protocolMapper `json:"protocolMappers"`
}

// attributeMappers lists the attribute and property mappers of every client
// and client scope: the claims a token can carry from user attributes.
func (k *Keycloak) attributeMappers(ctx context.Context) ([]claimMapper, error) {
	var scopes []struct {
		Name            string           `json:"name"`
		ProtocolMappers []protocolMapper `json:"protocolMappers"`
	}
	if err := k.get(ctx, "list_client_scopes", "/client-scopes", nil, &scopes); err != nil {
		return nil, k.roleHint(err, "list the realm's client scopes and their protocol mappers", "view-clients")
	}
	clients, err := pages[mappedClient](ctx, k, "list_clients", "/clients", nil)
	if err != nil {
		return nil, k.roleHint(err, "list the realm's clients and their protocol mappers", "view-clients")
	}
	// With query-clients alone Keycloak answers 200 with the clients it
	// hides filtered out, down to an empty list: the client keybridge signs
	// in with is always there for a service account that sees them all.
	if !slices.ContainsFunc(clients, func(c mappedClient) bool { return c.ClientID == k.clientID }) {
		return nil, k.roleHint(fmt.Errorf("%w: the client list came back without client %q", ErrForbidden, k.clientID),
			"list the realm's clients and their protocol mappers", "view-clients")
	}
	var out []claimMapper
	add := func(owner string, ms []protocolMapper) {
		for _, m := range ms {
			if m.Protocol != "" && m.Protocol != "openid-connect" {
				continue
			}
			switch m.ProtocolMapper {
			case "oidc-usermodel-attribute-mapper", "oidc-usermodel-property-mapper":
				if m.Config["claim.name"] != "" && m.Config["user.attribute"] != "" {
					out = append(out, claimMapper{owner: owner, name: m.Name, claim: m.Config["claim.name"], attribute: m.Config["user.attribute"]})
				}
			}
		}
	}
	for _, s := range scopes {
		add(fmt.Sprintf("client scope %q", s.Name), s.ProtocolMappers)
	}
	for _, c := range clients {
		add(fmt.Sprintf("client %q", c.ClientID), c.ProtocolMappers)
	}
	return out, nil
}

// roleHint turns a 403 into the role the service account lacks.
func (k *Keycloak) roleHint(err error, what, role string) error {
	if errors.Is(err, ErrForbidden) {
		return fmt.Errorf("%s: %w: grant the service account of client %q the realm-management role %s (Clients → %s → Service account roles → Assign role)",
			what, err, k.clientID, role, k.clientID)
	}
	return fmt.Errorf("%s: %w", what, err)
}

// EditableAttributes reads who may edit the attributes behind inputs and
// returns those users can edit, with notes on attributes Keycloak hides
// from the sync. It makes no request when inputs is empty.
func (k *Keycloak) EditableAttributes(ctx context.Context, inputs []mapping.AttributeInput) ([]UserEditable, []string, error) {
	if len(inputs) == 0 {
		return nil, nil, nil
	}
	var s attributeSettings
	// Any realm-management role reads the profile; view-realm is the one
	// that also shows the realm's "edit username" setting.
	if err := k.get(ctx, "get_user_profile", "/users/profile", nil, &s.profile); err != nil {
		return nil, nil, k.roleHint(err, "read the realm's user profile", "view-realm")
	}
	mappers, err := k.attributeMappers(ctx)
	if err != nil {
		return nil, nil, err
	}
	s.mappers = mappers
	if slices.Contains(s.attributesOf(inputs), "username") {
		var realm struct {
			EditUsernameAllowed *bool `json:"editUsernameAllowed"`
		}
		if err := k.get(ctx, "get_realm", "", nil, &realm); err != nil {
			return nil, nil, k.roleHint(err, "read the realm's settings", "view-realm")
		}
		if realm.EditUsernameAllowed == nil {
			// Without view-realm Keycloak answers with the realm's name only.
			return nil, nil, k.roleHint(fmt.Errorf("%w: the realm's settings came back without editUsernameAllowed", ErrForbidden),
				"read whether users may edit their username", "view-realm")
		}
		s.editUsernameAllowed = realm.EditUsernameAllowed
	}
	found, notes := s.editable(inputs)
	return found, notes, nil
}

// attributesOf lists every attribute behind inputs, mapped ones included.
func (s *attributeSettings) attributesOf(inputs []mapping.AttributeInput) []string {
	var out []string
	for _, in := range inputs {
		for _, c := range s.sources(in) {
			out = append(out, c.attribute)
		}
	}
	return out
}

type source struct{ attribute, mapper string }

// sources are the attributes an input's value can come from: the attribute
// of the same name (what sync reads), and any a protocol mapper copies into
// the claim (what a token carries).
func (s *attributeSettings) sources(in mapping.AttributeInput) []source {
	out := []source{{attribute: in.Attribute}}
	for _, m := range s.mappers {
		// Keycloak nests a claim on dots unless they are escaped "\.".
		if strings.ReplaceAll(m.claim, `\.`, ".") != in.Claim || m.attribute == in.Attribute {
			continue
		}
		out = append(out, source{attribute: m.attribute, mapper: fmt.Sprintf("protocol mapper %q of %s", m.name, m.owner)})
	}
	return out
}

// editable judges each source of each input.
func (s *attributeSettings) editable(inputs []mapping.AttributeInput) ([]UserEditable, []string) {
	var found []UserEditable
	var notes []string
	for _, in := range inputs {
		for _, src := range s.sources(in) {
			reason, fix, note := s.userEdits(src.attribute)
			if reason != "" {
				found = append(found, UserEditable{Input: in, Attribute: src.attribute, Mapper: src.mapper, Reason: reason, Fix: fix})
			}
			if note != "" && src.mapper == "" {
				notes = append(notes, fmt.Sprintf("%s reads user attribute %q, %s", in.Key, src.attribute, note))
			}
		}
	}
	return found, notes
}

// userEdits says why users can edit attr and what to change in Keycloak,
// or returns "" for both; note flags an attribute the sync can't read.
func (s *attributeSettings) userEdits(attr string) (reason, fix, note string) {
	for _, a := range s.profile.Attributes {
		if a.Name != attr {
			continue
		}
		if a.Permissions == nil || !slices.Contains(a.Permissions.Edit, "user") {
			return "", "", ""
		}
		if attr == "username" {
			if s.editUsernameAllowed != nil && !*s.editUsernameAllowed {
				return "", "", "" // Keycloak keeps the username read-only for users
			}
			return `the realm lets users edit their username`, `Realm settings → Login → Edit username: Off`, ""
		}
		return `the user profile lists "User" under who can edit it`,
			fmt.Sprintf(`Realm settings → User profile → attribute %s → Permissions: uncheck "User" under "Who can edit"`, attr), ""
	}
	switch s.profile.UnmanagedAttributePolicy {
	case "ENABLED":
		return `it is not declared in the user profile and unmanaged attributes are Enabled`,
			fmt.Sprintf(`Realm settings → General → Unmanaged attributes: "Only administrators can write", or declare %s under Realm settings → User profile with only "Admin" under "Who can edit"`, attr), ""
	case "ADMIN_EDIT", "ADMIN_VIEW":
		return "", "", ""
	}
	return "", "", `which is not declared in the user profile while unmanaged attributes are Disabled: Keycloak hides it from the admin API, so sync reads no value (declare it under Realm settings → User profile with only "Admin" under "Who can edit")`
}

// CheckAttributeSources refuses a mapping that reads user attributes users
// can edit themselves: it returns a *UserEditableError naming each one and
// the Keycloak setting to change, unless mapping.allow_user_edited_attributes
// is set, in which case it logs them at WARN and returns nil. serve calls it
// at start-up and Run before every full sync. A profile keybridge can't read
// (Keycloak down, or a role missing) is an error too: the check never passes
// unread.
func (s *Service) CheckAttributeSources(ctx context.Context) error {
	e := s.Engine()
	found, notes, err := s.KC.EditableAttributes(ctx, e.AttributeInputs())
	if err != nil {
		return fmt.Errorf("check who can edit the user attributes the mapping reads: %w", err)
	}
	if s.Metrics != nil {
		s.Metrics.MappingUserEditable.Set(float64(len(found)))
	}
	for _, n := range notes {
		if s.Log != nil {
			s.Log.WarnContext(ctx, "mapping reads an attribute the sync can't see", "note", n)
		}
	}
	if len(found) == 0 {
		return nil
	}
	refusal := &UserEditableError{Found: found}
	if !e.Config().AllowUserEditedAttributes {
		return refusal
	}
	if s.Log != nil {
		attrs := make([]string, len(found))
		for i, f := range found {
			attrs[i] = f.Input.Key + ": " + f.Attribute
		}
		s.Log.WarnContext(ctx, "mapping.allow_user_edited_attributes is set: users can choose the tenant or roles these attributes decide",
			"attributes", attrs, "detail", refusal.Error())
	}
	return nil
}
