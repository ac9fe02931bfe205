// Package middleware is the fastn seed's five-step auth middleware for Go
// services, for Gin and for net/http: (1) verify the JWT against the
// realm's JWKS, (2) extract the user context (user id, role, customer),
// (3) open a pgx transaction with the PostgreSQL session variables set,
// (4) check the route's permission, (5) apply rate limiting — then hand the
// handler the RLS-scoped transaction. It commits when the handler answers
// below 400 and rolls back otherwise.
package middleware

import (
	"context"
	"errors"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/gin-gonic/gin"
	"github.com/jackc/pgx/v5"

	"github.com/keybridge/keybridge/mapping"
	"github.com/keybridge/keybridge/rls"
)

// Authenticator verifies a bearer token and resolves the caller's grant
// (steps 1 and 2).
type Authenticator interface {
	Authenticate(ctx context.Context, bearer string) (*mapping.Grant, error)
}

// TenantAuthenticator is an Authenticator that resolves the caller in the
// tenant the request names ("" names none): keybridge's identity resolver.
// A tenant the caller may not act in is a *mapping.TenantError; a caller
// left with several tenants and no choice gets Grant.TenantRequired.
type TenantAuthenticator interface {
	AuthenticateIn(ctx context.Context, bearer, tenant string) (*mapping.Grant, error)
}

// Decider answers permission checks (step 4); *mapping.Engine is one.
type Decider interface {
	Decide(g *mapping.Grant, req mapping.Request) mapping.Decision
}

// Limiter is a token bucket per key (step 5).
type Limiter interface {
	Allow(key string) (ok bool, retryAfter time.Duration)
}

// Event is an audited gated action.
type Event struct {
	Action    string
	Outcome   string // success, failure, denied
	Reason    string
	Status    int
	RequestID string
	Client    string         // the client's address (ClientAddr, or c.ClientIP() in the Gin form)
	Grant     *mapping.Grant // nil when the token was refused
}

// Middleware holds the five steps' collaborators.
type Middleware struct {
	Auth    Authenticator
	Decider func() Decider // the current engine (custom roles change it)
	DB      rls.Beginner   // the runtime role's pool: not the owner, no BYPASSRLS
	Limiter Limiter
	// Audit receives every gated action's outcome; nil disables.
	Audit func(ctx context.Context, e Event)
	// RequestID extracts the request id for audit rows.
	RequestID func(r *http.Request) string
	// Unauthenticated limits refusals before authentication (no or an
	// invalid token) per client address; nil leaves them unlimited. Over
	// the limit the answer is 429 with Retry-After instead of 401, and it
	// goes to Throttled, not to Audit: a flood of bad tokens costs a
	// bucket per address, never an audit entry per request.
	Unauthenticated Limiter
	// Throttled, when set, learns of each request Unauthenticated refused
	// (for a metric).
	Throttled func(ctx context.Context, e Event)
	// ClientAddr gives the client address of a net/http request; nil takes
	// the host of r.RemoteAddr. The Gin form uses c.ClientIP(), which
	// believes X-Forwarded-For only from the engine's trusted proxies.
	ClientAddr func(r *http.Request) string
	// AuditSuccess also audits actions the handler completed; keybridge's
	// own handlers audit their outcomes themselves and leave it off.
	AuditSuccess bool
	Now          func() time.Time
	// TenantHeader names the request header in which a caller names the
	// tenant it acts in (keybridge: server.tenant_header, by default
	// X-Keybridge-Tenant); "" reads none. The tenant is honoured only where
	// the caller may act (mapping.Grant.MayActIn), resolved by a
	// TenantAuthenticator; otherwise the answer is 403 tenant_forbidden. A
	// caller with several tenants that names none is answered 409
	// tenant_required. Both are audited, and the transaction's app.tenant_id
	// is always the tenant the grant acts in.
	TenantHeader string
}

