package main

import (
	"context"
	"fmt"
	"io"
	"sort"
	"strconv"

	"github.com/keybridge/keybridge/internal/metrics"
	"github.com/keybridge/keybridge/internal/store"
	"github.com/keybridge/keybridge/mapping"
	ksync "github.com/keybridge/keybridge/sync"
)

func runSync(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := newFlags("sync", stderr)
	path := configFlag(fs)
	dry := fs.Bool("dry-run", false, "print the plan and write nothing")
	force := fs.Bool("force", false, "apply a plan the deletion guard refuses")
	mode := fs.String("mode", "", "full or additive (default: sync.mode)")
	out := fs.String("o", "table", "table or json")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	cfg, ok := loadConfig(*path, stderr)
	if !ok {
		return 2
	}
	log := newLogger(cfg.Log, stderr)
	st, err := store.Open(ctx, cfg.Database.URL, cfg.Database.SyncURL, 4)
	if err != nil {
		fmt.Fprintf(stderr, "sync: %v\n", err)
		return 1
	}
	defer st.Close()
	engine, err := mapping.New(cfg.Mapping)
	if err != nil {
		fmt.Fprintf(stderr, "sync: mapping: %v\n", err)
		return 2
	}
	d := &deps{cfg: cfg, log: log, metrics: metrics.New(version, revision), store: st, engine: func() *mapping.Engine { return engine }}
	svc := newSyncService(d)
	res, err := svc.Run(ctx, ksync.RunOptions{Trigger: "cli", DryRun: *dry, Force: *force, Mode: *mode})
	if res == nil {
		fmt.Fprintf(stderr, "sync: %v\n", err)
		return 1
	}
	if *out == "json" {
		printJSON(stdout, res)
	} else {
		var rows [][]string
		kinds := make([]string, 0, len(res.Changes))
		for k := range res.Changes {
			kinds = append(kinds, k)
		}
		sort.Strings(kinds)
		for _, k := range kinds {
			for _, op := range []string{"create", "update", "deactivate", "delete"} {
				if n := res.Changes[k][op]; n > 0 {
					rows = append(rows, []string{k, op, strconv.Itoa(n)})
				}
			}
		}
		label := "applied"
		if *dry {
			label = "planned (dry run, nothing written)"
		}
		fmt.Fprintf(stdout, "run %d: %s, %s in %s, %d Keycloak requests\n", res.RunID, res.Outcome, label, res.Duration.Round(1e6), res.Requests)
		table(stdout, []string{"KIND", "OPERATION", "COUNT"}, rows)
	}
	if err != nil {
		fmt.Fprintf(stderr, "sync: %v\n", err)
		return 1
	}
	return 0
}
