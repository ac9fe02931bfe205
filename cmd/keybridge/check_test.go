package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"
)

func check(ctx context.Context, args []string, out, errOut *bytes.Buffer) int {
	return runCheck(ctx, args, out, errOut)
}

const checkConfig = `
database: { url: "" }   # other sections may be incomplete: check reads mapping only
mapping:
  preset: %s
  tenant: { group_prefix: /customers }
  rules:
    - { realm_role: fastn-admin, grant_role: Admin }
    - { client_role: "portal:dev", grant_role: Developer }
    - { realm_role: fastn-developer, grant_role: Developer }
    - { realm_role: fastn-enduser, grant_role: End User }
`

const endatixConfig = `
mapping:
  preset: endatix
  tenant: { claim: tenant_id }
  rules:
    - { realm_role: admin, grant_role: Admin }
    - { realm_role: creator, grant_role: Creator }
    - { realm_role: creator, grant_permissions: [submissions.delete.owned] }
`

func TestCheckDecidesFromClaimsAndConfig(t *testing.T) {
	t.Setenv("KEYBRIDGE_CONFIG", "")
	fastn := writeFile(t, "fastn.yaml", strings.Replace(checkConfig, "%s", "fastn", 1))
	endatix := writeFile(t, "endatix.yaml", endatixConfig)
	dana := writeFile(t, "dana.json", `{"sub":"u-dana","preferred_username":"dana","realm_access":{"roles":["fastn-developer"]},"groups":["/customers/acme/engineering"]}`)
	erin := writeFile(t, "erin.json", `{"sub":"u-erin","preferred_username":"erin","resource_access":{"portal":{"roles":["x"]}},"realm_access":{"roles":["fastn-enduser"]},"groups":["/customers/acme"]}`)
	adam := writeFile(t, "adam.json", `{"sub":"u-adam","realm_access":{"roles":["admin"]},"tenant_id":"acme"}`)
	cora := writeFile(t, "cora.json", `{"sub":"u-cora","realm_access":{"roles":["creator"]},"tenant_id":"acme"}`)
	anon := writeFile(t, "anon.json", `{}`)
	tests := []struct {
		name string
		args []string
		code int
		want string
	}{
		{"developer deploys to prod", []string{"-c", fastn, "--claims", dana, "--permission", "workflows.deploy_prod"}, 0,
			`ALLOWED: permission "workflows.deploy_prod" granted by role "Developer" (rule #2: realm_role fastn-developer)`},
		{"developer has no billing", []string{"-c", fastn, "--claims", dana, "--permission", "billing.manage"}, 1,
			"DENIED: no role grants any of [billing.manage]"},
		{"any-of passes on the second", []string{"-c", fastn, "--claims", dana, "--permission", "billing.manage", "--permission", "settings.view"}, 0,
			`ALLOWED: permission "settings.view"`},
		{"end user inside its customer", []string{"-c", fastn, "--claims", erin, "--permission", "connections.create", "--tenant", "acme"}, 0, "ALLOWED"},
		{"end user outside its customer", []string{"-c", fastn, "--claims", erin, "--permission", "connections.read", "--tenant", "globex"}, 1,
			`DENIED: resource tenant "globex" differs from caller tenant "acme"`},
		{"subject, tenant and roles are shown", []string{"-c", fastn, "--claims", dana, "--permission", "workflows.read"}, 0,
			`subject "u-dana" (dana), tenant "acme", roles [Developer]`},
		{"endatix admin passes tenant checks", []string{"-c", endatix, "--claims", adam, "--permission", "tenant.users.manage"}, 0, `bypass role "Admin"`},
		{"endatix admin does not reach platform", []string{"-c", endatix, "--claims", adam, "--permission", "platform.tenants.manage"}, 1,
			"platform.* requires role PlatformAdmin"},
		{"owned passes for the owner", []string{"-c", endatix, "--claims", cora, "--permission", "submissions.delete", "--permission", "submissions.delete.owned", "--owner", "u-cora"}, 0,
			`ALLOWED: permission "submissions.delete.owned"`},
		{"owned fails for another's", []string{"-c", endatix, "--claims", cora, "--permission", "submissions.delete", "--permission", "submissions.delete.owned", "--owner", "u-dana"}, 1,
			"requires the caller to own the resource"},
		{"--preset selects endatix; claims without sub are no verified subject", []string{"--preset", "endatix", "--claims", anon, "--permission", "access.authenticated"}, 1,
			"DENIED"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, out, errOut := run(t, check, tt.args...)
			if code != tt.code || !strings.Contains(out, tt.want) {
				t.Errorf("exit %d, want %d\nstdout %s\nstderr %s\nwant stdout to contain %q", code, tt.code, out, errOut, tt.want)
			}
		})
	}
}

