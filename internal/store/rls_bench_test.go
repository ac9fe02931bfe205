package store_test

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/keybridge/keybridge/internal/testenv"
	"github.com/keybridge/keybridge/rls"
)

// BenchmarkRLSKeepsTheIndex reads one tenant's, three tenants' and every
// tenant's count(*) and sum(total) of 1,000,000 orders across 20 tenants,
// each under the policy template of docs/rls.md (through rls.InTx on the
// runtime role) and, interleaved in the same loop, as the same query
// filtered explicitly by the table's owner, whose policy admits everything.
// rls/explicit is the ratio of their medians; ns/op counts both queries.
// old_or_policy_tenant runs the tenant query under the template this one
// replaced (tenant_id = ... OR is_platform()) on the same table.
func BenchmarkRLSKeepsTheIndex(b *testing.B) {
	db := testenv.NewDatabase(b)
	ctx := context.Background()
	owner, err := pgxpool.New(ctx, db.OwnerURL)
	if err != nil {
		b.Fatal(err)
	}
	defer owner.Close()
	for _, q := range []string{
		`CREATE TABLE orders (id bigint PRIMARY KEY, tenant_id text NOT NULL, total numeric NOT NULL, created_at timestamptz NOT NULL)`,
		`INSERT INTO orders SELECT g, 'tenant-' || lpad((g % 20)::text, 2, '0'), (g % 1000) / 10.0, timestamptz '2025-01-01' + g * interval '1 second'
		   FROM generate_series(1, 1000000) g`,
		`CREATE INDEX orders_tenant_idx ON orders (tenant_id)`,
		`VACUUM ANALYZE orders`,
		`ALTER TABLE orders ENABLE ROW LEVEL SECURITY`,
		`ALTER TABLE orders FORCE ROW LEVEL SECURITY`,
		`CREATE POLICY owner_all ON orders TO CURRENT_USER USING (true)`,
		`CREATE POLICY tenant_isolation ON orders TO keybridge_app
		   USING (tenant_id = (SELECT keybridge.current_tenant()))`,
		`CREATE POLICY organization_isolation ON orders TO keybridge_org
		   USING (tenant_id = ANY ((SELECT keybridge.current_tenants())::text[]))`,
		`CREATE POLICY platform_access ON orders TO keybridge_platform
		   USING ((SELECT keybridge.is_platform()))`,
		`GRANT SELECT ON orders TO keybridge_app, keybridge_org, keybridge_platform`,
	} {
		if _, err := owner.Exec(ctx, q); err != nil {
			b.Fatalf("%s: %v", q, err)
		}
	}
	app, err := pgxpool.New(ctx, db.AppURL)
	if err != nil {
		b.Fatal(err)
	}
	defer app.Close()

	const agg = `SELECT count(*), sum(total) FROM orders`
	three := []string{"tenant-03", "tenant-04", "tenant-05"}
	for _, bc := range []struct {
		name     string
		sess     rls.Session
		explicit string
		args     []any
		policy   string // replaces tenant_isolation for the run
		rows     int64
	}{
		{"tenant", rls.Session{TenantID: "tenant-03"}, agg + ` WHERE tenant_id = $1`, []any{"tenant-03"}, "", 50000},
		{"organization_3_tenants", rls.Session{TenantID: "tenant-03", TenantIDs: three[1:]}, agg + ` WHERE tenant_id = ANY ($1)`, []any{three}, "", 150000},
		{"platform", rls.Session{Platform: true}, agg, nil, "", 1000000},
		{"old_or_policy_tenant", rls.Session{TenantID: "tenant-03"}, agg + ` WHERE tenant_id = $1`, []any{"tenant-03"},
			`tenant_id = (SELECT keybridge.current_tenant()) OR (SELECT keybridge.is_platform())`, 50000},
	} {
		b.Run(bc.name, func(b *testing.B) {
			if bc.policy != "" {
				if _, err := owner.Exec(ctx, `ALTER POLICY tenant_isolation ON orders USING (`+bc.policy+`)`); err != nil {
					b.Fatal(err)
				}
				defer func() {
					_, _ = owner.Exec(ctx, `ALTER POLICY tenant_isolation ON orders USING (tenant_id = (SELECT keybridge.current_tenant()))`)
				}()
			}
			sctx := rls.WithSession(ctx, bc.sess)
			v := bc.sess.Vars()
			underRLS := func() (int64, error) {
				var n int64
				err := rls.InTx(sctx, app, func(tx pgx.Tx) error {
					return tx.QueryRow(sctx, agg).Scan(&n, new(float64))
				})
				return n, err
			}
			// The same transaction shape: the variables in one round
			// trip, then the query, filtered by hand.
			explicit := func() (int64, error) {
				var n int64
				err := pgx.BeginFunc(ctx, owner, func(tx pgx.Tx) error {
					if _, err := tx.Exec(ctx, `SELECT set_config('app.tenant_id', $1, true), set_config('app.user_id', $2, true),
						set_config('app.role', $3, true), set_config('app.roles', $4, true), set_config('app.platform', $5, true),
						set_config('app.tenant_ids', $6, true)`,
						v["app.tenant_id"], v["app.user_id"], v["app.role"], v["app.roles"], v["app.platform"], v["app.tenant_ids"]); err != nil {
						return err
					}
					return tx.QueryRow(ctx, bc.explicit, bc.args...).Scan(&n, new(float64))
				})
				return n, err
			}
			for _, f := range []func() (int64, error){underRLS, explicit} { // warm both, and check they agree
				if n, err := f(); err != nil || n != bc.rows {
					b.Fatalf("%d rows (%v), want %d", n, err, bc.rows)
				}
			}
			rlsTimes := make([]time.Duration, 0, b.N)
			refTimes := make([]time.Duration, 0, b.N)
			b.ResetTimer()
			for range b.N {
				start := time.Now()
				if _, err := underRLS(); err != nil {
					b.Fatal(err)
				}
				mid := time.Now()
				if _, err := explicit(); err != nil {
					b.Fatal(err)
				}
				rlsTimes = append(rlsTimes, mid.Sub(start))
				refTimes = append(refTimes, time.Since(mid))
			}
			b.StopTimer()
			r, e := median(rlsTimes), median(refTimes)
			b.ReportMetric(float64(r.Microseconds())/1000, "rls-ms")
			b.ReportMetric(float64(e.Microseconds())/1000, "explicit-ms")
			b.ReportMetric(float64(r)/float64(e), "rls/explicit")
		})
	}
}

func median(d []time.Duration) time.Duration {
	s := slices.Clone(d)
	slices.Sort(s)
	return s[len(s)/2]
}
