package api

import (
	"context"
	"crypto/subtle"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/keybridge/keybridge/config"
	"github.com/keybridge/keybridge/internal/audit"
	"github.com/keybridge/keybridge/internal/identity"
	"github.com/keybridge/keybridge/internal/metrics"
	"github.com/keybridge/keybridge/internal/ratelimit"
	"github.com/keybridge/keybridge/mapping"
	"github.com/keybridge/keybridge/middleware"
	"github.com/keybridge/keybridge/rls"
)

// Identifier resolves bearer tokens in the tenant a request names ("" names
// none); a tenant the subject may not act in is a *mapping.TenantError
// (identity.Resolver.IdentifyIn).
type Identifier interface {
	IdentifyIn(ctx context.Context, raw, tenant string) (identity.Caller, error)
}

// Decisions serves what applications call on every request: introspection,
// checks, forward-auth and /v1/me.
type Decisions struct {
	Log         *slog.Logger
	Metrics     *metrics.Metrics
	Identify    Identifier
	Engine      func() *mapping.Engine
	Audit       audit.Recorder
	Clients     []config.Client // HTTP Basic callers of /oauth2/introspect
	MaxBatch    int
	ForwardAuth config.ForwardAuth
	// AllowAnonymousChecks is check.allow_anonymous.
	AllowAnonymousChecks bool
	AuditAllow           bool
	PerSubject           *ratelimit.Limiter
	PerClient            *ratelimit.Limiter
	Now                  func() time.Time

	anon        atomic.Pointer[anonymousGrant] // the Public grant of the current engine
	warnedProxy atomic.Bool                    // limitProxied has warned

	// Unauthenticated limits refusals before authentication per client
	// address (rate_limit.unauthenticated); nil leaves them unlimited.
	Unauthenticated *ratelimit.Limiter
	// TenantHeader is server.tenant_header: the request header naming the
	// tenant the caller acts in ("" reads none). /v1/check also takes a
	// tenant field, forward-auth a tenant query parameter (docs/operations.md,
	// "Active tenant").
	TenantHeader string
}

// Register adds the decision routes.
func (d *Decisions) Register(r gin.IRouter) {
	r.POST("/oauth2/introspect", d.limitClient, d.introspect)
	r.POST("/v1/check", d.limitClient, d.check)
	r.GET("/v1/forward-auth", d.limitProxied, d.forwardAuth)
	// Envoy's HTTP ext_authz sends the original method to path_prefix +
	// the original path; only forward_auth.proxy envoy answers here.
	r.Match(envoyMethods, "/v1/forward-auth/*path", d.limitProxied, d.forwardAuth)
	r.GET("/v1/me", d.limitClient, d.me)
}

func (d *Decisions) now() time.Time {
	if d.Now != nil {
		return d.Now()
	}
	return time.Now()
}

// limitClient takes a token from the bucket of the client address: the
// socket's peer, or the address a trusted proxy (server.trusted_proxies)
// names in X-Forwarded-For or X-Real-IP, as gin's ClientIP resolves it.
func (d *Decisions) limitClient(c *gin.Context) {
	if ok, wait := d.PerClient.Allow(c.ClientIP()); !ok {
		d.rateLimited(c, "client", wait)
	}
}

// limitProxied is limitClient for forward-auth, whose peer is always a
// proxy. When no client address comes through (the proxy is not in
// server.trusted_proxies, or sends no X-Forwarded-For), every client
// behind it shares the proxy's one bucket: that is logged once.
func (d *Decisions) limitProxied(c *gin.Context) {
	if !d.warnedProxy.Load() && c.ClientIP() == c.RemoteIP() && d.Log != nil && d.warnedProxy.CompareAndSwap(false, true) {
		d.Log.WarnContext(c.Request.Context(), "forward-auth: no client address from the proxy, so all its clients share one per-client rate-limit bucket; "+
			"add the proxy's address to server.trusted_proxies and have it send X-Forwarded-For (docs/operations.md)", "proxy", c.RemoteIP())
	}
	d.limitClient(c)
}

func (d *Decisions) rateLimited(c *gin.Context, limiter string, wait time.Duration) {
	d.Metrics.RateLimited.WithLabelValues(limiter, c.FullPath()).Inc()
	c.Header("Retry-After", strconv.Itoa(int(wait/time.Second)+1))
	if d.behindNginx(c) {
		// auth_request would turn 429 into 500; a 403 naming the reason is
		// mapped back to 429 by the documented error_page.
		c.Header(authErrorHeader, "rate_limited")
		Error(c, http.StatusForbidden, "rate_limited", "too many requests")
		return
	}
	Error(c, http.StatusTooManyRequests, "rate_limited", "too many requests")
}