func TestCheckJSONAndJWTInput(t *testing.T) {
	t.Setenv("KEYBRIDGE_CONFIG", "")
	cfg := writeFile(t, "fastn.yaml", strings.Replace(checkConfig, "%s", "fastn", 1))
	payload := base64.RawURLEncoding.EncodeToString([]byte(`{"sub":"u-x","realm_access":{"roles":["fastn-admin"]},"groups":["/customers/initech"]}`))
	jwt := writeFile(t, "token.jwt", "eyJhbGciOiJSUzI1NiJ9."+payload+".c2lnbmF0dXJl\n")
	code, out, errOut := run(t, check, "-c", cfg, "--claims", jwt, "--permission", "billing.manage", "-o", "json")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	var got struct {
		Decision struct {
			Allowed    bool   `json:"allowed"`
			Permission string `json:"permission"`
			Role       string `json:"role"`
			Rule       string `json:"rule"`
		} `json:"decision"`
		Grant struct {
			Subject string   `json:"subject"`
			Tenant  string   `json:"tenant"`
			Roles   []string `json:"roles"`
		} `json:"grant"`
		Primary string `json:"primary_role"`
	}
	if err := json.Unmarshal([]byte(out), &got); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	if !got.Decision.Allowed || got.Decision.Role != "Admin" || got.Decision.Rule != "rule #0: realm_role fastn-admin" ||
		got.Grant.Subject != "u-x" || got.Grant.Tenant != "initech" || got.Primary != "Admin" {
		t.Errorf("%+v", got)
	}
}

func TestCheckUsageAndConfigErrorsExitTwo(t *testing.T) {
	t.Setenv("KEYBRIDGE_CONFIG", "")
	dir := t.TempDir()
	claims := writeFile(t, "c.json", `{"sub":"s"}`)
	notJSON := writeFile(t, "n.json", `{"sub":`)
	array := writeFile(t, "a.json", `["sub"]`)
	null := writeFile(t, "null.json", `null`)
	badCfg := writeFile(t, "bad.yaml", "mapping:\n  tenant: { organisation: true }\n  rules: [{ realm_role: x, group: /y, grant_role: Viewer }]\n")
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"no claims", []string{"--permission", "workflows.read"}, "--claims FILE is required"},
		{"no permission", []string{"--claims", claims}, "at least one --permission is required"},
		{"a permission outside the catalog", []string{"--claims", claims, "--permission", "workflow.read"}, `--permission "workflow.read" is not in the fastn catalog`},
		{"missing claims file", []string{"--claims", filepath.Join(dir, "none.json"), "--permission", "workflows.read"}, "read claims"},
		{"claims not JSON", []string{"--claims", notJSON, "--permission", "workflows.read"}, "is not a JSON object of claims"},
		{"claims an array", []string{"--claims", array, "--permission", "workflows.read"}, "is not a JSON object of claims"},
		{"claims null", []string{"--claims", null, "--permission", "workflows.read"}, "is not a JSON object of claims"},
		{"unknown output", []string{"--claims", claims, "--permission", "workflows.read", "-o", "yaml"}, `-o "yaml": use text or json`},
		{"unknown preset", []string{"--preset", "nope", "--claims", claims, "--permission", "workflows.read"}, `unknown preset "nope"`},
		{"config problems named by key", []string{"-c", badCfg, "--claims", claims, "--permission", "workflows.read"}, "mapping.tenant.organisation: unknown key"},
		{"every config problem at once", []string{"-c", badCfg, "--claims", claims, "--permission", "workflows.read"}, "mapping.rules[0]: more than one matcher"},
		{"a stray argument", []string{"--claims", claims, "--permission", "workflows.read", "extra"}, `unexpected argument "extra"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, out, errOut := run(t, check, tt.args...)
			if code != 2 || !strings.Contains(errOut, tt.want) || out != "" {
				t.Errorf("exit %d, want 2\nstdout %q\nstderr %s\nwant stderr to contain %q", code, out, errOut, tt.want)
			}
		})
	}
}
