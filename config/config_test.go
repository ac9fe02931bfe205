package config_test

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/keybridge/keybridge/config"
)

func env(m map[string]string) func(string) (string, bool) {
	return func(k string) (string, bool) { v, ok := m[k]; return v, ok }
}

// minimal is a valid config once the secrets arrive from the environment.
const minimal = `
database:
  url: postgres://keybridge_app@127.0.0.1:5432/keybridge
  sync_url: postgres://keybridge_sync@127.0.0.1:5432/keybridge
keycloak:
  url: http://127.0.0.1:8180
  realm: fastn
`

var secrets = map[string]string{"KEYBRIDGE_KEYCLOAK_CLIENT_SECRET": "s3cret"}

func TestParseValidConfigGetsDefaults(t *testing.T) {
	cfg, err := config.Parse([]byte(minimal), env(secrets))
	if err != nil {
		t.Fatalf("valid config refused: %v", err)
	}
	if cfg.Server.Listen != "127.0.0.1:8080" || cfg.Sync.MaxRemovalShare != 0.2 || cfg.Check.MaxBatch != 100 {
		t.Errorf("defaults not applied: %+v", cfg)
	}
	if cfg.Keycloak.ClientSecret != "s3cret" {
		t.Errorf("secret from environment not applied")
	}
	if got, want := cfg.IssuerURL(), "http://127.0.0.1:8180/realms/fastn"; got != want {
		t.Errorf("issuer = %q, want %q", got, want)
	}
}

func TestEnvironmentAloneConfiguresSecretsAndURLs(t *testing.T) {
	cfg, err := config.Parse(nil, env(map[string]string{
		"KEYBRIDGE_DATABASE_URL":           "postgres://a@h/db",
		"KEYBRIDGE_DATABASE_SYNC_URL":      "postgres://b@h/db",
		"KEYBRIDGE_KEYCLOAK_URL":           "https://sso.example.com",
		"KEYBRIDGE_KEYCLOAK_REALM":         "acme",
		"KEYBRIDGE_KEYCLOAK_CLIENT_SECRET": "x",
		"KEYBRIDGE_WEBHOOK_SECRET":         "w",
		"KEYBRIDGE_SYNC_EVENTS_INTERVAL":   "7s",
		"KEYBRIDGE_AUTH_AUDIENCES":         "api, portal",
		"KEYBRIDGE_SYNC_MAX_REMOVAL_SHARE": "0.5",
		"KEYBRIDGE_SERVER_DEBUG_LISTEN":    "[::1]:6060",
	}))
	if err != nil {
		t.Fatalf("environment-only config refused: %v", err)
	}
	if cfg.Webhook.Secret != "w" || cfg.Keycloak.Realm != "acme" || cfg.Sync.Events.Interval != 7*time.Second ||
		strings.Join(cfg.Auth.Audiences, "|") != "api|portal" || cfg.Sync.MaxRemovalShare != 0.5 || cfg.Server.DebugListen != "[::1]:6060" {
		t.Errorf("overrides not applied: %+v", cfg)
	}
}

