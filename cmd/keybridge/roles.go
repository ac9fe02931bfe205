package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5"

	"github.com/keybridge/keybridge/config/presets"
	"github.com/keybridge/keybridge/internal/store"
	"github.com/keybridge/keybridge/mapping"
)

// runRoles lists the roles of a preset (or of the config's mapping) with
// their permissions; create, duplicate and delete manage custom roles in
// the database.
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
	fs.Usage = func() {
		fmt.Fprintln(stderr, "Usage: keybridge roles [list] [--preset NAME] [-c config.yaml] [-o table|json]")
		fmt.Fprintln(stderr, "       keybridge roles create|duplicate|delete --tenant T --name N [...]")
		fs.PrintDefaults()
	}
	path := configFlag(fs)
	preset := fs.String("preset", "", "preset to list: "+strings.Join(presets.Names(), " or ")+" (overrides the config's)")
	out := fs.String("o", "table", "output: table or json")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "roles: unexpected argument %q\n", fs.Arg(0))
		return 2
	}
	if *out != "table" && *out != "json" {
		fmt.Fprintf(stderr, "roles: -o %q: use table or json\n", *out)
		return 2
	}
	if *preset != "" && !flagSet(fs, "c", "config") {
		*path = "" // --preset alone lists the preset, whatever $KEYBRIDGE_CONFIG says
	}
	engine, ok := engineFor(*path, *preset, stderr)
	if !ok {
		return 2
	}
	type row struct {
		Name        string   `json:"name"`
		Kind        string   `json:"kind"`
		Tenant      string   `json:"tenant,omitempty"`
		Bypass      string   `json:"bypass,omitempty"`
		Count       int      `json:"count"`
		Permissions []string `json:"permissions"`
		Description string   `json:"description,omitempty"`
	}
	rows := []row{}
	for _, r := range engine.Roles() {
		rows = append(rows, row{r.Name, r.Kind, r.Tenant, r.Bypass, len(r.Permissions), r.Permissions, r.Description})
	}
	if *out == "json" {
		printJSON(stdout, map[string]any{"preset": engine.Preset(), "roles": rows, "catalog": engine.Catalog().Permissions})
		return 0
	}
	var t [][]string
	for _, r := range rows {
		kind := r.Kind
		if r.Bypass != "" {
			kind += ", bypass " + r.Bypass
		}
		perms := strings.Join(r.Permissions, " ")
		if perms == "" {
			perms = "-"
		}
		t = append(t, []string{r.Name, kind, strconv.Itoa(r.Count), perms})
	}
	fmt.Fprintf(stdout, "preset %s: %d permissions\n", engine.Preset(), len(engine.Catalog().Permissions))
	table(stdout, []string{"ROLE", "KIND", "COUNT", "PERMISSIONS"}, t)
	return 0
}

// engineFor compiles the mapping from a config file, a preset, or both (the
// preset overriding the file's); with neither, the default preset.
func engineFor(path, preset string, stderr io.Writer) (*mapping.Engine, bool) {
	var mc mapping.Config
	if path != "" {
		cfg, err := loadMappingSection(path)
		if err != nil {
			printProblems(stderr, "config "+path, err)
			return nil, false
		}
		mc = cfg
	}
	if preset != "" {
		mc.Preset = preset
	}
	e, err := mapping.New(mc)
	if err != nil {
		printProblems(stderr, "mapping", err)
		return nil, false
	}
	return e, true
}

// flagSet reports whether any of the named flags was given on the command
// line (not just defaulted).
func flagSet(fs *flag.FlagSet, names ...string) bool {
	set := false
	fs.Visit(func(f *flag.Flag) { set = set || slices.Contains(names, f.Name) })
	return set
}

// printProblems prints one problem a line, each naming its key.
func printProblems(w io.Writer, what string, err error) {
	var list []error
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		list = j.Unwrap()
	} else {
		list = []error{err}
	}
	fmt.Fprintf(w, "%s: %d problem(s):\n", what, len(list))
	for _, e := range list {
		fmt.Fprintf(w, "  - %v\n", e)
	}
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
