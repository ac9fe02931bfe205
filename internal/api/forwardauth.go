package api

import (
	"net/http"
	"net/url"
	"strings"
	"unicode/utf8"

	"github.com/gin-gonic/gin"

	"github.com/keybridge/keybridge/mapping"
)

// forwardAuthPrefix is where Envoy's ext_authz (path_prefix) puts the
// original path.
const forwardAuthPrefix = "/v1/forward-auth"

// authErrorHeader names why a forward-auth answer behind nginx is a 403
// that is not a permission denial (rate_limited): auth_request passes only
// 2xx, 401 and 403, and the documented error_page maps it back.
const authErrorHeader = "X-Auth-Error"

// Reasons a forward-auth request is refused before any decision, the
// label values of keybridge_forward_auth_refused_total.
const (
	refusedNoOriginalURI     = "no_original_uri"
	refusedDuplicateOriginal = "duplicate_original"
	refusedNotOriginForm     = "not_origin_form"
	refusedDotSegment        = "dot_segment"
	refusedDuplicateSlash    = "duplicate_slash"
	refusedEncodedDelimiter  = "encoded_delimiter"
	refusedPathParameter     = "path_parameter"
	refusedBackslash         = "backslash"
	refusedControlByte       = "control_byte"
	refusedBadEscape         = "bad_escape"
	refusedInvalidUTF8       = "invalid_utf8"
	refusedFragment          = "fragment"
)

// canonicalPath takes an origin-form request-target exactly as the client
// sent it (nothing decoded: nginx's $request_uri, Traefik's
// X-Forwarded-Uri, the request line behind Envoy) and answers its path
// decoded exactly once, or why the path is not canonical. The query is
// dropped at the first raw '?' and takes no part.
//
// Canonical means: starts with '/'; no "." or ".." segment; no empty
// segment (//); no raw '\', ';' (path parameters), '#', space or control
// byte; every '%' starts a valid escape, and none encodes a delimiter or
// what could become one ('/', '.', '?', '#', '%', '\', ';') or a control
// byte; valid UTF-8 once decoded. Such a path means the same to keybridge
// and to any upstream however it normalizes, so a route is never matched
// on a path the upstream reads as another; anything else is refused, not
// normalized.
func canonicalPath(target string) (string, string) {
	raw := target
	if i := strings.IndexByte(raw, '?'); i >= 0 {
		raw = raw[:i]
	}
	if raw == "" || raw[0] != '/' {
		return "", refusedNotOriginForm
	}
	escaped := false
	seg := 1 // start of the current segment
	for i := 1; i <= len(raw); i++ {
		if i == len(raw) || raw[i] == '/' {
			switch s := raw[seg:i]; {
			case s == "." || s == "..":
				return "", refusedDotSegment
			case s == "" && i < len(raw):
				return "", refusedDuplicateSlash
			}
			seg = i + 1
			continue
		}
		switch b := raw[i]; {
		case b <= ' ' || b == 0x7f:
			return "", refusedControlByte
		case b == '\\':
			return "", refusedBackslash
		case b == ';':
			return "", refusedPathParameter
		case b == '#':
			return "", refusedFragment
		case b == '%':
			if i+2 >= len(raw) || !isHex(raw[i+1]) || !isHex(raw[i+2]) {
				return "", refusedBadEscape
			}
			switch v := unhex(raw[i+1])<<4 | unhex(raw[i+2]); {
			case v < ' ' || v == 0x7f:
				return "", refusedControlByte
			case strings.IndexByte(`/.?#%\;`, v) >= 0:
				return "", refusedEncodedDelimiter
			}
			escaped = true
			i += 2
		}
	}
	p := raw
	if escaped {
		var err error
		if p, err = url.PathUnescape(raw); err != nil { // every escape was checked above
			return "", refusedBadEscape
		}
	}
	if !utf8.ValidString(p) {
		return "", refusedInvalidUTF8
	}
	return p, ""
}