// NamedTenant reads the tenant a request names in header name: "" when it
// names none (or name is ""). More than one such header, or a value that
// is no tenant name (mapping.ValidTenantName), is an error.
func NamedTenant(h http.Header, name string) (string, error) {
	if name == "" {
		return "", nil
	}
	vs := h.Values(name)
	switch {
	case len(vs) == 0:
		return "", nil
	case len(vs) > 1:
		return "", errors.New("send at most one " + name + " header")
	}
	if err := mapping.ValidTenantName(vs[0]); err != nil {
		return "", errors.New(name + ": " + err.Error())
	}
	return vs[0], nil
}

type ctxKey int

const (
	txKey ctxKey = iota
	grantKey
	txnKey
)

// Tx is the RLS-scoped transaction of the request.
func Tx(ctx context.Context) pgx.Tx {
	tx, _ := ctx.Value(txKey).(pgx.Tx)
	return tx
}

// GrantFrom is the caller's resolved grant.
func GrantFrom(ctx context.Context) *mapping.Grant {
	g, _ := ctx.Value(grantKey).(*mapping.Grant)
	return g
}

// SessionFor is the PostgreSQL session a grant runs under. In a tenancy of
// organizations and customers it carries the organization (app.org_id) and,
// for a holder of an organization-level role acting in the organization
// itself, the customers it may read (app.tenant_ids), which runs the
// transaction as rls.OrganizationRole.
func SessionFor(g *mapping.Grant) rls.Session {
	return rls.Session{TenantID: g.Tenant, OrgID: g.Org, TenantIDs: g.Customers, UserID: g.Subject, Role: g.PrimaryRole(), Roles: g.Roles,
		Platform: g.Global()}
}

// failure is a refusal of the middleware with its HTTP answer.
type failure struct {
	status int
	code   string
	msg    string
	retry  time.Duration
}

// begin runs the five steps for a request from client (its address); on
// success the returned ctx carries the transaction and the grant and done
// must be called with the status.
func (m *Middleware) begin(r *http.Request, client, action string, anyOf []string) (context.Context, *txn, *failure) {
	ctx := r.Context()
	now := time.Now()
	if m.Now != nil {
		now = m.Now()
	}
	audit := func(g *mapping.Grant, outcome, reason string, status int) {
		if m.Audit != nil {
			e := Event{Action: action, Outcome: outcome, Reason: reason, Status: status, Client: client, Grant: g}
			if m.RequestID != nil {
				e.RequestID = m.RequestID(r)
			}
			m.Audit(ctx, e)
		}
	}
	// A refusal before authentication costs the client's address a token
	// of its bucket; with none left it is answered 429 and not audited.
	refuse := func(reason string, f *failure) *failure {
		if m.Unauthenticated != nil {
			if ok, wait := m.Unauthenticated.Allow(client); !ok {
				if m.Throttled != nil {
					e := Event{Action: action, Outcome: "denied", Reason: reason, Status: http.StatusTooManyRequests, Client: client}
					if m.RequestID != nil {
						e.RequestID = m.RequestID(r)
					}
					m.Throttled(ctx, e)
				}
				return &failure{http.StatusTooManyRequests, "rate_limited", "too many requests without a valid token", wait}
			}
		}
		audit(nil, "denied", reason, f.status)
		return f
	}
	// 1 and 2: verify the token, extract the user context.
	token, ok := Bearer(r)
	if !ok {
		return nil, nil, refuse("no bearer token", &failure{http.StatusUnauthorized, "unauthenticated", "a bearer token is required", 0})
	}
	g, f := m.authenticate(ctx, r, token, audit, refuse)
	if f != nil {
		return nil, nil, f
	}
	// 3: the transaction under the caller's session variables.
	ctx = rls.WithSession(ctx, SessionFor(g))
	tx, err := rls.Begin(ctx, m.DB, pgx.TxOptions{})
	if err != nil {
		audit(g, "failure", "database unavailable", http.StatusServiceUnavailable)
		return nil, nil, &failure{http.StatusServiceUnavailable, "unavailable", "the database is unavailable", 0}
	}
	// 4: the permission.
	if len(anyOf) > 0 {
		d := m.Decider().Decide(g, mapping.Request{AnyOf: anyOf, Now: now})
		if !d.Allowed {
			_ = tx.Rollback(ctx)
			audit(g, "denied", d.Reason, http.StatusForbidden)
			return nil, nil, &failure{http.StatusForbidden, "forbidden", "permission denied: requires any of " + strings.Join(anyOf, ", "), 0}
		}
	}
	// 5: the rate limit.
	if m.Limiter != nil {
		if ok, wait := m.Limiter.Allow("sub:" + g.Subject); !ok {
			_ = tx.Rollback(ctx)
			audit(g, "denied", "rate limited", http.StatusTooManyRequests)
			return nil, nil, &failure{http.StatusTooManyRequests, "rate_limited", "too many requests", wait}
		}
	}
	ctx = context.WithValue(context.WithValue(ctx, txKey, tx), grantKey, g)
	// Reads may stream from the transaction while they answer, and have
	// nothing to lose to a failed commit: only writes commit before they
	// answer.
	early := r.Method != http.MethodGet && r.Method != http.MethodHead && r.Method != http.MethodOptions
	t := &txn{tx: tx, grant: g, audit: audit, auditSuccess: m.AuditSuccess, early: early}
	ctx = context.WithValue(ctx, txnKey, t)
	t.ctx = ctx
	return ctx, t, nil
}

