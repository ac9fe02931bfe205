package config

import (
	"fmt"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/robfig/cron/v3"
)

// Asymmetric algorithms only: HMAC would let anyone holding the public key
// mint tokens, and "none" is no signature at all.
var allowedAlgorithms = []string{"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}

// CronParser is the schedule syntax keybridge accepts: standard five fields,
// optional seconds, and descriptors such as @every 5m.
var CronParser = cron.NewParser(cron.SecondOptional | cron.Minute | cron.Hour | cron.Dom | cron.Month | cron.Dow | cron.Descriptor)

// Validate reports every problem, each naming its key and the fix. It never
// touches the network: reachability is what /readyz is for.
func (c *Config) Validate() []error {
	var errs []error
	add := func(key, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: %s", key, fmt.Sprintf(format, args...)))
	}

	if _, _, err := net.SplitHostPort(c.Server.Listen); err != nil {
		add("server.listen", "%q is not host:port (for example 0.0.0.0:8080)", c.Server.Listen)
	}
	if c.Server.DebugListen != "" {
		host, _, err := net.SplitHostPort(c.Server.DebugListen)
		ip := net.ParseIP(host)
		if err != nil {
			add("server.debug_listen", "%q is not host:port (for example 127.0.0.1:6060)", c.Server.DebugListen)
		} else if host != "localhost" && (ip == nil || !ip.IsLoopback()) {
			add("server.debug_listen", "%q is not a loopback address: the profiler shows the process's memory, so bind it to 127.0.0.1 or [::1] and reach it through a port-forward", c.Server.DebugListen)
		}
	}
	if c.Server.GCPercent < -1 || c.Server.GCPercent == 0 {
		add("server.gc_percent", "%d is not a GOGC value: use a positive percentage such as 400, or -1 to turn the collector off", c.Server.GCPercent)
	}
	if c.Server.ShutdownTimeout <= 0 {
		add("server.shutdown_timeout", "must be positive, for example 15s")
	}
	for i, cidr := range c.Server.TrustedProxies {
		if _, _, err := net.ParseCIDR(cidr); err != nil {
			add(fmt.Sprintf("server.trusted_proxies[%d]", i), "%q is not a CIDR such as 10.0.0.0/8", cidr)
		}
	}
	if !slices.Contains([]string{"debug", "info", "warn", "error"}, c.Log.Level) {
		add("log.level", "%q is not one of debug, info, warn, error", c.Log.Level)
	}
	if !slices.Contains([]string{"json", "text"}, c.Log.Format) {
		add("log.format", "%q is not json or text", c.Log.Format)
	}

	checkDSN := func(key, env, dsn string, required bool) {
		if dsn == "" {
			if required {
				add(key, "missing: set %s or %s in the config (postgres://user:password@host:5432/keybridge)", env, key)
			}
			return
		}
		if _, err := pgx.ParseConfig(dsn); err != nil {
			add(key, "not a PostgreSQL connection string (postgres://user:password@host:5432/keybridge): %s", redactErr(err, dsn))
		}
	}
	checkDSN("database.url", "KEYBRIDGE_DATABASE_URL", c.Database.URL, true)
	checkDSN("database.sync_url", "KEYBRIDGE_DATABASE_SYNC_URL", c.Database.SyncURL, true)
	checkDSN("database.owner_url", "KEYBRIDGE_DATABASE_OWNER_URL", c.Database.OwnerURL, false)
	if c.Database.MaxConns < 1 {
		add("database.max_conns", "must be at least 1")
	}

	if u, err := url.Parse(c.Keycloak.URL); c.Keycloak.URL == "" {
		add("keycloak.url", "missing: set KEYBRIDGE_KEYCLOAK_URL or keycloak.url to Keycloak's base URL, e.g. https://sso.example.com")
	} else if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		add("keycloak.url", "%q is not an absolute http(s) URL such as https://sso.example.com", c.Keycloak.URL)
	}
	if c.Keycloak.Realm == "" {
		add("keycloak.realm", "missing: set KEYBRIDGE_KEYCLOAK_REALM or keycloak.realm")
	}
	if c.Keycloak.ClientID == "" {
		add("keycloak.client_id", "missing: the confidential client keybridge reads the realm with")
	}
	if c.Keycloak.ClientSecret == "" {
		add("keycloak.client_secret", "missing secret: set KEYBRIDGE_KEYCLOAK_CLIENT_SECRET or keycloak.client_secret_file")
	}
	if c.Keycloak.Timeout <= 0 {
		add("keycloak.timeout", "must be positive, for example 10s")
	}
	if c.Keycloak.PageSize < 1 || c.Keycloak.PageSize > 5000 {
		add("keycloak.page_size", "%d is out of range: use 1 to 5000", c.Keycloak.PageSize)
	}
	if c.Keycloak.Retries < 0 {
		add("keycloak.retries", "must not be negative")
	}
	if c.Keycloak.Concurrency < 1 || c.Keycloak.Concurrency > 64 {
		add("keycloak.concurrency", "%d is out of range: use 1 to 64 (4 is usual; each is one admin API request in flight during a full sync)", c.Keycloak.Concurrency)
	}

	if c.Auth.Issuer != "" {
		if u, err := url.Parse(c.Auth.Issuer); err != nil || u.Scheme == "" || u.Host == "" {
			add("auth.issuer", "%q is not an absolute URL", c.Auth.Issuer)
		}
	}
	if len(c.Auth.Audiences) == 0 {
		add("auth.audiences", "at least one audience is required, for example keybridge (add an audience mapper in Keycloak)")
	}
	if len(c.Auth.Algorithms) == 0 {
		add("auth.algorithms", "at least one algorithm is required, for example RS256")
	}
	for i, a := range c.Auth.Algorithms {
		if !slices.Contains(allowedAlgorithms, a) {
			add(fmt.Sprintf("auth.algorithms[%d]", i), "%q is not allowed: use one of %s", a, strings.Join(allowedAlgorithms, ", "))
		}
	}
	if c.Auth.Leeway < 0 || c.Auth.Leeway.Minutes() > 5 {
		add("auth.leeway", "must be between 0 and 5m")
	}
	if c.Auth.JWKSRefreshInterval < time.Second {
		add("auth.jwks_refresh_interval", "must be at least 1s: it bounds how often an unknown kid refetches Keycloak's keys (30s is usual)")
	}
	if c.Server.ReadHeaderTimeout <= 0 {
		add("server.read_header_timeout", "must be positive: it protects against slow clients (5s is usual)")
	}
	if c.Server.ReadTimeout <= 0 {
		add("server.read_timeout", "must be positive: it bounds reading a whole request, so a client trickling a body cannot hold a connection (30s is usual)")
	}
	if c.Server.WriteTimeout <= 0 {
		add("server.write_timeout", "must be positive: it bounds each answer, so a client that stops reading cannot hold a connection (1m is usual; audit exports have audit.export_max_duration)")
	}
	if c.Server.IdleTimeout <= 0 {
		add("server.idle_timeout", "must be positive: it closes kept-alive connections left idle (2m is usual)")
	}
	if c.Auth.JWKSMaxAge < 10*time.Second || c.Auth.JWKSMaxAge > time.Hour {
		add("auth.jwks_max_age", "%s is out of range: use 10s to 1h; a key removed from Keycloak keeps verifying this long (5m is usual)", c.Auth.JWKSMaxAge)
	}
	if c.Auth.MaxTokenLifetime < time.Minute {
		add("auth.max_token_lifetime", "must be at least 1m: tokens whose exp is further than this from their iat are refused (24h is usual; Keycloak's access tokens live minutes)")
	}
	if c.Auth.MaxTokenBytes < 512 {
		add("auth.max_token_bytes", "must be at least 512")
	}
	if c.Auth.CacheSize < 0 {
		add("auth.cache_size", "must not be negative (0 disables the cache)")
	}
	for i, cl := range c.Auth.IntrospectionClients {
		if cl.ID == "" || cl.Secret == "" {
			add(fmt.Sprintf("auth.introspection_clients[%d]", i), "needs both id and secret")
		}
	}

	if c.Sync.Enabled {
		if _, err := CronParser.Parse(c.Sync.Schedule); err != nil {
			add("sync.schedule", "%q is not a cron spec (for example \"@every 5m\" or \"*/10 * * * *\"): %v", c.Sync.Schedule, err)
		}
	}
	if c.Sync.Mode != "full" && c.Sync.Mode != "additive" {
		add("sync.mode", "%q is not full or additive", c.Sync.Mode)
	}
	if c.Sync.MaxRemovalShare <= 0 || c.Sync.MaxRemovalShare > 1 {
		add("sync.max_removal_share", "%v is out of range: use a share in (0, 1], for example 0.2", c.Sync.MaxRemovalShare)
	}
	if c.Sync.Jitter < 0 {
		add("sync.jitter", "must not be negative")
	}
	if c.Sync.Events.Enabled && c.Sync.Events.Interval <= 0 {
		add("sync.events.interval", "must be positive, for example 2s")
	}
	if c.Webhook.MaxBodyBytes < 1024 {
		add("webhook.max_body_bytes", "must be at least 1024")
	}
	errs = append(errs, c.Mapping.Validate()...)
	if c.Check.MaxBatch < 1 || c.Check.MaxBatch > 10000 {
		add("check.max_batch", "%d is out of range: use 1 to 10000", c.Check.MaxBatch)
	}
	if c.ForwardAuth.Default != "deny" && c.ForwardAuth.Default != "authenticated" {
		add("forward_auth.default", "%q is not deny or authenticated", c.ForwardAuth.Default)
	}
	switch c.ForwardAuth.Proxy {
	case "nginx", "traefik", "envoy":
	default:
		add("forward_auth.proxy", "%q is not nginx, traefik or envoy: name the proxy that calls /v1/forward-auth", c.ForwardAuth.Proxy)
	}
	for i, r := range c.ForwardAuth.Routes {
		if problem := routePathProblem(r.Path); problem != "" {
			add(fmt.Sprintf("forward_auth.routes[%d].path", i), "%q %s", r.Path, problem)
		}
	}
	seen := map[string]string{}
	for _, h := range []struct{ key, name string }{{"user", c.ForwardAuth.Headers.User}, {"tenant", c.ForwardAuth.Headers.Tenant}, {"roles", c.ForwardAuth.Headers.Roles}} {
		canon := http.CanonicalHeaderKey(h.name)
		switch {
		case !isHeaderName(h.name):
			add("forward_auth.headers."+h.key, "%q is not a header name such as X-Auth-User", h.name)
		case seen[canon] != "":
			add("forward_auth.headers."+h.key, "%q is also forward_auth.headers.%s: each identity header needs its own name", h.name, seen[canon])
		case slices.Contains([]string{"Authorization", "Cookie", "Host", "Content-Length", "Content-Type", "Connection", "Transfer-Encoding", "Set-Cookie", "Www-Authenticate", "Retry-After", "X-Auth-Error"}, canon):
			add("forward_auth.headers."+h.key, "%q is a header with its own meaning: name the identity header, for example X-Auth-User", h.name)
		}
		seen[canon] = h.key
	}
	// The tenant header comes from the client: it must not be a header a
	// proxy, keybridge or the upstream reads for something else.
	switch canon := http.CanonicalHeaderKey(c.Server.TenantHeader); {
	case !isHeaderName(c.Server.TenantHeader):
		add("server.tenant_header", "%q is not a header name such as X-Keybridge-Tenant", c.Server.TenantHeader)
	case seen[canon] != "":
		add("server.tenant_header", "%q is also forward_auth.headers.%s, which keybridge answers with: name the request header apart, for example X-Keybridge-Tenant", c.Server.TenantHeader, seen[canon])
	case canon == http.CanonicalHeaderKey(c.ForwardAuth.Headers.Tenant) ||
		slices.Contains([]string{"Authorization", "Cookie", "Host", "Content-Length", "Content-Type", "Connection", "Transfer-Encoding", "Set-Cookie",
			"Www-Authenticate", "Retry-After", "X-Auth-Error", "X-Request-Id", "X-Forwarded-For", "X-Real-Ip", "Forwarded",
			"X-Original-Method", "X-Original-Uri", "X-Forwarded-Method", "X-Forwarded-Uri", "X-Forwarded-Host", "X-Forwarded-Proto"}, canon):
		add("server.tenant_header", "%q is a header with its own meaning: name the tenant header, for example X-Keybridge-Tenant", c.Server.TenantHeader)
	}
	if c.Audit.QueueSize < 1 {
		add("audit.queue_size", "must be at least 1 (100000 is usual)")
	}
	if c.Audit.BatchSize < 1 {
		add("audit.batch_size", "must be at least 1 (500 is usual)")
	}
	if c.Audit.FlushInterval <= 0 {
		add("audit.flush_interval", "must be positive (500ms is usual)")
	}
	if c.Audit.ExportMaxConcurrent < 1 || (c.Database.MaxConns > 1 && c.Audit.ExportMaxConcurrent >= int(c.Database.MaxConns)) {
		add("audit.export_max_concurrent", "%d is out of range: use at least 1 and fewer than database.max_conns (%d), so decisions and management keep connections while exports stream (2 is usual)", c.Audit.ExportMaxConcurrent, c.Database.MaxConns)
	}
	if c.Audit.ExportMaxDuration < time.Second {
		add("audit.export_max_duration", "must be at least 1s: an export still streaming then is cut (5m is usual)")
	}
	return errs
}

