package api

import (
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/keybridge/keybridge/internal/store"
)

// Query parsing for the management lists is kept pure so it can be fuzzed:
// any input is either a filter or an error that names the parameter.

const maxParamLen = 256

func param(v url.Values, name string) (string, error) {
	s := strings.TrimSpace(v.Get(name))
	if len(s) > maxParamLen {
		return "", fmt.Errorf("%s: longer than %d characters", name, maxParamLen)
	}
	return s, nil
}

func parsePage(v url.Values) (store.Page, error) {
	var p store.Page
	var err error
	if p.Cursor, err = param(v, "cursor"); err != nil {
		return p, err
	}
	if s := v.Get("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 || n > 500 {
			return p, fmt.Errorf("limit: %q is not a number from 1 to 500", s)
		}
		p.Limit = n
	}
	return p, nil
}

func parsePeopleQuery(v url.Values) (store.PeopleFilter, error) {
	var f store.PeopleFilter
	var err error
	for _, x := range []struct {
		name string
		dst  *string
	}{{"role", &f.Role}, {"status", &f.Status}, {"team", &f.Team}, {"q", &f.Search}, {"sort", &f.Sort}} {
		if *x.dst, err = param(v, x.name); err != nil {
			return f, err
		}
	}
	if f.Status != "" && !oneOf(f.Status, store.Statuses...) {
		return f, fmt.Errorf("status: %q is not one of %s", f.Status, strings.Join(store.Statuses, ", "))
	}
	if f.Sort != "" && !oneOf(f.Sort, "name", "last_active") {
		return f, fmt.Errorf("sort: %q is not name or last_active", f.Sort)
	}
	f.Page, err = parsePage(v)
	return f, err
}

func parseAuditQuery(v url.Values) (store.AuditFilter, error) {
	var f store.AuditFilter
	var err error
	for _, x := range []struct {
		name string
		dst  *string
	}{{"user", &f.User}, {"action", &f.Action}, {"type", &f.ResourceType}, {"outcome", &f.Outcome}} {
		if *x.dst, err = param(v, x.name); err != nil {
			return f, err
		}
	}
	if f.Outcome != "" && !oneOf(f.Outcome, store.Outcomes...) {
		return f, fmt.Errorf("outcome: %q is not one of %s", f.Outcome, strings.Join(store.Outcomes, ", "))
	}
	if f.From, err = parseTime(v, "from"); err != nil {
		return f, err
	}
	if f.To, err = parseTime(v, "to"); err != nil {
		return f, err
	}
	if !f.From.IsZero() && !f.To.IsZero() && !f.To.After(f.From) {
		return f, fmt.Errorf("to: must be after from")
	}
	f.Page, err = parsePage(v)
	return f, err
}

// parseTime accepts RFC 3339 or a date (YYYY-MM-DD, midnight UTC).
func parseTime(v url.Values, name string) (time.Time, error) {
	s := v.Get(name)
	if s == "" {
		return time.Time{}, nil
	}
	if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
		return t, nil
	}
	if t, err := time.Parse("2006-01-02", s); err == nil {
		return t, nil
	}
	return time.Time{}, fmt.Errorf("%s: %q is not a time such as 2026-01-31 or 2026-01-31T12:00:00Z", name, s)
}

func oneOf(s string, options ...string) bool {
	for _, o := range options {
		if s == o {
			return true
		}
	}
	return false
}
