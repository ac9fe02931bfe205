package testenv

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"io"
	"log/slog"
	"net/url"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/keybridge/keybridge/internal/store"
)

// Database is a fresh, migrated database for one test, reachable as each role.
type Database struct {
	Name     string
	OwnerURL string
	AppURL   string
	SyncURL  string
}

// NewDatabase creates an empty database owned by keybridge_owner, applies
// every migration and drops it when the test ends.
func NewDatabase(t testing.TB) Database {
	t.Helper()
	pg := RequirePostgres(t)
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	name := "kbtest_" + hex.EncodeToString(b)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	admin, err := pgx.Connect(ctx, pg.OwnerURL)
	if err != nil {
		t.Fatalf("connect as owner: %v", err)
	}
	defer admin.Close(ctx)
	if _, err := admin.Exec(ctx, "CREATE DATABASE "+name); err != nil {
		t.Fatalf("create database: %v", err)
	}
	db := Database{Name: name, OwnerURL: withDB(t, pg.OwnerURL, name), AppURL: withDB(t, pg.AppURL, name), SyncURL: withDB(t, pg.SyncURL, name)}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		c, err := pgx.Connect(ctx, pg.OwnerURL)
		if err != nil {
			return
		}
		defer c.Close(ctx)
		_, _ = c.Exec(ctx, "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)")
	})
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	if err := store.Migrate(ctx, db.OwnerURL, "up", io.Discard, log); err != nil {
		t.Fatalf("migrate: %v", err)
	}
	return db
}

func withDB(t testing.TB, dsn, name string) string {
	t.Helper()
	u, err := url.Parse(dsn)
	if err != nil {
		t.Fatalf("parse database url: %v", err)
	}
	u.Path = "/" + name
	return u.String()
}