func isHex(b byte) bool { return '0' <= b && b <= '9' || 'a' <= b && b <= 'f' || 'A' <= b && b <= 'F' }

func unhex(b byte) byte {
	switch {
	case b <= '9':
		return b - '0'
	case b >= 'a':
		return b - 'a' + 10
	}
	return b - 'A' + 10
}

// RolesHeader encodes role names for the forward-auth roles header as an
// RFC 8941 List of Strings: each name in double quotes, '"' and '\'
// escaped with '\', members joined by ", " — so a comma or quote inside a
// name never splits it. A name with a byte outside printable ASCII is an
// RFC 9651 Display String instead: %"..." with those bytes, '%' and '"'
// as lower-case %xx. No roles is the empty List: an empty value.
func RolesHeader(roles []string) string {
	if len(roles) == 0 {
		return ""
	}
	var b strings.Builder
	for i, r := range roles {
		if i > 0 {
			b.WriteString(", ")
		}
		if printableASCII(r) {
			b.WriteByte('"')
			for j := 0; j < len(r); j++ {
				if r[j] == '"' || r[j] == '\\' {
					b.WriteByte('\\')
				}
				b.WriteByte(r[j])
			}
			b.WriteByte('"')
			continue
		}
		b.WriteString(`%"`)
		for j := 0; j < len(r); j++ {
			if c := r[j]; c == '%' || c == '"' || c < ' ' || c > '~' {
				const hex = "0123456789abcdef"
				b.WriteByte('%')
				b.WriteByte(hex[c>>4])
				b.WriteByte(hex[c&0xf])
			} else {
				b.WriteByte(c)
			}
		}
		b.WriteByte('"')
	}
	return b.String()
}

func printableASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < ' ' || s[i] > '~' {
			return false
		}
	}
	return true
}

// identityHeaders sets every configured identity header on a 2xx
// forward-auth answer, an empty value meaning none (no user, no tenant, no
// roles). The header is always there, so a proxy that copies it to the
// upstream (Envoy allowed_upstream_headers, Traefik authResponseHeaders,
// nginx auth_request_set) always overwrites whatever the client sent under
// that name. The map is written directly: gin's c.Header deletes a header
// set to "".
func (d *Decisions) identityHeaders(c *gin.Context, user, tenant, roles string) {
	h := c.Writer.Header()
	for _, kv := range [3][2]string{{d.ForwardAuth.Headers.User, user}, {d.ForwardAuth.Headers.Tenant, tenant}, {d.ForwardAuth.Headers.Roles, roles}} {
		if kv[0] != "" {
			h[http.CanonicalHeaderKey(kv[0])] = []string{kv[1]}
		}
	}
}

// anonymousGrant is the Public pseudo role's grant of one engine and its
// roles header, built once per engine (a reload makes a new engine).
type anonymousGrant struct {
	engine *mapping.Engine
	grant  *mapping.Grant
	roles  string
}

func (d *Decisions) anonymous(e *mapping.Engine) *anonymousGrant {
	if a := d.anon.Load(); a != nil && a.engine == e {
		return a
	}
	g := e.Anonymous()
	a := &anonymousGrant{engine: e, grant: g, roles: RolesHeader(g.Roles)}
	d.anon.Store(a)
	return a
}

// anonymousRequest reports whether a request carries no credentials at
// all. Any Authorization header, even an empty, malformed or non-Bearer
// one, is a credential to verify: a bad one is 401, never Public.
func anonymousRequest(c *gin.Context) bool {
	_, ok := c.Request.Header["Authorization"]
	return !ok
}

// behindNginx reports whether c is a forward-auth request from nginx's
// auth_request, which turns any answer but 2xx, 401 and 403 into 500.
func (d *Decisions) behindNginx(c *gin.Context) bool {
	p := d.ForwardAuth.Proxy
	return (p == "" || p == "nginx") && strings.HasPrefix(c.FullPath(), forwardAuthPrefix)
}
