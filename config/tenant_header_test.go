package config_test

import (
	"strings"
	"testing"

	"github.com/keybridge/keybridge/config"
)

// server.tenant_header (issue 16) defaults to X-Keybridge-Tenant and must
// be a header of its own: a caller sets it, so it may not be one a proxy,
// keybridge or the upstream reads for something else.
func TestTenantHeader(t *testing.T) {
	secrets := map[string]string{"KEYBRIDGE_KEYCLOAK_CLIENT_SECRET": "x"}
	cfg, err := config.Parse([]byte(minimal), env(secrets))
	if err != nil || cfg.Server.TenantHeader != "X-Keybridge-Tenant" {
		t.Fatalf("default %q, err %v", cfg.Server.TenantHeader, err)
	}
	cfg, err = config.Parse([]byte(minimal+"server:\n  tenant_header: X-Tenant\n"), env(secrets))
	if err != nil || cfg.Server.TenantHeader != "X-Tenant" {
		t.Fatalf("set: %q, err %v", cfg.Server.TenantHeader, err)
	}
	for value, want := range map[string]string{
		"":                "is not a header name",
		"X Tenant":        "is not a header name",
		"authorization":   "a header with its own meaning",
		"X-Forwarded-For": "a header with its own meaning",
		"X-Original-URI":  "a header with its own meaning",
		"X-Auth-Tenant":   "also forward_auth.headers.tenant",
		"x-auth-user":     "also forward_auth.headers.user",
		"X-Request-Id":    "a header with its own meaning",
	} {
		_, err := config.Parse([]byte(minimal), env(map[string]string{"KEYBRIDGE_KEYCLOAK_CLIENT_SECRET": "x", "KEYBRIDGE_SERVER_TENANT_HEADER": value}))
		if err == nil || !strings.Contains(err.Error(), "server.tenant_header: ") || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: %v, want a problem saying %q", value, err, want)
		}
	}
}
