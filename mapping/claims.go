package mapping

import (
	"fmt"
	"sort"
	"strings"
)

// FactsFromClaims reads a verified token's claims as Facts, so request-time
// resolution runs the same rules as sync.
func FactsFromClaims(claims map[string]any, paths ClaimPaths) Facts {
	paths = paths.withDefaults()
	f := Facts{Claims: claims, Attributes: map[string][]string{}}
	f.Subject, _ = claims["sub"].(string)
	f.Username = firstString(lookup(claims, paths.Username))
	f.Email, _ = claims["email"].(string)
	f.RealmRoles = strings_(lookup(claims, paths.RealmRoles))
	if ra, ok := lookup(claims, paths.ClientRoles).(map[string]any); ok {
		for client, v := range ra {
			if m, ok := v.(map[string]any); ok {
				for _, r := range strings_(m["roles"]) {
					f.ClientRoles = append(f.ClientRoles, client+":"+r)
				}
			}
		}
		sort.Strings(f.ClientRoles)
	}
	for _, g := range strings_(lookup(claims, paths.Groups)) {
		if !strings.HasPrefix(g, "/") {
			g = "/" + g
		}
		f.Groups = append(f.Groups, g)
	}
	// Keycloak 26 emits organization as a list of aliases, or as an object
	// keyed by alias when attributes are mapped.
	switch o := lookup(claims, paths.Organization).(type) {
	case []any:
		f.Organizations = strings_(o)
	case map[string]any:
		for alias := range o {
			f.Organizations = append(f.Organizations, alias)
		}
		sort.Strings(f.Organizations)
	case string:
		f.Organizations = []string{o}
	}
	// Top-level scalar and string-list claims double as attributes, the way
	// Keycloak's user-attribute mappers put them in the token.
	for k, v := range claims {
		switch v.(type) {
		case string, []any, float64, bool:
			if s := strings_(v); len(s) > 0 {
				f.Attributes[k] = s
			}
		}
	}
	return f
}

// lookup follows a dotted path through nested objects.
func lookup(claims map[string]any, path string) any {
	var cur any = claims
	for _, seg := range strings.Split(path, ".") {
		m, ok := cur.(map[string]any)
		if !ok {
			return nil
		}
		cur = m[seg]
	}
	return cur
}

// strings_ flattens a claim value to strings: a string, a number, a bool,
// or a list of them.
func strings_(v any) []string {
	switch x := v.(type) {
	case string:
		return []string{x}
	case []string:
		return x
	case float64, bool, int:
		return []string{fmt.Sprint(x)}
	case []any:
		out := make([]string, 0, len(x))
		for _, e := range x {
			switch s := e.(type) {
			case string:
				out = append(out, s)
			case float64, bool:
				out = append(out, fmt.Sprint(s))
			}
		}
		return out
	}
	return nil
}

func firstString(v any) string {
	if s := strings_(v); len(s) > 0 {
		return s[0]
	}
	return ""
}
