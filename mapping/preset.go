package mapping

import (
	"bytes"
	"fmt"
	"sort"
	"strings"

	"gopkg.in/yaml.v3"

	"github.com/keybridge/keybridge/config/presets"
)

// presetFile is the shape of config/presets/*.yaml.
type presetFile struct {
	Name             string           `yaml:"name"`
	Categories       []presetCategory `yaml:"categories"`
	MatrixCategories []string         `yaml:"matrix_categories"`
	ProtectedRole    string           `yaml:"protected_role"`
	Policies         []Policy         `yaml:"policies"`
	Roles            []presetRole     `yaml:"roles"`
	Pseudo           []presetRole     `yaml:"pseudo"`
	// OrganizationRoles hold in every customer of the organization they
	// are held in, when the tenancy is a tree (TenantSource.Customers).
	OrganizationRoles []string `yaml:"organization_roles"`
}

type presetCategory struct {
	Name    string   `yaml:"name"`
	Actions []string `yaml:"actions"`
}

type presetRole struct {
	Name        string   `yaml:"name"`
	Kind        string   `yaml:"kind"` // pseudo roles: authenticated or public
	Description string   `yaml:"description"`
	Bypass      string   `yaml:"bypass"`
	Permissions []string `yaml:"permissions"` // names, "category.*" or "*"
}

// Policy reserves the permissions under a prefix for holders of one role,
// whatever else the caller holds: Endatix's platform.* stays behind
// PlatformAdmin even for a tenant Admin, whose bypass would otherwise pass.
type Policy struct {
	Prefix      string `yaml:"prefix" json:"prefix"`
	RequireRole string `yaml:"require_role" json:"require_role"`
}

func loadPreset(name string) (*presetFile, error) {
	raw, err := presets.Get(name)
	if err != nil {
		return nil, err
	}
	dec := yaml.NewDecoder(bytes.NewReader(raw))
	dec.KnownFields(true)
	var p presetFile
	if err := dec.Decode(&p); err != nil {
		return nil, fmt.Errorf("preset %s: %w", name, err)
	}
	return &p, nil
}

// Category is a permission category and its actions, for a UI that draws
// one row per category and one checkbox per action.
type Category struct {
	Name        string   `json:"name"`
	Actions     []string `json:"actions"`
	Permissions []string `json:"permissions"` // category.action, in action order
}

// Catalog is every permission an engine knows, grouped by category.
type Catalog struct {
	Preset      string     `json:"preset"`
	Categories  []Category `json:"categories"`
	Permissions []string   `json:"permissions"` // sorted
}

// expand turns a role's permission patterns ("*", "forms.*", exact names)
// into catalog permissions, sorted. A pattern written "-platform.*" (or
// "-name") takes back what the others gave: fastn's Owner holds "*" but
// "-platform.*". A pattern that matches nothing is an error: in preset data
// it is a typo.
func expand(patterns []string, catalog []string, known func(string) bool) ([]string, error) {
	set := map[string]bool{}
	var minus []string
	for _, p := range patterns {
		if rest, ok := strings.CutPrefix(p, "-"); ok {
			minus = append(minus, rest)
			continue
		}
		switch {
		case p == "*":
			for _, c := range catalog {
				set[c] = true
			}
		case strings.HasSuffix(p, ".*"):
			prefix := strings.TrimSuffix(p, "*")
			n := 0
			for _, c := range catalog {
				if strings.HasPrefix(c, prefix) {
					set[c] = true
					n++
				}
			}
			if n == 0 {
				return nil, fmt.Errorf("pattern %q matches no permission", p)
			}
		default:
			if !known(p) {
				return nil, fmt.Errorf("%w %q", ErrUnknownPermission, p)
			}
			set[p] = true
		}
	}
	for _, m := range minus {
		n := 0
		for _, c := range catalog {
			if c == m || strings.HasSuffix(m, ".*") && strings.HasPrefix(c, strings.TrimSuffix(m, "*")) {
				delete(set, c)
				n++
			}
		}
		if n == 0 {
			return nil, fmt.Errorf("pattern %q matches no permission", "-"+m)
		}
	}
	out := make([]string, 0, len(set))
	for p := range set {
		out = append(out, p)
	}
	sort.Strings(out)
	return out, nil
}
