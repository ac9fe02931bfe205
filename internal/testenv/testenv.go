// Package testenv gives integration tests the real PostgreSQL and Keycloak
// started by deploy/local/up. Outside CI a missing service skips the test;
// with CI=true it fails it, so a broken environment can never pass as green.
package testenv

import (
	"os"
	"testing"
)

// Keycloak describes the local Keycloak and the demo realm.
type Keycloak struct {
	URL            string // base URL, e.g. http://127.0.0.1:8180
	Realm          string // the demo realm, "fastn"
	ClientID       string // confidential client keybridge syncs with
	ClientSecret   string
	PublicClientID string // public client with direct access grants, for user tokens in tests
	AdminUser      string // bootstrap admin of the master realm
	AdminPassword  string
	UserPassword   string // password of every demo user
}

// Postgres describes the local PostgreSQL cluster.
type Postgres struct {
	OwnerURL string // keybridge_owner: owns the schema, may CREATE DATABASE
	AppURL   string // keybridge_app: the runtime role, subject to RLS
	SyncURL  string // keybridge_sync: the cross-tenant writer
}

func need(t testing.TB, service string, keys ...string) []string {
	t.Helper()
	vals := make([]string, len(keys))
	var missing []string
	for i, k := range keys {
		vals[i] = os.Getenv(k)
		if vals[i] == "" {
			missing = append(missing, k)
		}
	}
	if len(missing) > 0 {
		msg := service + " not configured (run deploy/local/up and source .local/env): missing " + join(missing)
		if os.Getenv("CI") == "true" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	return vals
}

func join(s []string) string {
	out := ""
	for i, v := range s {
		if i > 0 {
			out += ", "
		}
		out += v
	}
	return out
}

// RequireKeycloak returns the local Keycloak, or skips (fails under CI=true).
func RequireKeycloak(t testing.TB) Keycloak {
	t.Helper()
	v := need(t, "Keycloak",
		"KEYBRIDGE_KEYCLOAK_URL", "KEYBRIDGE_KEYCLOAK_REALM", "KEYBRIDGE_KEYCLOAK_CLIENT_ID",
		"KEYBRIDGE_KEYCLOAK_CLIENT_SECRET", "KEYBRIDGE_TEST_KEYCLOAK_PUBLIC_CLIENT",
		"KEYBRIDGE_TEST_KEYCLOAK_ADMIN", "KEYBRIDGE_TEST_KEYCLOAK_ADMIN_PASSWORD",
		"KEYBRIDGE_TEST_USER_PASSWORD")
	return Keycloak{URL: v[0], Realm: v[1], ClientID: v[2], ClientSecret: v[3],
		PublicClientID: v[4], AdminUser: v[5], AdminPassword: v[6], UserPassword: v[7]}
}

// RequirePostgres returns the local PostgreSQL roles, or skips (fails under CI=true).
func RequirePostgres(t testing.TB) Postgres {
	t.Helper()
	v := need(t, "PostgreSQL", "KEYBRIDGE_DATABASE_OWNER_URL", "KEYBRIDGE_DATABASE_URL", "KEYBRIDGE_DATABASE_SYNC_URL")
	return Postgres{OwnerURL: v[0], AppURL: v[1], SyncURL: v[2]}
}
