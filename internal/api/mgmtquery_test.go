package api

import (
	"net/url"
	"strings"
	"testing"
	"time"
)

func TestParsePeopleQuery(t *testing.T) {
	tests := []struct {
		name, query, wantErr string
	}{
		{"all filters", "role=Developer&status=active&team=/customers/acme/eng&q=ali&sort=last_active&limit=20", ""},
		{"unknown status names the parameter", "status=gone", "status:"},
		{"bad sort", "sort=email", "sort:"},
		{"limit too large", "limit=100000", "limit:"},
		{"limit not a number", "limit=ten", "limit:"},
		{"oversize search", "q=" + strings.Repeat("a", 300), "q:"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v, _ := url.ParseQuery(tt.query)
			f, err := parsePeopleQuery(v)
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("unexpected error %v", err)
				}
				if f.Role != "Developer" || f.Status != "active" || f.Search != "ali" || f.Limit != 20 || f.Sort != "last_active" {
					t.Errorf("filter = %+v", f)
				}
				return
			}
			if err == nil || !strings.HasPrefix(err.Error(), tt.wantErr) {
				t.Errorf("error = %v, want prefix %q", err, tt.wantErr)
			}
		})
	}
}

func TestParseAuditQuery(t *testing.T) {
	v, _ := url.ParseQuery("user=alice&action=people.*&type=person&outcome=denied&from=2026-01-01&to=2026-02-01T00:00:00Z")
	f, err := parseAuditQuery(v)
	if err != nil {
		t.Fatal(err)
	}
	if f.User != "alice" || f.Action != "people.*" || f.ResourceType != "person" || f.Outcome != "denied" ||
		!f.From.Equal(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)) || f.To.Month() != 2 {
		t.Errorf("filter = %+v", f)
	}
	for _, bad := range []string{"outcome=ok", "from=yesterday", "from=2026-02-01&to=2026-01-01"} {
		v, _ := url.ParseQuery(bad)
		if _, err := parseAuditQuery(v); err == nil {
			t.Errorf("%s accepted", bad)
		}
	}
}

// FuzzManagementQuery: any query string is a filter or an error, never a panic.
func FuzzManagementQuery(f *testing.F) {
	f.Add("role=Owner&status=active&limit=5&cursor=abc")
	f.Add("from=2026-01-01&to=2025-01-01&outcome=denied")
	f.Add("limit=-1&sort=%00")
	f.Fuzz(func(t *testing.T, q string) {
		v, err := url.ParseQuery(q)
		if err != nil {
			return
		}
		if pf, err := parsePeopleQuery(v); err == nil && (pf.Limit < 0 || pf.Limit > 500) {
			t.Fatalf("limit %d escaped its bounds", pf.Limit)
		}
		if af, err := parseAuditQuery(v); err == nil && !af.From.IsZero() && !af.To.IsZero() && !af.To.After(af.From) {
			t.Fatal("inverted range accepted")
		}
	})
}