func bearerToken(c *gin.Context) string {
	t, _ := middleware.Bearer(c.Request)
	return t
}

// caller authenticates the bearer token of the request in the tenant its
// tenant header names; see callerIn.
func (d *Decisions) caller(c *gin.Context, action string) (identity.Caller, bool) {
	named, malformed := middleware.NamedTenant(c.Request.Header, d.TenantHeader)
	return d.callerIn(c, action, named, malformed)
}

// callerIn authenticates the bearer token of the request in tenant named
// ("" names none). On failure it has answered: 401 for the token (the
// reason only in the log and the metric); 403 tenant_forbidden for a tenant
// the caller may not act in and 400 for a malformed choice (malformed,
// judged once the caller is known), both audited as action.
func (d *Decisions) callerIn(c *gin.Context, action, named string, malformed error) (identity.Caller, bool) {
	if malformed != nil {
		named = ""
	}
	raw := bearerToken(c)
	if raw == "" {
		if d.throttleUnauthenticated(c) {
			return identity.Caller{}, false
		}
		c.Header("WWW-Authenticate", `Bearer realm="keybridge"`)
		Error(c, http.StatusUnauthorized, "unauthenticated", "a bearer token is required")
		return identity.Caller{}, false
	}
	who, err := d.Identify.IdentifyIn(c.Request.Context(), raw, named)
	var te *mapping.TenantError
	if errors.As(err, &te) {
		d.refuseTenant(c, te.Grant, action, http.StatusForbidden, "tenant_forbidden", "the caller may not act in the tenant the request names", te.Error())
		return identity.Caller{}, false
	}
	if err != nil {
		if d.throttleUnauthenticated(c) {
			return identity.Caller{}, false
		}
		c.Header("WWW-Authenticate", `Bearer realm="keybridge", error="invalid_token"`)
		Error(c, http.StatusUnauthorized, "invalid_token", "the token is invalid, expired or revoked")
		return identity.Caller{}, false
	}
	if ok, wait := d.PerSubject.Allow(who.Grant.Subject); !ok {
		d.rateLimited(c, "subject", wait)
		return identity.Caller{}, false
	}
	if malformed != nil {
		d.refuseTenant(c, who.Grant, action, http.StatusBadRequest, "invalid_request", malformed.Error(), malformed.Error())
		return identity.Caller{}, false
	}
	return who, true
}

// refuseTenant answers a request whose tenant choice is refused — status
// and code, msg for the caller — and audits reason as a denial of action
// by g in its tenant (the caller's, without the choice). Forward-auth
// answers carry the code in X-Auth-Error too.
func (d *Decisions) refuseTenant(c *gin.Context, g *mapping.Grant, action string, status int, code, msg, reason string) {
	if d.Audit != nil && g != nil {
		actor := g.Username
		if g.Subject == "" {
			actor = "anonymous"
		}
		d.Audit.Record(c.Request.Context(), audit.Entry{OccurredAt: d.now(), TenantID: g.Tenant, ActorID: g.Subject, ActorName: actor,
			Action: truncate(action, 200), Outcome: audit.Denied, RequestID: RequestID(c), Reason: reason})
	}
	if d.Log != nil {
		d.Log.InfoContext(c.Request.Context(), "tenant choice refused", "action", action, "code", code, "reason", reason, "request_id", RequestID(c))
	}
	if kind, _, _ := strings.Cut(action, "."); kind == "check" || kind == "forward_auth" {
		d.Metrics.Decisions.WithLabelValues(kind, "denied").Inc()
	}
	if strings.HasPrefix(c.FullPath(), forwardAuthPrefix) {
		c.Header(authErrorHeader, code)
	}
	Error(c, status, code, msg)
}

// tenantRequired answers 409 tenant_required (403 on forward-auth, whose
// proxies pass only 2xx, 401 and 403) for a caller of several tenants whose
// request names none, and audits it.
func (d *Decisions) tenantRequired(c *gin.Context, g *mapping.Grant, action string) {
	status := http.StatusConflict
	if strings.HasPrefix(c.FullPath(), forwardAuthPrefix) {
		status = http.StatusForbidden
	}
	msg := "the caller may act in several tenants and the request names none"
	if d.TenantHeader != "" {
		msg += ": name one with the " + d.TenantHeader + " header"
	}
	d.refuseTenant(c, g, action, status, "tenant_required", msg, mapping.TenantRequiredReason)
}

// checkRequest is one check: a permission or any of several, on a
// resource, for a caller acting in a tenant. Tenant is the tenant the
// caller acts in (a batch's top-level tenant applies to every check that
// names none); Resource.Tenant is the resource's tenant, which that tenant
// must be unless a global bypass role is held.
type checkRequest struct {
	Permission string           `json:"permission,omitempty"`
	AnyOf      []string         `json:"any_of,omitempty"`
	Resource   mapping.Resource `json:"resource"`
	Tenant     string           `json:"tenant,omitempty"`
}

