// Package config loads keybridge's YAML configuration, applies environment
// overrides and defaults, and validates it, reporting every problem at once
// with the key that holds it and how to fix it.
package config

import (
	"time"

	"github.com/keybridge/keybridge/mapping"
)

// Config is the whole configuration of the daemon. Every leaf can be
// overridden from the environment: KEYBRIDGE_ followed by its YAML path in
// upper case joined by underscores (database.sync_url ->
// KEYBRIDGE_DATABASE_SYNC_URL), so secrets never have to be written to a file.
type Config struct {
	// Server is the HTTP listener.
	Server Server `yaml:"server"`
	// Log controls the structured log stream (not the audit log).
	Log Log `yaml:"log"`
	// Database holds the three PostgreSQL roles keybridge uses.
	Database Database `yaml:"database"`
	// Keycloak is the realm keybridge bridges.
	Keycloak Keycloak `yaml:"keycloak"`
	// Auth is local token verification.
	Auth Auth `yaml:"auth"`
	// Sync schedules and guards the realm reconcile.
	Sync Sync `yaml:"sync"`
	// Webhook verifies Keycloak event deliveries.
	Webhook Webhook `yaml:"webhook"`
	// Mapping turns Keycloak facts and token claims into roles and permissions.
	Mapping mapping.Config `yaml:"mapping"`
	// Check bounds the decision API.
	Check Check `yaml:"check"`
	// ForwardAuth maps proxied requests to permissions.
	ForwardAuth ForwardAuth `yaml:"forward_auth"`
	// RateLimit sets token buckets per subject and per client.
	RateLimit RateLimit `yaml:"rate_limit"`
	// Audit tunes the asynchronous audit writer.
	Audit Audit `yaml:"audit"`
}

// Server is the HTTP listener.
type Server struct {
	// Listen is the address the API binds, host:port.
	Listen string `yaml:"listen"`
	// ShutdownTimeout bounds graceful shutdown on SIGTERM.
	ShutdownTimeout time.Duration `yaml:"shutdown_timeout"`
	// ReadHeaderTimeout protects against slow clients.
	ReadHeaderTimeout time.Duration `yaml:"read_header_timeout"`
	// ReadTimeout bounds reading a whole request, body included.
	ReadTimeout time.Duration `yaml:"read_timeout"`
	// WriteTimeout bounds a request from the end of its headers to the end
	// of its answer; the audit export moves its own deadline to
	// audit.export_max_duration.
	WriteTimeout time.Duration `yaml:"write_timeout"`
	// IdleTimeout closes a kept-alive connection idle this long.
	IdleTimeout time.Duration `yaml:"idle_timeout"`
	// TrustedProxies are CIDRs whose X-Forwarded-* headers are believed.
	TrustedProxies []string `yaml:"trusted_proxies"`
	// GCPercent is the Go garbage collector's target (what GOGC sets) for
	// the daemon. keybridge's live heap is small and its request path
	// allocates steadily, so Go's default of 100 collects more often than the
	// memory saved is worth; 400 trades a few MB for ~8% more checks a second. The
	// GOGC environment variable, when set, wins; -1 turns the collector off.
	GCPercent int `yaml:"gc_percent"`
	// DebugListen, when set, is a second listener, loopback only, that serves
	// Go's profiler under /debug/pprof/ for diagnosing CPU and memory in
	// production (go tool pprof http://127.0.0.1:6060/debug/pprof/profile).
	// Empty (the default) serves nothing.
	DebugListen string `yaml:"debug_listen"`
	// TenantHeader names the request header in which a caller names the
	// tenant it acts in, on /v1/check, /v1/me, /oauth2/introspect (a bearer
	// caller's own tenant), forward-auth and the management API. It is
	// honoured only for a tenant the caller belongs to (synced membership or
	// token claim), else 403 tenant_forbidden (docs/operations.md, "Active
	// tenant").
	TenantHeader string `yaml:"tenant_header"`
}

// Log configures log/slog.
type Log struct {
	// Level is debug, info, warn or error.
	Level string `yaml:"level"`
	// Format is json or text.
	Format string `yaml:"format"`
}

