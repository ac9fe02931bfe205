package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/keybridge/keybridge/config"
	"github.com/keybridge/keybridge/internal/testenv"
	"github.com/keybridge/keybridge/mapping"
)

// readiness is /readyz's answer.
type readiness struct {
	Status string            `json:"status"`
	Checks map[string]string `json:"checks"`
}

// serveUntil runs serve with cfg on a free port until until returns true
// for a /readyz answer or limit passes, and returns that answer, its raw
// body and the daemon's log.
func serveUntil(t *testing.T, cfg config.Config, limit time.Duration, until func(code int, r readiness, log string) bool) (int, readiness, string, string) {
	t.Helper()
	cfg.Server.Listen = fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))
	var logs lockedBuffer
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- serve(ctx, &cfg, slog.New(slog.NewTextHandler(&logs, nil))) }()
	defer func() {
		cancel()
		<-done
	}()
	deadline := time.Now().Add(limit)
	var code int
	var r readiness
	var body string
	for time.Now().Before(deadline) {
		select {
		case err := <-done:
			done <- err
			t.Fatalf("serve stopped: %v\n%s", err, logs.String())
		default:
		}
		if res, err := http.Get("http://" + cfg.Server.Listen + "/readyz"); err == nil {
			raw, _ := io.ReadAll(res.Body)
			res.Body.Close()
			code, body, r = res.StatusCode, string(raw), readiness{}
			_ = json.Unmarshal(raw, &r)
			if until(code, r, logs.String()) {
				break
			}
		}
		time.Sleep(200 * time.Millisecond)
	}
	return code, r, body, logs.String()
}

// Issue 16, part 2: with organization tenancy, a service account without
// manage-realm (the demo fastn realm's, as documented) makes /readyz fail
// the named check keycloak_permissions without saying more to an
// unauthenticated caller, while the log, and the failed sync, name the role
// to grant; a realm whose service account holds it turns ready.
func TestReadinessNamesTheKeycloakRoleTheTenantSourceNeeds(t *testing.T) {
	kc := testenv.RequireKeycloak(t)
	base := config.Default()
	base.Keycloak.URL, base.Keycloak.ClientID, base.Keycloak.ClientSecret = kc.URL, kc.ClientID, kc.ClientSecret
	base.Mapping = mapping.Config{Preset: "fastn", Tenant: mapping.TenantSource{Organization: true},
		Rules: []mapping.Rule{{RealmRole: "fastn-developer", GrantRole: "Developer"}}}
	base.Sync.Events.Enabled = false

	lacking := base
	lacking.Keycloak.Realm = kc.Realm // fastn: its keybridge client lacks manage-realm
	db := testenv.NewDatabase(t)
	lacking.Database.URL, lacking.Database.SyncURL = db.AppURL, db.SyncURL
	code, r, body, logs := serveUntil(t, lacking, 30*time.Second, func(_ int, r readiness, log string) bool {
		return r.Checks["keycloak_permissions"] != "" && strings.Contains(log, `msg="sync finished"`)
	})
	if code != http.StatusServiceUnavailable || r.Checks["keycloak_permissions"] != "failing" {
		t.Errorf("readyz without manage-realm: %d %s", code, body)
	}
	if strings.Contains(body, "manage-realm") || strings.Contains(body, "organization") {
		t.Errorf("readyz tells an unauthenticated caller why: %s", body)
	}
	for _, want := range []string{`level=ERROR msg="keycloak service account lacks access: syncs fail until it is granted" roles=[manage-realm]`,
		`msg="readiness check failed" check=keycloak_permissions`, `realm-management role manage-realm`,
		// Optional: without it people.identity_provider stays empty, which fails nothing.
		`level=INFO msg="keycloak service account lacks an optional role" role=view-identity-providers needed_for=people.identity_provider`} {
		if !strings.Contains(logs, want) {
			t.Errorf("the log lacks %q:\n%s", want, logs)
		}
	}
	if !slices.ContainsFunc(strings.Split(logs, "\n"), func(l string) bool {
		return strings.Contains(l, `msg="sync finished"`) && strings.Contains(l, "outcome=failure") && strings.Contains(l, "manage-realm")
	}) {
		t.Errorf("the failed sync does not name manage-realm:\n%s", logs)
	}

	granted := base
	realm := testenv.NewRealm(t, kc, append(slices.Clone(testenv.SyncRoles), "manage-realm"), map[string]any{"organizationsEnabled": true})
	granted.Keycloak.Realm = realm.Realm
	db2 := testenv.NewDatabase(t)
	granted.Database.URL, granted.Database.SyncURL = db2.AppURL, db2.SyncURL
	code, r, body, logs = serveUntil(t, granted, 60*time.Second, func(code int, _ readiness, _ string) bool { return code == http.StatusOK })
	if code != http.StatusOK || r.Checks["keycloak_permissions"] != "ok" {
		t.Errorf("readyz with manage-realm: %d %s\n%s", code, body, logs)
	}
}