type checkBody struct {
	checkRequest
	Checks []checkRequest `json:"checks,omitempty"`
}

// CheckAnswer is one decision with the session the caller must set.
type CheckAnswer struct {
	Allowed    bool        `json:"allowed"`
	Permission string      `json:"permission,omitempty"`
	Reason     string      `json:"reason"`
	Session    rls.Session `json:"session"`
}

type checkResults struct {
	Results []CheckAnswer `json:"results"`
}

// ParseCheckBody decodes a /v1/check body strictly: one check or a batch.
func ParseCheckBody(r io.Reader, maxBatch int) ([]checkRequest, bool, error) {
	data, err := readBody(r, maxCheckBody)
	if err != nil {
		return nil, false, err
	}
	b, err := decodeStrict[checkBody](data)
	if err != nil {
		return nil, false, err
	}
	single := b.Permission != "" || len(b.AnyOf) > 0
	switch {
	case single && len(b.Checks) > 0:
		return nil, false, errors.New("body: send permission/any_of or checks, not both")
	case len(b.Checks) > maxBatch:
		return nil, false, errors.New("checks: at most " + strconv.Itoa(maxBatch) + " per request")
	case !single && len(b.Checks) == 0:
		return nil, false, errors.New("body: permission, any_of or checks is required")
	}
	list := b.Checks
	if single {
		list = []checkRequest{b.checkRequest}
	}
	if b.Tenant != "" {
		if err := mapping.ValidTenantName(b.Tenant); err != nil {
			return nil, false, err
		}
	}
	for i := range list {
		ch := &list[i]
		switch {
		case ch.Tenant == "":
			ch.Tenant = b.Tenant
		case b.Tenant != "" && ch.Tenant != b.Tenant:
			return nil, false, errors.New("checks[" + strconv.Itoa(i) + "].tenant: differs from the request's tenant; name the tenant per check, or once for all")
		default:
			if err := mapping.ValidTenantName(ch.Tenant); err != nil {
				return nil, false, errors.New("checks[" + strconv.Itoa(i) + "]." + err.Error())
			}
		}
	}
	for i, ch := range list {
		if ch.Permission != "" && len(ch.AnyOf) > 0 {
			return nil, false, errors.New("checks[" + strconv.Itoa(i) + "]: permission or any_of, not both")
		}
		if ch.Permission == "" && len(ch.AnyOf) == 0 {
			return nil, false, errors.New("checks[" + strconv.Itoa(i) + "]: permission or any_of is required")
		}
		if len(ch.AnyOf) > 32 {
			return nil, false, errors.New("checks[" + strconv.Itoa(i) + "].any_of: at most 32 permissions")
		}
	}
	return list, single, nil
}