// Database holds connection strings for the three roles of the schema.
type Database struct {
	// URL connects as the runtime role (keybridge_app): not the owner, no
	// BYPASSRLS, so every tenant-scoped read and write is filtered by RLS.
	URL string `yaml:"url"`
	// SyncURL connects as the cross-tenant writer (keybridge_sync) used by
	// sync and the audit writer only.
	SyncURL string `yaml:"sync_url"`
	// OwnerURL connects as the schema owner for migrations and operator CLI.
	OwnerURL string `yaml:"owner_url"`
	// MaxConns caps each pool.
	MaxConns int32 `yaml:"max_conns"`
}

// Keycloak is the realm to bridge and the confidential client to read it with.
type Keycloak struct {
	// URL is Keycloak's base URL, e.g. https://sso.example.com.
	URL string `yaml:"url"`
	// Realm is the realm name.
	Realm string `yaml:"realm"`
	// ClientID is the confidential client whose service account reads the realm.
	ClientID string `yaml:"client_id"`
	// ClientSecret is that client's secret; prefer the environment or ClientSecretFile.
	ClientSecret string `yaml:"client_secret"`
	// ClientSecretFile reads the secret from a file (Kubernetes secret mount).
	ClientSecretFile string `yaml:"client_secret_file"`
	// Timeout bounds each admin API request.
	Timeout time.Duration `yaml:"timeout"`
	// PageSize is the `max` of each paged admin API request.
	PageSize int `yaml:"page_size"`
	// Retries is how many times a failed idempotent request is retried with backoff.
	Retries int `yaml:"retries"`
	// Concurrency bounds the admin API requests a full sync has in flight
	// at once (per-user role mappings, role holders, group members).
	Concurrency int `yaml:"concurrency"`
}

// Auth is local token verification.
type Auth struct {
	// Issuer is the expected `iss`; defaults to <keycloak.url>/realms/<realm>.
	Issuer string `yaml:"issuer"`
	// Audiences are accepted `aud` (or `azp`) values; at least one must match.
	Audiences []string `yaml:"audiences"`
	// Algorithms are the accepted signing algorithms (asymmetric only).
	Algorithms []string `yaml:"algorithms"`
	// Leeway tolerates clock skew on exp, nbf and iat.
	Leeway time.Duration `yaml:"leeway"`
	// MaxTokenBytes refuses larger tokens before parsing them.
	MaxTokenBytes int `yaml:"max_token_bytes"`
	// JWKSRefreshInterval is the minimum time between refetches caused by an unknown kid.
	JWKSRefreshInterval time.Duration `yaml:"jwks_refresh_interval"`
	// JWKSMaxAge is how often the JWKS is refetched in the background: a
	// key removed from it stops verifying, cached tokens included, within
	// this and one fetch.
	JWKSMaxAge time.Duration `yaml:"jwks_max_age"`
	// MaxTokenLifetime refuses tokens whose exp - iat is longer (without
	// iat: whose exp is further than this from now).
	MaxTokenLifetime time.Duration `yaml:"max_token_lifetime"`
	// CacheSize bounds the cache of verified tokens.
	CacheSize int `yaml:"cache_size"`
	// IntrospectionClients may call /oauth2/introspect with HTTP Basic.
	IntrospectionClients []Client `yaml:"introspection_clients"`
	// RemoteIntrospection asks Keycloak about tokens keybridge can't verify locally (opaque tokens).
	RemoteIntrospection bool `yaml:"remote_introspection"`
}

// Client is a caller identified by HTTP Basic credentials.
type Client struct {
	// ID is the client id.
	ID string `yaml:"id"`
	// Secret is the client secret.
	Secret string `yaml:"secret"`
}

// Sync schedules and guards the reconcile.
type Sync struct {
	// Enabled runs the scheduler in serve.
	Enabled bool `yaml:"enabled"`
	// Schedule is a robfig/cron spec ("@every 5m", "*/10 * * * *").
	Schedule string `yaml:"schedule"`
	// Jitter delays each scheduled run by up to this much so replicas don't stampede Keycloak.
	Jitter time.Duration `yaml:"jitter"`
	// OnStartup runs a full sync when the daemon starts.
	OnStartup bool `yaml:"on_startup"`
	// Mode is full (create, update, deactivate) or additive (never deactivate).
	Mode string `yaml:"mode"`
	// MaxRemovalShare refuses a plan removing more than this share of people, teams or roles.
	MaxRemovalShare float64 `yaml:"max_removal_share"`
	// Timeout bounds one whole run.
	Timeout time.Duration `yaml:"timeout"`
	// Events polls Keycloak admin and user events between full runs.
	Events Events `yaml:"events"`
}

