package store_test

import (
	"context"
	"database/sql"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/pressly/goose/v3"

	"github.com/keybridge/keybridge/internal/store"
	"github.com/keybridge/keybridge/internal/testenv"
	"github.com/keybridge/keybridge/migrations"
	"github.com/keybridge/keybridge/rls"
)

// seedThird adds tenant initech beside seed's acme and globex, with the same
// rows: the tenant an organization-level caller of acme and globex must not
// reach.
func seedThird(t *testing.T, st *store.Store) {
	t.Helper()
	ctx := context.Background()
	err := st.InSystemTx(ctx, func(tx pgx.Tx) error {
		for _, q := range []string{
			`INSERT INTO tenants (id, name, source) VALUES ('initech', 'Initech', 'group')`,
			`INSERT INTO people (id, username, status) VALUES ('p-initech', 'ian', 'active')`,
			`INSERT INTO tenant_members (tenant_id, person_id) VALUES ('initech', 'p-initech')`,
			`INSERT INTO teams (id, tenant_id, name, path) VALUES ('t-initech', 'initech', 'it', '/customers/initech/it')`,
			`INSERT INTO team_members (team_id, person_id, tenant_id) VALUES ('t-initech', 'p-initech', 'initech')`,
			`INSERT INTO roles (name, kind, tenant_id) VALUES ('Ops', 'custom', 'initech')`,
			`INSERT INTO role_permissions (role_id, permission, tenant_id) SELECT id, 'workflows.read', tenant_id FROM roles WHERE tenant_id = 'initech'`,
			`INSERT INTO role_assignments (person_id, role_id, tenant_id, source) SELECT 'p-initech', id, 'initech', 'local' FROM roles WHERE tenant_id = 'initech'`,
			`INSERT INTO audit_log (occurred_at, tenant_id, action, outcome, entry_id) VALUES (now(), 'initech', 'x', 'success', gen_random_uuid())`,
		} {
			if _, err := tx.Exec(ctx, q); err != nil {
				return fmt.Errorf("%s: %w", q, err)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatalf("seed initech: %v", err)
	}
}

// tenantsSeen lists the distinct tenants of the rows of table q sees.
func tenantsSeen(ctx context.Context, q interface {
	Query(context.Context, string, ...any) (pgx.Rows, error)
}, table string) ([]string, error) {
	col := "tenant_id"
	switch table {
	case "tenants":
		col = "id"
	case "people":
		col = "substr(id, 3)" // p-acme
	}
	rows, err := q.Query(ctx, `SELECT DISTINCT `+col+` FROM `+table+` WHERE `+col+` IS NOT NULL ORDER BY 1`)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, pgx.RowTo[string])
}

// Organization-level and platform callers run under roles of their own
// (migration 00012). Each reaches exactly its tenants, and neither the role
// nor the variable alone opens anything: the role without its variable, or
// the variable on the runtime role, reads one tenant or none.
func TestIsolationWiderCallers(t *testing.T) {
	tried := 0
	defer func() {
		bad := 0
		if t.Failed() {
			bad = 1
		}
		fmt.Printf("RELIABILITY isolation tried=%d bad=%d note=organization-level and platform roles, and their variables alone\n", tried, bad)
	}()
	st, _ := openStore(t)
	seed(t, st)
	seedThird(t, st)
	ctx := context.Background()

	seen := func(sess rls.Session, table string) []string {
		t.Helper()
		var got []string
		err := st.InTx(rls.WithSession(ctx, sess), func(tx pgx.Tx) error {
			var err error
			got, err = tenantsSeen(ctx, tx, table)
			return err
		})
		if err != nil {
			t.Fatalf("%s: %v", table, err)
		}
		return got
	}
	// byHand runs a transaction on the runtime pool with settings made
	// without the rls package.
	byHand := func(table string, settings ...string) []string {
		t.Helper()
		var got []string
		err := pgx.BeginFunc(ctx, st.AppPool(), func(tx pgx.Tx) error {
			for _, s := range settings {
				if _, err := tx.Exec(ctx, s); err != nil {
					return err
				}
			}
			var err error
			got, err = tenantsSeen(ctx, tx, table)
			return err
		})
		if err != nil {
			t.Fatalf("%s: %v", table, err)
		}
		return got
	}
	org := rls.Session{TenantID: "acme", TenantIDs: []string{"globex"}, UserID: "p-acme"}
	for _, table := range tenantTables {
		tried += 5
		t.Run(table+": an organization-level caller sees its tenants only", func(t *testing.T) {
			if got := seen(org, table); !slices.Equal(got, []string{"acme", "globex"}) {
				t.Errorf("sees tenants %q, want acme and globex", got)
			}
		})
		t.Run(table+": a platform caller sees every tenant", func(t *testing.T) {
			if got := seen(rls.Session{Platform: true}, table); !slices.Equal(got, []string{"acme", "globex", "initech"}) {
				t.Errorf("sees tenants %q, want all three", got)
			}
		})
		t.Run(table+": app.platform on the runtime role widens nothing", func(t *testing.T) {
			got := byHand(table, `SELECT set_config('app.tenant_id', 'acme', true), set_config('app.platform', 'on', true)`)
			if !slices.Equal(got, []string{"acme"}) {
				t.Errorf("sees tenants %q, want acme alone", got)
			}
		})
		t.Run(table+": the platform role without app.platform shows nothing", func(t *testing.T) {
			got := byHand(table, `SELECT set_config('app.tenant_id', 'acme', true), set_config('role', 'keybridge_platform', true)`)
			if len(got) != 0 {
				t.Errorf("sees tenants %q, want none", got)
			}
		})
		t.Run(table+": the organization role without app.tenant_ids shows its tenant", func(t *testing.T) {
			got := byHand(table, `SELECT set_config('app.tenant_id', 'acme', true), set_config('role', 'keybridge_org', true)`)
			if !slices.Equal(got, []string{"acme"}) {
				t.Errorf("sees tenants %q, want acme alone", got)
			}
		})
	}

	t.Run("an organization-level caller writes in its tenants only", func(t *testing.T) {
		tried += 2
		write := func(tenant string) error {
			return st.InTx(rls.WithSession(ctx, org), func(tx pgx.Tx) error {
				_, err := tx.Exec(ctx, `INSERT INTO roles (name, kind, tenant_id) VALUES ('Auditor', 'custom', $1)`, tenant)
				return err
			})
		}
		if err := write("globex"); err != nil {
			t.Errorf("custom role in globex: %v", err)
		}
		if err := write("initech"); err == nil || !strings.Contains(err.Error(), "row-level security") {
			t.Errorf("custom role in initech: %v, want a row-level security refusal", err)
		}
	})

	t.Run("the role switch ends with the transaction", func(t *testing.T) {
		tried++
		cfg := st.AppPool().Config().Copy()
		cfg.MaxConns = 1 // every transaction on the same connection
		one, err := pgxpool.NewWithConfig(ctx, cfg)
		if err != nil {
			t.Fatal(err)
		}
		defer one.Close()
		for _, sess := range []rls.Session{{Platform: true}, org} {
			var inside, after string
			if err := rls.InTx(rls.WithSession(ctx, sess), one, func(tx pgx.Tx) error {
				return tx.QueryRow(ctx, `SELECT current_user`).Scan(&inside)
			}); err != nil {
				t.Fatal(err)
			}
			if err := one.QueryRow(ctx, `SELECT current_user || coalesce(current_setting('app.tenant_ids', true), '') || coalesce(current_setting('app.platform', true), '')`).Scan(&after); err != nil {
				t.Fatal(err)
			}
			if inside != sess.DatabaseRole() || after != "keybridge_app" {
				t.Errorf("%+v: ran as %q, then the connection was %q, want %s then keybridge_app", sess, inside, after, sess.DatabaseRole())
			}
		}
	})
}

// keybridge_app may switch to the wider roles but must not inherit them:
// an inherited role's policies would join the tenant policy in an OR. The
// wider roles bypass nothing.
func TestIsolationWiderRolesAreSwitchedToNotInherited(t *testing.T) {
	db := testenv.NewDatabase(t)
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, db.AppURL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	for _, r := range []string{"keybridge_org", "keybridge_platform"} {
		var member, inherits, bypass bool
		if err := conn.QueryRow(ctx, `SELECT pg_has_role(current_user, $1, 'MEMBER'), pg_has_role(current_user, $1, 'USAGE'),
			rolbypassrls OR rolsuper FROM pg_roles WHERE rolname = $1`, r).Scan(&member, &inherits, &bypass); err != nil {
			t.Fatalf("%s: %v", r, err)
		}
		if !member || inherits || bypass {
			t.Errorf("%s: keybridge_app member=%v inherits=%v; bypasses RLS=%v; want true, false, false", r, member, inherits, bypass)
		}
	}
}

// The wider roles hold exactly the runtime role's privileges: on every
// table, column, function and schema. A migration that grants keybridge_app
// something and forgets them fails here (platform callers would lose it).
func TestIsolationWideRolesMirrorTheRuntimeRole(t *testing.T) {
	db := testenv.NewDatabase(t)
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, db.OwnerURL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	privileges := func(role string) []string {
		t.Helper()
		rows, err := conn.Query(ctx, `
			SELECT 'table ' || c.oid::regclass || ' ' || a.privilege_type
			  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace, aclexplode(c.relacl) a
			 WHERE n.nspname IN ('public', 'keybridge') AND a.grantee = $1::regrole
			UNION ALL
			SELECT 'column ' || c.oid::regclass || '.' || at.attname || ' ' || a.privilege_type
			  FROM pg_attribute at JOIN pg_class c ON c.oid = at.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace, aclexplode(at.attacl) a
			 WHERE n.nspname IN ('public', 'keybridge') AND a.grantee = $1::regrole
			UNION ALL
			SELECT 'function ' || p.oid::regprocedure || ' ' || a.privilege_type
			  FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace, aclexplode(p.proacl) a
			 WHERE n.nspname IN ('public', 'keybridge') AND a.grantee = $1::regrole
			UNION ALL
			SELECT 'schema ' || n.nspname || ' ' || a.privilege_type
			  FROM pg_namespace n, aclexplode(n.nspacl) a WHERE a.grantee = $1::regrole
			ORDER BY 1`, role)
		if err != nil {
			t.Fatal(err)
		}
		got, err := pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil {
			t.Fatal(err)
		}
		return got
	}
	app := privileges("keybridge_app")
	// current_tenants() is granted to the sync role as well; the wider
	// roles get it from the copy.
	if len(app) < 40 || !slices.Contains(app, "function keybridge.current_tenants() EXECUTE") {
		t.Fatalf("runtime role holds only %q", app)
	}
	for _, r := range []string{"keybridge_org", "keybridge_platform"} {
		if got := privileges(r); !slices.Equal(got, app) {
			t.Errorf("%s holds %q\nkeybridge_app holds %q", r, got, app)
		}
	}
}

// Down of 00012 restores the policies of before exactly (the OR with
// is_platform() on the runtime role) and leaves the wider roles nothing; Up
// again puts the new ones back.
func TestMigration00012DownAndUp(t *testing.T) {
	db := testenv.NewDatabase(t)
	ctx := context.Background()
	provider := func(url string) (*goose.Provider, *sql.DB) {
		t.Helper()
		sqldb, err := sql.Open("pgx", url)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = sqldb.Close() })
		p, err := goose.NewProvider(goose.DialectPostgres, sqldb, migrations.FS)
		if err != nil {
			t.Fatal(err)
		}
		return p, sqldb
	}
	state := func(sqldb *sql.DB) (policies []string, widePrivileges int) {
		t.Helper()
		rows, err := sqldb.QueryContext(ctx, `SELECT format('%s.%s %s %s USING %s CHECK %s', tablename, policyname, cmd, roles, qual, with_check)
			FROM pg_policies WHERE schemaname = 'public' ORDER BY tablename, policyname`)
		if err != nil {
			t.Fatal(err)
		}
		defer rows.Close()
		for rows.Next() {
			var p string
			if err := rows.Scan(&p); err != nil {
				t.Fatal(err)
			}
			policies = append(policies, p)
		}
		if err := sqldb.QueryRowContext(ctx, `SELECT
			(SELECT count(*) FROM information_schema.role_table_grants WHERE grantee IN ('keybridge_org', 'keybridge_platform'))
			+ (SELECT count(*) FROM information_schema.column_privileges WHERE grantee IN ('keybridge_org', 'keybridge_platform'))
			+ (SELECT count(*) FROM information_schema.routine_privileges WHERE grantee IN ('keybridge_org', 'keybridge_platform'))`).Scan(&widePrivileges); err != nil {
			t.Fatal(err)
		}
		return policies, widePrivileges
	}

	// The schema as it was before 00012: an empty database migrated to 11.
	owner, err := pgx.Connect(ctx, db.OwnerURL)
	if err != nil {
		t.Fatal(err)
	}
	defer owner.Close(ctx)
	if _, err := owner.Exec(ctx, `CREATE DATABASE `+db.Name+`_v11`); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { // after the deferred Close: a connection of its own
		c, err := pgx.Connect(context.Background(), db.OwnerURL)
		if err != nil {
			t.Errorf("drop %s_v11: %v", db.Name, err)
			return
		}
		defer c.Close(context.Background())
		_, _ = c.Exec(context.Background(), `DROP DATABASE IF EXISTS `+db.Name+`_v11 WITH (FORCE)`)
	})
	p11, db11 := provider(strings.Replace(db.OwnerURL, "/"+db.Name+"?", "/"+db.Name+"_v11?", 1))
	if _, err := p11.UpTo(ctx, 11); err != nil {
		t.Fatal(err)
	}
	before, _ := state(db11)
	_ = db11.Close()

	p, sqldb := provider(db.OwnerURL)
	after, privs := state(sqldb)
	if slices.Equal(after, before) || privs == 0 {
		t.Fatalf("up changed no policy, or granted the wider roles nothing (%d)", privs)
	}
	if _, err := p.DownTo(ctx, 11); err != nil {
		t.Fatal(err)
	}
	if got, privs := state(sqldb); !slices.Equal(got, before) || privs != 0 {
		t.Errorf("after down, %d privileges left to the wider roles; policies:\n%s\nwant:\n%s", privs, strings.Join(got, "\n"), strings.Join(before, "\n"))
	}
	if _, err := p.Up(ctx); err != nil {
		t.Fatal(err)
	}
	if got, privs2 := state(sqldb); !slices.Equal(got, after) || privs2 != privs {
		t.Errorf("up again: policies differ from the first up, or %d privileges (first %d)", privs2, privs)
	}
}
