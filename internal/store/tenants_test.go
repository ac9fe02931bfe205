package store_test

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/keybridge/keybridge/internal/testenv"
)

// Two transactions adding one person to two tenants at once both count:
// people.tenant_ids, which the RLS policy reads, ends with both tenants.
func TestConcurrentMembershipsBothReachTenantIDs(t *testing.T) {
	db := testenv.NewDatabase(t)
	ctx := context.Background()
	conn := func() *pgx.Conn {
		c, err := pgx.Connect(ctx, db.SyncURL)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close(ctx) })
		return c
	}
	a, b := conn(), conn()
	for _, q := range []string{
		`INSERT INTO tenants (id, name, source) VALUES ('acme', 'Acme', 'group'), ('globex', 'Globex', 'group')`,
		`INSERT INTO people (id, username, status) VALUES ('p', 'pat', 'active')`,
	} {
		if _, err := a.Exec(ctx, q); err != nil {
			t.Fatal(err)
		}
	}
	ta, err := a.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ta.Exec(ctx, `INSERT INTO tenant_members (tenant_id, person_id) VALUES ('acme', 'p')`); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { // waits for ta's lock on the person
		_, err := b.Exec(ctx, `INSERT INTO tenant_members (tenant_id, person_id) VALUES ('globex', 'p')`)
		done <- err
	}()
	watch := conn()
	testenv.Eventually(t, "the second insert waiting on the first's lock", 10*time.Second, func() bool {
		var waiting bool
		_ = watch.QueryRow(ctx, `SELECT wait_event_type = 'Lock' FROM pg_stat_activity WHERE pid = $1`, b.PgConn().PID()).Scan(&waiting)
		return waiting
	})
	if err := ta.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	var ids []string
	if err := a.QueryRow(ctx, `SELECT tenant_ids FROM people WHERE id = 'p'`).Scan(&ids); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(ids, []string{"acme", "globex"}) {
		t.Fatalf("tenant_ids %v, want [acme globex]", ids)
	}
}
