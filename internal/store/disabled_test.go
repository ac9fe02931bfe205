package store_test

import (
	"context"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/keybridge/keybridge/internal/store"
)

// Who disabled a person is recorded by every writer: sync (a full run or an
// event) seeing a user disabled in Keycloak records Keycloak unless
// keybridge disabled them itself; a deactivation through keybridge names
// its caller and keeps a stronger disabler on record; leaving inactive
// clears the record.
func TestDisablerIsRecorded(t *testing.T) {
	st, _ := openStore(t)
	ctx := context.Background()
	sys := func(f func(tx pgx.Tx) error) {
		t.Helper()
		if err := st.InSystemTx(ctx, f); err != nil {
			t.Fatal(err)
		}
	}
	apply := func(status string) {
		t.Helper()
		sys(func(tx pgx.Tx) error {
			return store.ApplySyncPlan(ctx, tx, &store.SyncPlan{People: []store.PersonRow{{ID: "kim", Username: "kim", DisplayName: "Kim", Status: status}}})
		})
	}
	get := func() store.Disabler {
		t.Helper()
		var d store.Disabler
		sys(func(tx pgx.Tx) error {
			var err error
			d, err = store.GetDisabler(ctx, tx, "kim")
			return err
		})
		return d
	}
	disable := func(by store.Disabler) {
		t.Helper()
		sys(func(tx pgx.Tx) error { return store.DisablePerson(ctx, tx, "kim", by) })
	}

	apply("inactive") // a new user, disabled in Keycloak
	if d := get(); d.Authority != store.DisabledByKeycloak || d.By != "keycloak" || d.At == nil {
		t.Fatalf("a user sync found disabled: %+v, want Keycloak as the disabler", d)
	}
	apply("active")
	if d := get(); d != (store.Disabler{}) {
		t.Fatalf("re-enabled in Keycloak: %+v, want no disabler", d)
	}
	disable(store.Disabler{By: "adam", Authority: store.DisabledByTenant, Tenant: "acme", Reason: "left"})
	apply("inactive") // sync sees what keybridge wrote back to Keycloak
	if d := get(); d.Authority != store.DisabledByTenant || d.By != "adam" || d.Tenant != "acme" || d.Reason != "left" {
		t.Fatalf("after sync: %+v, want adam of acme kept", d)
	}
	disable(store.Disabler{By: "root", Authority: store.DisabledByPlatform, Reason: "fraud"})
	if d := get(); d.Authority != store.DisabledByPlatform || d.By != "root" {
		t.Fatalf("a platform caller over a tenant caller: %+v", d)
	}
	disable(store.Disabler{By: "adam", Authority: store.DisabledByTenant, Tenant: "acme"})
	if d := get(); d.Authority != store.DisabledByPlatform || d.By != "root" || d.Reason != "fraud" {
		t.Fatalf("a tenant caller took over a platform deactivation: %+v", d)
	}
	sys(func(tx pgx.Tx) error { return store.SetPersonStatus(ctx, tx, "kim", "active") })
	if d := get(); d != (store.Disabler{}) {
		t.Fatalf("re-enabled through keybridge: %+v", d)
	}
	// The event poller's single-user refresh writes status the same way.
	sys(func(tx pgx.Tx) error {
		_, err := tx.Exec(ctx, `UPDATE people SET display_name = 'Kim', status = 'inactive', updated_at = now() WHERE id = 'kim'`)
		return err
	})
	if d := get(); d.Authority != store.DisabledByKeycloak {
		t.Fatalf("a user the event poller found disabled: %+v", d)
	}
}
