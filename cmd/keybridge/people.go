package main

import (
	"context"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/keybridge/keybridge/internal/kcadmin"
	"github.com/keybridge/keybridge/internal/manage"
	"github.com/keybridge/keybridge/internal/store"
)

func runPeople(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprintln(stderr, "usage: keybridge people list|invite|assign [flags]")
		return 2
	}
	switch args[0] {
	case "list":
		return peopleList(ctx, args[1:], stdout, stderr)
	case "assign":
		return peopleAssign(ctx, args[1:], stdout, stderr)
	case "invite":
		return peopleInvite(ctx, args[1:], stdout, stderr)
	}
	fmt.Fprintf(stderr, "keybridge people: unknown subcommand %q: use list, invite or assign\n", args[0])
	return 2
}

func peopleList(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := newFlags("people list", stderr)
	dsn := fs.String("database", ownerFlagDefault(), "schema owner connection string (default $KEYBRIDGE_DATABASE_OWNER_URL)")
	var f store.PeopleFilter
	fs.StringVar(&f.Role, "role", "", "only people holding this role")
	fs.StringVar(&f.Status, "status", "", "active, inactive, invited or deleted")
	fs.StringVar(&f.Team, "team", "", "team id or path")
	fs.StringVar(&f.Search, "q", "", "search name, username or email")
	fs.StringVar(&f.Sort, "sort", "name", "name or last_active")
	out := fs.String("o", "table", "table or json")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	f.Limit = 500
	var all []store.Person
	err := ownerTx(ctx, *dsn, func(tx pgx.Tx) error {
		for {
			page, next, err := store.ListPeople(ctx, tx, f)
			if err != nil {
				return err
			}
			all = append(all, page...)
			if next == "" {
				return nil
			}
			f.Cursor = next
		}
	})
	if err != nil {
		fmt.Fprintf(stderr, "people list: %v\n", err)
		return 1
	}
	if *out == "json" {
		printJSON(stdout, all)
		return 0
	}
	rows := make([][]string, 0, len(all))
	for _, p := range all {
		var roles, teams []string
		for _, r := range p.Roles {
			roles = append(roles, r.Name)
		}
		for _, t := range p.Teams {
			teams = append(teams, t.Path)
		}
		last := "-"
		if p.LastActive != nil {
			last = p.LastActive.UTC().Format(time.RFC3339)
		}
		rows = append(rows, []string{p.DisplayName, p.Email, strings.Join(roles, ","), strings.Join(teams, ","), p.Status, last, strings.Join(p.Tenants, ",")})
	}
	table(stdout, []string{"USER", "EMAIL", "ROLE", "TEAMS", "STATUS", "LAST ACTIVE", "TENANT"}, rows)
	return 0
}

// peopleAssign replaces a person's local roles in a tenant. The CLI acts
// with the platform operator's authority (it connects as the database
// owner, which holds every tenant's data), so the grant ceiling that bounds
// API callers does not apply to it; the tenant rules do, through the same
// function the API calls (manage.ReplaceLocalRoles): an expiry must be in
// the future, and the tenant's last Owner keeps the role.
func peopleAssign(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := newFlags("people assign", stderr)
	dsn := fs.String("database", ownerFlagDefault(), "schema owner connection string")
	path := configFlag(fs)
	person := fs.String("person", "", "person id (Keycloak user id) or username")
	tenant := fs.String("tenant", "", "tenant the roles apply in")
	roles := fs.String("roles", "", "comma-separated role names (replaces the person's local roles in the tenant)")
	expires := fs.Duration("expires-in", 0, "make the grants temporary, e.g. 8h")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *person == "" || *tenant == "" {
		fmt.Fprintln(stderr, "people assign: --person and --tenant are required")
		return 2
	}
	if *expires < 0 {
		fmt.Fprintf(stderr, "people assign: --expires-in %s: must be positive (the grant must end in the future)\n", *expires)
		return 2
	}
	engine, ok := engineFor(*path, "", stderr)
	if !ok {
		return 2
	}
	now := time.Now()
	var want []manage.Requested
	for _, name := range splitList(*roles) {
		r := manage.Requested{Role: name}
		if *expires > 0 {
			t := now.Add(*expires)
			r.ExpiresAt = &t
		}
		want = append(want, r)
	}
	err := ownerTx(ctx, *dsn, func(tx pgx.Tx) error {
		var id string
		if err := tx.QueryRow(ctx, `SELECT id FROM people WHERE id = $1 OR username = $1`, *person).Scan(&id); err != nil {
			return fmt.Errorf("person %q: %w", *person, store.ErrNotFound)
		}
		p, err := store.GetPerson(ctx, tx, id)
		if err != nil {
			return err
		}
		_, err = manage.ReplaceLocalRoles(ctx, tx, engine, manage.Authority{Actor: "cli"}, p, *tenant, want, now)
		return err
	})
	if err != nil {
		fmt.Fprintf(stderr, "people assign: %v\n", err)
		return 1
	}
	fmt.Fprintln(stdout, "assigned")
	return 0
}

func peopleInvite(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := newFlags("people invite", stderr)
	path := configFlag(fs)
	email := fs.String("email", "", "email address")
	name := fs.String("name", "", "display name")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	cfg, ok := loadConfig(*path, stderr)
	if !ok {
		return 2
	}
	if *email == "" {
		fmt.Fprintln(stderr, "people invite: --email is required")
		return 2
	}
	kc := kcadmin.New(cfg.Keycloak.URL, cfg.Keycloak.Realm, cfg.Keycloak.ClientID, cfg.Keycloak.ClientSecret, cfg.Keycloak.Timeout)
	first, last, _ := strings.Cut(*name, " ")
	id, err := kc.CreateUser(ctx, kcadmin.Invitee{Email: *email, FirstName: first, LastName: last})
	if err != nil {
		fmt.Fprintf(stderr, "people invite: %v\n", err)
		return 1
	}
	fmt.Fprintf(stdout, "created %s in Keycloak; roles and groups follow from Keycloak at the next sync\n", id)
	if err := kc.SendInvitation(ctx, id); err != nil {
		fmt.Fprintf(stdout, "no invitation email: %v\n", err)
	}
	return 0
}
