package main

import (
	"context"
	"fmt"
	"io"
	"strconv"

	"github.com/jackc/pgx/v5"

	"github.com/keybridge/keybridge/internal/kcadmin"
	"github.com/keybridge/keybridge/internal/manage"
	"github.com/keybridge/keybridge/internal/store"
)

// runTenants is tenant administration for the operator (issue 16), through
// the same service as the API (manage.Tenants): list, create, rename,
// disable, enable. It connects as the database owner and writes to
// Keycloak as keybridge's service account, with the config's
// mapping.tenant deciding whether a tenant is an organization or a group.
func runTenants(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	const usage = "usage: keybridge tenants list [-o table|json] | create --id ID [--name NAME] | rename --id ID --name NAME | disable --id ID | enable --id ID"
	if len(args) == 0 {
		fmt.Fprintln(stderr, usage)
		return 2
	}
	verb := args[0]
	fs := newFlags("tenants "+verb, stderr)
	path := configFlag(fs)
	dsn := fs.String("database", ownerFlagDefault(), "schema owner connection string (default $KEYBRIDGE_DATABASE_OWNER_URL)")
	id := fs.String("id", "", "tenant id (the organization's alias, or the group's name under mapping.tenant.group_prefix)")
	name := fs.String("name", "", "display name")
	out := fs.String("o", "table", "list output: table or json")
	switch verb {
	case "list", "create", "rename", "disable", "enable":
	default:
		fmt.Fprintf(stderr, "keybridge tenants: unknown subcommand %q\n%s\n", verb, usage)
		return 2
	}
	if err := fs.Parse(args[1:]); err != nil {
		return 2
	}
	if verb != "list" && *id == "" || verb == "rename" && *name == "" {
		fmt.Fprintf(stderr, "tenants %s: --id is required (and --name to rename)\n", verb)
		return 2
	}
	cfg, ok := loadConfig(*path, stderr)
	if !ok {
		return 2
	}
	svc := &manage.Tenants{Source: cfg.Mapping.Tenant,
		Keycloak: kcadmin.New(cfg.Keycloak.URL, cfg.Keycloak.Realm, cfg.Keycloak.ClientID, cfg.Keycloak.ClientSecret, cfg.Keycloak.Timeout)}
	var list []store.Tenant
	err := ownerTx(ctx, *dsn, func(tx pgx.Tx) error {
		var t store.Tenant
		var err error
		switch verb {
		case "list":
			list, err = svc.List(ctx, tx)
			return err
		case "create":
			t, err = svc.Create(ctx, tx, *id, *name)
		case "rename":
			t, err = svc.Update(ctx, tx, *id, manage.TenantChange{Name: name})
		default:
			off := verb == "disable"
			t, err = svc.Update(ctx, tx, *id, manage.TenantChange{Disabled: &off})
		}
		list = []store.Tenant{t}
		return err
	})
	if err != nil {
		fmt.Fprintf(stderr, "tenants %s: %v\n", verb, err)
		return 1
	}
	if *out == "json" {
		printJSON(stdout, list)
		return 0
	}
	rows := make([][]string, 0, len(list))
	for _, t := range list {
		rows = append(rows, []string{t.ID, t.Name, t.Source, t.Status, strconv.Itoa(t.Members), t.KeycloakID})
	}
	table(stdout, []string{"ID", "NAME", "SOURCE", "STATUS", "MEMBERS", "KEYCLOAK ID"}, rows)
	return 0
}