func (d *Decisions) check(c *gin.Context) {
	const action = "check.tenant"
	var who identity.Caller
	engine := d.Engine()
	named, malformed := middleware.NamedTenant(c.Request.Header, d.TenantHeader)
	anonymous := d.AllowAnonymousChecks && anonymousRequest(c)
	if anonymous {
		// check.allow_anonymous: no credentials at all is the Public
		// pseudo role; a bad token still fails in caller.
		who.Grant = d.anonymous(engine).grant
		if malformed != nil {
			d.refuseTenant(c, who.Grant, action, http.StatusBadRequest, "invalid_request", malformed.Error(), malformed.Error())
			return
		}
	} else {
		var ok bool
		if who, ok = d.callerIn(c, action, named, malformed); !ok {
			return
		}
	}
	if anonymous && named != "" {
		te := &mapping.TenantError{Tenant: named}
		d.refuseTenant(c, who.Grant, action, http.StatusForbidden, "tenant_forbidden", "the caller may not act in the tenant the request names", te.Error())
		return
	}
	list, single, err := ParseCheckBody(c.Request.Body, d.MaxBatch)
	if err != nil {
		Error(c, http.StatusBadRequest, "invalid_request", err.Error())
		return
	}
	// Each check acts in the tenant it names (or the batch's), else the
	// header's, else the caller's own: grants holds the grant of every
	// check that names a tenant of its own.
	var grants []*mapping.Grant
	for i := range list {
		t := list[i].Tenant
		if t == "" || t == named {
			continue
		}
		if named != "" {
			why := "the body names tenant " + strconv.Quote(t) + " and the " + d.TenantHeader + " header another"
			d.refuseTenant(c, who.Grant, action, http.StatusBadRequest, "invalid_request", "the body's tenant and the "+d.TenantHeader+" header differ: name one tenant", why)
			return
		}
		if anonymous {
			te := &mapping.TenantError{Tenant: t}
			d.refuseTenant(c, who.Grant, action, http.StatusForbidden, "tenant_forbidden", "the caller may not act in the tenant the request names", te.Error())
			return
		}
		in, err := d.Identify.IdentifyIn(c.Request.Context(), bearerToken(c), t)
		var te *mapping.TenantError
		switch {
		case errors.As(err, &te):
			d.refuseTenant(c, te.Grant, action, http.StatusForbidden, "tenant_forbidden", "the caller may not act in the tenant the request names", te.Error())
			return
		case err != nil: // the token verified a moment ago: it expired since
			c.Header("WWW-Authenticate", `Bearer realm="keybridge", error="invalid_token"`)
			Error(c, http.StatusUnauthorized, "invalid_token", "the token is invalid, expired or revoked")
			return
		}
		if grants == nil {
			grants = make([]*mapping.Grant, len(list))
		}
		grants[i] = in.Grant
	}
	grantOf := func(i int) *mapping.Grant {
		if grants != nil && grants[i] != nil {
			return grants[i]
		}
		return who.Grant
	}
	for i := range list {
		if g := grantOf(i); g.TenantRequired {
			d.tenantRequired(c, g, action)
			return
		}
	}
	sess := middleware.SessionFor(who.Grant)
	now := d.now()
	answers := make([]CheckAnswer, len(list))
	for i, ch := range list {
		anyOf := ch.AnyOf
		if ch.Permission != "" {
			anyOf = []string{ch.Permission}
		}
		g, s := who.Grant, sess
		if gi := grantOf(i); gi != g {
			g, s = gi, middleware.SessionFor(gi)
		}
		dec := engine.Decide(g, mapping.Request{AnyOf: anyOf, Resource: ch.Resource, Now: now})
		answers[i] = CheckAnswer{Allowed: dec.Allowed, Permission: dec.Permission, Reason: dec.Reason, Session: s}
		outcome := "allowed"
		if !dec.Allowed {
			outcome = "denied"
		}
		d.Metrics.Decisions.WithLabelValues("check", outcome).Inc()
		if !dec.Allowed || d.AuditAllow {
			d.auditDecision(c, g, "check."+strings.Join(anyOf, "|"), ch.Resource, dec)
		}
	}
	if single {
		writeJSON(c, http.StatusOK, &answers[0])
		return
	}
	writeJSON(c, http.StatusOK, checkResults{Results: answers})
}

func (d *Decisions) auditDecision(c *gin.Context, g *mapping.Grant, action string, res mapping.Resource, dec mapping.Decision) {
	if d.Audit == nil {
		return
	}
	outcome := audit.Success
	if !dec.Allowed {
		outcome = audit.Denied
	}
	// The row lands in the caller's tenant; only a caller that may act in
	// the named tenant (global bypass) writes into that tenant's log.
	tenant := g.Tenant
	if g.Global() && res.Tenant != "" {
		tenant = res.Tenant
	}
	actor := g.Username
	if g.Subject == "" {
		actor = "anonymous" // the Public pseudo role
	}
	d.Audit.Record(c.Request.Context(), audit.Entry{OccurredAt: d.now(), TenantID: tenant, ActorID: g.Subject, ActorName: actor,
		Action: truncate(action, 200), ResourceType: res.Type, ResourceID: res.ID, Outcome: outcome, RequestID: RequestID(c), Reason: dec.Reason})
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n]
	}
	return s
}