// authenticate resolves the caller in the tenant the request names in
// TenantHeader, and refuses what that leaves ambiguous or out of reach:
// a tenant the caller may not act in (403), a malformed choice (400), and
// a caller of several tenants that names none (409), each audited.
func (m *Middleware) authenticate(ctx context.Context, r *http.Request, token string,
	audit func(g *mapping.Grant, outcome, reason string, status int), refuse func(reason string, f *failure) *failure) (*mapping.Grant, *failure) {
	named, malformed := NamedTenant(r.Header, m.TenantHeader)
	var g *mapping.Grant
	var err error
	ta, resolvesIn := m.Auth.(TenantAuthenticator)
	if resolvesIn && malformed == nil {
		g, err = ta.AuthenticateIn(ctx, token, named)
	} else {
		g, err = m.Auth.Authenticate(ctx, token)
	}
	var te *mapping.TenantError
	switch {
	case errors.As(err, &te):
		audit(te.Grant, "denied", te.Error(), http.StatusForbidden)
		return nil, &failure{http.StatusForbidden, "tenant_forbidden", "the caller may not act in the tenant the request names", 0}
	case err != nil:
		return nil, refuse("invalid token", &failure{http.StatusUnauthorized, "invalid_token", "the token is invalid or expired", 0})
	case malformed != nil:
		audit(g, "denied", malformed.Error(), http.StatusBadRequest)
		return nil, &failure{http.StatusBadRequest, "invalid_request", malformed.Error(), 0}
	case !resolvesIn && named != "" && named != g.Tenant:
		// This Authenticator resolves the token's own tenant only.
		why := "the request names tenant " + strconv.Quote(named) + ", and the authenticator resolves callers in their token's tenant only"
		audit(g, "denied", why, http.StatusForbidden)
		return nil, &failure{http.StatusForbidden, "tenant_forbidden", "this service cannot act in the tenant the request names", 0}
	case g.TenantRequired:
		msg := "the caller may act in several tenants and the request names none"
		if m.TenantHeader != "" {
			msg += ": name one with the " + m.TenantHeader + " header"
		}
		audit(g, "denied", mapping.TenantRequiredReason, http.StatusConflict)
		return nil, &failure{http.StatusConflict, "tenant_required", msg, 0}
	}
	return g, nil
}

// Release commits the request's transaction before the handler ends, for a
// handler that goes on at length without it — keybridge's audit export
// streams from a transaction of its own, drawn from a bounded budget — so
// the connection returns to the pool at once. Tx(ctx) must not be used
// after. The middleware answers and audits as usual: a failed commit is
// returned here and audited as a failure when the handler ends.
func Release(ctx context.Context) error {
	t, _ := ctx.Value(txnKey).(*txn)
	if t == nil {
		return ErrNoGrant
	}
	return t.commit()
}