// routePathProblem says why a forward_auth route path can never match a
// canonical request path, or "" when it is fine. Request paths reaching a
// route are canonical (decoded once; no dot or empty segments, no encoded
// or raw delimiters, no parameters), so the pattern must be too; * and **
// are whole segments, ** the last one.
func routePathProblem(p string) string {
	if !strings.HasPrefix(p, "/") {
		return "must start with /"
	}
	if strings.Contains(p, "//") {
		return "has an empty segment (//): request paths with duplicate slashes are refused, so it would never match"
	}
	segs := strings.Split(strings.Trim(p, "/"), "/")
	for i, s := range segs {
		switch {
		case s == "." || s == "..":
			return "has a dot segment: request paths with . or .. are refused, so it would never match"
		case strings.ContainsAny(s, "%?#;\\"):
			return "has %, ?, #, ; or \\: write the path decoded, without query, fragment or parameters"
		case strings.ContainsFunc(s, func(r rune) bool { return r < 0x20 || r == 0x7f }):
			return "has a control character"
		case s == "**" && i != len(segs)-1:
			return "has ** before the last segment: ** matches a whole subtree, so it ends the path"
		case strings.Contains(s, "*") && s != "*" && s != "**":
			return "has * inside a segment: * matches one whole segment and ** a subtree; there are no partial globs"
		}
	}
	return ""
}

// isHeaderName reports whether s is an HTTP field name (RFC 9110 token).
func isHeaderName(s string) bool {
	if s == "" {
		return false
	}
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("!#$%&'*+-.^_`|~", r)) {
			return false
		}
	}
	return true
}

// redactErr keeps a password in a DSN out of an error message.
func redactErr(err error, dsn string) string {
	msg := err.Error()
	if u, perr := url.Parse(dsn); perr == nil && u.User != nil {
		if pw, ok := u.User.Password(); ok && pw != "" {
			msg = strings.ReplaceAll(msg, pw, "xxxxx")
		}
	}
	return msg
}