func TestProblemsNameTheKeyAndTheFix(t *testing.T) {
	tests := []struct {
		name string
		yaml string
		env  map[string]string
		want []string // each must appear in one problem
	}{
		{"unknown key suggests the nearest", "server:\n  lisen: x\n" + minimal, secrets, []string{`server.lisen: unknown key (line 2): did you mean "listen"?`}},
		{"bad keycloak url", strings.Replace(minimal, "http://127.0.0.1:8180", "sso.example.com", 1), secrets, []string{"keycloak.url", "absolute http(s) URL"}},
		{"missing secret says where to put it", minimal, nil, []string{"keycloak.client_secret: missing secret: set KEYBRIDGE_KEYCLOAK_CLIENT_SECRET"}},
		{"hmac algorithm refused", minimal + "auth:\n  algorithms: [HS256]\n", secrets, []string{`auth.algorithms[0]: "HS256" is not allowed`}},
		{"alg none refused", minimal + "auth:\n  algorithms: [none]\n", secrets, []string{`auth.algorithms[0]: "none" is not allowed`}},
		{"bad cron", minimal + "sync:\n  schedule: every five minutes\n", secrets, []string{"sync.schedule", "not a cron spec"}},
		{"guard share out of range", minimal + "sync:\n  max_removal_share: 2\n", secrets, []string{"sync.max_removal_share"}},
		{"unset variable", strings.Replace(minimal, "realm: fastn", "realm: ${NO_SUCH_VAR}", 1), secrets, []string{"keycloak.realm: environment variable NO_SUCH_VAR is not set"}},
		{"bad env override", minimal, map[string]string{"KEYBRIDGE_KEYCLOAK_CLIENT_SECRET": "x", "KEYBRIDGE_SERVER_SHUTDOWN_TIMEOUT": "soon"}, []string{"server.shutdown_timeout (from KEYBRIDGE_SERVER_SHUTDOWN_TIMEOUT): not a duration"}},
		{"gc target", minimal, map[string]string{"KEYBRIDGE_KEYCLOAK_CLIENT_SECRET": "x", "KEYBRIDGE_SERVER_GC_PERCENT": "-5"}, []string{"server.gc_percent: -5 is not a GOGC value"}},
		{"profiler on a public address", minimal, map[string]string{"KEYBRIDGE_KEYCLOAK_CLIENT_SECRET": "x", "KEYBRIDGE_SERVER_DEBUG_LISTEN": "0.0.0.0:6060"}, []string{`server.debug_listen: "0.0.0.0:6060" is not a loopback address`}},
		{"profiler address without a port", minimal, map[string]string{"KEYBRIDGE_KEYCLOAK_CLIENT_SECRET": "x", "KEYBRIDGE_SERVER_DEBUG_LISTEN": "127.0.0.1"}, []string{`server.debug_listen: "127.0.0.1" is not host:port`}},
		{"refresh interval of zero", minimal, map[string]string{"KEYBRIDGE_KEYCLOAK_CLIENT_SECRET": "x", "KEYBRIDGE_AUTH_JWKS_REFRESH_INTERVAL": "0s"}, []string{"auth.jwks_refresh_interval: must be at least 1s"}},
		{"no read header timeout", minimal, map[string]string{"KEYBRIDGE_KEYCLOAK_CLIENT_SECRET": "x", "KEYBRIDGE_SERVER_READ_HEADER_TIMEOUT": "0s"}, []string{"server.read_header_timeout: must be positive"}},
		{"audit batch of zero", minimal, map[string]string{"KEYBRIDGE_KEYCLOAK_CLIENT_SECRET": "x", "KEYBRIDGE_AUDIT_BATCH_SIZE": "0"}, []string{"audit.batch_size: must be at least 1"}},
		{"no keycloak concurrency", minimal, map[string]string{"KEYBRIDGE_KEYCLOAK_CLIENT_SECRET": "x", "KEYBRIDGE_KEYCLOAK_CONCURRENCY": "0"}, []string{"keycloak.concurrency: 0 is out of range: use 1 to 64"}},
		{"list from the environment", minimal, map[string]string{"KEYBRIDGE_KEYCLOAK_CLIENT_SECRET": "x", "KEYBRIDGE_AUTH_INTROSPECTION_CLIENTS": "gw:secret"}, []string{"auth.introspection_clients (from KEYBRIDGE_AUTH_INTROSPECTION_CLIENTS): this key cannot be set from the environment"}},
		{"secret set twice", minimal, map[string]string{"KEYBRIDGE_KEYCLOAK_CLIENT_SECRET": "x", "KEYBRIDGE_KEYCLOAK_CLIENT_SECRET_FILE": "/dev/null"}, []string{"keycloak.client_secret: set both directly"}},
		{"unknown proxy", minimal, map[string]string{"KEYBRIDGE_KEYCLOAK_CLIENT_SECRET": "x", "KEYBRIDGE_FORWARD_AUTH_PROXY": "caddy"}, []string{`forward_auth.proxy: "caddy" is not nginx, traefik or envoy`}},
		{"nested unknown key in a list", minimal + "forward_auth:\n  routes:\n    - { path: /x, any_off: [a.b] }\n", secrets, []string{"forward_auth.routes[0].any_off: unknown key"}},
		{"database password is not echoed", strings.Replace(minimal, "postgres://keybridge_app@127.0.0.1:5432/keybridge", "postgres://u:hunter2@h:notaport/db", 1), secrets, []string{"database.url"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := config.Parse([]byte(tt.yaml), env(tt.env))
			if err == nil {
				t.Fatal("config accepted, want a problem")
			}
			var p config.Problems
			if !errors.As(err, &p) {
				t.Fatalf("error is %T, want config.Problems", err)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("problems do not mention %q:\n%v", w, err)
				}
			}
			if strings.Contains(err.Error(), "hunter2") {
				t.Errorf("password leaked into the error: %v", err)
			}
		})
	}
}

func TestThreeProblemsReportedAtOnce(t *testing.T) {
	data, err := os.ReadFile(filepath.Join("testdata", "three-problems.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	_, err = config.Parse(data, env(nil))
	var p config.Problems
	if !errors.As(err, &p) {
		t.Fatalf("want problems, got %v", err)
	}
	if len(p) != 3 {
		t.Fatalf("want exactly 3 problems, got %d:\n%v", len(p), err)
	}
	for i, key := range []string{"server.lisen", "keycloak.url", "keycloak.client_secret"} {
		if !strings.HasPrefix(p[i].Error(), key+":") {
			t.Errorf("problem %d = %q, want it to name %s", i, p[i], key)
		}
	}
}

func TestExampleConfigIsValid(t *testing.T) {
	data, err := os.ReadFile("keybridge.example.yaml")
	if err != nil {
		t.Fatal(err)
	}
	_, err = config.Parse(data, env(map[string]string{
		"KEYBRIDGE_DATABASE_URL":           "postgres://a@h/db",
		"KEYBRIDGE_DATABASE_SYNC_URL":      "postgres://b@h/db",
		"KEYBRIDGE_KEYCLOAK_CLIENT_SECRET": "x",
	}))
	if err != nil {
		t.Fatalf("the example config must be valid with secrets from the environment:\n%v", err)
	}
}

func TestSecretFromFile(t *testing.T) {
	f := filepath.Join(t.TempDir(), "secret")
	if err := os.WriteFile(f, []byte("from-file\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Parse([]byte(minimal+"  client_secret_file: "+f+"\n"), env(nil))
	if err != nil {
		t.Fatalf("refused: %v", err)
	}
	if cfg.Keycloak.ClientSecret != "from-file" {
		t.Errorf("secret = %q, want it read from the file and trimmed", cfg.Keycloak.ClientSecret)
	}
}

// FuzzConfigDecoding: any bytes are either a config or a list of problems; never a panic.
func FuzzConfigDecoding(f *testing.F) {
	f.Add([]byte(minimal))
	f.Add([]byte("server: [1, 2]\nmapping: {rules: [{realm_role: x}]}\n"))
	f.Add([]byte("keycloak: {url: '${X}'}\nsync: {schedule: '@every'}\n"))
	f.Add([]byte("a: &a [*a]\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		cfg, err := config.Parse(data, env(secrets))
		if err == nil && cfg == nil {
			t.Fatal("nil config without error")
		}
	})
}
