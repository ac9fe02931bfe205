// Package metrics defines every Prometheus series keybridge exports. Label
// values are bounded sets (routes, reasons, kinds), never user ids or raw paths.
package metrics

import (
	"regexp"
	"runtime"
	"sort"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// Metrics holds the collectors; pass it to the components that update them.
type Metrics struct {
	Registry *prometheus.Registry
	own      []prometheus.Collector

	// Sync.
	SyncRuns          *prometheus.CounterVec   // trigger, outcome
	SyncDuration      *prometheus.HistogramVec // trigger
	SyncLastSuccess   prometheus.Gauge
	SyncObjects       *prometheus.GaugeVec   // kind
	SyncChanges       *prometheus.CounterVec // kind, operation
	SyncGuardAborts   *prometheus.CounterVec // kind
	SyncProgress      *prometheus.GaugeVec   // phase
	KeycloakRequests  *prometheus.CounterVec // operation, status
	KeycloakLatency   *prometheus.HistogramVec
	WebhookEvents     *prometheus.CounterVec // type, outcome
	KeycloakEvents    *prometheus.CounterVec // source, outcome
	EventApplyLag     *prometheus.HistogramVec
	Leader            prometheus.Gauge
	LeaderTransitions prometheus.Counter
	// MappingUserEditable counts user attributes the mapping reads that
	// users can edit themselves; nonzero only while
	// mapping.allow_user_edited_attributes lets keybridge run with them.
	MappingUserEditable prometheus.Gauge

	// Serving.
	HTTPRequests     *prometheus.CounterVec // route, method, status
	HTTPDuration     *prometheus.HistogramVec
	Decisions        *prometheus.CounterVec // endpoint, outcome
	TokenFailures    *prometheus.CounterVec // reason
	TokensVerified   prometheus.Counter
	JWKSRefreshes    *prometheus.CounterVec // outcome
	RateLimited      *prometheus.CounterVec // limiter, route
	AuditQueueDepth  prometheus.Gauge
	AuditDropped     prometheus.Counter // class="authenticated": must stay 0
	AuditWritten     prometheus.Counter
	AuditWriteErrors prometheus.Counter
	DatabaseUp       prometheus.Gauge
	BuildInfo        *prometheus.GaugeVec

	// AuditDroppedUnauthenticated counts refusals before authentication
	// dropped beyond their share of the audit queue (class="unauthenticated").
	AuditDroppedUnauthenticated prometheus.Counter
	auditDropped                *prometheus.CounterVec // class: both of the above

	// ForwardAuthRefused counts forward-auth requests refused before any
	// decision: the proxy sent no original URI or a path that is not canonical.
	ForwardAuthRefused *prometheus.CounterVec // reason

	// Incremental events and drift. SyncFullFallbacks counts the full runs
	// events asked for because they could not be applied on their own;
	// SyncDrift counts what scheduled full runs still had to apply.
	SyncFullFallbacks *prometheus.CounterVec // reason
	SyncDrift         *prometheus.CounterVec // kind
}

// Latency buckets for decisions: microseconds to a second.
var fastBuckets = []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1}

