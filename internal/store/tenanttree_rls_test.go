package store_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/keybridge/keybridge/rls"
)

// Issue 16, docs/rls.md "Organizations and customers": the policies of a
// customer-scoped table (orders, by tenant_id) and of an
// organization-scoped one (org_docs, by org_id = keybridge.current_org())
// read their setting once per query (an InitPlan) and find the rows through
// the table's index, for a caller acting in a customer and for an
// organization-level caller acting in the organization. Run with -v to
// print the EXPLAIN (ANALYZE) plans the document quotes.
func TestTenantTreePoliciesKeepTheIndex(t *testing.T) {
	st, db := openStore(t)
	ctx := context.Background()
	owner, err := pgx.Connect(ctx, db.OwnerURL)
	if err != nil {
		t.Fatal(err)
	}
	defer owner.Close(ctx)
	// 20 organizations o00..o19 of 5 customers each (o03-c0..o03-c4):
	// 3,000 orders per customer, 2,000 documents per organization.
	for _, q := range []string{
		`CREATE TABLE orders (id bigserial PRIMARY KEY, tenant_id text NOT NULL, total numeric NOT NULL)`,
		`INSERT INTO orders (tenant_id, total) SELECT 'o' || lpad((i % 20)::text, 2, '0') || '-c' || (i / 20 % 5), i % 100 FROM generate_series(0, 299999) i`,
		`CREATE INDEX orders_tenant_idx ON orders (tenant_id)`,
		`ALTER TABLE orders ENABLE ROW LEVEL SECURITY`, `ALTER TABLE orders FORCE ROW LEVEL SECURITY`,
		`CREATE POLICY tenant_isolation ON orders TO keybridge_app USING (tenant_id = (SELECT keybridge.current_tenant()))`,
		`CREATE POLICY organization_isolation ON orders TO keybridge_org USING (tenant_id = ANY ((SELECT keybridge.current_tenants())::text[]))`,
		`CREATE POLICY platform_access ON orders TO keybridge_platform USING ((SELECT keybridge.is_platform()))`,
		`GRANT SELECT ON orders TO keybridge_app, keybridge_org, keybridge_platform`,

		`CREATE TABLE org_docs (id bigserial PRIMARY KEY, org_id text NOT NULL, title text NOT NULL)`,
		`INSERT INTO org_docs (org_id, title) SELECT 'o' || lpad((i % 20)::text, 2, '0'), 'doc ' || i FROM generate_series(0, 39999) i`,
		`CREATE INDEX org_docs_org_idx ON org_docs (org_id)`,
		`ALTER TABLE org_docs ENABLE ROW LEVEL SECURITY`, `ALTER TABLE org_docs FORCE ROW LEVEL SECURITY`,
		`CREATE POLICY organization_isolation ON org_docs TO keybridge_app, keybridge_org USING (org_id = (SELECT keybridge.current_org()))`,
		`CREATE POLICY platform_access ON org_docs TO keybridge_platform USING ((SELECT keybridge.is_platform()))`,
		`GRANT SELECT ON org_docs TO keybridge_app, keybridge_org, keybridge_platform`,
		`VACUUM ANALYZE orders, org_docs`,
	} {
		if _, err := owner.Exec(ctx, q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	customers := []string{"o03-c0", "o03-c1", "o03-c2", "o03-c3", "o03-c4"}
	// As middleware.SessionFor writes them from a grant: acting in a
	// customer through an organization-level role, acting in the
	// organization itself, and confined to a customer.
	inCustomer := rls.Session{TenantID: "o03-c1", OrgID: "o03"}
	inOrg := rls.Session{TenantID: "o03", OrgID: "o03", TenantIDs: customers}
	confined := rls.Session{TenantID: "o03-c1"}
	for _, tt := range []struct {
		name  string
		sess  rls.Session
		query string
		index string
		rows  int
	}{
		{"a customer's orders", inCustomer, `SELECT count(*), sum(total) FROM orders`, "orders_tenant_idx", 3000},
		{"the organization's orders, every customer", inOrg, `SELECT count(*), sum(total) FROM orders`, "orders_tenant_idx", 15000},
		{"the organization's documents from a customer", inCustomer, `SELECT count(*) FROM org_docs`, "org_docs_org_idx", 2000},
		{"the organization's documents from the organization", inOrg, `SELECT count(*) FROM org_docs`, "org_docs_org_idx", 2000},
		{"no organization's documents for a customer's member", confined, `SELECT count(*) FROM org_docs`, "org_docs_org_idx", 0},
	} {
		t.Run(tt.name, func(t *testing.T) {
			plan := explain(t, st, tt.sess, tt.query)
			var indexes, seqScans, initPlans []string
			plan.walk(func(n planNode) {
				switch {
				case n.Index != "":
					indexes = append(indexes, n.Index)
				case n.NodeType == "Seq Scan":
					seqScans = append(seqScans, n.Relation)
				}
				if n.Relationship == "InitPlan" {
					initPlans = append(initPlans, n.NodeType)
				}
			})
			if !slices.Contains(indexes, tt.index) || len(seqScans) > 0 {
				t.Errorf("plan uses indexes %q and scans %q sequentially, want %s", indexes, seqScans, tt.index)
			}
			if len(initPlans) == 0 {
				t.Errorf("no InitPlan: the setting is read per row")
			}
			rctx := rls.WithSession(ctx, tt.sess)
			var got int
			var text []string
			if err := st.InTx(rctx, func(tx pgx.Tx) error {
				q := strings.Replace(tt.query, "count(*), sum(total)", "count(*)", 1)
				if err := tx.QueryRow(rctx, q).Scan(&got); err != nil {
					return err
				}
				rows, err := tx.Query(rctx, `EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF, SUMMARY OFF) `+tt.query)
				if err != nil {
					return err
				}
				text, err = pgx.CollectRows(rows, pgx.RowTo[string])
				return err
			}); err != nil {
				t.Fatal(err)
			}
			if got != tt.rows {
				t.Errorf("reads %d rows, want %d", got, tt.rows)
			}
			t.Log(fmt.Sprintf("%s (%+v):\n", tt.query, tt.sess) + strings.Join(text, "\n"))
		})
	}
}
