package presets_test

import (
	"slices"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"

	"github.com/keybridge/keybridge/config/presets"
)

func TestNamesListsBothSeedsPresets(t *testing.T) {
	if got, want := presets.Names(), []string{"endatix", "fastn"}; !slices.Equal(got, want) {
		t.Fatalf("Names() = %v, want %v", got, want)
	}
}

func TestGetReturnsParsableYAMLForEveryName(t *testing.T) {
	for _, name := range presets.Names() {
		t.Run(name, func(t *testing.T) {
			b, err := presets.Get(name)
			if err != nil {
				t.Fatal(err)
			}
			var doc struct {
				Name string `yaml:"name"`
			}
			if err := yaml.Unmarshal(b, &doc); err != nil {
				t.Fatal(err)
			}
			if doc.Name != name {
				t.Errorf("file %s.yaml says name %q: the file name is how config selects it", name, doc.Name)
			}
		})
	}
}

func TestGetRefusesNamesThatAreNotPresets(t *testing.T) {
	for _, name := range []string{"", "acme", "fastn.yaml", "../presets/fastn", "FASTN", "./fastn"} {
		t.Run(name, func(t *testing.T) {
			_, err := presets.Get(name)
			if err == nil {
				t.Fatalf("Get(%q) succeeded", name)
			}
			if !strings.Contains(err.Error(), "use one of endatix, fastn") {
				t.Errorf("error %q does not say which presets exist", err)
			}
		})
	}
}