// New registers every collector on a fresh registry, with the Go and process collectors.
func New(version, revision string) *Metrics {
	r := prometheus.NewRegistry()
	f := func(c prometheus.Collector) { r.MustRegister(c) }
	m := &Metrics{Registry: r}

	m.SyncRuns = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "keybridge_sync_runs_total",
		Help: "Sync runs by trigger (startup, schedule, api, cli) and outcome (success, failure, guard_abort, skipped)."}, []string{"trigger", "outcome"})
	m.SyncDuration = prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "keybridge_sync_duration_seconds",
		Help: "Wall time of full sync runs.", Buckets: prometheus.ExponentialBuckets(0.05, 2, 14)}, []string{"trigger"})
	m.SyncLastSuccess = prometheus.NewGauge(prometheus.GaugeOpts{Name: "keybridge_sync_last_success_timestamp_seconds",
		Help: "Unix time of the last successful full sync."})
	m.SyncObjects = prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "keybridge_sync_objects",
		Help: "Objects in the last Keycloak snapshot by kind (people, teams, roles, tenants, assignments)."}, []string{"kind"})
	m.SyncProgress = prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "keybridge_sync_progress_objects",
		Help: "Objects the running (or last) full sync has read from Keycloak so far, by phase (users, groups, group_members, roles, role_holders, role_mappings, organizations); reset when a run starts."}, []string{"phase"})
	m.SyncChanges = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "keybridge_sync_changes_total",
		Help: "Changes applied by sync by kind and operation (create, update, deactivate)."}, []string{"kind", "operation"})
	m.SyncGuardAborts = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "keybridge_sync_guard_aborts_total",
		Help: "Sync plans refused by the deletion guard, by the kind that tripped it."}, []string{"kind"})
	m.KeycloakRequests = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "keybridge_keycloak_requests_total",
		Help: "Keycloak admin API requests by operation and status class (2xx, 4xx, 5xx, error)."}, []string{"operation", "status"})
	m.KeycloakLatency = prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "keybridge_keycloak_request_duration_seconds",
		Help: "Keycloak admin API request latency by operation.", Buckets: prometheus.DefBuckets}, []string{"operation"})
	m.WebhookEvents = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "keybridge_webhook_events_total",
		Help: "Keycloak webhook deliveries by event type class and outcome (applied, duplicate, ignored, rejected, failed)."}, []string{"type", "outcome"})
	m.KeycloakEvents = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "keybridge_keycloak_events_total",
		Help: "Events read by the poller by source (admin, user) and outcome (applied, duplicate, ignored, failed, deferred: left to a full sync)."}, []string{"source", "outcome"})
	m.EventApplyLag = prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "keybridge_event_apply_lag_seconds",
		Help:    "Time from a Keycloak event to its change applied in PostgreSQL, by source (admin, user, webhook; revocation: a session end or not-before recorded).",
		Buckets: []float64{.1, .25, .5, 1, 2, 3, 5, 10, 30, 60, 300}}, []string{"source"})
	m.Leader = prometheus.NewGauge(prometheus.GaugeOpts{Name: "keybridge_sync_leader",
		Help: "1 while this replica holds the sync leader lock."})
	m.LeaderTransitions = prometheus.NewCounter(prometheus.CounterOpts{Name: "keybridge_sync_leader_transitions_total",
		Help: "Times this replica gained or lost sync leadership."})
	m.MappingUserEditable = prometheus.NewGauge(prometheus.GaugeOpts{Name: "keybridge_mapping_user_editable_attributes",
		Help: "User attributes the mapping reads (tenant source, claim rules) that users can edit themselves in Keycloak, at the last check; nonzero only under mapping.allow_user_edited_attributes."})

	m.HTTPRequests = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "keybridge_http_requests_total",
		Help: "HTTP requests by route template, method and status code."}, []string{"route", "method", "status"})
	m.HTTPDuration = prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "keybridge_http_request_duration_seconds",
		Help: "HTTP request latency by route template and method.", Buckets: fastBuckets}, []string{"route", "method"})
	m.Decisions = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "keybridge_decisions_total",
		Help: "Authorization decisions by endpoint (check, forward_auth, middleware) and outcome (allowed, denied)."}, []string{"endpoint", "outcome"})
	m.TokenFailures = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "keybridge_token_verification_failures_total",
		Help: "Tokens refused by reason (malformed, oversize, algorithm, signature, unknown_kid, issuer, audience, expired, not_yet_valid, issued_in_future, lifetime_exceeded, revoked)."}, []string{"reason"})
	m.TokensVerified = prometheus.NewCounter(prometheus.CounterOpts{Name: "keybridge_tokens_verified_total",
		Help: "Tokens verified successfully (cache hits included)."})
	m.JWKSRefreshes = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "keybridge_jwks_refreshes_total",
		Help: "JWKS fetches by outcome (success, failure, rate_limited)."}, []string{"outcome"})
	m.RateLimited = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "keybridge_ratelimit_rejections_total",
		Help: "Requests refused with 429 by limiter (subject, client, unauthenticated: refusals before authentication per client address) and route."}, []string{"limiter", "route"})
	m.ForwardAuthRefused = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "keybridge_forward_auth_refused_total",
		Help: "Forward-auth requests refused with 400 before any decision, by reason (no_original_uri, duplicate_original, not_origin_form, dot_segment, duplicate_slash, encoded_delimiter, path_parameter, backslash, control_byte, bad_escape, invalid_utf8, fragment)."}, []string{"reason"})
	m.AuditQueueDepth = prometheus.NewGauge(prometheus.GaugeOpts{Name: "keybridge_audit_queue_depth",
		Help: "Audit entries waiting to be written."})
	m.auditDropped = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "keybridge_audit_dropped_total",
		Help: "Audit entries dropped, by class: authenticated (the bounded queue was full; must stay 0) or unauthenticated (refusals before authentication beyond their share of the queue)."}, []string{"class"})
	m.AuditDropped = m.auditDropped.WithLabelValues("authenticated")
	m.AuditDroppedUnauthenticated = m.auditDropped.WithLabelValues("unauthenticated")
	m.AuditWritten = prometheus.NewCounter(prometheus.CounterOpts{Name: "keybridge_audit_written_total",
		Help: "Audit entries written to PostgreSQL."})
	m.AuditWriteErrors = prometheus.NewCounter(prometheus.CounterOpts{Name: "keybridge_audit_write_errors_total",
		Help: "Failed audit batch writes (retried)."})
	m.DatabaseUp = prometheus.NewGauge(prometheus.GaugeOpts{Name: "keybridge_database_up",
		Help: "1 when the last readiness probe reached PostgreSQL."})
	m.BuildInfo = prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "keybridge_build_info",
		Help: "Build information; always 1."}, []string{"version", "revision", "goversion"})

	for _, c := range []prometheus.Collector{
		m.SyncRuns, m.SyncDuration, m.SyncLastSuccess, m.SyncObjects, m.SyncChanges, m.SyncGuardAborts, m.SyncProgress,
		m.KeycloakRequests, m.KeycloakLatency, m.WebhookEvents, m.KeycloakEvents, m.EventApplyLag, m.Leader, m.LeaderTransitions, m.MappingUserEditable,
		m.HTTPRequests, m.HTTPDuration, m.Decisions, m.TokenFailures, m.TokensVerified, m.JWKSRefreshes, m.RateLimited, m.ForwardAuthRefused,
		m.AuditQueueDepth, m.auditDropped, m.AuditWritten, m.AuditWriteErrors, m.DatabaseUp, m.BuildInfo,
	} {
		f(c)
		m.own = append(m.own, c)
	}
	m.SyncFullFallbacks = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "keybridge_sync_full_fallbacks_total",
		Help: "Keycloak events (polled or webhook) that asked for a full sync instead of being applied to the objects they name, by reason (unknown_path, realm_import, role_unknown, too_many_people, client_roles, apply_failed)."}, []string{"reason"})
	m.SyncDrift = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "keybridge_sync_drift_total",
		Help: "Changes a scheduled full sync still had to apply, which the events since the previous run had missed, by kind (people, teams, roles, tenants, tenant_members, team_members, role_composites, assignments); counted while the event poller is on."}, []string{"kind"})
	for _, c := range []prometheus.Collector{m.SyncFullFallbacks, m.SyncDrift} {
		f(c)
		m.own = append(m.own, c)
	}
	f(collectors.NewGoCollector())
	f(collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	m.BuildInfo.WithLabelValues(version, revision, runtime.Version()).Set(1)
	return m
}

var fqName = regexp.MustCompile(`fqName: "([^"]+)"`)

// Names lists every keybridge metric name, whether or not a series exists
// yet: dashboards and alerts are checked against it.
func (m *Metrics) Names() []string {
	ch := make(chan *prometheus.Desc, 64)
	go func() {
		for _, c := range m.own {
			c.Describe(ch)
		}
		close(ch)
	}()
	var out []string
	for d := range ch {
		if mm := fqName.FindStringSubmatch(d.String()); mm != nil {
			out = append(out, mm[1])
		}
	}
	sort.Strings(out)
	return out
}
