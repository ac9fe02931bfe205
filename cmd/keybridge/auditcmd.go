package main

import (
	"context"
	"encoding/csv"
	"encoding/json"
	"fmt"
	"io"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/keybridge/keybridge/internal/store"
)

func runAudit(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := newFlags("audit", stderr)
	dsn := fs.String("database", ownerFlagDefault(), "schema owner connection string (default $KEYBRIDGE_DATABASE_OWNER_URL)")
	since := fs.Duration("since", 24*time.Hour, "how far back")
	var f store.AuditFilter
	fs.StringVar(&f.Action, "action", "", "action, or a prefix ending in * (people.*)")
	fs.StringVar(&f.User, "user", "", "actor id or name")
	fs.StringVar(&f.Outcome, "outcome", "", "success, failure or denied")
	fs.StringVar(&f.ResourceType, "type", "", "resource type")
	out := fs.String("o", "table", "table, json or csv")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	f.From = time.Now().Add(-*since)
	var w func(store.AuditRow) error
	var done func()
	switch *out {
	case "csv":
		cw := csv.NewWriter(stdout)
		_ = cw.Write([]string{"timestamp", "user", "action", "resource_type", "resource_id", "outcome", "tenant", "reason"})
		w = func(a store.AuditRow) error {
			return cw.Write([]string{a.Timestamp.UTC().Format(time.RFC3339Nano), a.User, a.Action, a.ResourceType, a.ResourceID, a.Outcome, a.Tenant, a.Reason})
		}
		done = cw.Flush
	case "json":
		enc := json.NewEncoder(stdout)
		w = func(a store.AuditRow) error { return enc.Encode(a) }
		done = func() {}
	case "table":
		var rows [][]string
		w = func(a store.AuditRow) error {
			rows = append(rows, []string{a.Timestamp.UTC().Format(time.RFC3339), a.User, a.Action, a.ResourceType + " " + a.ResourceID, a.Outcome})
			return nil
		}
		done = func() { table(stdout, []string{"TIMESTAMP", "USER", "ACTION", "RESOURCE", "OUTCOME"}, rows) }
	default:
		fmt.Fprintln(stderr, "audit: -o must be table, json or csv")
		return 2
	}
	err := ownerTx(ctx, *dsn, func(tx pgx.Tx) error { return store.StreamAudit(ctx, tx, f, w) })
	done()
	if err != nil {
		fmt.Fprintf(stderr, "audit: %v\n", err)
		return 1
	}
	return 0
}