// Release is the Gin form of Release.
func (m *Middleware) Release(c *gin.Context) error { return Release(c.Request.Context()) }

// txn ends a request's transaction. A write's success is committed before
// the first byte of the answer leaves, so a client is never told 2xx for a
// change that a failed commit then rolled back; a read commits at the end.
type txn struct {
	tx           pgx.Tx
	ctx          context.Context
	grant        *mapping.Grant
	audit        func(g *mapping.Grant, outcome, reason string, status int)
	auditSuccess bool
	early        bool // commit before the answer (writes)
	committed    bool
	commitErr    error
}

// commit commits once; later calls return the first result.
func (t *txn) commit() error {
	if !t.committed {
		t.committed = true
		// The handler's context may be cancelled by now; end the
		// transaction regardless.
		t.commitErr = t.tx.Commit(context.WithoutCancel(t.ctx))
	}
	return t.commitErr
}

// finish ends the transaction after the handler with its status and
// audits the outcome.
func (t *txn) finish(status int) {
	c := context.WithoutCancel(t.ctx)
	switch {
	case t.committed && t.commitErr != nil, status < 400 && t.commit() != nil:
		t.audit(t.grant, "failure", "commit failed", http.StatusServiceUnavailable)
	case status < 400:
		if t.auditSuccess {
			t.audit(t.grant, "success", "", status)
		}
	default:
		_ = t.tx.Rollback(c)
		if t.auditSuccess {
			t.audit(t.grant, "failure", "handler answered "+strconv.Itoa(status), status)
		}
	}
}

// beforeAnswer runs as an answer starts with status: a write's success is
// committed then. It reports false when that commit failed, and the answer
// must be commitFailed instead.
func (t *txn) beforeAnswer(status int) bool {
	return !t.early || status >= 400 || t.commit() == nil
}

// commitFailed is the answer that replaces a success whose commit failed.
var commitFailed = &failure{http.StatusServiceUnavailable, "unavailable", "the change could not be committed; nothing was applied", 0}

// Bearer is the request's bearer token: exactly one Authorization header
// with the Bearer scheme (RFC 6750). Several Authorization headers are
// ambiguous — a proxy and the application might each read another one — so
// they are refused, as is an empty token.
func Bearer(r *http.Request) (string, bool) {
	hs := r.Header.Values("Authorization")
	if len(hs) != 1 {
		return "", false
	}
	h := hs[0]
	if len(h) < 7 || !strings.EqualFold(h[:7], "bearer ") {
		return "", false
	}
	t := strings.TrimSpace(h[7:])
	return t, t != ""
}

// HTTP wraps a net/http handler.
func (m *Middleware) HTTP(action string, anyOf []string, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ctx, t, f := m.begin(r, m.clientAddr(r), action, anyOf)
		if f != nil {
			writeFailure(w, f)
			return
		}
		sw := &statusWriter{ResponseWriter: w, status: http.StatusOK, t: t}
		defer func() {
			// A panicking handler must not commit half its work.
			if v := recover(); v != nil {
				t.finish(http.StatusInternalServerError)
				panic(v)
			}
			_, _ = sw.Write(nil) // a handler that wrote no body starts its answer here
			t.finish(sw.status)
		}()
		next.ServeHTTP(sw, r.WithContext(ctx))
	})
}

// clientAddr is a net/http request's client address: ClientAddr's, or the
// host of the connection's peer.
func (m *Middleware) clientAddr(r *http.Request) string {
	if m.ClientAddr != nil {
		return m.ClientAddr(r)
	}
	if host, _, err := net.SplitHostPort(r.RemoteAddr); err == nil {
		return host
	}
	return r.RemoteAddr
}

func writeFailure(w http.ResponseWriter, f *failure) {
	w.Header().Set("Content-Type", "application/json")
	if f.status == http.StatusUnauthorized {
		w.Header().Set("WWW-Authenticate", `Bearer error="invalid_token"`)
	}
	if f.retry > 0 {
		w.Header().Set("Retry-After", strconv.Itoa(int(f.retry/time.Second)+1))
	}
	w.WriteHeader(f.status)
	_, _ = w.Write([]byte(`{"error":{"code":"` + f.code + `","message":"` + f.msg + `"}}`))
}

