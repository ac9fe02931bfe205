package sync_test

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/keybridge/keybridge/internal/metrics"
	"github.com/keybridge/keybridge/internal/testenv"
	"github.com/keybridge/keybridge/mapping"
	ksync "github.com/keybridge/keybridge/sync"
)

// profileRealm is a throwaway realm (the demo realm's user profile is
// shared) with one user placed by attribute and a client whose protocol
// mapper puts user attribute "org" into claim "tenant".
func profileRealm(t *testing.T, roles []string) (testenv.Keycloak, *admin) {
	t.Helper()
	kc := testenv.RequireKeycloak(t)
	realm := testenv.NewRealm(t, kc, roles, map[string]any{
		"users": []any{map[string]any{"username": "pat", "enabled": true, "email": "pat@acme.test", "firstName": "Pat", "lastName": "Lee",
			"attributes": map[string]any{"tenant_id": []string{"acme"}, "org": []string{"acme"}}}},
		"clients": []any{map[string]any{"clientId": "app", "publicClient": true, "protocolMappers": []any{map[string]any{
			"name": "tenant", "protocol": "openid-connect", "protocolMapper": "oidc-usermodel-attribute-mapper",
			"config": map[string]any{"user.attribute": "org", "claim.name": "tenant", "access.token.claim": "true", "jsonType.label": "String"}}}}},
	})
	return realm, newAdmin(t, realm)
}

// setProfile declares attrs (name -> who can edit) in the realm's user
// profile beside the built-in four, and sets the unmanaged attribute policy
// ("" removes it: disabled).
func (a *admin) setProfile(t *testing.T, policy string, attrs map[string][]string) {
	t.Helper()
	var up map[string]any
	a.Do("GET", "/users/profile", nil, &up)
	var keep []any
	for _, x := range up["attributes"].([]any) {
		switch x.(map[string]any)["name"] {
		case "username", "email", "firstName", "lastName":
			keep = append(keep, x)
		}
	}
	for name, edit := range attrs {
		keep = append(keep, map[string]any{"name": name, "multivalued": false,
			"permissions": map[string]any{"view": []string{"admin", "user"}, "edit": edit}})
	}
	up["attributes"] = keep
	delete(up, "unmanagedAttributePolicy")
	if policy != "" {
		up["unmanagedAttributePolicy"] = policy
	}
	a.Do("PUT", "/users/profile", up, nil)
}

func checker(t *testing.T, kc testenv.Keycloak, cfg mapping.Config) (*ksync.Service, *bytes.Buffer) {
	t.Helper()
	engine, err := mapping.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	var logs bytes.Buffer
	m := metrics.New("test", "test")
	return &ksync.Service{
		KC:     ksync.NewKeycloak(ksync.KeycloakOptions{URL: kc.URL, Realm: kc.Realm, ClientID: kc.ClientID, ClientSecret: kc.ClientSecret, Timeout: 5 * time.Second, PageSize: 50, Retries: 1, Metrics: m}),
		Engine: func() *mapping.Engine { return engine }, Metrics: m, Log: slog.New(slog.NewTextHandler(&logs, nil)),
	}, &logs
}

var tenantByAttribute = mapping.Config{Preset: "fastn", Tenant: mapping.TenantSource{Attribute: "tenant_id"},
	Rules: []mapping.Rule{{RealmRole: "offline_access", GrantRole: "Viewer"}}}

const editFix = `Realm settings → User profile → attribute tenant_id → Permissions: uncheck "User" under "Who can edit"`

