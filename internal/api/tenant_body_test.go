package api

import (
	"strings"
	"testing"
)

// A batch's top-level tenant applies to every check that names none; a
// check naming another one is refused, never silently overridden.
func TestParseCheckBodyTenants(t *testing.T) {
	list, _, err := ParseCheckBody(strings.NewReader(`{"tenant":"acme","checks":[{"permission":"x"},{"permission":"y","tenant":"acme"}]}`), 10)
	if err != nil || list[0].Tenant != "acme" || list[1].Tenant != "acme" {
		t.Fatalf("%+v %v", list, err)
	}
	list, _, err = ParseCheckBody(strings.NewReader(`{"checks":[{"permission":"x","tenant":"acme"},{"permission":"y","tenant":"globex"},{"permission":"z"}]}`), 10)
	if err != nil || list[0].Tenant != "acme" || list[1].Tenant != "globex" || list[2].Tenant != "" {
		t.Fatalf("%+v %v", list, err)
	}
	list, single, err := ParseCheckBody(strings.NewReader(`{"permission":"x","tenant":"globex","resource":{"tenant":"acme"}}`), 10)
	if err != nil || !single || list[0].Tenant != "globex" || list[0].Resource.Tenant != "acme" {
		t.Fatalf("the caller's tenant and the resource's are two fields: %+v %v", list, err)
	}
	for body, want := range map[string]string{
		`{"tenant":"acme","checks":[{"permission":"x","tenant":"globex"}]}`: "checks[0].tenant: differs",
		`{"permission":"x","tenant":"a\u0001b"}`:                            "control characters",
		`{"checks":[{"permission":"x","tenant":"a\u0001b"}]}`:               "checks[0].tenant: control characters",
	} {
		if _, _, err := ParseCheckBody(strings.NewReader(body), 10); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: %v, want %q", body, err, want)
		}
	}
}
