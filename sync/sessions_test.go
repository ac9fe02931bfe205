package sync_test

import (
	"context"
	"testing"
	"time"

	"github.com/keybridge/keybridge/internal/store"
	"github.com/keybridge/keybridge/internal/testenv"
	ksync "github.com/keybridge/keybridge/sync"
)

// Issue 14: a not-before whose event the poller never read (no poller runs
// here) is recorded by the next full run: the realm's and a client's as
// Keycloak holds them, and a user's from the snapshot; a client's that
// Keycloak cleared is cleared too.
func TestFullSyncCatchesUpNotBefores(t *testing.T) {
	kc := testenv.RequireKeycloak(t)
	realm := testenv.NewRealm(t, kc, nil, map[string]any{
		"clients": []any{map[string]any{"clientId": "app", "publicClient": true, "directAccessGrantsEnabled": true}},
		"users":   []any{map[string]any{"username": "erin", "enabled": true, "email": "erin@example.test", "firstName": "Erin", "lastName": "Test"}},
	})
	db := testenv.NewDatabase(t)
	ctx := context.Background()
	st, err := store.Open(ctx, db.AppURL, db.SyncURL, 4)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(st.Close)
	svc := newService(t, st, realm, realm.URL)
	a := testenv.NewAdmin(t, realm)

	var users []struct{ ID string }
	a.Do("GET", "/users?exact=true&username=erin", nil, &users)
	var clients []struct{ ID string }
	a.Do("GET", "/clients?clientId=app", nil, &clients)
	now := time.Now().Unix()
	a.Do("PUT", "", map[string]any{"notBefore": now - 60}, nil)
	a.Do("PUT", "/clients/"+clients[0].ID, map[string]any{"notBefore": now - 30}, nil)
	a.Do("POST", "/users/"+users[0].ID+"/logout", nil, nil)
	var user struct{ NotBefore int64 }
	a.Do("GET", "/users/"+users[0].ID, nil, &user)
	if user.NotBefore == 0 {
		t.Fatal("Keycloak set no notBefore on the user it logged out")
	}

	held := func() map[string]int64 {
		t.Helper()
		rows, err := store.LoadRevocations(ctx, st.SysPool(), 0, time.Time{})
		if err != nil {
			t.Fatal(err)
		}
		out := map[string]int64{}
		for _, r := range rows {
			if !r.At.IsZero() {
				out[r.Kind+"/"+r.ID] = r.At.Unix()
			}
		}
		return out
	}
	if _, err := svc.Run(ctx, ksync.RunOptions{Trigger: "cli"}); err != nil {
		t.Fatal(err)
	}
	got := held()
	want := map[string]int64{"realm/": now - 60, "client/app": now - 30, "user/" + users[0].ID: user.NotBefore}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s: held %d, want %d (all: %v)", k, got[k], v, got)
		}
	}

	a.Do("PUT", "/clients/"+clients[0].ID, map[string]any{"notBefore": 0}, nil)
	if _, err := svc.Run(ctx, ksync.RunOptions{Trigger: "cli"}); err != nil {
		t.Fatal(err)
	}
	if got := held(); got["client/app"] != 0 || got["realm/"] != now-60 {
		t.Errorf("after Keycloak cleared the client's not-before: %v", got)
	}
}
