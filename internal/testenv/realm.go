package testenv

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"
	"testing"
)

// SyncRoles are the realm-management roles the demo realm gives keybridge's
// service account.
var SyncRoles = []string{"view-users", "query-users", "query-groups", "view-realm", "view-clients", "query-clients", "view-events"}

// NewRealm creates a throwaway realm for one test, so a test that changes
// realm settings (the user profile, say) leaves the shared demo realm alone,
// and deletes it at cleanup. The realm holds the confidential client
// keybridge syncs with (the demo realm's client id and secret) whose service
// account has roles of realm-management (SyncRoles when nil); extra is merged
// into the realm representation (users, clients beyond it, settings). The
// returned Keycloak names the new realm; NewAdmin on it administers it.
func NewRealm(t testing.TB, kc Keycloak, roles []string, extra map[string]any) Keycloak {
	t.Helper()
	if roles == nil {
		roles = SyncRoles
	}
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	name := "kbtest-" + hex.EncodeToString(b)
	rep := map[string]any{
		"realm": name, "enabled": true,
		"clients": []any{map[string]any{"clientId": kc.ClientID, "secret": kc.ClientSecret, "publicClient": false,
			"serviceAccountsEnabled": true, "standardFlowEnabled": false}},
		"users": []any{map[string]any{"username": "service-account-" + kc.ClientID, "enabled": true, "serviceAccountClientId": kc.ClientID,
			"clientRoles": map[string]any{"realm-management": roles}}},
	}
	for k, v := range extra {
		if list, ok := v.([]any); ok && (k == "clients" || k == "users") {
			rep[k] = append(rep[k].([]any), list...)
			continue
		}
		rep[k] = v
	}
	admin := NewAdmin(t, kc)
	call := func(method, path string, body any) (int, []byte) {
		var rd io.Reader
		if body != nil {
			raw, err := json.Marshal(body)
			if err != nil {
				t.Fatal(err)
			}
			rd = bytes.NewReader(raw)
		}
		req, err := http.NewRequest(method, kc.URL+"/admin/realms"+path, rd)
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Authorization", "Bearer "+admin.Bearer())
		req.Header.Set("Content-Type", "application/json")
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		raw, _ := io.ReadAll(res.Body)
		return res.StatusCode, raw
	}
	if code, raw := call("POST", "", rep); code != http.StatusCreated {
		t.Fatalf("create realm %s: %d %s", name, code, raw)
	}
	t.Cleanup(func() {
		// A fresh admin token: the test may outlast the first one.
		admin = NewAdmin(t, kc)
		if code, raw := call("DELETE", "/"+name, nil); code != http.StatusNoContent {
			t.Errorf("delete realm %s: %d %s", name, code, raw)
		}
	})
	out := kc
	out.Realm = name
	return out
}
