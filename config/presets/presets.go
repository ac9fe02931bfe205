// Package presets ships keybridge's permission presets as data: each file is
// a catalog (categories, actions, extra permissions), system and pseudo
// roles, and policies. `mapping.preset` in the config selects one.
package presets

import (
	"embed"
	"fmt"
	"sort"
	"strings"
)

//go:embed *.yaml
var files embed.FS

// Get returns the YAML of a preset by name.
func Get(name string) ([]byte, error) {
	b, err := files.ReadFile(name + ".yaml")
	if err != nil {
		return nil, fmt.Errorf("unknown preset %q: use one of %s", name, strings.Join(Names(), ", "))
	}
	return b, nil
}

// Names lists the shipped presets.
func Names() []string {
	entries, _ := files.ReadDir(".")
	var out []string
	for _, e := range entries {
		if n, ok := strings.CutSuffix(e.Name(), ".yaml"); ok {
			out = append(out, n)
		}
	}
	sort.Strings(out)
	return out
}
