package store_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/keybridge/keybridge/internal/store"
	"github.com/keybridge/keybridge/internal/testenv"
)

// Issue 14: the revocations table as replicas read it. A session keeps its
// first end; a not-before follows Keycloak (a zero clears it) unless the
// row changed after the writer read the table; every change bumps seq and
// notifies; nothing unchanged does; old rows are pruned; the runtime role
// cannot read the table.
func TestSaveRevocations(t *testing.T) {
	db := testenv.NewDatabase(t)
	ctx := context.Background()
	pool, err := pgxpool.New(ctx, db.SyncURL)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	listener, err := pgx.Connect(ctx, db.SyncURL)
	if err != nil {
		t.Fatal(err)
	}
	defer listener.Close(ctx)
	if _, err := listener.Exec(ctx, "LISTEN keybridge_changed"); err != nil {
		t.Fatal(err)
	}
	notified := func() string {
		wctx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
		defer cancel()
		n, err := listener.WaitForNotification(wctx)
		if err != nil {
			return ""
		}
		return n.Payload
	}
	// Cleared rows age by their updated_at, the database's now: t0 is now.
	t0 := time.Now().Truncate(time.Second)
	prune := t0.Add(-time.Hour)
	save := func(upTo int64, rs ...store.Revocation) int64 {
		t.Helper()
		n, err := store.SaveRevocations(ctx, pool, rs, prune, upTo)
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	load := func(after int64) map[string]store.Revocation {
		t.Helper()
		rows, err := store.LoadRevocations(ctx, pool, after, prune)
		if err != nil {
			t.Fatal(err)
		}
		out := map[string]store.Revocation{}
		for _, r := range rows {
			out[r.Kind+"/"+r.ID] = r
		}
		return out
	}

	if n := save(store.AnySeq,
		store.Revocation{Kind: store.RevokedSession, ID: "s1", At: t0},
		store.Revocation{Kind: store.RevokedSession, ID: "s1", At: t0.Add(time.Second)},
		store.Revocation{Kind: store.RealmNotBefore, At: t0},
		store.Revocation{Kind: store.ClientNotBefore, ID: "app", At: t0},
		store.Revocation{Kind: store.UserNotBefore, ID: strings.Repeat("x", 256), At: t0},
	); n != 3 {
		t.Fatalf("first save changed %d rows, want 3 (a session twice is one; an oversize id is skipped)", n)
	}
	if p := notified(); p != `{"kind":"revocation"}` {
		t.Fatalf("notification %q", p)
	}
	first := load(0)
	if len(first) != 3 || !first["session/s1"].At.Equal(t0) {
		t.Fatalf("held %v", first)
	}
	seq := max(first["session/s1"].Seq, first["realm/"].Seq, first["client/app"].Seq)

	// The same again: nothing changes, nothing is notified.
	if n := save(store.AnySeq, store.Revocation{Kind: store.RevokedSession, ID: "s1", At: t0.Add(time.Minute)},
		store.Revocation{Kind: store.RealmNotBefore, At: t0}); n != 0 {
		t.Errorf("an unchanged save changed %d rows", n)
	}
	if p := notified(); p != "" {
		t.Errorf("an unchanged save notified %q", p)
	}

	// A not-before moves and is cleared; a reader after seq sees only that.
	save(store.AnySeq, store.Revocation{Kind: store.ClientNotBefore, ID: "app", At: t0.Add(time.Minute)},
		store.Revocation{Kind: store.RealmNotBefore})
	changed := load(seq)
	if len(changed) != 2 || !changed["client/app"].At.Equal(t0.Add(time.Minute)) || !changed["realm/"].At.IsZero() {
		t.Errorf("rows after seq %d: %v", seq, changed)
	}

	// A writer that read the table before that change leaves it alone.
	if n := save(seq, store.Revocation{Kind: store.ClientNotBefore, ID: "app", At: t0}); n != 0 {
		t.Errorf("a stale writer changed %d rows", n)
	}
	if got := load(0)["client/app"].At; !got.Equal(t0.Add(time.Minute)) {
		t.Errorf("client not-before %s after a stale write", got)
	}

	// Rows older than prune go at the next save.
	save(store.AnySeq, store.Revocation{Kind: store.RevokedSession, ID: "old", At: prune.Add(-time.Second)})
	n, err := store.SaveRevocations(ctx, pool, nil, prune, store.AnySeq)
	if err != nil {
		t.Fatal(err)
	}
	var count int
	if err := pool.QueryRow(ctx, `SELECT count(*) FROM revocations WHERE id = 'old'`).Scan(&count); err != nil || count != 0 || n != 0 {
		t.Errorf("old row: %d left, %d changed, %v", count, n, err)
	}

	app, err := pgx.Connect(ctx, db.AppURL)
	if err != nil {
		t.Fatal(err)
	}
	defer app.Close(ctx)
	if _, err := app.Exec(ctx, `SELECT 1 FROM revocations`); err == nil {
		t.Error("the runtime role reads revocations")
	}
}
