package store_test

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/keybridge/keybridge/internal/store"
	"github.com/keybridge/keybridge/internal/testenv"
	"github.com/keybridge/keybridge/rls"
)

// seed writes two tenants with a person, team, custom role and audit row
// each, through the cross-tenant sync role.
func seed(t *testing.T, st *store.Store) {
	t.Helper()
	ctx := context.Background()
	err := st.InSystemTx(ctx, func(tx pgx.Tx) error {
		for _, q := range []string{
			`INSERT INTO tenants (id, name, source) VALUES ('acme', 'Acme', 'group'), ('globex', 'Globex', 'group')`,
			`INSERT INTO people (id, username, status) VALUES ('p-acme', 'alice', 'active'), ('p-globex', 'gina', 'active')`,
			`INSERT INTO tenant_members (tenant_id, person_id) VALUES ('acme', 'p-acme'), ('globex', 'p-globex')`,
			`INSERT INTO teams (id, tenant_id, name, path) VALUES ('t-acme', 'acme', 'eng', '/customers/acme/eng'), ('t-globex', 'globex', 'ops', '/customers/globex/ops')`,
			`INSERT INTO team_members (team_id, person_id, tenant_id) VALUES ('t-acme', 'p-acme', 'acme'), ('t-globex', 'p-globex', 'globex')`,
			`INSERT INTO roles (name, kind, tenant_id) VALUES ('Ops', 'custom', 'acme'), ('Ops', 'custom', 'globex'), ('Viewer', 'system', NULL)`,
			`INSERT INTO role_permissions (role_id, permission, tenant_id) SELECT id, 'workflows.read', tenant_id FROM roles`,
			`INSERT INTO role_assignments (person_id, role_id, tenant_id, source) SELECT 'p-' || tenant_id, id, tenant_id, 'local' FROM roles WHERE kind = 'custom'`,
			`INSERT INTO audit_log (occurred_at, tenant_id, action, outcome, entry_id) VALUES (now(), 'acme', 'x', 'success', gen_random_uuid()), (now(), 'globex', 'x', 'success', gen_random_uuid())`,
		} {
			if _, err := tx.Exec(ctx, q); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatalf("seed: %v", err)
	}
}

var tenantTables = []string{"tenants", "tenant_members", "people", "teams", "team_members", "role_permissions", "role_assignments", "audit_log"}

func TestIsolationRLSTables(t *testing.T) {
	tried := 0
	defer func() {
		bad := 0
		if t.Failed() {
			bad = 1
		}
		fmt.Printf("RELIABILITY isolation tried=%d bad=%d note=tenant-scoped tables read and written as the runtime role\n", tried, bad)
	}()
	db := testenv.NewDatabase(t)
	ctx := context.Background()
	st, err := store.Open(ctx, db.AppURL, db.SyncURL, 4)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	seed(t, st)

	count := func(sess rls.Session, table string) (n int, foreign int) {
		t.Helper()
		err := st.InTx(rls.WithSession(ctx, sess), func(tx pgx.Tx) error {
			col := "tenant_id"
			switch table {
			case "tenants":
				col = "id"
			case "people":
				col = "CASE id WHEN 'p-acme' THEN 'acme' ELSE 'globex' END"
			}
			// Global rows (a system role's permissions) belong to no
			// tenant and are readable by all: count only tenant rows.
			return tx.QueryRow(ctx, `SELECT count(*) FILTER (WHERE `+col+` IS NOT NULL),
				count(*) FILTER (WHERE `+col+` IS NOT NULL AND `+col+` IS DISTINCT FROM '`+sess.TenantID+`') FROM `+table).Scan(&n, &foreign)
		})
		if err != nil {
			t.Fatalf("count %s: %v", table, err)
		}
		return n, foreign
	}
	for _, table := range tenantTables {
		tried += 3
		t.Run(table+" with tenant acme shows acme rows only", func(t *testing.T) {
			n, foreign := count(rls.Session{TenantID: "acme", UserID: "p-acme", Role: "Owner"}, table)
			if n == 0 || foreign != 0 {
				t.Errorf("%s: %d rows visible, %d of another tenant", table, n, foreign)
			}
		})
		t.Run(table+" with no tenant shows nothing", func(t *testing.T) {
			if n, _ := count(rls.Session{}, table); n != 0 {
				t.Errorf("%s: %d rows visible without a tenant", table, n)
			}
		})
		t.Run(table+" as platform shows both tenants", func(t *testing.T) {
			n, foreign := count(rls.Session{Platform: true}, table)
			if n < 2 || foreign == 0 {
				t.Errorf("%s: platform sees %d rows (%d outside its empty tenant)", table, n, foreign)
			}
		})
	}

	t.Run("global system roles are readable by every tenant", func(t *testing.T) {
		var n int
		err := st.InTx(rls.WithSession(ctx, rls.Session{TenantID: "acme"}), func(tx pgx.Tx) error {
			return tx.QueryRow(ctx, `SELECT count(*) FROM roles WHERE tenant_id IS NULL OR tenant_id = 'acme'`).Scan(&n)
		})
		if err != nil || n != 2 {
			t.Errorf("acme sees %d of its own and global roles (err %v), want 2", n, err)
		}
	})

	var globexRole string // known to acme only by id, as an attacker would guess or leak it
	if err := st.SysPool().QueryRow(ctx, `SELECT id::text FROM roles WHERE tenant_id = 'globex'`).Scan(&globexRole); err != nil {
		t.Fatal(err)
	}
	const byRLS, byGrant = "row-level security", "permission denied"
	writes := []struct {
		name, sql, refusal string
	}{
		{"insert a custom role for another tenant", `INSERT INTO roles (name, kind, tenant_id) VALUES ('Evil', 'custom', 'globex')`, byRLS},
		{"insert an assignment for another tenant", `INSERT INTO role_assignments (person_id, role_id, tenant_id, source) SELECT 'p-globex', id, 'globex', 'local' FROM roles WHERE tenant_id = 'acme' LIMIT 1`, byRLS},
		{"insert an audit row for another tenant", `INSERT INTO audit_log (occurred_at, tenant_id, action, outcome, entry_id) VALUES (now(), 'globex', 'x', 'success', gen_random_uuid())`, byGrant},
		{"forge an audit row in its own tenant", `INSERT INTO audit_log (occurred_at, tenant_id, actor_name, action, outcome, entry_id) VALUES (now(), 'acme', 'Alice Admin', 'people.delete', 'success', gen_random_uuid())`, byGrant},
		{"edit a system role", `INSERT INTO roles (name, kind) VALUES ('Root', 'system')`, byRLS},
		{"add a permission to a system role", `INSERT INTO role_permissions (role_id, permission, tenant_id) SELECT id, 'billing.manage', 'acme' FROM roles WHERE kind = 'system'`, byRLS},
		{"add a permission to another tenant's custom role", `INSERT INTO role_permissions (role_id, permission, tenant_id) VALUES ('` + globexRole + `', 'billing.manage', 'acme')`, byRLS},
		{"assign another tenant's custom role", `INSERT INTO role_assignments (person_id, role_id, tenant_id, source) VALUES ('p-acme', '` + globexRole + `', 'acme', 'local')`, byRLS},
		{"forge a keycloak-sourced assignment", `INSERT INTO role_assignments (person_id, role_id, tenant_id, source) SELECT 'p-acme', id, 'acme', 'keycloak' FROM roles WHERE tenant_id = 'acme' LIMIT 1`, byRLS},
	}
	for _, w := range writes {
		tried++
		t.Run("refused: "+w.name, func(t *testing.T) {
			err := st.InTx(rls.WithSession(ctx, rls.Session{TenantID: "acme"}), func(tx pgx.Tx) error {
				_, err := tx.Exec(ctx, w.sql)
				return err
			})
			if err == nil || !strings.Contains(err.Error(), w.refusal) {
				t.Errorf("write was not refused (%s): %v", w.refusal, err)
			}
		})
	}
	t.Run("updates cannot reach another tenant's rows", func(t *testing.T) {
		var affected int64
		err := st.InTx(rls.WithSession(ctx, rls.Session{TenantID: "acme"}), func(tx pgx.Tx) error {
			tag, err := tx.Exec(ctx, `UPDATE roles SET description = 'pwned' WHERE tenant_id = 'globex'`)
			affected = tag.RowsAffected()
			return err
		})
		if err != nil || affected != 0 {
			t.Errorf("update touched %d foreign rows (err %v)", affected, err)
		}
	})
	t.Run("a person's other tenants stay hidden", func(t *testing.T) {
		tried++
		// p-acme joins globex too: acme may see p-acme, not that it is in globex.
		if err := st.InSystemTx(ctx, func(tx pgx.Tx) error {
			_, err := tx.Exec(ctx, `INSERT INTO tenant_members (tenant_id, person_id) VALUES ('globex', 'p-acme')`)
			return err
		}); err != nil {
			t.Fatal(err)
		}
		acme := rls.WithSession(ctx, rls.Session{TenantID: "acme"})
		var name string
		if err := st.InTx(acme, func(tx pgx.Tx) error {
			return tx.QueryRow(ctx, `SELECT username FROM people WHERE id = 'p-acme'`).Scan(&name)
		}); err != nil || name != "alice" {
			t.Fatalf("acme cannot read its member's named columns: %q, %v", name, err)
		}
		for _, q := range []string{`SELECT tenant_ids FROM people`, `SELECT * FROM people`, `SELECT count(*) FROM people WHERE 'globex' = ANY (tenant_ids)`} {
			err := st.InTx(acme, func(tx pgx.Tx) error {
				_, err := tx.Exec(ctx, q)
				return err
			})
			if err == nil || !strings.Contains(err.Error(), "permission denied") {
				t.Errorf("%s: %v, want permission denied", q, err)
			}
		}
		// The policy still reads the column: globex sees p-acme, a tenant-less session does not.
		var n int
		if err := st.InTx(rls.WithSession(ctx, rls.Session{TenantID: "globex"}), func(tx pgx.Tx) error {
			return tx.QueryRow(ctx, `SELECT count(*) FROM people WHERE id = 'p-acme'`).Scan(&n)
		}); err != nil || n != 1 {
			t.Errorf("globex sees its new member %d times (err %v), want 1", n, err)
		}
	})
	t.Run("a transaction without a session is refused", func(t *testing.T) {
		if err := st.InTx(ctx, func(pgx.Tx) error { return nil }); err == nil {
			t.Error("InTx ran without an RLS session")
		}
	})
}

func TestIsolationRuntimeRoleCannotBypassRLS(t *testing.T) {
	db := testenv.NewDatabase(t)
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, db.AppURL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var bypass, super bool
	if err := conn.QueryRow(ctx, `SELECT rolbypassrls, rolsuper FROM pg_roles WHERE rolname = current_user`).Scan(&bypass, &super); err != nil {
		t.Fatal(err)
	}
	if bypass || super {
		t.Errorf("runtime role has BYPASSRLS=%v SUPERUSER=%v", bypass, super)
	}
	rows, err := conn.Query(ctx, `SELECT c.relname, pg_get_userbyid(c.relowner) = current_user, c.relrowsecurity, c.relforcerowsecurity
		FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
		WHERE n.nspname = 'public' AND c.relkind = 'r' AND c.relname <> 'goose_db_version'`)
	if err != nil {
		t.Fatal(err)
	}
	tables := 0
	for rows.Next() {
		var name string
		var owned, enabled, forced bool
		if err := rows.Scan(&name, &owned, &enabled, &forced); err != nil {
			t.Fatal(err)
		}
		tables++
		if owned {
			t.Errorf("%s is owned by the runtime role", name)
		}
		if !enabled || !forced {
			t.Errorf("%s: row level security enabled=%v forced=%v", name, enabled, forced)
		}
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	if tables < 13 {
		t.Errorf("only %d tables checked", tables)
	}
	// Setting the variables by hand outside keybridge does not help either:
	// without app.platform the policies still filter.
	if _, err := conn.Exec(ctx, `SET ROLE keybridge_sync`); err == nil {
		t.Error("runtime role can SET ROLE keybridge_sync")
	}
}
