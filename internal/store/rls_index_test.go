package store_test

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/keybridge/keybridge/internal/store"
	"github.com/keybridge/keybridge/internal/testenv"
	"github.com/keybridge/keybridge/rls"
)

// planNode is the part of EXPLAIN (FORMAT JSON) the tests read.
type planNode struct {
	NodeType     string     `json:"Node Type"`
	Relation     string     `json:"Relation Name"`
	Index        string     `json:"Index Name"`
	Relationship string     `json:"Parent Relationship"`
	Filter       string     `json:"Filter"`
	Plans        []planNode `json:"Plans"`
}

func (n planNode) walk(fn func(planNode)) {
	fn(n)
	for _, c := range n.Plans {
		c.walk(fn)
	}
}

// explain plans q in a transaction of sess on the runtime pool.
func explain(t *testing.T, st *store.Store, sess rls.Session, q string) planNode {
	t.Helper()
	ctx := rls.WithSession(context.Background(), sess)
	var out []byte
	if err := st.InTx(ctx, func(tx pgx.Tx) error {
		return tx.QueryRow(ctx, `EXPLAIN (FORMAT JSON) `+q).Scan(&out)
	}); err != nil {
		t.Fatalf("explain %s: %v", q, err)
	}
	var plans []struct {
		Plan planNode `json:"Plan"`
	}
	if err := json.Unmarshal(out, &plans); err != nil || len(plans) != 1 {
		t.Fatalf("explain %s: %v %s", q, err, out)
	}
	return plans[0].Plan
}

// seedManyTenants writes tenants t00..t99 with per audit rows and per/50
// teams each (an organization reads a few of many tenants: PostgreSQL
// estimates an unknown tenant array at 10 elements, so with only 20 tenants
// it may rightly prefer a sequential scan), through the sync role, and vacuums and analyzes the tables as
// the owner (as autovacuum would).
func seedManyTenants(t *testing.T, st *store.Store, db testenv.Database, per int) {
	t.Helper()
	ctx := context.Background()
	err := st.InSystemTx(ctx, func(tx pgx.Tx) error {
		for _, q := range []string{
			`INSERT INTO tenants (id, name, source) SELECT 't' || lpad(i::text, 2, '0'), 'T' || i, 'group' FROM generate_series(0, 99) i`,
			fmt.Sprintf(`INSERT INTO audit_log (occurred_at, tenant_id, action, outcome, entry_id)
				SELECT now() - i * interval '1 second', 't' || lpad((i %% 100)::text, 2, '0'), 'x', 'success', gen_random_uuid()
				FROM generate_series(1, %d) i`, 100*per),
			fmt.Sprintf(`INSERT INTO teams (id, tenant_id, name, path)
				SELECT 'team' || i, 't' || lpad((i %% 100)::text, 2, '0'), 'n' || i, '/n' || i FROM generate_series(1, %d) i`, 2*per),
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
	owner, err := pgx.Connect(ctx, db.OwnerURL)
	if err != nil {
		t.Fatal(err)
	}
	defer owner.Close(ctx)
	if _, err := owner.Exec(ctx, `VACUUM ANALYZE audit_log, teams, tenants`); err != nil {
		t.Fatal(err)
	}
}

// One tenant's rows are found through the tenant index, the way an explicit
// WHERE tenant_id = ... finds them, for a tenant caller and for an
// organization-level caller reading several tenants; the settings are read
// once per query (an InitPlan), not per row. Under the policies of 00001 (an
// OR with is_platform()) every one of these plans was a sequential scan of
// every tenant's rows, and the page sorted them all.
func TestRLSKeepsTheIndex(t *testing.T) {
	st, db := openStore(t)
	seedManyTenants(t, st, db, 2000)
	tenant := rls.Session{TenantID: "t03"}
	org := rls.Session{TenantID: "t03", TenantIDs: []string{"t04", "t05"}}
	for _, tt := range []struct {
		name  string
		sess  rls.Session
		query string
		index string
		// sorted: the plan may sort (several tenants interleave in the index)
		sorted bool
	}{
		{"tenant count", tenant, `SELECT count(*) FROM audit_log`, "audit_log_tenant_time_idx", false},
		{"tenant page", tenant, `SELECT id FROM audit_log ORDER BY occurred_at DESC, id DESC LIMIT 50`, "audit_log_tenant_time_idx", false},
		{"tenant teams", tenant, `SELECT count(*) FROM teams`, "teams_tenant_idx", false},
		{"organization count", org, `SELECT count(*) FROM audit_log`, "audit_log_tenant_time_idx", true},
		{"organization teams", org, `SELECT count(*) FROM teams`, "teams_tenant_idx", true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			plan := explain(t, st, tt.sess, tt.query)
			var indexes, seqScans, sorts, initPlans []string
			plan.walk(func(n planNode) {
				switch {
				case n.Index != "":
					indexes = append(indexes, n.Index)
				case n.NodeType == "Seq Scan":
					seqScans = append(seqScans, n.Relation)
				case n.NodeType == "Sort":
					sorts = append(sorts, n.NodeType)
				}
				if n.Relationship == "InitPlan" {
					initPlans = append(initPlans, n.NodeType)
				}
			})
			if !slices.Contains(indexes, tt.index) || len(seqScans) > 0 {
				t.Errorf("plan uses indexes %q and scans %q sequentially, want %s", indexes, seqScans, tt.index)
			}
			if len(sorts) > 0 && !tt.sorted {
				t.Errorf("plan sorts: the index order was lost")
			}
			if len(initPlans) == 0 {
				t.Errorf("no InitPlan: the session variables are read per row")
			}
		})
	}

	count := func(sess rls.Session, q string) int {
		t.Helper()
		ctx := rls.WithSession(context.Background(), sess)
		var n int
		if err := st.InTx(ctx, func(tx pgx.Tx) error { return tx.QueryRow(ctx, q).Scan(&n) }); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
		return n
	}
	if n := count(tenant, `SELECT count(*) FROM audit_log`); n != 2000 {
		t.Errorf("tenant reads %d audit rows, want 2000", n)
	}
	if n := count(org, `SELECT count(*) FROM audit_log`); n != 6000 {
		t.Errorf("organization reads %d audit rows, want 6000", n)
	}
	if n := count(rls.Session{Platform: true}, `SELECT count(*) FROM audit_log`); n != 200000 {
		t.Errorf("platform reads %d audit rows, want 200000", n)
	}
}

// No policy of the runtime role reads is_platform() any more: an OR with it
// is what cost the index. A later migration that copies the old template
// fails here.
func TestRuntimePoliciesNameTheTenantAlone(t *testing.T) {
	db := testenv.NewDatabase(t)
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, db.OwnerURL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	rows, err := conn.Query(ctx, `SELECT tablename || '.' || policyname, coalesce(qual, '') || ' ' || coalesce(with_check, '')
		FROM pg_policies WHERE schemaname = 'public' AND 'keybridge_app' = ANY (roles) ORDER BY 1`)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for rows.Next() {
		var name, expr string
		if err := rows.Scan(&name, &expr); err != nil {
			t.Fatal(err)
		}
		n++
		if strings.Contains(expr, "is_platform") || strings.Contains(expr, "current_tenants") {
			t.Errorf("%s reads more than the tenant: %s", name, expr)
		}
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	if n < 10 {
		t.Errorf("only %d runtime policies checked", n)
	}
}
