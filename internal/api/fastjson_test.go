package api

import (
	"bytes"
	"encoding/json"
	"io"
	"reflect"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/keybridge/keybridge/mapping"
	"github.com/keybridge/keybridge/rls"
)

// stdDecode is the reference: encoding/json, unknown fields refused, one
// value and nothing after it.
func stdDecode(data []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return err
	}
	if _, err := dec.Token(); err != io.EOF {
		return io.ErrUnexpectedEOF
	}
	return nil
}

var checkBodySeeds = []string{
	`{"permission":"workflows.deploy_prod","resource":{"type":"workflow","id":"w1","tenant":"acme"}}`,
	`{"any_of":["a.b","c.d"],"resource":{"owner":"u1"}}`,
	`{"checks":[{"permission":"x"},{"any_of":["y","z"],"resource":{"id":"\u00e9\ud83d\ude00"}}]}`,
	`{"Permission":"case.insensitive"}`,
	`{"permission":"x","permission":"dup"}`,
	`{"permission":"x","bogus":1}`,
	`{"permission":"x"} {"permission":"y"}`,
	`{"permission":"x"}   `,
	`{"permission":"\ud800"}`,
	`{"permission":null,"any_of":null,"checks":[]}`,
	`{"any_of":[]}`,
	`{"resource":{"type":1}}`,
	"{\"permission\":\"tab\there\"}",
	`null`,
	`[]`,
	``,
}

// FuzzCheckBody proves the fast decoder means what encoding/json means:
// whatever sonic accepts, encoding/json accepts too, with the same value.
// (What sonic refuses is decoded by encoding/json anyway.)
func FuzzCheckBody(f *testing.F) {
	for _, s := range checkBodySeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		if !utf8.Valid(data) {
			if _, err := decodeStrict[checkBody](data); err == nil {
				t.Fatalf("invalid UTF-8 accepted: %q", data)
			}
			return
		}
		var fast checkBody
		if err := sonicDecode.Unmarshal(data, &fast); err != nil {
			return
		}
		var std checkBody
		if err := stdDecode(data, &std); err != nil {
			t.Fatalf("sonic accepted what encoding/json refuses (%v): %q", err, data)
		}
		if !reflect.DeepEqual(fast, std) {
			t.Fatalf("decoded differently:\n sonic %#v\n std   %#v\n input %q", fast, std, data)
		}
	})
}

// FuzzAnswerEncoding proves the fast encoder writes what encoding/json
// writes: the same JSON value (sonic spells some escapes differently, \u000c
// for \f, which is the same string to every JSON reader).
func FuzzAnswerEncoding(f *testing.F) {
	f.Add(true, "workflows.read", `granted by role "Developer" <&>`, "acme", "u1", "Developer", "Admin,Developer")
	f.Add(false, "", "\u2028\x00\xff bad", "t\u00e9", "", "", "")
	f.Fuzz(func(t *testing.T, allowed bool, perm, reason, tenant, user, role, roles string) {
		a := CheckAnswer{Allowed: allowed, Permission: perm, Reason: reason,
			Session: rls.Session{TenantID: tenant, UserID: user, Role: role, Roles: strings.Split(roles, ","), Platform: len(roles)%2 == 1}}
		for _, v := range []any{&a, checkResults{Results: []CheckAnswer{a, a}}} {
			fast, err := sonicEncode.Marshal(v)
			if err != nil {
				t.Fatal(err)
			}
			std, err := json.Marshal(v)
			if err != nil {
				t.Fatal(err)
			}
			var fv, sv any
			if err := json.Unmarshal(fast, &fv); err != nil {
				t.Fatalf("sonic wrote invalid JSON %q: %v", fast, err)
			}
			if err := json.Unmarshal(std, &sv); err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(fv, sv) {
				t.Fatalf("encoded differently:\n sonic %s\n std   %s", fast, std)
			}
		}
	})
}

func TestParseCheckBodyRefusals(t *testing.T) {
	tests := []struct{ name, body, want string }{
		{"unknown field", `{"permission":"x","bogus":1}`, `body: unknown field "bogus"`},
		{"trailing value", `{"permission":"x"} {"permission":"y"}`, "body: one JSON value expected"},
		{"invalid UTF-8", "{\"permission\":\"\xff\"}", "body: not valid UTF-8"},
		{"too large", `{"permission":"` + strings.Repeat("a", maxCheckBody) + `"}`, "body: larger than"},
		{"wrong type", `{"resource":{"type":1}}`, "body: cannot unmarshal number"},
		{"syntax", `{"permission":`, "body: unexpected EOF"},
		{"empty", ``, "body: EOF"},
		{"nothing asked", `{}`, "body: permission, any_of or checks is required"},
		{"both", `{"permission":"x","checks":[{"permission":"y"}]}`, "not both"},
		{"batch too big", `{"checks":[` + strings.TrimSuffix(strings.Repeat(`{"permission":"x"},`, 3), ",") + `]}`, "checks: at most 2 per request"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, _, err := ParseCheckBody(strings.NewReader(tt.body), 2)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error %v, want one containing %q", err, tt.want)
			}
		})
	}
}

func TestParseCheckBodyAccepts(t *testing.T) {
	list, single, err := ParseCheckBody(strings.NewReader(checkBodySeeds[0]+"\n"), 100)
	if err != nil || !single || len(list) != 1 {
		t.Fatalf("single: %v %v %v", list, single, err)
	}
	want := checkRequest{Permission: "workflows.deploy_prod", Resource: mapping.Resource{Type: "workflow", ID: "w1", Tenant: "acme"}}
	if !reflect.DeepEqual(list[0], want) {
		t.Errorf("got %#v, want %#v", list[0], want)
	}
	list, single, err = ParseCheckBody(strings.NewReader(checkBodySeeds[2]), 100)
	if err != nil || single || len(list) != 2 || list[1].Resource.ID != "é😀" || !reflect.DeepEqual(list[1].AnyOf, []string{"y", "z"}) {
		t.Fatalf("batch: %#v %v %v", list, single, err)
	}
}
