package config_test

import (
	"strings"
	"testing"
	"time"

	"github.com/keybridge/keybridge/config"
)

// Server timeouts, key rotation, token lifetime and audit export bounds:
// defaults that hold without a word in the config, and problems that name
// their key.
func TestTimeoutAndLifetimeDefaults(t *testing.T) {
	cfg, err := config.Parse([]byte(minimal), env(secrets))
	if err != nil {
		t.Fatal(err)
	}
	s, a, au := cfg.Server, cfg.Auth, cfg.Audit
	if s.ReadTimeout != 30*time.Second || s.WriteTimeout != time.Minute || s.IdleTimeout != 2*time.Minute {
		t.Errorf("server timeouts: read %s, write %s, idle %s", s.ReadTimeout, s.WriteTimeout, s.IdleTimeout)
	}
	if a.JWKSMaxAge != 5*time.Minute || a.MaxTokenLifetime != 24*time.Hour {
		t.Errorf("auth: jwks_max_age %s, max_token_lifetime %s", a.JWKSMaxAge, a.MaxTokenLifetime)
	}
	if au.ExportMaxConcurrent != 2 || au.ExportMaxDuration != 5*time.Minute {
		t.Errorf("audit export: %d at once, %s", au.ExportMaxConcurrent, au.ExportMaxDuration)
	}
}

func TestTimeoutAndLifetimeProblemsNameTheKey(t *testing.T) {
	for _, tt := range []struct{ env, value, want string }{
		{"KEYBRIDGE_SERVER_READ_TIMEOUT", "0s", "server.read_timeout: must be positive"},
		{"KEYBRIDGE_SERVER_WRITE_TIMEOUT", "0s", "server.write_timeout: must be positive"},
		{"KEYBRIDGE_SERVER_IDLE_TIMEOUT", "-1s", "server.idle_timeout: must be positive"},
		{"KEYBRIDGE_AUTH_JWKS_MAX_AGE", "1s", "auth.jwks_max_age: 1s is out of range"},
		{"KEYBRIDGE_AUTH_JWKS_MAX_AGE", "24h", "auth.jwks_max_age: 24h0m0s is out of range"},
		{"KEYBRIDGE_AUTH_MAX_TOKEN_LIFETIME", "0s", "auth.max_token_lifetime: must be at least 1m"},
		{"KEYBRIDGE_AUDIT_EXPORT_MAX_CONCURRENT", "0", "audit.export_max_concurrent: 0 is out of range"},
		{"KEYBRIDGE_AUDIT_EXPORT_MAX_CONCURRENT", "20", "fewer than database.max_conns (20)"},
		{"KEYBRIDGE_AUDIT_EXPORT_MAX_DURATION", "0s", "audit.export_max_duration: must be at least 1s"},
	} {
		_, err := config.Parse([]byte(minimal), env(map[string]string{"KEYBRIDGE_KEYCLOAK_CLIENT_SECRET": "x", tt.env: tt.value}))
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s=%s: %v, want a problem containing %q", tt.env, tt.value, err, tt.want)
		}
	}
}
