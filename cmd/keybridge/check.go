package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/keybridge/keybridge/config"
	"github.com/keybridge/keybridge/mapping"
)

// loadMappingSection reads a config file's mapping section. Problems in
// other sections (an unset database URL, a missing Keycloak secret) are
// ignored: operators try rules on a laptop without the daemon's secrets.
// Problems of the mapping section itself, unknown keys included, are not.
func loadMappingSection(path string) (mapping.Config, error) {
	cfg, err := config.Load(path)
	if cfg == nil {
		return mapping.Config{}, err
	}
	var mine config.Problems
	var all config.Problems
	if errors.As(err, &all) {
		for _, p := range all {
			// Keys are reported as mapping.…; YAML type errors name the Go
			// type, mapping.Rule and the like.
			if msg := p.Error(); strings.HasPrefix(msg, "mapping") || strings.Contains(msg, "mapping.") {
				mine = append(mine, p)
			}
		}
	} else if err != nil {
		return mapping.Config{}, err
	}
	if len(mine) > 0 {
		return mapping.Config{}, mine
	}
	return cfg.Mapping, nil
}

// multiFlag collects a repeated flag.
type multiFlag []string

func (m *multiFlag) String() string     { return strings.Join(*m, ",") }
func (m *multiFlag) Set(v string) error { *m = append(*m, v); return nil }

// runCheck decides offline, from a claims file and the mapping config,
// exactly as the daemon would for a token with these claims (stored and
// temporary assignments aside: they live in the database). Exit 0 allowed,
// 1 denied, 2 a usage or config error.
func runCheck(_ context.Context, args []string, stdout, stderr io.Writer) int {
	fs := newFlags("check", stderr)
	fs.Usage = func() {
		fmt.Fprintln(stderr, "Usage: keybridge check --claims FILE --permission P [--permission P2 ...] [--owner ID] [--tenant T] [-c config.yaml] [--preset NAME] [-o text|json]")
		fmt.Fprintln(stderr, "Exit status: 0 allowed, 1 denied, 2 usage or config error.")
		fs.PrintDefaults()
	}
	path := configFlag(fs)
	preset := fs.String("preset", "", "preset (overrides the config's)")
	claimsFile := fs.String("claims", "", "JSON object of token claims, or a JWT (its payload is read, not verified); required")
	var perms multiFlag
	fs.Var(&perms, "permission", "permission to check; repeat for any-of (required)")
	owner := fs.String("owner", "", "the resource's owner (subject id), for .owned permissions")
	tenant := fs.String("tenant", "", "the resource's tenant (default: the caller's own)")
	out := fs.String("o", "text", "output: text or json")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	switch {
	case fs.NArg() > 0:
		fmt.Fprintf(stderr, "check: unexpected argument %q\n", fs.Arg(0))
		return 2
	case *claimsFile == "":
		fmt.Fprintln(stderr, "check: --claims FILE is required: a JSON object of token claims")
		return 2
	case len(perms) == 0:
		fmt.Fprintln(stderr, "check: at least one --permission is required")
		return 2
	case *out != "text" && *out != "json":
		fmt.Fprintf(stderr, "check: -o %q: use text or json\n", *out)
		return 2
	}
	engine, ok := engineFor(*path, *preset, stderr)
	if !ok {
		return 2
	}
	for _, p := range perms {
		if !engine.Known(p) {
			fmt.Fprintf(stderr, "check: --permission %q is not in the %s catalog (see keybridge roles --preset %s -o json)\n", p, engine.Preset(), engine.Preset())
			return 2
		}
	}
	claims, err := readClaims(*claimsFile)
	if err != nil {
		fmt.Fprintf(stderr, "check: %v\n", err)
		return 2
	}

	now := time.Now()
	g := engine.Resolve(mapping.FactsFromClaims(claims, engine.Config().Claims), nil, now)
	d := engine.Decide(g, mapping.Request{AnyOf: perms, Resource: mapping.Resource{Owner: *owner, Tenant: *tenant}, Now: now})
	if *out == "json" {
		printJSON(stdout, map[string]any{"decision": d, "grant": g, "primary_role": g.PrimaryRole()})
	} else {
		verdict := "DENIED"
		if d.Allowed {
			verdict = "ALLOWED"
		}
		fmt.Fprintf(stdout, "%s: %s\n", verdict, d.Reason)
		fmt.Fprintf(stdout, "subject %q (%s), tenant %q, roles [%s]\n", g.Subject, g.Username, g.Tenant, strings.Join(g.Roles, ", "))
	}
	if d.Allowed {
		return 0
	}
	return 1
}

// readClaims reads a JSON object of claims or, for convenience when
// debugging a real login, a compact JWT whose payload is taken as is.
func readClaims(path string) (map[string]any, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read claims: %w", err)
	}
	raw = bytes.TrimSpace(raw)
	if len(raw) > 0 && raw[0] != '{' {
		if parts := strings.Split(string(raw), "."); len(parts) == 3 {
			payload, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(parts[1], "="))
			if err != nil {
				return nil, fmt.Errorf("%s looks like a JWT but its payload is not base64url: %w", path, err)
			}
			raw = payload
		}
	}
	var claims map[string]any
	if err := json.Unmarshal(raw, &claims); err != nil || claims == nil {
		if err == nil {
			err = errors.New("null")
		}
		return nil, fmt.Errorf("%s is not a JSON object of claims (or a JWT): %w", path, err)
	}
	return claims, nil
}
