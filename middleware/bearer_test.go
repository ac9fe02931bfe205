package middleware_test

import (
	"net/http/httptest"
	"testing"

	"github.com/keybridge/keybridge/middleware"
)

// TestBearerRefusesAmbiguity: exactly one Authorization header with the
// Bearer scheme yields a token; two headers (a proxy and the application
// could each read another one), other schemes and empty tokens yield none.
func TestBearerRefusesAmbiguity(t *testing.T) {
	cases := []struct {
		name   string
		values []string
		want   string
	}{
		{"one bearer", []string{"Bearer abc"}, "abc"},
		{"scheme is case-insensitive", []string{"bearer abc"}, "abc"},
		{"two headers", []string{"Bearer abc", "Bearer def"}, ""},
		{"two headers, second junk", []string{"Bearer abc", "x"}, ""},
		{"basic scheme", []string{"Basic abc"}, ""},
		{"empty token", []string{"Bearer   "}, ""},
		{"none", nil, ""},
	}
	for _, tc := range cases {
		r := httptest.NewRequest("GET", "/", nil)
		for _, v := range tc.values {
			r.Header.Add("Authorization", v)
		}
		got, ok := middleware.Bearer(r)
		if got != tc.want || ok != (tc.want != "") {
			t.Errorf("%s: got %q, %v; want %q", tc.name, got, ok, tc.want)
		}
	}
}