// introspect is RFC 7662. An inactive token answers exactly
// {"active":false}; why goes to the log and a metric label only.
func (d *Decisions) introspect(c *gin.Context) {
	ok, scope, answered := d.introspectionCaller(c)
	if answered {
		return
	}
	if !ok {
		c.Header("WWW-Authenticate", `Basic realm="keybridge"`)
		Error(c, http.StatusUnauthorized, "invalid_client", "client authentication failed")
		return
	}
	if err := c.Request.ParseForm(); err != nil {
		Error(c, http.StatusBadRequest, "invalid_request", "the body must be form-encoded")
		return
	}
	raw := c.Request.PostForm.Get("token")
	if raw == "" {
		Error(c, http.StatusBadRequest, "invalid_request", "token is required")
		return
	}
	who, err := d.Identify.IdentifyIn(c.Request.Context(), raw, "")
	if err != nil || (scope != nil && !scope.Global() && (scope.Tenant == "" || who.Grant.Tenant != scope.Tenant)) {
		// A tenant admin learns nothing of another tenant's tokens (RFC 7662
		// §2.2 lets the server answer inactive to a caller it will not tell).
		c.Data(http.StatusOK, jsonContentType, inactive)
		return
	}
	if who.Memo != nil {
		if b := who.Memo.Introspection.Load(); b != nil {
			c.Data(http.StatusOK, jsonContentType, *b)
			return
		}
	}
	cl := who.Token.Claims
	out := introspection{Active: true, TokenType: "Bearer", Sub: who.Token.Subject, Exp: who.Token.Expiry.Unix(),
		Scope: cl["scope"], ClientID: cl["azp"], Username: cl["preferred_username"], Aud: cl["aud"], Iss: cl["iss"], Jti: cl["jti"],
		TenantID: who.Grant.Tenant, TenantRequired: who.Grant.TenantRequired, Roles: who.Grant.Roles, Permissions: who.Grant.Permissions, Teams: d.Engine().TenantTeams(who.Grant)}
	if !who.Token.IssuedAt.IsZero() {
		out.Iat = who.Token.IssuedAt.Unix()
	}
	if !who.Token.NotBefore.IsZero() {
		out.Nbf = who.Token.NotBefore.Unix()
	}
	if b := writeJSON(c, http.StatusOK, &out); b != nil && who.Memo != nil {
		// The answer is a function of the token and the grant only, which
		// the memo lives and dies with.
		who.Memo.Introspection.Store(&b)
	}
}

// inactive is the whole answer for a token that is not active (RFC 7662
// §2.2): nothing about why.
var inactive = []byte(`{"active":false}`)

// introspection is an active token's answer: RFC 7662's fields (claims are
// passed through as the token has them) and keybridge's resolution.
type introspection struct {
	Active      bool     `json:"active"`
	Scope       any      `json:"scope,omitempty"`
	ClientID    any      `json:"client_id,omitempty"`
	Username    any      `json:"username,omitempty"`
	TokenType   string   `json:"token_type"`
	Exp         int64    `json:"exp"`
	Iat         int64    `json:"iat,omitempty"`
	Nbf         int64    `json:"nbf,omitempty"`
	Sub         string   `json:"sub"`
	Aud         any      `json:"aud,omitempty"`
	Iss         any      `json:"iss,omitempty"`
	Jti         any      `json:"jti,omitempty"`
	TenantID    string   `json:"tenant_id"`
	Roles       []string `json:"roles"`
	Permissions []string `json:"permissions"`
	Teams       []string `json:"teams"`
	// TenantRequired: the subject may act in several tenants and its token
	// names none, so tenant_id is "" (docs/operations.md, "Active tenant").
	TenantRequired bool `json:"tenant_required,omitempty"`
}

// introspectionCaller authenticates the caller of /oauth2/introspect: a
// configured client over HTTP Basic, or a bearer token of a caller whose
// grant holds people.manage or tenant.users.manage (admins of a tenant).
// For a bearer caller it also returns the grant, which limits what it may
// learn: tokens of its own tenant only, unless it bypasses globally.
func (d *Decisions) introspectionCaller(c *gin.Context) (ok bool, scope *mapping.Grant, answered bool) {
	if id, secret, ok := c.Request.BasicAuth(); ok {
		id, _ = url.QueryUnescape(id)
		secret, _ = url.QueryUnescape(secret)
		for _, cl := range d.Clients {
			idOK := subtle.ConstantTimeCompare([]byte(id), []byte(cl.ID)) == 1
			secretOK := subtle.ConstantTimeCompare([]byte(secret), []byte(cl.Secret)) == 1
			if idOK && secretOK {
				return true, nil, false
			}
		}
		return false, nil, false
	}
	raw := bearerToken(c)
	if raw == "" {
		return false, nil, false
	}
	// A bearer caller acts in the tenant its tenant header names, and
	// learns of that tenant's tokens only.
	named, malformed := middleware.NamedTenant(c.Request.Header, d.TenantHeader)
	if malformed != nil {
		named = ""
	}
	who, err := d.Identify.IdentifyIn(c.Request.Context(), raw, named)
	var te *mapping.TenantError
	switch {
	case errors.As(err, &te):
		d.refuseTenant(c, te.Grant, "introspect.tenant", http.StatusForbidden, "tenant_forbidden", "the caller may not act in the tenant the request names", te.Error())
		return false, nil, true
	case err != nil:
		return false, nil, false
	case malformed != nil:
		d.refuseTenant(c, who.Grant, "introspect.tenant", http.StatusBadRequest, "invalid_request", malformed.Error(), malformed.Error())
		return false, nil, true
	case who.Grant.TenantRequired:
		d.tenantRequired(c, who.Grant, "introspect.tenant")
		return false, nil, true
	}
	dec := d.Engine().Decide(who.Grant, mapping.Request{AnyOf: []string{"people.manage", "tenant.users.manage"}, Now: d.now()})
	return dec.Allowed, who.Grant, false
}