// Events configures the event poller.
type Events struct {
	// Enabled turns the poller on.
	Enabled bool `yaml:"enabled"`
	// Interval between polls.
	Interval time.Duration `yaml:"interval"`
	// Overlap re-reads this much before the cursor, because events can land out of order.
	Overlap time.Duration `yaml:"overlap"`
}

// Webhook verifies signed Keycloak event deliveries.
type Webhook struct {
	// Secret is the HMAC-SHA256 key; webhooks are refused while it is empty.
	Secret string `yaml:"secret"`
	// SecretFile reads the secret from a file.
	SecretFile string `yaml:"secret_file"`
	// MaxBodyBytes refuses larger deliveries.
	MaxBodyBytes int64 `yaml:"max_body_bytes"`
	// Rate and Burst bound deliveries per sender address; a sender over
	// the limit gets 429 with Retry-After and retries, so nothing is lost.
	Rate  float64 `yaml:"rate"`
	Burst int     `yaml:"burst"`
}

// Check bounds the decision API.
type Check struct {
	// MaxBatch is the largest {"checks":[...]} accepted.
	MaxBatch int `yaml:"max_batch"`
	// AllowAnonymous evaluates a /v1/check request that carries no
	// Authorization header at all as the Public pseudo role (allowed only
	// where Public holds the permission; the shipped presets give it none).
	// Off, such a request is 401. A token that fails verification is 401
	// either way.
	AllowAnonymous bool `yaml:"allow_anonymous"`
}

// ForwardAuth maps proxied requests onto permissions.
type ForwardAuth struct {
	// Routes are matched in order; the first match decides.
	Routes []Route `yaml:"routes"`
	// Default applies when no route matches: "deny" or "authenticated".
	Default string `yaml:"default"`
	// Headers names the identity headers on a 200 answer.
	Headers ForwardHeaders `yaml:"headers"`
	// Proxy says which proxy calls forward-auth, and so where the original
	// method and URI are read: "nginx" (X-Original-Method, X-Original-URI),
	// "traefik" (X-Forwarded-Method, X-Forwarded-Uri) or "envoy" (HTTP
	// ext_authz with path_prefix /v1/forward-auth: the request's own method,
	// and its path after the prefix).
	// Only that pair is read: a proxy passes the client's other headers
	// through, so any fallback would let a client name the URI checked.
	Proxy string `yaml:"proxy"`
	// AllowAnonymous evaluates a request without an Authorization header
	// on a route with any_of as the Public pseudo role: allowed only where
	// Public holds one of the permissions, otherwise 401. Off, such a
	// request is 401. Routes without any_of (any authenticated caller) and
	// default: authenticated always need a valid token.
	AllowAnonymous bool `yaml:"allow_anonymous"`
}

// OriginalHeaders are the method and URI headers Proxy sets; both are ""
// for envoy, which sends the original method and path on the request.
func (f ForwardAuth) OriginalHeaders() (method, uri string) {
	switch f.Proxy {
	case "traefik":
		return "X-Forwarded-Method", "X-Forwarded-Uri"
	case "envoy":
		return "", ""
	}
	return "X-Original-Method", "X-Original-URI"
}

// Route maps a method and path pattern to the permissions it needs (any of).
type Route struct {
	// Methods; empty means any.
	Methods []string `yaml:"methods"`
	// Path is a prefix ending in /** or an exact path; * matches one segment.
	Path string `yaml:"path"`
	// AnyOf permissions; empty means any authenticated caller.
	AnyOf []string `yaml:"any_of"`
	// Public lets anonymous callers through.
	Public bool `yaml:"public"`
}

// ForwardHeaders names the identity headers.
type ForwardHeaders struct {
	User   string `yaml:"user"`
	Tenant string `yaml:"tenant"`
	Roles  string `yaml:"roles"`
}

// RateLimit sets token buckets.
type RateLimit struct {
	// PerSubject limits each token subject.
	PerSubject Bucket `yaml:"per_subject"`
	// PerClient limits each client address (or introspection client).
	PerClient Bucket `yaml:"per_client"`
	// Unauthenticated limits refusals before authentication (no or an
	// invalid token, on the management and decision routes) per client
	// address; beyond it they are answered 429 and not audited.
	Unauthenticated Bucket `yaml:"unauthenticated"`
	// Routes overrides the per-subject bucket for a route ("POST /v1/check").
	Routes map[string]Bucket `yaml:"routes"`
}

