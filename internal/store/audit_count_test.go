package store_test

import (
	"context"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/keybridge/keybridge/internal/store"
	"github.com/keybridge/keybridge/rls"
)

// A row standing for many identical refusals carries its count and the
// client address, in the listing and the export; a count below 1 is
// refused, and the runtime role still cannot append.
func TestAuditRowsCarryCountAndClient(t *testing.T) {
	st, _ := openStore(t)
	ctx := context.Background()
	err := st.InSystemTx(ctx, func(tx pgx.Tx) error {
		_, err := tx.Exec(ctx, `INSERT INTO audit_log (occurred_at, action, outcome, reason, count, details, entry_id)
			VALUES (now(), 'people.list', 'denied', 'no bearer token', 42, '{"client_addr":"192.0.2.1"}', gen_random_uuid()),
			       (now() - interval '1 minute', 'people.assign', 'success', '', DEFAULT, '{}', gen_random_uuid())`)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := st.InSystemTx(ctx, func(tx pgx.Tx) error {
		_, err := tx.Exec(ctx, `INSERT INTO audit_log (occurred_at, action, outcome, count, entry_id) VALUES (now(), 'x', 'denied', 0, gen_random_uuid())`)
		return err
	}); err == nil {
		t.Error("a row with count 0 was accepted")
	}
	pctx := rls.WithSession(ctx, rls.Session{Platform: true, UserID: "root"})
	var rows []store.AuditRow
	if err := st.InTx(pctx, func(tx pgx.Tx) error {
		var err error
		rows, _, err = store.ListAudit(pctx, tx, store.AuditFilter{})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if len(rows) != 2 || rows[0].Count != 42 || rows[0].ClientAddr != "192.0.2.1" || rows[1].Count != 1 || rows[1].ClientAddr != "" {
		t.Errorf("rows %+v, want counts 42 and 1, client 192.0.2.1 on the first", rows)
	}
	if err := st.InTx(pctx, func(tx pgx.Tx) error {
		_, err := tx.Exec(pctx, `INSERT INTO audit_log (occurred_at, action, outcome, count, entry_id) VALUES (now(), 'forged', 'denied', 1000, gen_random_uuid())`)
		return err
	}); err == nil {
		t.Error("the runtime role appended an audit row")
	}
}
