package rls_test

import (
	"context"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/keybridge/keybridge/internal/testenv"
	"github.com/keybridge/keybridge/rls"
)

// Issue 16: app.org_id is set for the transaction alone, on the runtime
// and the organization role, and keybridge.current_org() reads it back;
// a session without an organization reads NULL, never the previous one's
// on the same connection.
func TestOrgIDIsTransactionLocal(t *testing.T) {
	db := testenv.NewDatabase(t)
	ctx := context.Background()
	cfg, err := pgxpool.ParseConfig(db.AppURL)
	if err != nil {
		t.Fatal(err)
	}
	cfg.MaxConns = 1 // every transaction on the same connection
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	for _, tc := range []struct {
		sess rls.Session
		org  string
		user string
	}{
		{rls.Session{TenantID: "acme-eu", OrgID: "acme"}, "acme", "keybridge_app"},
		{rls.Session{TenantID: "acme-eu"}, "", "keybridge_app"},
		{rls.Session{TenantID: "acme", OrgID: "acme", TenantIDs: []string{"acme-eu", "acme-us"}}, "acme", "keybridge_org"},
		{rls.Session{TenantID: "globex-1"}, "", "keybridge_app"},
	} {
		ctx := rls.WithSession(ctx, tc.sess)
		var org, user string
		if err := rls.InTx(ctx, pool, func(tx pgx.Tx) error {
			return tx.QueryRow(ctx, `SELECT coalesce(keybridge.current_org(), ''), current_user`).Scan(&org, &user)
		}); err != nil {
			t.Fatal(err)
		}
		if org != tc.org || user != tc.user {
			t.Errorf("%+v: org %q as %s, want %q as %s", tc.sess, org, user, tc.org, tc.user)
		}
	}
}
