package api_test

import (
	"context"
	"strings"
	"testing"

	"github.com/keybridge/keybridge/mapping"
)

// A tenant Admin can't create, duplicate into or rename to a role name that
// smuggles a separator, a reserved word or a system role in another case:
// each answers 400 with the rule in the message, and nothing is stored.
func TestCustomRoleNamesThatSmuggleAreRefused(t *testing.T) {
	e := newEnvWith(t, mapping.Config{Preset: "endatix", Tenant: mapping.TenantSource{GroupPrefix: "/customers"},
		Rules: []mapping.Rule{{RealmRole: "admin", GrantRole: "Admin"}}})
	admin := caller{"alice", "admin", "acme"}
	bad := []string{"Reader,PlatformAdmin", "system", "SYSTEM", "owner", "Platformadmin", "platform", "public",
		" x", "x ", "a\tb", "a\x00b", `Reader"PlatformAdmin`, "{Reader}"}

	stored := func() int {
		var n int
		if err := e.st.SysPool().QueryRow(context.Background(), `SELECT count(*) FROM roles WHERE kind = 'custom'`).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	for _, name := range bad {
		code, out, body := e.do(t, admin, "POST", "/v1/roles", map[string]any{"name": name, "permissions": []string{"forms.view"}})
		if code != 400 {
			t.Errorf("POST /v1/roles %q: %d %s", name, code, body)
			continue
		}
		msg, _ := out["error"].(map[string]any)["message"].(string)
		if !strings.Contains(msg, "choose another name") && !strings.Contains(msg, "role names use letters, digits") {
			t.Errorf("POST /v1/roles %q: the message does not say what is wrong: %s", name, body)
		}
	}
	if n := stored(); n != 0 {
		t.Fatalf("%d custom roles stored from refused names", n)
	}

	code, out, body := e.do(t, admin, "POST", "/v1/roles", map[string]any{"name": "Reader", "permissions": []string{"forms.view"}})
	if code != 201 {
		t.Fatalf("a good name refused: %d %s", code, body)
	}
	id := out["id"].(string)
	for _, name := range bad {
		if code, _, body := e.do(t, admin, "PATCH", "/v1/roles/"+id, map[string]any{"name": name}); code != 400 {
			t.Errorf("rename to %q: %d %s", name, code, body)
		}
		if code, _, body := e.do(t, admin, "POST", "/v1/roles/"+id+"/duplicate", map[string]any{"name": name}); code != 400 {
			t.Errorf("duplicate as %q: %d %s", name, code, body)
		}
	}
	var name string
	if err := e.st.SysPool().QueryRow(context.Background(), `SELECT string_agg(name, '|') FROM roles WHERE kind = 'custom'`).Scan(&name); err != nil || name != "Reader" {
		t.Fatalf("custom roles after the refusals: %q %v", name, err)
	}
	// Duplicating without a name gives a name the rule accepts.
	if code, out, body := e.do(t, admin, "POST", "/v1/roles/"+id+"/duplicate", map[string]any{}); code != 201 || mapping.ValidCustomRoleName(out["name"].(string)) != nil {
		t.Errorf("duplicate with the default name: %d %s", code, body)
	}
}
