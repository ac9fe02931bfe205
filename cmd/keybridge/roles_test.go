package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func run(t *testing.T, fn func(context.Context, []string, *bytes.Buffer, *bytes.Buffer) int, args ...string) (int, string, string) {
	t.Helper()
	var out, errOut bytes.Buffer
	code := fn(context.Background(), args, &out, &errOut)
	return code, out.String(), errOut.String()
}

func roles(ctx context.Context, args []string, out, errOut *bytes.Buffer) int {
	return runRoles(ctx, args, out, errOut)
}

func writeFile(t *testing.T, name, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

type rolesJSON struct {
	Preset string `json:"preset"`
	Roles  []struct {
		Name        string   `json:"name"`
		Kind        string   `json:"kind"`
		Bypass      string   `json:"bypass"`
		Count       int      `json:"count"`
		Permissions []string `json:"permissions"`
	} `json:"roles"`
}

func TestRolesJSONReportsTheSeedsCounts(t *testing.T) {
	t.Setenv("KEYBRIDGE_CONFIG", "")
	tests := []struct {
		preset string
		names  []string
		counts []int
	}{
		{"fastn", []string{"Owner", "Admin", "Developer", "Operator", "Viewer", "End User"}, []int{39, 39, 34, 18, 7, 9}},
		{"endatix", []string{"PlatformAdmin", "Admin", "Creator", "Authenticated", "Public"}, []int{39, 32, 17, 1, 0}},
	}
	for _, tt := range tests {
		t.Run(tt.preset, func(t *testing.T) {
			code, out, errOut := run(t, roles, "--preset", tt.preset, "-o", "json")
			if code != 0 {
				t.Fatalf("exit %d: %s", code, errOut)
			}
			var got rolesJSON
			if err := json.Unmarshal([]byte(out), &got); err != nil {
				t.Fatalf("%v\n%s", err, out)
			}
			var names []string
			var counts []int
			for _, r := range got.Roles {
				names = append(names, r.Name)
				counts = append(counts, r.Count)
				if len(r.Permissions) != r.Count {
					t.Errorf("%s: count %d but %d permissions listed", r.Name, r.Count, len(r.Permissions))
				}
			}
			if got.Preset != tt.preset || !slices.Equal(names, tt.names) || !slices.Equal(counts, tt.counts) {
				t.Errorf("preset %s roles %v counts %v, want %v %v", got.Preset, names, counts, tt.names, tt.counts)
			}
		})
	}
}

func TestRolesTableShowsKindBypassAndCount(t *testing.T) {
	t.Setenv("KEYBRIDGE_CONFIG", "")
	code, out, _ := run(t, roles, "list", "--preset", "endatix")
	if code != 0 {
		t.Fatal(code)
	}
	for _, want := range []string{"preset endatix: 39 permissions", "ROLE", "PlatformAdmin  system, bypass global  39", "Admin          system, bypass tenant  32", "Public         pseudo                 0      -"} {
		if !strings.Contains(out, want) {
			t.Errorf("table lacks %q:\n%s", want, out)
		}
	}
}

func TestRolesFromAConfigFile(t *testing.T) {
	t.Setenv("KEYBRIDGE_CONFIG", "")
	// database and Keycloak are unset: listing roles must not need them.
	extra := writeFile(t, "extra.yaml", "mapping:\n  preset: fastn\n  permissions: [reports.view]\n")
	code, out, errOut := run(t, roles, "-c", extra, "-o", "json")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	var got rolesJSON
	if err := json.Unmarshal([]byte(out), &got); err != nil {
		t.Fatal(err)
	}
	if got.Roles[0].Name != "Owner" || got.Roles[0].Count != 40 || !slices.Contains(got.Roles[0].Permissions, "reports.view") {
		t.Errorf("Owner with an extra permission: %+v", got.Roles[0])
	}
}

func TestRolesUsageAndConfigErrorsExitTwo(t *testing.T) {
	t.Setenv("KEYBRIDGE_CONFIG", "")
	bad := writeFile(t, "bad.yaml", "mapping:\n  preset: fastn\n  rules:\n    - { realm_role: x, grant_role: Develper }\n    - { realm_role: y, grant_rol: Viewer }\n")
	tests := []struct {
		name string
		args []string
		want []string
	}{
		{"unknown output", []string{"--preset", "fastn", "-o", "yaml"}, []string{`-o "yaml": use table or json`}},
		{"unknown preset", []string{"--preset", "acme"}, []string{`unknown preset "acme": use one of endatix, fastn`}},
		{"unknown flag", []string{"--nope"}, []string{"flag provided but not defined: -nope"}},
		{"stray argument", []string{"fastn"}, []string{`unexpected argument "fastn"`}},
		{"missing config file", []string{"-c", filepath.Join(t.TempDir(), "missing.yaml")}, []string{"read config"}},
		{"every mapping problem, keys named", []string{"-c", bad}, []string{
			`mapping.rules[0].grant_role: unknown role "Develper"`, "mapping.rules[1].grant_rol: unknown key", "problem(s)"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, _, errOut := run(t, roles, tt.args...)
			if code != 2 {
				t.Errorf("exit %d, want 2", code)
			}
			for _, w := range tt.want {
				if !strings.Contains(errOut, w) {
					t.Errorf("stderr lacks %q:\n%s", w, errOut)
				}
			}
		})
	}
}

func TestRolesPresetAloneIgnoresTheEnvironmentsConfig(t *testing.T) {
	t.Setenv("KEYBRIDGE_CONFIG", writeFile(t, "endatix.yaml", "mapping:\n  preset: endatix\n  rules: [{realm_role: a, grant_role: Creator}]\n"))
	if code, _, errOut := run(t, roles, "--preset", "fastn"); code != 0 {
		t.Errorf("exit %d: %s", code, errOut)
	}
	code, out, _ := run(t, roles, "-o", "json")
	if code != 0 || !strings.Contains(out, `"preset": "endatix"`) {
		t.Errorf("without --preset the environment's config counts: exit %d\n%s", code, out)
	}
}

// The lead's dispatch-level tests, kept as they were written.

func TestRolesCommandReportsTheSeedsCounts(t *testing.T) {
	var out, errb bytes.Buffer
	if code := dispatch(context.Background(), []string{"roles", "--preset", "fastn", "-o", "json"}, &out, &errb); code != 0 {
		t.Fatalf("exit %d: %s", code, errb.String())
	}
	var doc struct {
		Roles []struct {
			Name  string `json:"name"`
			Kind  string `json:"kind"`
			Count int    `json:"count"`
		} `json:"roles"`
	}
	if err := json.Unmarshal(out.Bytes(), &doc); err != nil {
		t.Fatal(err)
	}
	var counts []int
	for _, r := range doc.Roles {
		if r.Kind == "system" {
			counts = append(counts, r.Count)
		}
	}
	if got := strings.Trim(strings.Join(strings.Fields(strings.Trim(jsonInts(counts), "[]")), ","), ","); got != "39,39,34,18,7,9" {
		t.Errorf("counts %s, want 39,39,34,18,7,9", got)
	}
}

func jsonInts(v []int) string {
	b, _ := json.Marshal(v)
	return strings.ReplaceAll(string(b), ",", " ")
}

func TestCheckCommandExitCodes(t *testing.T) {
	dir := t.TempDir()
	claims := filepath.Join(dir, "claims.json")
	_ = os.WriteFile(claims, []byte(`{"sub":"dana","realm_access":{"roles":["fastn-developer"]},"groups":["/customers/acme"]}`), 0o644)
	cfg := filepath.Join(dir, "keybridge.yaml")
	_ = os.WriteFile(cfg, []byte("mapping:\n  preset: fastn\n  tenant: {group_prefix: /customers}\n  rules:\n    - {realm_role: fastn-developer, grant_role: Developer}\n"), 0o644)
	tests := []struct {
		args []string
		code int
		want string
	}{
		{[]string{"check", "-c", cfg, "--claims", claims, "--permission", "workflows.deploy_prod"}, 0, "ALLOWED"},
		{[]string{"check", "-c", cfg, "--claims", claims, "--permission", "billing.manage"}, 1, "DENIED"},
		{[]string{"check", "-c", cfg, "--claims", claims, "--permission", "workflows.read", "--tenant", "globex"}, 1, "differs"},
		{[]string{"check", "-c", cfg, "--permission", "x"}, 2, ""},
	}
	for _, tt := range tests {
		var out, errb bytes.Buffer
		code := dispatch(context.Background(), tt.args, &out, &errb)
		if code != tt.code || !strings.Contains(out.String(), tt.want) {
			t.Errorf("%v: exit %d %q (stderr %q), want %d %q", tt.args, code, out.String(), errb.String(), tt.code, tt.want)
		}
	}
}

func TestUnknownCommandFailsAndHelpListsEveryCommand(t *testing.T) {
	var out, errb bytes.Buffer
	if code := dispatch(context.Background(), []string{"--help"}, &out, &errb); code != 0 {
		t.Fatalf("help exit %d", code)
	}
	for _, c := range []string{"serve", "sync", "migrate", "check", "roles", "people", "audit", "config", "version"} {
		if !strings.Contains(out.String(), "  "+c) {
			t.Errorf("help does not list %s", c)
		}
	}
	if code := dispatch(context.Background(), []string{"frobnicate"}, &out, &errb); code == 0 {
		t.Error("unknown command succeeded")
	}
}
