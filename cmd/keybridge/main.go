// Command keybridge is the one binary: serve, sync, migrate, check, roles,
// people, tenants, audit, config validate and version.
package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

// Set by the linker: -ldflags "-X main.version=... -X main.revision=...".
var (
	version  = "dev"
	revision = "unknown"
)

type command struct {
	name    string
	summary string
	run     func(ctx context.Context, args []string, stdout, stderr io.Writer) int
}

func commands() []command {
	return []command{
		{"serve", "run the daemon: sync on schedule, events, webhooks and the HTTP API", runServe},
		{"sync", "run one sync now (--dry-run prints the plan, --force passes the deletion guard)", runSync},
		{"migrate", "apply (up), roll back (down) or list (status) database migrations", runMigrate},
		{"check", "decide offline from a claims file and the config", runCheck},
		{"roles", "list roles and their permissions; create, duplicate or delete custom roles", runRoles},
		{"people", "list, invite and assign roles to people (operator CLI)", runPeople},
		{"tenants", "list, create, rename, disable or enable tenants (their Keycloak organization or group)", runTenants},
		{"audit", "read the audit log (table, json or csv)", runAudit},
		{"config", "config validate -c FILE: report every problem in a config", runConfig},
		{"version", "print the version", runVersion},
	}
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	code := dispatch(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

func dispatch(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		usage(stdout)
		if len(args) == 0 {
			return 2
		}
		return 0
	}
	for _, c := range commands() {
		if c.name == args[0] {
			return c.run(ctx, args[1:], stdout, stderr)
		}
	}
	fmt.Fprintf(stderr, "keybridge: unknown command %q\n\n", args[0])
	usage(stderr)
	return 2
}

func usage(w io.Writer) {
	fmt.Fprintln(w, "keybridge bridges a Keycloak realm to the applications that trust it.")
	fmt.Fprintln(w, "\nUsage: keybridge <command> [flags]\n\nCommands:")
	for _, c := range commands() {
		fmt.Fprintf(w, "  %-8s %s\n", c.name, c.summary)
	}
	fmt.Fprintln(w, "\nRun 'keybridge <command> -h' for a command's flags.")
}

func runVersion(_ context.Context, _ []string, stdout, _ io.Writer) int {
	fmt.Fprintf(stdout, "keybridge %s (%s)\n", version, revision)
	return 0
}