// me describes the caller in the tenant it acts in. A caller of several
// tenants that names none is described, not refused: tenant "" with
// tenant_required true, the tenants it may name in tenants, and a session
// without a tenant.
func (d *Decisions) me(c *gin.Context) {
	who, ok := d.caller(c, "me.tenant")
	if !ok {
		return
	}
	g := who.Grant
	c.JSON(http.StatusOK, gin.H{"subject": g.Subject, "username": g.Username, "tenant": g.Tenant, "tenants": g.Tenants,
		"tenant_required": g.TenantRequired, "roles": g.Roles, "permissions": g.Permissions, "teams": g.Teams, "session": middleware.SessionFor(g)})
}

// forwardAuth answers nginx auth_request, Traefik ForwardAuth and Envoy's
// HTTP ext_authz: the original method and URI come from the one place the
// configured proxy puts them (forward_auth.proxy), the path is decoded once
// and must be canonical (canonicalPath: anything else is 400, never
// normalized into another route), and a route table maps it to
// permissions. Every 2xx answer carries every identity header.
func (d *Decisions) forwardAuth(c *gin.Context) {
	method, p, ok := d.originalRequest(c)
	if !ok {
		return
	}
	engine := d.Engine()
	route, matched := MatchRoute(d.ForwardAuth.Routes, method, p)
	if matched && route.Public {
		d.identityHeaders(c, "", "", d.anonymous(engine).roles)
		c.Status(http.StatusOK)
		return
	}
	if !matched && d.ForwardAuth.Default == "deny" {
		d.Metrics.Decisions.WithLabelValues("forward_auth", "denied").Inc()
		Error(c, http.StatusForbidden, "forbidden", "no route allows this request")
		return
	}
	if d.ForwardAuth.AllowAnonymous && len(route.AnyOf) > 0 && anonymousRequest(c) {
		d.forwardAnonymous(c, engine, method, route)
		return
	}
	named, malformed := d.forwardTenant(c)
	who, ok := d.callerIn(c, "forward_auth.tenant", named, malformed)
	if !ok {
		return
	}
	g := who.Grant
	if g.TenantRequired {
		d.tenantRequired(c, g, "forward_auth.tenant")
		return
	}
	if len(route.AnyOf) > 0 {
		dec := engine.Decide(g, mapping.Request{AnyOf: route.AnyOf, Now: d.now()})
		if !dec.Allowed || d.AuditAllow {
			// Denials always; allowed ones too with audit.allowed_checks, as
			// for /v1/check.
			d.auditDecision(c, g, "forward_auth."+strings.Join(route.AnyOf, "|"), mapping.Resource{Type: "route", ID: method + " " + route.Path}, dec)
		}
		if !dec.Allowed {
			d.Metrics.Decisions.WithLabelValues("forward_auth", "denied").Inc()
			Error(c, http.StatusForbidden, "forbidden", "permission denied")
			return
		}
	}
	d.Metrics.Decisions.WithLabelValues("forward_auth", "allowed").Inc()
	d.identityHeaders(c, g.Subject, g.Tenant, RolesHeader(g.Roles))
	c.Status(http.StatusOK)
}

// forwardTenant is the tenant a forward-auth request names: the tenant
// query parameter of /v1/forward-auth itself, which the proxy's own config
// sets (nginx's proxy_pass URL, Traefik's address), and the tenant header,
// which the proxy passes on from the client. Behind Envoy the query is the
// original request's, the client's, so only the header counts there. Both
// naming different tenants, or one named twice, is an error: the client
// does not override the proxy's choice.
func (d *Decisions) forwardTenant(c *gin.Context) (string, error) {
	named, err := middleware.NamedTenant(c.Request.Header, d.TenantHeader)
	if err != nil {
		return "", err
	}
	if _, uh := d.ForwardAuth.OriginalHeaders(); uh == "" || c.Request.URL.RawQuery == "" {
		return named, nil
	}
	q, ok := c.Request.URL.Query()["tenant"]
	switch {
	case !ok:
		return named, nil
	case len(q) > 1:
		return "", errors.New("name the tenant query parameter at most once")
	}
	if err := mapping.ValidTenantName(q[0]); err != nil {
		return "", err
	}
	if named != "" && named != q[0] {
		return "", errors.New("the tenant query parameter and the " + d.TenantHeader + " header name different tenants")
	}
	return q[0], nil
}