// statusWriter holds the handler's status back until its first byte, and
// commits a success then; a failed commit answers 503 instead of the body.
type statusWriter struct {
	http.ResponseWriter
	status int
	t      *txn
	wrote  bool // the answer (the handler's or the 503) has started
	failed bool // the commit failed: the handler's body is dropped
}

func (s *statusWriter) WriteHeader(code int) { s.status = code }

// Unwrap lets http.ResponseController reach the connection.
func (s *statusWriter) Unwrap() http.ResponseWriter { return s.ResponseWriter }

func (s *statusWriter) Write(b []byte) (int, error) {
	if !s.wrote {
		s.wrote = true
		if !s.t.beforeAnswer(s.status) {
			s.failed = true
			writeFailure(s.ResponseWriter, commitFailed)
		} else {
			s.ResponseWriter.WriteHeader(s.status)
		}
	}
	if s.failed || len(b) == 0 {
		return len(b), nil
	}
	return s.ResponseWriter.Write(b)
}

// ginCommitWriter is statusWriter for Gin, whose writer records the status
// and sends the header with the first byte.
type ginCommitWriter struct {
	gin.ResponseWriter
	t      *txn
	failed bool
}

func (g *ginCommitWriter) before() bool {
	if g.failed {
		return false
	}
	if !g.ResponseWriter.Written() && !g.t.beforeAnswer(g.ResponseWriter.Status()) {
		g.failed = true
		h := g.ResponseWriter.Header()
		h.Del("Content-Length")
		writeFailure(g.ResponseWriter, commitFailed)
		return false
	}
	return true
}

func (g *ginCommitWriter) Write(b []byte) (int, error) {
	if !g.before() {
		return len(b), nil
	}
	return g.ResponseWriter.Write(b)
}

func (g *ginCommitWriter) WriteString(s string) (int, error) {
	if !g.before() {
		return len(s), nil
	}
	return g.ResponseWriter.WriteString(s)
}

// Unwrap lets http.ResponseController reach the connection (per-request
// read and write deadlines).
func (g *ginCommitWriter) Unwrap() http.ResponseWriter { return g.ResponseWriter }

func (g *ginCommitWriter) WriteHeaderNow() {
	if g.before() {
		g.ResponseWriter.WriteHeaderNow()
	}
}

// Require is the Gin form: a handler that runs the five steps before the
// route's handler and ends the transaction after it.
func (m *Middleware) Require(action string, anyOf ...string) gin.HandlerFunc {
	return func(c *gin.Context) {
		ctx, t, f := m.begin(c.Request, c.ClientIP(), action, anyOf)
		if f != nil {
			writeFailure(c.Writer, f)
			c.Abort()
			return
		}
		c.Request = c.Request.WithContext(ctx)
		w := &ginCommitWriter{ResponseWriter: c.Writer, t: t}
		c.Writer = w
		defer func() {
			c.Writer = w.ResponseWriter
			if v := recover(); v != nil {
				t.finish(http.StatusInternalServerError)
				panic(v)
			}
			// A handler that wrote no body (204, say) commits here, before
			// Gin sends the header.
			w.before()
			t.finish(w.Status())
		}()
		c.Next()
	}
}

// Tx returns the Gin request's transaction.
func (m *Middleware) Tx(c *gin.Context) pgx.Tx { return Tx(c.Request.Context()) }

// Grant returns the Gin request's grant.
func (m *Middleware) Grant(c *gin.Context) *mapping.Grant { return GrantFrom(c.Request.Context()) }

// Platform reports a caller acting across tenants.
func (m *Middleware) Platform(c *gin.Context) bool {
	g := GrantFrom(c.Request.Context())
	return g != nil && g.Global()
}

// ErrNoGrant is returned by helpers used outside the middleware.
var ErrNoGrant = errors.New("middleware: no grant in context")
