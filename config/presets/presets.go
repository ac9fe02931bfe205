// Package presets ships keybridge's permission presets as data, one YAML file
// each: a catalog (categories and actions), system and pseudo roles, and
// policies. Keeping them out of code lets a reviewer check a preset against
// its seed document line by line; package mapping compiles them.
package presets

import (
	"embed"
	"fmt"
	"sort"
	"strings"
)

//go:embed *.yaml
var files embed.FS

// Get returns the YAML of the preset called name.
func Get(name string) ([]byte, error) {
	// embed.FS would also resolve "dir/../fastn"; a preset is a bare name.
	if name == "" || strings.ContainsAny(name, `/\.`) {
		return nil, unknown(name)
	}
	b, err := files.ReadFile(name + ".yaml")
	if err != nil {
		return nil, unknown(name)
	}
	return b, nil
}

func unknown(name string) error {
	return fmt.Errorf("unknown preset %q: use one of %s", name, strings.Join(Names(), ", "))
}

// Names lists the shipped presets, sorted.
func Names() []string {
	entries, err := files.ReadDir(".")
	if err != nil {
		return nil // cannot happen: the directory is compiled in
	}
	var out []string
	for _, e := range entries {
		if n, ok := strings.CutSuffix(e.Name(), ".yaml"); ok {
			out = append(out, n)
		}
	}
	sort.Strings(out)
	return out
}
