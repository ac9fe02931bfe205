package main

import (
	"bytes"
	"context"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/keybridge/keybridge/internal/testenv"
)

// seedCustomRoles writes custom roles of tenant acme straight into the
// database, as rows written before the naming rule existed would be.
func seedCustomRoles(t *testing.T, ownerURL string, names ...string) {
	t.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, ownerURL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, `INSERT INTO tenants (id, name, source) VALUES ('acme', 'Acme', 'group') ON CONFLICT DO NOTHING`); err != nil {
		t.Fatal(err)
	}
	for _, n := range names {
		if _, err := conn.Exec(ctx, `WITH r AS (INSERT INTO roles (name, kind, tenant_id) VALUES ($1, 'custom', 'acme') RETURNING id)
			INSERT INTO role_permissions (role_id, permission, tenant_id) SELECT id, 'workflows.read', 'acme' FROM r`, n); err != nil {
			t.Fatal(err)
		}
	}
}

// `keybridge migrate up` names every stored custom role whose name breaks
// the rule, with the fix, and still succeeds: the rows are reported, not
// rewritten.
func TestMigrateReportsRoleNamesThatBreakTheRule(t *testing.T) {
	db := testenv.NewDatabase(t)
	bad := []string{"Reader,PlatformAdmin", "system", "owner", "Platformadmin", " Padded"}
	seedCustomRoles(t, db.OwnerURL, append([]string{"Release Manager"}, bad...)...)

	var out, errb bytes.Buffer
	if code := dispatch(context.Background(), []string{"migrate", "--database", db.OwnerURL, "up"}, &out, &errb); code != 0 {
		t.Fatalf("exit %d: %s", code, errb.String())
	}
	report := out.String() + errb.String()
	t.Log(report)
	for _, n := range bad {
		if !strings.Contains(report, n) {
			t.Errorf("%q not reported:\n%s", n, report)
		}
	}
	if strings.Contains(report, "Release Manager") {
		t.Errorf("a good name reported:\n%s", report)
	}
	if !strings.Contains(report, "rename") {
		t.Errorf("the report does not say how to fix it:\n%s", report)
	}
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, db.OwnerURL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var n int
	if err := conn.QueryRow(ctx, `SELECT count(*) FROM roles WHERE kind = 'custom' AND name = ANY ($1)`, bad).Scan(&n); err != nil || n != len(bad) {
		t.Errorf("%d of %d reported rows left as they were (%v)", n, len(bad), err)
	}
}

// The CLI applies the same rule as the API.
func TestRolesCreateRefusesNamesThatBreakTheRule(t *testing.T) {
	db := testenv.NewDatabase(t)
	seedCustomRoles(t, db.OwnerURL)
	for _, name := range []string{"Reader,PlatformAdmin", "system", "owner", " x", "x "} {
		var out, errb bytes.Buffer
		code := dispatch(context.Background(), []string{"roles", "create", "--database", db.OwnerURL, "--tenant", "acme",
			"--name", name, "--permissions", "workflows.read"}, &out, &errb)
		if code == 0 || !strings.Contains(errb.String(), "choose another name") && !strings.Contains(errb.String(), "role names use") {
			t.Errorf("roles create %q: exit %d, stdout %q, stderr %q", name, code, out.String(), errb.String())
		}
	}
	var out, errb bytes.Buffer
	if code := dispatch(context.Background(), []string{"roles", "create", "--database", db.OwnerURL, "--tenant", "acme",
		"--name", "Reader", "--permissions", "workflows.read"}, &out, &errb); code != 0 {
		t.Errorf("roles create Reader: exit %d %s", code, errb.String())
	}
}
