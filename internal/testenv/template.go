package testenv

import (
	"context"
	"testing"

	"github.com/jackc/pgx/v5"
)

// TemplateTable creates the table items, protected with the policy template
// of docs/rls.md (a policy for each of keybridge_app, keybridge_org and
// keybridge_platform), with five rows for each of acme and globex.
func TemplateTable(t testing.TB, db Database) {
	t.Helper()
	ctx := context.Background()
	owner, err := pgx.Connect(ctx, db.OwnerURL)
	if err != nil {
		t.Fatal(err)
	}
	defer owner.Close(ctx)
	for _, q := range []string{
		`CREATE TABLE items (id serial PRIMARY KEY, tenant_id text NOT NULL, name text NOT NULL)`,
		`CREATE INDEX items_tenant_idx ON items (tenant_id)`,
		`INSERT INTO items (tenant_id, name) SELECT t, t || i FROM unnest(ARRAY['acme', 'globex']) t, generate_series(1, 5) i`,
		`ALTER TABLE items ENABLE ROW LEVEL SECURITY`,
		`ALTER TABLE items FORCE ROW LEVEL SECURITY`,
		`CREATE POLICY tenant_isolation ON items TO keybridge_app
		  USING (tenant_id = (SELECT keybridge.current_tenant()))`,
		`CREATE POLICY organization_isolation ON items TO keybridge_org
		  USING (tenant_id = ANY ((SELECT keybridge.current_tenants())::text[]))`,
		`CREATE POLICY platform_access ON items TO keybridge_platform
		  USING ((SELECT keybridge.is_platform()))`,
		`GRANT SELECT, INSERT, UPDATE, DELETE ON items TO keybridge_app, keybridge_org, keybridge_platform`,
		`GRANT USAGE ON SEQUENCE items_id_seq TO keybridge_app, keybridge_org, keybridge_platform`,
	} {
		if _, err := owner.Exec(ctx, q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
}
