package main

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	gosync "sync"
	"testing"
	"time"

	"github.com/keybridge/keybridge/config"
	"github.com/keybridge/keybridge/internal/testenv"
	"github.com/keybridge/keybridge/mapping"
)

// lockedBuffer collects a daemon's log while the test reads it.
type lockedBuffer struct {
	mu gosync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// setTenantProfile declares tenant_id in the realm's user profile, editable
// by edit.
func setTenantProfile(t *testing.T, a *testenv.Admin, edit ...string) {
	t.Helper()
	var up map[string]any
	a.Do("GET", "/users/profile", nil, &up)
	var attrs []any
	for _, x := range up["attributes"].([]any) {
		if x.(map[string]any)["name"] != "tenant_id" {
			attrs = append(attrs, x)
		}
	}
	up["attributes"] = append(attrs, map[string]any{"name": "tenant_id", "permissions": map[string]any{"view": []string{"admin"}, "edit": edit}})
	a.Do("PUT", "/users/profile", up, nil)
}

// Security item 14: serve refuses to start while the tenant attribute is one
// users can edit in Keycloak's account console, naming the attribute and
// the setting to change; admin-only it starts, and the override starts it
// with a warning.
func TestServeRefusesAUserEditableTenantAttribute(t *testing.T) {
	kc := testenv.RequireKeycloak(t)
	realm := testenv.NewRealm(t, kc, nil, nil)
	a := testenv.NewAdmin(t, realm)
	db := testenv.NewDatabase(t)
	setTenantProfile(t, a, "admin", "user")

	// The command as an operator runs it: exit status 1.
	path := filepath.Join(t.TempDir(), "keybridge.yaml")
	if err := os.WriteFile(path, []byte("mapping:\n  preset: fastn\n  tenant: { attribute: tenant_id }\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for k, v := range map[string]string{"KEYBRIDGE_KEYCLOAK_URL": realm.URL, "KEYBRIDGE_KEYCLOAK_REALM": realm.Realm,
		"KEYBRIDGE_KEYCLOAK_CLIENT_ID": realm.ClientID, "KEYBRIDGE_KEYCLOAK_CLIENT_SECRET": realm.ClientSecret,
		"KEYBRIDGE_DATABASE_URL": db.AppURL, "KEYBRIDGE_DATABASE_SYNC_URL": db.SyncURL, "KEYBRIDGE_SERVER_LISTEN": "127.0.0.1:0",
		"KEYBRIDGE_SYNC_ENABLED": "false"} {
		t.Setenv(k, v)
	}
	var stderr bytes.Buffer
	// A serve that starts anyway stops at the deadline with status 0.
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	if code := runServe(ctx, []string{"-c", path}, io.Discard, &stderr); code != 1 {
		t.Fatalf("serve exited %d, want 1 (stderr %s)", code, stderr.String())
	}

	cfg := config.Default()
	cfg.Keycloak.URL, cfg.Keycloak.Realm, cfg.Keycloak.ClientSecret = realm.URL, realm.Realm, realm.ClientSecret
	cfg.Database.URL, cfg.Database.SyncURL = db.AppURL, db.SyncURL
	cfg.Server.Listen = "127.0.0.1:0"
	cfg.Sync.Enabled = false // the check runs all the same: tokens carry the attribute too
	cfg.Mapping = mapping.Config{Preset: "fastn", Tenant: mapping.TenantSource{Attribute: "tenant_id"}}
	start := func(t *testing.T, c config.Config) (string, error) {
		t.Helper()
		var logs lockedBuffer
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		done := make(chan error, 1)
		go func() { done <- serve(ctx, &c, slog.New(slog.NewTextHandler(&logs, nil))) }()
		deadline := time.After(30 * time.Second)
		for {
			select {
			case err := <-done:
				return logs.String(), err
			case <-deadline:
				t.Fatalf("serve neither refused nor started:\n%s", logs.String())
			case <-time.After(50 * time.Millisecond):
				if strings.Contains(logs.String(), "keybridge serving") {
					cancel()
					err := <-done
					return logs.String(), err
				}
			}
		}
	}

	logs, err := start(t, cfg)
	if err == nil || strings.Contains(logs, "keybridge serving") {
		t.Fatalf("served with a user-editable tenant_id:\n%s", logs)
	}
	for _, want := range []string{`mapping.tenant.attribute reads user attribute "tenant_id"`,
		`Realm settings → User profile → attribute tenant_id → Permissions: uncheck "User" under "Who can edit"`} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("refusal lacks %q:\n%v", want, err)
		}
	}

	allow := cfg
	allow.Mapping.AllowUserEditedAttributes = true
	if logs, err := start(t, allow); err != nil || !strings.Contains(logs, "level=WARN") || !strings.Contains(logs, "mapping.allow_user_edited_attributes is set") {
		t.Errorf("override: %v\n%s", err, logs)
	}

	setTenantProfile(t, a, "admin")
	if logs, err := start(t, cfg); err != nil || strings.Contains(logs, "level=WARN") {
		t.Errorf("admin-only tenant_id: %v\n%s", err, logs)
	}
}