// forwardAnonymous decides a route with any_of for a request without
// credentials as the Public pseudo role (forward_auth.allow_anonymous).
// Where Public holds none of the permissions the answer is 401, as without
// the switch: the caller may sign in. That 401 is an authentication
// challenge, not audited; an allowed decision is, with
// audit.allowed_checks.
func (d *Decisions) forwardAnonymous(c *gin.Context, engine *mapping.Engine, method string, route config.Route) {
	a := d.anonymous(engine)
	dec := engine.Decide(a.grant, mapping.Request{AnyOf: route.AnyOf, Now: d.now()})
	if !dec.Allowed {
		d.Metrics.Decisions.WithLabelValues("forward_auth", "denied").Inc()
		c.Header("WWW-Authenticate", `Bearer realm="keybridge"`)
		Error(c, http.StatusUnauthorized, "unauthenticated", "a bearer token is required: the Public role holds none of "+strings.Join(route.AnyOf, ", "))
		return
	}
	if d.AuditAllow {
		d.auditDecision(c, a.grant, "forward_auth."+strings.Join(route.AnyOf, "|"), mapping.Resource{Type: "route", ID: method + " " + route.Path}, dec)
	}
	d.Metrics.Decisions.WithLabelValues("forward_auth", "allowed").Inc()
	d.identityHeaders(c, "", "", a.roles)
	c.Status(http.StatusOK)
}

// originalRequest reads the original method and request-target where the
// configured proxy puts them, exactly as the proxy received them, and
// answers the method and the canonical path (decoded once). Behind Envoy
// the target is this request's own, read from RequestURI: c.Param("path")
// and URL.Path are already decoded, and decoding twice is how %3F became
// a '?' that cut the path. On failure it has answered 400 (or 404) and
// counted the reason.
func (d *Decisions) originalRequest(c *gin.Context) (method, p string, ok bool) {
	mh, uh := d.ForwardAuth.OriginalHeaders()
	var target string
	switch {
	case uh == "": // envoy: the original request is this request
		method, target = c.Request.Method, c.Request.RequestURI
		if target == "" { // a request built in-process, not read off the wire
			target = c.Request.URL.RequestURI()
		}
	case c.Param("path") != "":
		Error(c, http.StatusNotFound, "not_found", "only forward_auth.proxy envoy sends the original path after /v1/forward-auth/")
		return "", "", false
	default:
		mv, uv := c.Request.Header.Values(mh), c.Request.Header.Values(uh)
		if len(mv) > 1 || len(uv) > 1 {
			// The proxy sets one; a second is a client's passed through.
			d.refuse(c, refusedDuplicateOriginal, "more than one "+mh+" or "+uh+" header: the proxy must set exactly one, replacing the client's")
			return "", "", false
		}
		if len(mv) == 0 || len(uv) == 0 || mv[0] == "" || uv[0] == "" {
			d.refuse(c, refusedNoOriginalURI, "the proxy sent no "+mh+" or "+uh+" header: set forward_auth.proxy to the proxy in front")
			return "", "", false
		}
		method, target = mv[0], uv[0]
	}
	p, reason := canonicalPath(target)
	if reason == "" && uh == "" {
		rest, found := strings.CutPrefix(p, forwardAuthPrefix)
		switch {
		case !found:
			reason = refusedNotOriginForm
		case rest == "":
			p = "/"
		case rest[0] != '/':
			reason = refusedNotOriginForm
		default:
			p = rest
		}
	}
	if reason != "" {
		d.refuse(c, reason, "the original path is not canonical ("+reason+"): it must be decoded once to a path without dot or empty segments, "+
			"encoded /, ., ?, #, %, \\ or ;, path parameters, backslashes or control bytes")
		return "", "", false
	}
	return method, p, true
}

// refuse answers 400 to a forward-auth request keybridge will not decide.
func (d *Decisions) refuse(c *gin.Context, reason, msg string) {
	d.Metrics.ForwardAuthRefused.WithLabelValues(reason).Inc()
	if d.Log != nil {
		d.Log.DebugContext(c.Request.Context(), "forward-auth request refused", "reason", reason, "request_id", RequestID(c))
	}
	Error(c, http.StatusBadRequest, "bad_request", msg)
}

// MatchRoute finds the first route for a method and a canonical path
// (decoded once; see canonicalPath). A route path is exact, or ends in /**
// for a subtree; * matches one segment. Paths match case-sensitively,
// segment by segment; methods case-insensitively.
func MatchRoute(routes []config.Route, method, p string) (config.Route, bool) {
	segs := strings.Split(strings.Trim(p, "/"), "/")
	for _, r := range routes {
		if len(r.Methods) > 0 && !containsFold(r.Methods, method) {
			continue
		}
		if matchPath(strings.Split(strings.Trim(r.Path, "/"), "/"), segs) {
			return r, true
		}
	}
	return config.Route{}, false
}

