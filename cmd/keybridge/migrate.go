package main

import (
	"context"
	"fmt"
	"io"
	"os"

	"github.com/keybridge/keybridge/internal/store"
)

func runMigrate(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := newFlags("migrate", stderr)
	dsn := fs.String("database", os.Getenv("KEYBRIDGE_DATABASE_OWNER_URL"), "schema owner connection string (default $KEYBRIDGE_DATABASE_OWNER_URL)")
	fs.Usage = func() { fmt.Fprintln(stderr, "usage: keybridge migrate [--database URL] up|down|status") }
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() != 1 {
		fs.Usage()
		return 2
	}
	if *dsn == "" {
		fmt.Fprintln(stderr, "migrate: database.owner_url missing: set KEYBRIDGE_DATABASE_OWNER_URL or pass --database (the role that owns the schema)")
		return 2
	}
	log := newLogger(defaultLog(), stderr)
	if err := store.Migrate(ctx, *dsn, fs.Arg(0), stdout, log); err != nil {
		fmt.Fprintf(stderr, "migrate: %v\n", err)
		return 1
	}
	return 0
}
