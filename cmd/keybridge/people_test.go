package main

import (
	"bytes"
	"context"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/keybridge/keybridge/internal/store"
	"github.com/keybridge/keybridge/internal/testenv"
	"github.com/keybridge/keybridge/mapping"
)

func people(ctx context.Context, args []string, out, errOut *bytes.Buffer) int {
	return runPeople(ctx, args, out, errOut)
}

// The CLI acts with the platform operator's authority, but through the same
// assignment rules as the API: an expiry must be in the future, and the
// tenant's last Owner keeps the role.
func TestPeopleAssignKeepsTheTenantRules(t *testing.T) {
	t.Setenv("KEYBRIDGE_CONFIG", writeFile(t, "keybridge.yaml", "mapping:\n  preset: fastn\n  tenant: {group_prefix: /customers}\n"))
	db := testenv.NewDatabase(t)
	ctx := context.Background()
	st, err := store.Open(ctx, db.AppURL, db.SyncURL, 2)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(st.Close)
	e, err := mapping.New(mapping.Config{Preset: "fastn"})
	if err != nil {
		t.Fatal(err)
	}
	if err := st.InSystemTx(ctx, func(tx pgx.Tx) error {
		for _, r := range e.Roles() {
			if r.Kind != "system" {
				continue
			}
			var id string
			if err := tx.QueryRow(ctx, `INSERT INTO roles (name, kind) VALUES ($1, 'system') RETURNING id::text`, r.Name).Scan(&id); err != nil {
				return err
			}
			if _, err := tx.Exec(ctx, `INSERT INTO role_permissions (role_id, permission) SELECT $1::uuid, unnest($2::text[])`, id, r.Permissions); err != nil {
				return err
			}
		}
		for _, q := range []string{
			`INSERT INTO tenants (id, name, source) VALUES ('acme', 'Acme', 'group')`,
			`INSERT INTO people (id, username, display_name, status) VALUES ('dana', 'dana', 'Dana', 'active')`,
			`INSERT INTO tenant_members VALUES ('acme', 'dana')`,
			`INSERT INTO role_assignments (person_id, role_id, tenant_id, source) SELECT 'dana', id, 'acme', 'local' FROM roles WHERE name = 'Owner'`,
		} {
			if _, err := tx.Exec(ctx, q); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	held := func() string {
		var s string
		if err := st.SysPool().QueryRow(ctx, `SELECT string_agg(r.name || CASE WHEN ra.expires_at IS NULL THEN '' ELSE '@temp' END, ',' ORDER BY r.name)
			FROM role_assignments ra JOIN roles r ON r.id = ra.role_id WHERE ra.person_id = 'dana'`).Scan(&s); err != nil {
			t.Fatal(err)
		}
		return s
	}
	assign := func(args ...string) (int, string) {
		code, _, errOut := run(t, people, append([]string{"assign", "--database", db.OwnerURL, "--person", "dana", "--tenant", "acme"}, args...)...)
		return code, errOut
	}
	if code, errOut := assign("--roles", "Owner,Viewer", "--expires-in", "-1h"); code != 2 || !strings.Contains(errOut, "expires-in") {
		t.Errorf("an expiry in the past: exit %d %s", code, errOut)
	}
	if code, errOut := assign("--roles", "Viewer"); code != 1 || !strings.Contains(errOut, "Owner") {
		t.Errorf("demoting the last Owner: exit %d %s", code, errOut)
	}
	if got := held(); got != "Owner" {
		t.Errorf("dana holds %s, want Owner only", got)
	}
	if code, errOut := assign("--roles", "Owner,Viewer", "--expires-in", "1h"); code != 1 || !strings.Contains(errOut, "Owner") {
		t.Errorf("turning the last Owner temporary: exit %d %s", code, errOut)
	}
	if code, errOut := assign("--roles", "Owner,Viewer"); code != 0 {
		t.Errorf("the operator adds Viewer: exit %d %s", code, errOut)
	}
	if got := held(); got != "Owner,Viewer" {
		t.Errorf("dana holds %s, want Owner,Viewer", got)
	}
}