// Bucket is a token bucket; Rate 0 disables it.
type Bucket struct {
	// Rate is tokens per second.
	Rate float64 `yaml:"rate"`
	// Burst is the bucket size.
	Burst int `yaml:"burst"`
}

// Audit tunes the asynchronous writer.
type Audit struct {
	// QueueSize bounds entries held while PostgreSQL is unreachable.
	QueueSize int `yaml:"queue_size"`
	// BatchSize is the most entries written in one statement.
	BatchSize int `yaml:"batch_size"`
	// FlushInterval is the longest an entry waits before being written.
	FlushInterval time.Duration `yaml:"flush_interval"`
	// AllowedChecks also audits allowed /v1/check decisions (denied ones always are).
	AllowedChecks bool `yaml:"allowed_checks"`
	// ExportMaxConcurrent is how many CSV/NDJSON exports of the audit log
	// stream at once, each holding one runtime-pool connection; another is
	// answered 503 with Retry-After.
	ExportMaxConcurrent int `yaml:"export_max_concurrent"`
	// ExportMaxDuration cuts an export still streaming after it.
	ExportMaxDuration time.Duration `yaml:"export_max_duration"`
}

// Default returns a config with every default filled in.
func Default() Config {
	return Config{
		Server:   Server{Listen: "127.0.0.1:8080", ShutdownTimeout: 15 * time.Second, ReadHeaderTimeout: 5 * time.Second, ReadTimeout: 30 * time.Second, WriteTimeout: time.Minute, IdleTimeout: 2 * time.Minute, GCPercent: 400, TenantHeader: "X-Keybridge-Tenant"},
		Log:      Log{Level: "info", Format: "json"},
		Database: Database{MaxConns: 20},
		Keycloak: Keycloak{Realm: "", ClientID: "keybridge", Timeout: 10 * time.Second, PageSize: 200, Retries: 3, Concurrency: 4},
		Auth: Auth{
			Audiences:           []string{"keybridge"},
			Algorithms:          []string{"RS256"},
			Leeway:              30 * time.Second,
			MaxTokenBytes:       16 << 10,
			JWKSRefreshInterval: 30 * time.Second,
			JWKSMaxAge:          5 * time.Minute,
			MaxTokenLifetime:    24 * time.Hour,
			CacheSize:           10000,
		},
		Sync: Sync{
			Enabled: true, Schedule: "@every 5m", Jitter: 10 * time.Second, OnStartup: true,
			Mode: "full", MaxRemovalShare: 0.2, Timeout: 5 * time.Minute,
			Events: Events{Enabled: true, Interval: 2 * time.Second, Overlap: 30 * time.Second},
		},
		Webhook: Webhook{MaxBodyBytes: 256 << 10, Rate: 50, Burst: 200},
		Mapping: mapping.Config{Preset: "fastn"},
		Check:   Check{MaxBatch: 100},
		ForwardAuth: ForwardAuth{
			Default: "deny",
			Proxy:   "nginx",
			Headers: ForwardHeaders{User: "X-Auth-User", Tenant: "X-Auth-Tenant", Roles: "X-Auth-Roles"},
		},
		RateLimit: RateLimit{PerSubject: Bucket{Rate: 200, Burst: 400}, PerClient: Bucket{Rate: 1000, Burst: 2000}, Unauthenticated: Bucket{Rate: 20, Burst: 100}},
		Audit:     Audit{QueueSize: 100000, BatchSize: 500, FlushInterval: 500 * time.Millisecond, ExportMaxConcurrent: 2, ExportMaxDuration: 5 * time.Minute},
	}
}

// IssuerURL is the expected token issuer.
func (c *Config) IssuerURL() string {
	if c.Auth.Issuer != "" {
		return c.Auth.Issuer
	}
	return trimSlash(c.Keycloak.URL) + "/realms/" + c.Keycloak.Realm
}

func trimSlash(s string) string {
	for len(s) > 0 && s[len(s)-1] == '/' {
		s = s[:len(s)-1]
	}
	return s
}
