package auth_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/keybridge/keybridge/internal/auth"
	"github.com/keybridge/keybridge/internal/testenv"
)

// Keycloak rotates a throwaway realm's signing key (a new rsa-generated
// provider, the old one disabled): a token of the old key that the cache
// answered stops being answered once the background refresh sees the new
// JWKS, and tokens of the new key verify.
func TestKeycloakKeyRotationEndsCachedTokens(t *testing.T) {
	kc := testenv.RequireKeycloak(t)
	realm := testenv.NewRealm(t, kc, nil, map[string]any{
		"clients": []any{map[string]any{"clientId": "rotation-app", "publicClient": true, "directAccessGrantsEnabled": true, "standardFlowEnabled": false}},
		"users": []any{map[string]any{"username": "rita", "enabled": true, "email": "rita@rotation.test", "emailVerified": true,
			"firstName": "Rita", "lastName": "Rotation", "credentials": []any{map[string]any{"type": "password", "value": "rotate-me", "temporary": false}}}},
	})
	admin := testenv.NewAdmin(t, realm)
	v, err := auth.NewVerifier(context.Background(), auth.Options{Issuer: realm.URL + "/realms/" + realm.Realm, Audiences: []string{"rotation-app"},
		Algorithms: []string{"RS256"}, Leeway: 5 * time.Second, RefreshInterval: time.Second, MaxKeyAge: 500 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	c := &auth.Cached{Next: v, Size: 100}
	ctx := context.Background()
	old := realm.Token(t, realm.Realm, "rotation-app", "rita", "rotate-me")
	if _, err := c.Verify(ctx, old); err != nil {
		t.Fatalf("token of the realm's key: %v", err)
	}

	// Rotate: a new RSA key provider of higher priority, the old one disabled.
	var comps []struct {
		ID         string              `json:"id"`
		Name       string              `json:"name"`
		ProviderID string              `json:"providerId"`
		ParentID   string              `json:"parentId"`
		Config     map[string][]string `json:"config"`
	}
	admin.Do("GET", "/components?type=org.keycloak.keys.KeyProvider", nil, &comps)
	var oldIDs []string
	parent := ""
	for _, comp := range comps {
		if comp.ProviderID == "rsa-generated" {
			oldIDs = append(oldIDs, comp.ID)
			parent = comp.ParentID
		}
	}
	if len(oldIDs) == 0 {
		t.Fatalf("no rsa-generated key provider in the realm: %+v", comps)
	}
	admin.Do("POST", "/components", map[string]any{"name": "rsa-rotated", "providerId": "rsa-generated", "providerType": "org.keycloak.keys.KeyProvider",
		"parentId": parent, "config": map[string][]string{"priority": {"500"}, "keySize": {"2048"}, "enabled": {"true"}, "active": {"true"}}}, nil)
	for _, comp := range comps {
		if comp.ProviderID != "rsa-generated" {
			continue
		}
		var full map[string]any
		admin.Do("GET", "/components/"+comp.ID, nil, &full)
		cfg, _ := full["config"].(map[string]any)
		cfg["enabled"] = []string{"false"}
		admin.Do("PUT", "/components/"+comp.ID, full, nil)
	}

	fresh := realm.Token(t, realm.Realm, "rotation-app", "rita", "rotate-me")
	if kidOf(t, fresh) == kidOf(t, old) {
		t.Fatalf("Keycloak still signs with the old key %s", kidOf(t, old))
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		_, err := c.Verify(ctx, old)
		if auth.ReasonOf(err) == auth.UnknownKid {
			break
		}
		if err != nil {
			t.Fatalf("old token refused as %s, want %s: %v", auth.ReasonOf(err), auth.UnknownKid, err)
		}
		if time.Now().After(deadline) {
			t.Fatal("a cached token of a key Keycloak rotated out still answers 30s after the rotation (MaxKeyAge 500ms)")
		}
		time.Sleep(50 * time.Millisecond)
	}
	if _, err := c.Verify(ctx, fresh); err != nil {
		t.Errorf("token of the new key: %v", err)
	}
}

func kidOf(t *testing.T, raw string) string {
	t.Helper()
	b, err := base64.RawURLEncoding.DecodeString(strings.Split(raw, ".")[0])
	if err != nil {
		t.Fatal(err)
	}
	var h struct {
		Kid string `json:"kid"`
	}
	if err := json.Unmarshal(b, &h); err != nil {
		t.Fatal(err)
	}
	return h.Kid
}
