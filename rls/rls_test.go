package rls_test

import (
	"context"
	"slices"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/keybridge/keybridge/internal/testenv"
	"github.com/keybridge/keybridge/rls"
)

// app.roles is a text[] literal that keybridge.current_roles() reads back
// element for element: a name holding a comma, a quote, a brace, a
// backslash or the word NULL stays one role and can't be read as two.
func TestAppRolesReadsBackAsTheSameList(t *testing.T) {
	db := testenv.NewDatabase(t)
	ctx := context.Background()
	pool, err := pgxpool.New(ctx, db.AppURL)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()

	for _, roles := range [][]string{
		{"Viewer", "Reader,PlatformAdmin"},
		{`Reader","PlatformAdmin`},
		{"Reader}", "{PlatformAdmin"},
		{`Reader\`, "Viewer"},
		{`Reader\","PlatformAdmin`},
		{"NULL", " spaced ", "", "End User", "Équipe"},
		{"Viewer"},
		nil,
	} {
		ctx := rls.WithSession(ctx, rls.Session{TenantID: "acme", UserID: "u1", Role: "Viewer", Roles: roles})
		var got []string
		var smuggled, viewer bool
		err := rls.InTx(ctx, pool, func(tx pgx.Tx) error {
			return tx.QueryRow(ctx, `SELECT keybridge.current_roles(), 'PlatformAdmin' = ANY (keybridge.current_roles()),
				coalesce('Viewer' = ANY (keybridge.current_roles()), false)`).Scan(&got, &smuggled, &viewer)
		})
		if err != nil {
			t.Fatalf("%q: %v", roles, err)
		}
		want := roles
		if want == nil {
			want = []string{}
		}
		if !slices.Equal(got, want) {
			t.Errorf("set %q, read back %q", roles, got)
		}
		if smuggled {
			t.Errorf("%q reads as holding PlatformAdmin", roles)
		}
		if viewer != slices.Contains(roles, "Viewer") {
			t.Errorf("%q: Viewer = ANY is %v", roles, viewer)
		}
	}
}

// Outside a session, or with a value that is not a text[] literal (a
// comma-joined list set by hand), current_roles() refuses to guess: no
// roles, or an error, never a role split out of another.
func TestCurrentRolesWithoutOrWithAMalformedSetting(t *testing.T) {
	db := testenv.NewDatabase(t)
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, db.AppURL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var got []string
	if err := conn.QueryRow(ctx, `SELECT keybridge.current_roles()`).Scan(&got); err != nil || len(got) != 0 {
		t.Errorf("no session: %q %v", got, err)
	}
	tx, err := conn.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = tx.Rollback(ctx) }()
	if _, err := tx.Exec(ctx, `SELECT set_config('app.roles', 'Viewer,PlatformAdmin', true)`); err != nil {
		t.Fatal(err)
	}
	if err := tx.QueryRow(ctx, `SELECT keybridge.current_roles()`).Scan(&got); err == nil {
		t.Errorf("a comma-joined app.roles read as %q", got)
	}
}

// Vars hands set_config the text[] literal, not a comma-joined list.
func TestVarsEncodesRolesAsAnArrayLiteral(t *testing.T) {
	v := rls.Session{Roles: []string{"Viewer", `Re"a\der,x`}}.Vars()
	if got, want := v["app.roles"], `{"Viewer","Re\"a\\der,x"}`; got != want {
		t.Errorf("app.roles = %s, want %s", got, want)
	}
	if got := (rls.Session{}).Vars()["app.roles"]; got != "{}" {
		t.Errorf("no roles: app.roles = %q, want {}", got)
	}
}

// The policy template of docs/rls.md, on real PostgreSQL: a role named
// "Reader,Admin" does not pass as Admin, Admin does; and a
// service that is not in Go, setting app.roles from a text[] parameter as
// the document says, gets the same list back.
func TestRolePolicyTemplateOfTheDocs(t *testing.T) {
	db := testenv.NewDatabase(t)
	ctx := context.Background()
	owner, err := pgx.Connect(ctx, db.OwnerURL)
	if err != nil {
		t.Fatal(err)
	}
	defer owner.Close(ctx)
	for _, q := range []string{
		`CREATE TABLE reports (id int, tenant_id text NOT NULL)`,
		`ALTER TABLE reports ENABLE ROW LEVEL SECURITY`,
		`ALTER TABLE reports FORCE ROW LEVEL SECURITY`,
		`CREATE POLICY reviewers_read ON reports FOR SELECT
		  USING (tenant_id = (SELECT keybridge.current_tenant())
		         AND (SELECT keybridge.current_roles()) && ARRAY['Admin', 'Reviewer'])`,
		`CREATE POLICY owner_writes ON reports FOR INSERT TO CURRENT_USER WITH CHECK (true)`,
		`INSERT INTO reports VALUES (1, 'acme'), (2, 'globex')`,
		`GRANT SELECT ON reports TO keybridge_app`,
	} {
		if _, err := owner.Exec(ctx, q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	pool, err := pgxpool.New(ctx, db.AppURL)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	for _, tt := range []struct {
		roles []string
		rows  int
	}{
		{[]string{"Viewer", "Reader,Admin"}, 0},
		{[]string{`Reader","Admin`}, 0},
		{[]string{"{Admin}"}, 0},
		{[]string{"Viewer", "Admin"}, 1},
		{[]string{"Reviewer"}, 1},
		{nil, 0},
	} {
		ctx := rls.WithSession(ctx, rls.Session{TenantID: "acme", UserID: "u1", Roles: tt.roles})
		var n int
		if err := rls.InTx(ctx, pool, func(tx pgx.Tx) error {
			return tx.QueryRow(ctx, `SELECT count(*) FROM reports`).Scan(&n)
		}); err != nil {
			t.Fatal(err)
		}
		if n != tt.rows {
			t.Errorf("roles %q see %d rows, want %d", tt.roles, n, tt.rows)
		}
	}

	roles := []string{"Viewer", "Reader,Admin", `q"uote`, `back\slash`, "{brace}", "NULL", "End User", ""}
	tx, err := pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = tx.Rollback(ctx) }()
	var got []string
	if err := tx.QueryRow(ctx, `SELECT set_config('app.roles', $1::text[]::text, true)`, roles).Scan(new(string)); err != nil {
		t.Fatal(err)
	}
	if err := tx.QueryRow(ctx, `SELECT keybridge.current_roles()`).Scan(&got); err != nil || !slices.Equal(got, roles) {
		t.Errorf("set from a text[] parameter %q, read back %q (%v)", roles, got, err)
	}
}
