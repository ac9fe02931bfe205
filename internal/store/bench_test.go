package store_test

import (
	"context"
	"runtime"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/keybridge/keybridge/internal/store"
	"github.com/keybridge/keybridge/rls"
)

// BenchmarkPeopleWalk50k pages through 50,000 people of one tenant with the
// API's cursor pagination, beside BenchmarkPlainSelect50k, one plain SELECT
// of the same rows in the same database. peak-heap-MB samples the live heap
// after every page: it stays flat because only one page is ever held.
func BenchmarkPeopleWalk50k(b *testing.B) {
	st, _ := openStore(b)
	seedPeople(b, st, 50000, 10)
	ctx := rls.WithSession(context.Background(), rls.Session{TenantID: "acme"})
	b.Run("cursor_walk_500_per_page", func(b *testing.B) {
		var peak uint64
		var ms runtime.MemStats
		for i := 0; i < b.N; i++ {
			runtime.GC()
			f := store.PeopleFilter{Page: store.Page{Limit: 500}}
			n := 0
			for {
				var page []store.Person
				var next string
				err := st.InTx(ctx, func(tx pgx.Tx) error {
					var err error
					page, next, err = store.ListPeople(ctx, tx, f)
					return err
				})
				if err != nil {
					b.Fatal(err)
				}
				n += len(page)
				runtime.ReadMemStats(&ms)
				peak = max(peak, ms.HeapAlloc)
				if next == "" {
					break
				}
				f.Cursor = next
			}
			if n != 50000 {
				b.Fatalf("walked %d people", n)
			}
		}
		b.ReportMetric(float64(peak)/(1<<20), "peak-heap-MB")
	})
	b.Run("reference_plain_select", func(b *testing.B) {
		var peak uint64
		var ms runtime.MemStats
		for i := 0; i < b.N; i++ {
			runtime.GC()
			n := 0
			err := st.InTx(ctx, func(tx pgx.Tx) error {
				rows, err := tx.Query(ctx, `SELECT id, username, coalesce(email, ''), display_name, status FROM people ORDER BY display_name, id`)
				if err != nil {
					return err
				}
				defer rows.Close()
				for rows.Next() {
					var a, b2, c, d, e string
					if err := rows.Scan(&a, &b2, &c, &d, &e); err != nil {
						return err
					}
					n++
					if n%500 == 0 {
						runtime.ReadMemStats(&ms)
						peak = max(peak, ms.HeapAlloc)
					}
				}
				return rows.Err()
			})
			if err != nil || n != 50000 {
				b.Fatalf("select: %d %v", n, err)
			}
		}
		b.ReportMetric(float64(peak)/(1<<20), "peak-heap-MB")
	})
}