func matchPath(pat, segs []string) bool {
	for i, s := range pat {
		if s == "**" {
			return true
		}
		if i >= len(segs) || (s != "*" && s != segs[i]) {
			return false
		}
	}
	return len(pat) == len(segs)
}

func containsFold(list []string, s string) bool {
	for _, v := range list {
		if strings.EqualFold(v, s) {
			return true
		}
	}
	return false
}

// OpenAPIPaths documents the decision routes.
func (d *Decisions) OpenAPIPaths() map[string]map[string]any {
	check := op("Decide one check ({permission|any_of, resource, tenant}) or a batch ({checks:[...], tenant}); answers allowed, reason and the session variables. "+
		"tenant is the tenant the caller acts in (top level: every check; per check in a batch), as the "+defaultTenantHeader+" header names it: "+
		"honoured only for a tenant the caller belongs to, and the header and the body must agree. Without either, the token's tenant claim decides, "+
		"else the caller's only synced membership. resource.tenant is the resource's tenant, which must be the caller's unless a global bypass role is held", nil, "200", "400")
	check["responses"].(map[string]any)["409"] = map[string]any{"description": "tenant_required: the caller may act in several tenants and the request names none"}
	me := op("The caller's resolved identity in the tenant it acts in: tenant, tenants (every tenant it may name), session. "+
		"A caller of several tenants naming none gets tenant \"\" and tenant_required true", nil, "200")
	forwardTenant := map[string]any{"name": "tenant", "in": "query", "required": false, "schema": map[string]any{"type": "string"},
		"description": "The tenant the caller acts in, set in the proxy's own config (nginx proxy_pass URL, Traefik address); the client's " + defaultTenantHeader +
			" header must agree with it. Not read behind Envoy, whose query is the original request's"}
	return map[string]map[string]any{
		"/oauth2/introspect": {"post": map[string]any{"summary": "RFC 7662 token introspection; inactive is exactly {\"active\":false}. " +
			"tenant_id is the token's tenant claim, else the subject's only synced membership; a subject of several tenants whose token names none " +
			"has tenant_id \"\" and tenant_required true. A bearer caller acts in the tenant its " + defaultTenantHeader + " header names",
			"parameters": []any{tenantHeaderParam},
			"responses": map[string]any{"200": map[string]any{"description": "active with tenant_id, roles, permissions, teams (and tenant_required); or inactive"},
				"401": map[string]any{"description": "client authentication failed"},
				"403": map[string]any{"description": "tenant_forbidden: a bearer caller named a tenant it may not act in"},
				"409": map[string]any{"description": "tenant_required: a bearer caller of several tenants named none"}}}},
		"/v1/check": {"post": check},
		"/v1/forward-auth": {"get": map[string]any{"summary": "For reverse proxies: 200 with X-Auth-User, X-Auth-Tenant and X-Auth-Roles always present (empty: none; roles an RFC 8941 list of strings), or 400/401/403. " +
			"X-Auth-Tenant is the tenant the caller acts in: the tenant parameter or " + defaultTenantHeader + " header, else the token's claim, else the only synced membership",
			"parameters": []any{forwardTenant, tenantHeaderParam},
			"responses": map[string]any{"200": map[string]any{"description": "allowed"}, "400": map[string]any{"description": "no original URI, or its path is not canonical; or the tenant is named twice or differently"},
				"401": map[string]any{"description": "no or invalid token"}, "403": map[string]any{"description": "denied; behind nginx also a rate limit, with X-Auth-Error: rate_limited; " +
					"X-Auth-Error: tenant_forbidden for a tenant the caller may not act in, tenant_required for a caller of several tenants naming none"}}}},
		"/v1/me":                  {"get": me},
		"/v1/forward-auth/{path}": envoyOps(),
	}
}

// envoyMethods are the methods Envoy's ext_authz forwards as they came.
var envoyMethods = []string{http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodPatch, http.MethodDelete, http.MethodOptions}

func envoyOps() map[string]any {
	ops := map[string]any{}
	for _, m := range envoyMethods {
		ops[strings.ToLower(m)] = map[string]any{"summary": "For Envoy's HTTP ext_authz (forward_auth.proxy envoy): the original method and path after the prefix; " +
			"the tenant the caller acts in comes from the " + defaultTenantHeader + " header only (allow it in authorization_request.allowed_headers)",
			"parameters": []any{tenantHeaderParam},
			"responses": map[string]any{"200": map[string]any{"description": "allowed"}, "400": map[string]any{"description": "the original path is not canonical"},
				"401": map[string]any{"description": "no or invalid token"}, "403": map[string]any{"description": "denied; X-Auth-Error: tenant_forbidden or tenant_required when the tenant is refused"},
				"404": map[string]any{"description": "forward_auth.proxy is not envoy"}}}
	}
	return ops
}
