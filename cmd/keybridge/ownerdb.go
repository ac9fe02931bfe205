package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"

	"github.com/jackc/pgx/v5"
)

// ownerTx runs fn in a transaction as the schema owner: the operator CLI
// sees every tenant, as an operator at the database would.
func ownerTx(ctx context.Context, dsn string, fn func(pgx.Tx) error) error {
	if dsn == "" {
		return fmt.Errorf("database.owner_url missing: set KEYBRIDGE_DATABASE_OWNER_URL or pass --database")
	}
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return fmt.Errorf("connect as owner: %w", err)
	}
	defer conn.Close(ctx)
	return pgx.BeginFunc(ctx, conn, fn)
}

func ownerFlagDefault() string { return os.Getenv("KEYBRIDGE_DATABASE_OWNER_URL") }

// table prints aligned columns.
func table(w io.Writer, header []string, rows [][]string) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, strings.Join(header, "\t"))
	for _, r := range rows {
		fmt.Fprintln(tw, strings.Join(r, "\t"))
	}
	_ = tw.Flush()
}

func printJSON(w io.Writer, v any) {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}
