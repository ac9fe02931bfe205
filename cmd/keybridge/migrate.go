package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"

	"github.com/jackc/pgx/v5"

	"github.com/keybridge/keybridge/internal/store"
	"github.com/keybridge/keybridge/mapping"
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
	if fs.Arg(0) == "up" {
		if err := reportRoleNames(ctx, *dsn, log); err != nil {
			fmt.Fprintf(stderr, "migrate: %v\n", err)
			return 1
		}
	}
	return 0
}

// reportRoleNames warns about every stored custom role whose name breaks
// mapping.ValidCustomRoleName (a row written before the rule, or by hand).
// The rows are left as they are: the engine refuses to load them into any
// grant, and the warning names each one and the fix.
func reportRoleNames(ctx context.Context, dsn string, log *slog.Logger) error {
	var roles []store.RoleRow
	err := ownerTx(ctx, dsn, func(tx pgx.Tx) error {
		var err error
		roles, err = store.ListRoles(ctx, tx, mapping.KindCustom)
		return err
	})
	if err != nil {
		return fmt.Errorf("check custom role names: %w", err)
	}
	for _, r := range roles {
		if err := mapping.ValidCustomRoleName(r.Name); err != nil {
			log.WarnContext(ctx, "custom role name breaks the naming rule; the role is not loaded into any grant until renamed",
				"role_id", r.ID, "tenant", r.Tenant, "name", r.Name, "problem", err.Error(),
				"fix", fmt.Sprintf(`rename it: PATCH /v1/roles/%s {"name": "<new name>"}, or as the owner UPDATE roles SET name = '<new name>' WHERE id = '%s'`, r.ID, r.ID))
		}
	}
	return nil
}
