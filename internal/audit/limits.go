package audit

import (
	"encoding/json"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// Caps on what one audit row may hold, in bytes of UTF-8. The writer
// enforces them in one place (sanitize) on every entry, whoever made it,
// so no client-supplied text (a header, a /v1/check resource, a reason)
// can make a row grow without bound. A value over its cap is cut at a
// character boundary and ends in TruncatedSuffix, within the cap.
const (
	MaxTenantBytes       = 256  // tenant_id
	MaxUserBytes         = 256  // actor_id and actor_name, each
	MaxActionBytes       = 256  // action, e.g. check.<any_of joined by |>
	MaxResourceTypeBytes = 128  // resource_type
	MaxResourceIDBytes   = 512  // resource_id
	MaxOutcomeBytes      = 16   // outcome (success, failure or denied)
	MaxReasonBytes       = 1024 // reason
	MaxRequestIDBytes    = 128  // request_id; a client's X-Request-Id longer than this is replaced, not cut
	MaxClientAddrBytes   = 64   // client address, details.client_addr
	MaxDetailsBytes      = 8192 // details, as JSON; larger details are replaced by {"truncated": <the JSON's start>}

	// TruncatedSuffix ends every value cut to its cap.
	TruncatedSuffix = "…(truncated)"

	// DefaultUnauthenticatedShare is the share of the audit queue that rows
	// of refusals before authentication may take; the rest is reserved for
	// authenticated actions.
	DefaultUnauthenticatedShare = 0.1
	// AggregateWindow is how long identical refusals before authentication
	// (same client address, action, outcome and reason) are counted into
	// one row before it is written.
	AggregateWindow = time.Minute
)

// ValidRequestID reports whether a client-sent request id may be kept as
// it is: 1 to MaxRequestIDBytes bytes of [A-Za-z0-9._:-]. Anything else is
// replaced by a generated id, so an id is always safe to log, answer and
// store.
func ValidRequestID(s string) bool {
	if s == "" || len(s) > MaxRequestIDBytes {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '.' || c == '_' || c == ':' || c == '-') {
			return false
		}
	}
	return true
}

// capText makes s storable (valid UTF-8 without NUL) and at most max
// bytes: a longer value is cut at a character boundary and ends in
// TruncatedSuffix.
func capText(s string, max int) string {
	if len(s) > max {
		s = s[:max+1] // what lies beyond is cut anyway: clean no more than needed
	}
	s = cleanText(s)
	if len(s) <= max {
		return s
	}
	cut := max - len(TruncatedSuffix)
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + TruncatedSuffix
}

func cleanText(s string) string {
	if utf8.ValidString(s) && !strings.ContainsRune(s, 0) {
		return s
	}
	return strings.ReplaceAll(strings.ToValidUTF8(s, "\uFFFD"), "\x00", "\uFFFD")
}

// capDetails is the details column: the entry's details and client
// address as JSON of at most MaxDetailsBytes. Larger details are replaced
// by {"client_addr": ..., "truncated": "<the start of their JSON>…(truncated)"}.
func capDetails(details map[string]any, client string) string {
	if len(details) == 0 && client == "" {
		return "{}"
	}
	m := details
	if client != "" {
		m = make(map[string]any, len(details)+1)
		for k, v := range details {
			m[k] = v
		}
		m["client_addr"] = client
	}
	b, err := json.Marshal(m)
	if err != nil {
		b = []byte(`{"unencodable":` + strconv.Quote(err.Error()) + `}`)
	}
	// jsonb refuses \u0000, which json.Marshal writes for NUL.
	s := strings.ReplaceAll(string(b), `\u0000`, `\ufffd`)
	for budget := MaxDetailsBytes - 64 - len(client); len(s) > MaxDetailsBytes; budget /= 2 {
		// Escaping can lengthen the kept start: halve it until it fits.
		t := map[string]any{"truncated": capText(s, max(budget, len(TruncatedSuffix)))}
		if client != "" {
			t["client_addr"] = client
		}
		b, _ = json.Marshal(t)
		s = string(b)
	}
	return s
}
