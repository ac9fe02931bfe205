package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/keybridge/keybridge/config"
	"github.com/keybridge/keybridge/mapping"
)

// loadMappingSection reads the config file's mapping section without
// requiring the rest (database, Keycloak secrets) to be set: operators test
// rules on a laptop.
func loadMappingSection(path string) (mapping.Config, error) {
	cfg, err := config.Load(path)
	if cfg == nil {
		return mapping.Config{}, err
	}
	if errs := cfg.Mapping.Validate(); len(errs) > 0 {
		return mapping.Config{}, config.Problems(errs)
	}
	return cfg.Mapping, nil
}

type multiFlag []string

func (m *multiFlag) String() string     { return fmt.Sprint(*m) }
func (m *multiFlag) Set(v string) error { *m = append(*m, v); return nil }

func runCheck(_ context.Context, args []string, stdout, stderr io.Writer) int {
	fs := newFlags("check", stderr)
	path := fs.String("c", "", "config file; its mapping section is used")
	preset := fs.String("preset", "", "preset (overrides the config's)")
	claimsFile := fs.String("claims", "", "JSON file of token claims (required)")
	var perms multiFlag
	fs.Var(&perms, "permission", "permission to check; repeat for any-of")
	owner := fs.String("owner", "", "resource owner (for .owned permissions)")
	tenant := fs.String("tenant", "", "resource tenant")
	out := fs.String("o", "text", "text or json")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *claimsFile == "" || len(perms) == 0 {
		fmt.Fprintln(stderr, "check: --claims FILE and at least one --permission are required")
		return 2
	}
	engine, ok := engineFor(*path, *preset, stderr)
	if !ok {
		return 2
	}
	raw, err := os.ReadFile(*claimsFile)
	if err != nil {
		fmt.Fprintf(stderr, "check: %v\n", err)
		return 2
	}
	var claims map[string]any
	if err := json.Unmarshal(raw, &claims); err != nil {
		fmt.Fprintf(stderr, "check: %s is not a JSON object of claims: %v\n", *claimsFile, err)
		return 2
	}
	now := time.Now()
	g := engine.Resolve(mapping.FactsFromClaims(claims, engine.Config().Claims), nil, now)
	d := engine.Decide(g, mapping.Request{AnyOf: perms, Resource: mapping.Resource{Owner: *owner, Tenant: *tenant}, Now: now})
	if *out == "json" {
		printJSON(stdout, map[string]any{"decision": d, "grant": g})
	} else {
		verdict := "DENIED"
		if d.Allowed {
			verdict = "ALLOWED"
		}
		fmt.Fprintf(stdout, "%s: %s\nsubject %s, tenant %q, roles %v\n", verdict, d.Reason, g.Subject, g.Tenant, g.Roles)
	}
	if d.Allowed {
		return 0
	}
	return 1
}
