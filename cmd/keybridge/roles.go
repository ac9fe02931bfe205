package main

import (
	"context"
	"fmt"
	"io"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5"

	"github.com/keybridge/keybridge/internal/store"
	"github.com/keybridge/keybridge/mapping"
)

func runRoles(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) > 0 {
		switch args[0] {
		case "create", "duplicate", "delete":
			return rolesWrite(ctx, args[0], args[1:], stdout, stderr)
		case "list":
			args = args[1:]
		}
	}
	fs := newFlags("roles", stderr)
	path := fs.String("c", "", "config file; its mapping section (preset, extra permissions) is used")
	preset := fs.String("preset", "", "preset to list (overrides the config's)")
	out := fs.String("o", "table", "table or json")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	engine, ok := engineFor(*path, *preset, stderr)
	if !ok {
		return 2
	}
	type row struct {
		Name        string   `json:"name"`
		Kind        string   `json:"kind"`
		Bypass      string   `json:"bypass,omitempty"`
		Count       int      `json:"count"`
		Permissions []string `json:"permissions"`
		Description string   `json:"description,omitempty"`
	}
	var rows []row
	for _, r := range engine.Roles() {
		rows = append(rows, row{r.Name, r.Kind, r.Bypass, len(r.Permissions), r.Permissions, r.Description})
	}
	if *out == "json" {
		printJSON(stdout, map[string]any{"preset": engine.Preset(), "roles": rows})
		return 0
	}
	var t [][]string
	for _, r := range rows {
		t = append(t, []string{r.Name, r.Kind, strconv.Itoa(r.Count), strings.Join(r.Permissions, " ")})
	}
	table(stdout, []string{"ROLE", "KIND", "COUNT", "PERMISSIONS"}, t)
	return 0
}

// engineFor compiles the mapping from a config file or just a preset.
func engineFor(path, preset string, stderr io.Writer) (*mapping.Engine, bool) {
	var mc mapping.Config
	if path != "" {
		cfg, err := loadMappingSection(path)
		if err != nil {
			fmt.Fprintf(stderr, "config: %v\n", err)
			return nil, false
		}
		mc = cfg
	}
	if preset != "" {
		mc.Preset = preset
	}
	e, err := mapping.New(mc)
	if err != nil {
		fmt.Fprintf(stderr, "mapping: %v\n", err)
		return nil, false
	}
	return e, true
}

// rolesWrite manages custom roles in the database as the owner.
func rolesWrite(ctx context.Context, verb string, args []string, stdout, stderr io.Writer) int {
	fs := newFlags("roles "+verb, stderr)
	dsn := fs.String("database", ownerFlagDefault(), "schema owner connection string (default $KEYBRIDGE_DATABASE_OWNER_URL)")
	path := fs.String("c", "", "config file (for the preset)")
	tenant := fs.String("tenant", "", "tenant the custom role belongs to")
	name := fs.String("name", "", "custom role name")
	from := fs.String("from", "", "duplicate: the system role to copy")
	perms := fs.String("permissions", "", "create: comma-separated permissions")
	force := fs.Bool("force", false, "delete: also remove its assignments")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	engine, ok := engineFor(*path, "", stderr)
	if !ok {
		return 2
	}
	if *tenant == "" || *name == "" {
		fmt.Fprintln(stderr, "roles "+verb+": --tenant and --name are required")
		return 2
	}
	err := ownerTx(ctx, *dsn, func(tx pgx.Tx) error {
		var r mapping.Role
		var err error
		switch verb {
		case "create":
			r, err = mapping.NewCustomRole(engine, *name, *tenant, splitList(*perms))
		case "duplicate":
			r, err = mapping.DuplicateRole(engine, *from, *name, *tenant)
		case "delete":
			var id string
			if err := tx.QueryRow(ctx, `SELECT id::text FROM roles WHERE kind = 'custom' AND tenant_id = $1 AND name = $2`, *tenant, *name).Scan(&id); err != nil {
				return fmt.Errorf("custom role %q of tenant %q: %w", *name, *tenant, store.ErrNotFound)
			}
			if err := store.DeleteCustomRole(ctx, tx, id, *force); err != nil {
				return err
			}
			_, err := tx.Exec(ctx, `SELECT pg_notify('keybridge_changed', '{"kind":"roles"}')`)
			return err
		}
		if err != nil {
			return err
		}
		row, err := store.CreateCustomRole(ctx, tx, store.RoleRow{Name: r.Name, Tenant: r.Tenant, BasedOn: r.BasedOn, Description: r.Description, Permissions: r.Permissions})
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "%s %s (%d permissions)\n", row.ID, row.Name, len(row.Permissions))
		_, err = tx.Exec(ctx, `SELECT pg_notify('keybridge_changed', '{"kind":"roles"}')`)
		return err
	})
	if err != nil {
		fmt.Fprintf(stderr, "roles %s: %v\n", verb, err)
		return 1
	}
	return 0
}

func splitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}