// TestUserEditableTenantAttributeRefusesTheSync: with tenant_id editable by
// users, a full sync fails naming the attribute and the setting, applying
// nothing; admin-only, it runs; with the override, it runs and warns.
func TestUserEditableTenantAttributeRefusesTheSync(t *testing.T) {
	kc, a := profileRealm(t, nil)
	a.setProfile(t, "", map[string][]string{"tenant_id": {"admin", "user"}, "org": {"admin"}})
	f := newFixture(t, "")
	f.svc.KC = ksync.NewKeycloak(ksync.KeycloakOptions{URL: kc.URL, Realm: kc.Realm, ClientID: kc.ClientID, ClientSecret: kc.ClientSecret, Timeout: 5 * time.Second, PageSize: 50, Retries: 1, Metrics: f.svc.Metrics})
	engine := func(cfg mapping.Config) {
		e, err := mapping.New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		f.svc.Engine = func() *mapping.Engine { return e }
	}
	var logs bytes.Buffer
	f.svc.Log = slog.New(slog.NewTextHandler(&logs, nil))
	engine(tenantByAttribute)

	res, err := f.svc.Run(context.Background(), ksync.RunOptions{Trigger: "cli"})
	if !errors.Is(err, ksync.ErrUserEditable) || res == nil || res.Outcome != "failure" {
		t.Fatalf("user-editable tenant_id: err %v, result %+v", err, res)
	}
	for _, want := range []string{`mapping.tenant.attribute reads user attribute "tenant_id"`, editFix, "mapping.allow_user_edited_attributes: true"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %q:\n%v", want, err)
		}
	}
	if got := f.query(t, `SELECT username FROM people`); len(got) != 0 {
		t.Errorf("refused sync applied people %v", got)
	}
	if got := f.query(t, `SELECT error FROM sync_runs WHERE outcome = 'failure'`); len(got) != 1 || !strings.Contains(got[0], editFix) {
		t.Errorf("run record: %v", got)
	}

	a.setProfile(t, "", map[string][]string{"tenant_id": {"admin"}, "org": {"admin"}})
	if _, err := f.svc.Run(context.Background(), ksync.RunOptions{Trigger: "cli"}); err != nil {
		t.Fatalf("admin-only tenant_id: %v", err)
	}
	if got := f.query(t, `SELECT m.tenant_id || ':' || p.username FROM tenant_members m JOIN people p ON p.id = m.person_id WHERE p.username = 'pat'`); len(got) != 1 || got[0] != "acme:pat" {
		t.Errorf("admin-only tenant_id: people %v", got)
	}
	if strings.Contains(logs.String(), "level=WARN") {
		t.Errorf("warned without cause:\n%s", logs.String())
	}

	a.setProfile(t, "", map[string][]string{"tenant_id": {"admin", "user"}, "org": {"admin"}})
	allow := tenantByAttribute
	allow.AllowUserEditedAttributes = true
	engine(allow)
	if _, err := f.svc.Run(context.Background(), ksync.RunOptions{Trigger: "cli"}); err != nil {
		t.Fatalf("override: %v", err)
	}
	if !strings.Contains(logs.String(), "level=WARN") || !strings.Contains(logs.String(), "mapping.allow_user_edited_attributes is set") ||
		!strings.Contains(logs.String(), "mapping.tenant.attribute: tenant_id") {
		t.Errorf("override ran without a warning:\n%s", logs.String())
	}
	if got := testutil.ToFloat64(f.svc.Metrics.MappingUserEditable); got != 1 {
		t.Errorf("keybridge_mapping_user_editable_attributes = %v, want 1", got)
	}
}

