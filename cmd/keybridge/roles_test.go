package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

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
