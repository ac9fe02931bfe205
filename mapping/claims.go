package mapping

import (
	"encoding/json"
	"sort"
	"strconv"
	"strings"
)

// FactsFromClaims reads a verified token's claims as Facts, so request-time
// resolution runs the same rules as sync. Malformed claims (wrong types,
// odd nesting) yield fewer facts, never a panic: tokens are verified but
// their mappers are configured by people.
func FactsFromClaims(claims map[string]any, paths ClaimPaths) Facts {
	paths = paths.withDefaults()
	f := Facts{Claims: claims, Attributes: map[string][]string{}}
	f.Subject, _ = claims["sub"].(string)
	f.Username = firstString(lookup(claims, paths.Username))
	f.Email = firstString(lookup(claims, paths.Email))
	f.RealmRoles = claimStrings(lookup(claims, paths.RealmRoles))
	if ra, ok := lookup(claims, paths.ClientRoles).(map[string]any); ok {
		for client, v := range ra {
			if m, ok := v.(map[string]any); ok {
				for _, r := range claimStrings(m["roles"]) {
					f.ClientRoles = append(f.ClientRoles, client+":"+r)
				}
			}
		}
		sort.Strings(f.ClientRoles)
	}
	for _, g := range claimStrings(lookup(claims, paths.Groups)) {
		// Keycloak's group mapper without "Full group path" emits bare
		// names: "admins" for /customers/x/admins as for /admins. Taking one
		// for a top-level path would hand a subgroup's members the top-level
		// group's grants, so a bare name is dropped; rules, tenants and teams
		// are full paths (the sync reads those from Keycloak itself).
		if !strings.HasPrefix(g, "/") {
			continue
		}
		f.Groups = append(f.Groups, g)
	}
	// Keycloak 26 emits organization as a list of aliases, or as an object
	// keyed by alias when the mapper adds organization attributes.
	switch o := lookup(claims, paths.Organization).(type) {
	case map[string]any:
		for alias := range o {
			f.Organizations = append(f.Organizations, alias)
		}
		sort.Strings(f.Organizations)
	default:
		f.Organizations = claimStrings(o)
	}
	// Top-level scalar and list claims double as user attributes, the way
	// Keycloak's user-attribute mappers put them in a token: that is how
	// mapping.tenant.attribute finds the tenant at request time.
	for k, v := range claims {
		if s := claimStrings(v); len(s) > 0 {
			f.Attributes[k] = s
		}
	}
	return f
}

// lookup follows a dotted path through nested objects.
func lookup(claims map[string]any, path string) any {
	var cur any = claims
	for path != "" {
		seg, rest, _ := strings.Cut(path, ".")
		m, ok := cur.(map[string]any)
		if !ok {
			return nil
		}
		cur, path = m[seg], rest
	}
	return cur
}

// claimStrings flattens a claim value to strings: a scalar, or a list of
// scalars. Objects and nested lists have no string form and are skipped.
// Numbers print as Keycloak stores the attribute ("1000000", not "1e+06").
func claimStrings(v any) []string {
	switch x := v.(type) {
	case []any:
		out := make([]string, 0, len(x))
		for _, e := range x {
			if s, ok := scalar(e); ok {
				out = append(out, s)
			}
		}
		return out
	case []string:
		return x
	default:
		if s, ok := scalar(v); ok {
			return []string{s}
		}
	}
	return nil
}

func scalar(v any) (string, bool) {
	switch x := v.(type) {
	case string:
		return x, true
	case json.Number:
		return x.String(), true
	case float64:
		return strconv.FormatFloat(x, 'f', -1, 64), true
	case int:
		return strconv.Itoa(x), true
	case int64:
		return strconv.FormatInt(x, 10), true
	case bool:
		return strconv.FormatBool(x), true
	}
	return "", false
}

func firstString(v any) string {
	if s := claimStrings(v); len(s) > 0 {
		return s[0]
	}
	return ""
}