// TestAttributeSourcesUsersCanEdit runs the check on the sources an
// attribute can come from: the profile's permissions, the unmanaged
// attribute policy, protocol mappers, username and email.
func TestAttributeSourcesUsersCanEdit(t *testing.T) {
	kc, a := profileRealm(t, nil)
	byClaim := func(claim string, rules ...mapping.Rule) mapping.Config {
		return mapping.Config{Preset: "fastn", Tenant: mapping.TenantSource{Claim: claim}, Rules: rules}
	}
	tests := []struct {
		name    string
		policy  string
		attrs   map[string][]string
		cfg     mapping.Config
		refused []string // substrings of the refusal; none: passes
		warn    string   // substring of a WARN note
	}{
		{"managed, users edit", "", map[string][]string{"tenant_id": {"admin", "user"}}, tenantByAttribute, []string{editFix}, ""},
		{"managed, admin only", "", map[string][]string{"tenant_id": {"admin"}}, tenantByAttribute, nil, ""},
		{"unmanaged, policy enabled", "ENABLED", nil, tenantByAttribute,
			[]string{`user attribute "tenant_id", which users can edit (it is not declared in the user profile and unmanaged attributes are Enabled)`,
				`Realm settings → General → Unmanaged attributes: "Only administrators can write"`}, ""},
		{"unmanaged, admins edit", "ADMIN_EDIT", nil, tenantByAttribute, nil, ""},
		{"unmanaged, admins view", "ADMIN_VIEW", nil, tenantByAttribute, nil, ""},
		{"unmanaged, disabled: hidden from sync", "", nil, tenantByAttribute, nil, "Keycloak hides it from the admin API"},
		{"tenant claim of the same name", "", map[string][]string{"tenant_id": {"admin", "user"}}, byClaim("tenant_id"),
			[]string{`mapping.tenant.claim reads user attribute "tenant_id"`}, ""},
		{"claim filled by a protocol mapper from a user-editable attribute", "ADMIN_EDIT", map[string][]string{"org": {"admin", "user"}},
			byClaim("tenant", mapping.Rule{Claim: "tenant", Equals: ptr("acme"), GrantRole: "Admin"}),
			[]string{`mapping.tenant.claim reads claim "tenant", which protocol mapper "tenant" of client "app" fills from user attribute "org"`,
				`mapping.rules[0].claim reads claim "tenant"`, `Realm settings → User profile → attribute org → Permissions`}, ""},
		{"claim filled by a protocol mapper from an admin-only attribute", "ADMIN_EDIT", map[string][]string{"org": {"admin"}},
			byClaim("tenant"), nil, ""},
		{"email rule: users edit their email by default", "ADMIN_EDIT", nil,
			mapping.Config{Preset: "fastn", Rules: []mapping.Rule{{Claim: "email", Regex: `.*@acme\.test`, GrantRole: "Viewer"}}},
			[]string{`mapping.rules[0].claim reads user attribute "email"`, `attribute email → Permissions`}, ""},
		{"username rule: read-only while the realm forbids editing usernames", "ADMIN_EDIT", nil,
			mapping.Config{Preset: "fastn", Rules: []mapping.Rule{{Claim: "preferred_username", Equals: ptr("pat"), GrantRole: "Viewer"}}}, nil, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a.setProfile(t, tt.policy, tt.attrs)
			svc, logs := checker(t, kc, tt.cfg)
			err := svc.CheckAttributeSources(context.Background())
			if len(tt.refused) == 0 {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
			} else {
				if !errors.Is(err, ksync.ErrUserEditable) {
					t.Fatalf("not refused: %v", err)
				}
				for _, want := range tt.refused {
					if !strings.Contains(err.Error(), want) {
						t.Errorf("refusal lacks %q:\n%v", want, err)
					}
				}
			}
			if got := strings.Contains(logs.String(), "level=WARN"); got != (tt.warn != "") || !strings.Contains(logs.String(), tt.warn) {
				t.Errorf("warnings (want %q):\n%s", tt.warn, logs.String())
			}
		})
	}
}

// TestAttributeCheckNamesTheMissingRole: a service account that can't read
// what the check needs fails it with the role to grant, never passes it.
func TestAttributeCheckNamesTheMissingRole(t *testing.T) {
	kc, _ := profileRealm(t, []string{"view-users", "query-users", "query-groups", "query-clients"})
	svc, _ := checker(t, kc, tenantByAttribute)
	err := svc.CheckAttributeSources(context.Background())
	if err == nil || !strings.Contains(err.Error(), "realm-management role view-clients") || !strings.Contains(err.Error(), "Clients → "+kc.ClientID+" → Service account roles") {
		t.Errorf("without view-clients: %v", err)
	}

	kc, _ = profileRealm(t, []string{"view-users", "query-users", "query-groups", "view-clients"})
	svc, _ = checker(t, kc, mapping.Config{Preset: "fastn", Rules: []mapping.Rule{{Claim: "preferred_username", Equals: ptr("pat"), GrantRole: "Viewer"}}})
	if err := svc.CheckAttributeSources(context.Background()); err == nil || !strings.Contains(err.Error(), "realm-management role view-realm") {
		t.Errorf("username rule without view-realm: %v", err)
	}
}

// TestAttributeCheckWithoutAttributeInputsAsksNothing: a mapping that reads
// no attribute (the demo's group_prefix and roles) costs no request.
func TestAttributeCheckWithoutAttributeInputsAsksNothing(t *testing.T) {
	svc, _ := checker(t, testenv.Keycloak{URL: "http://127.0.0.1:1", Realm: "none", ClientID: "x"}, demoMapping)
	if err := svc.CheckAttributeSources(context.Background()); err != nil || svc.KC.Requests() != 0 {
		t.Errorf("err %v after %d requests", err, svc.KC.Requests())
	}
}

func ptr[T any](v T) *T { return &v }
