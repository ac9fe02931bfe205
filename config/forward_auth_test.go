package config_test

import (
	"strings"
	"testing"

	"github.com/keybridge/keybridge/config"
)

// TestForwardAuthRoutesMustBeCanonical: a route path is matched against a
// canonical request path, so a pattern that no canonical path can match
// (dot segments, empty segments, escapes, delimiters) or a glob inside a
// segment is refused rather than silently never matching.
func TestForwardAuthRoutesMustBeCanonical(t *testing.T) {
	for _, p := range []string{"/public/../admin", "/public/./x", "/public//x", "/public/%2e", "/x;y", `/a\b`, "/a?b", "/a#b", "/a/**/b", "/logo*.png", "/a/\x01"} {
		y := minimal + "forward_auth:\n  routes:\n    - { path: " + yamlQuote(p) + ", public: true }\n"
		_, err := config.Parse([]byte(y), env(secrets))
		if err == nil || !strings.Contains(err.Error(), "forward_auth.routes[0].path") {
			t.Errorf("route path %q accepted: %v", p, err)
		}
	}
	for _, p := range []string{"/", "/public/**", "/workflows/*/deploy", "/files/café", "/a-b_c.d~e/**"} {
		y := minimal + "forward_auth:\n  routes:\n    - { path: " + yamlQuote(p) + ", public: true }\n"
		if _, err := config.Parse([]byte(y), env(secrets)); err != nil {
			t.Errorf("route path %q refused: %v", p, err)
		}
	}
}

func TestForwardAuthHeadersMustBeNamedAndDistinct(t *testing.T) {
	for _, h := range []string{"{ user: '' }", "{ user: 'X Auth' }", "{ tenant: X-Auth-User }", "{ roles: Authorization }"} {
		y := minimal + "forward_auth:\n  headers: " + h + "\n"
		_, err := config.Parse([]byte(y), env(secrets))
		if err == nil || !strings.Contains(err.Error(), "forward_auth.headers") {
			t.Errorf("headers %s accepted: %v", h, err)
		}
	}
}

func TestAllowAnonymousIsOffByDefault(t *testing.T) {
	cfg, err := config.Parse([]byte(minimal), env(secrets))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Check.AllowAnonymous || cfg.ForwardAuth.AllowAnonymous {
		t.Errorf("allow_anonymous on by default: check %v forward_auth %v", cfg.Check.AllowAnonymous, cfg.ForwardAuth.AllowAnonymous)
	}
	cfg, err = config.Parse([]byte(minimal+"forward_auth:\n  allow_anonymous: true\n"),
		env(map[string]string{"KEYBRIDGE_KEYCLOAK_CLIENT_SECRET": "x", "KEYBRIDGE_CHECK_ALLOW_ANONYMOUS": "true"}))
	if err != nil {
		t.Fatal(err)
	}
	if !cfg.Check.AllowAnonymous || !cfg.ForwardAuth.AllowAnonymous {
		t.Errorf("allow_anonymous not set: check %v forward_auth %v", cfg.Check.AllowAnonymous, cfg.ForwardAuth.AllowAnonymous)
	}
}

func yamlQuote(s string) string {
	return `"` + strings.NewReplacer(`\`, `\\`, `"`, `\"`, "\x01", `\x01`).Replace(s) + `"`
}
