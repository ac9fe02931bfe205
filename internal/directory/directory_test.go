package directory_test

import (
	"bytes"
	"context"
	"log/slog"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/keybridge/keybridge/internal/directory"
	"github.com/keybridge/keybridge/internal/testenv"
	"github.com/keybridge/keybridge/mapping"
)

// A custom role stored under a name the rule refuses (written before the
// rule, or by hand) is not loaded: it is skipped with a warning naming it,
// not renamed, and an assignment of it adds nothing to the holder's grant,
// so `Reader,PlatformAdmin` never reaches app.roles or X-Auth-Roles.
func TestCustomRolesWithBadNamesAreSkippedAtLoad(t *testing.T) {
	db := testenv.NewDatabase(t)
	ctx := context.Background()
	pool, err := pgxpool.New(ctx, db.SyncURL)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	for _, q := range []string{
		`INSERT INTO tenants (id, name, source) VALUES ('acme', 'Acme', 'group')`,
		`INSERT INTO people (id, username, status) VALUES ('v1', 'victor', 'active')`,
		`INSERT INTO tenant_members (tenant_id, person_id) VALUES ('acme', 'v1')`,
		`INSERT INTO roles (name, kind, tenant_id) VALUES ('Reader,PlatformAdmin', 'custom', 'acme'), ('system', 'custom', 'acme'), ('Reader', 'custom', 'acme')`,
		`INSERT INTO role_permissions (role_id, permission, tenant_id) SELECT id, 'forms.view', 'acme' FROM roles WHERE kind = 'custom'`,
		`INSERT INTO role_assignments (person_id, role_id, tenant_id, source) SELECT 'v1', id, 'acme', 'local' FROM roles WHERE kind = 'custom'`,
	} {
		if _, err := pool.Exec(ctx, q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	engine, err := mapping.New(mapping.Config{Preset: "endatix", Tenant: mapping.TenantSource{GroupPrefix: "/customers"}})
	if err != nil {
		t.Fatal(err)
	}
	var logs bytes.Buffer
	dir := &directory.Directory{Pool: pool, Base: engine, Log: slog.New(slog.NewTextHandler(&logs, nil)), Interval: time.Hour}
	if err := dir.Load(ctx); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"Reader,PlatformAdmin", "system"} {
		if _, ok := dir.Engine().Role(name, "acme"); ok {
			t.Errorf("custom role %q loaded", name)
		}
		if !strings.Contains(logs.String(), name) {
			t.Errorf("no warning names %q:\n%s", name, logs.String())
		}
	}
	p, _ := dir.Lookup("v1")
	g := dir.Engine().Resolve(mapping.Facts{Subject: "v1", Groups: []string{"/customers/acme"}}, p.Assignments, time.Now())
	if !slices.Equal(g.Roles, []string{"Reader", "Authenticated"}) || g.PrimaryRole() != "Reader" || g.Global() {
		t.Errorf("grant roles %v primary %q global %v", g.Roles, g.PrimaryRole(), g.Global())
	}
}
