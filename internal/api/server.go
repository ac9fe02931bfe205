// Package api is keybridge's HTTP surface on Gin: the only package that knows
// Gin. Each feature is a Module that registers its routes; the Server adds
// request ids, structured request logs, metrics, JSON errors and the health
// endpoints every deployment probes.
package api

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"log/slog"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gin-gonic/gin"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/keybridge/keybridge/internal/audit"
	"github.com/keybridge/keybridge/internal/metrics"
)

// Module registers a feature's routes.
type Module interface {
	Register(r gin.IRouter)
}

// Documented is implemented by every Module: the OpenAPI 3.1 "paths" entries
// of its routes, keyed by path then lowercase method, so /openapi.json can
// be assembled from the modules and a test can prove no route is missing.
type Documented interface {
	OpenAPIPaths() map[string]map[string]any
}

// ReadyCheck is one readiness condition; a non-nil error makes /readyz 503.
type ReadyCheck struct {
	Name  string
	Check func(ctx context.Context) error
}

// Server is the HTTP server.
type Server struct {
	Log     *slog.Logger
	Metrics *metrics.Metrics
	// Ready lists what /readyz verifies (database reachable, first sync done).
	Ready []ReadyCheck
	// Modules are the features whose routes the router carries.
	Modules []Module
	// TrustedProxies are CIDRs whose X-Forwarded-For is believed for the
	// client address (rate limits, logs); nobody's by default.
	TrustedProxies []string

	shuttingDown atomic.Bool
	ids          *requestIDs
	seriesMu     sync.RWMutex
	series       map[routeKey]routeSeries
}

// requestIDs makes request ids without a syscall per request: a random
// prefix drawn once per process (so replicas and restarts differ) and a
// counter.
type requestIDs struct {
	prefix []byte
	n      atomic.Uint64
}

func newRequestIDs() *requestIDs {
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	return &requestIDs{prefix: append(hex.AppendEncode(nil, b), '-')}
}

func (r *requestIDs) next() string {
	buf := make([]byte, 0, len(r.prefix)+16)
	buf = append(buf, r.prefix...)
	return string(strconv.AppendUint(buf, r.n.Add(1), 36))
}

// Handler builds the Gin engine.
func (s *Server) Handler() http.Handler {
	gin.SetMode(gin.ReleaseMode)
	s.ids = newRequestIDs()
	r := gin.New()
	r.HandleMethodNotAllowed = true
	// Client addresses come from the socket unless the request came through
	// a configured trusted proxy; never from spoofable headers otherwise.
	// The CIDRs were validated with the config.
	_ = r.SetTrustedProxies(s.TrustedProxies)
	r.Use(s.requestID, s.observe, s.recover)
	r.NoRoute(func(c *gin.Context) { Error(c, http.StatusNotFound, "not_found", "no such route") })
	r.NoMethod(func(c *gin.Context) {
		Error(c, http.StatusMethodNotAllowed, "method_not_allowed", "method not allowed on this route")
	})
	r.GET("/healthz", func(c *gin.Context) { c.JSON(http.StatusOK, gin.H{"status": "ok"}) })
	r.GET("/readyz", s.readyz)
	r.GET("/metrics", gin.WrapH(promhttp.HandlerFor(s.Metrics.Registry, promhttp.HandlerOpts{})))
	r.GET("/openapi.json", s.serveOpenAPI)
	for _, m := range s.Modules {
		m.Register(r)
	}
	return r
}

// ShutDown makes /readyz fail so load balancers stop sending traffic first.
func (s *Server) ShutDown() { s.shuttingDown.Store(true) }

func (s *Server) readyz(c *gin.Context) {
	if s.shuttingDown.Load() {
		c.JSON(http.StatusServiceUnavailable, gin.H{"status": "shutting_down"})
		return
	}
	ctx, cancel := context.WithTimeout(c.Request.Context(), 2*time.Second)
	defer cancel()
	checks := gin.H{}
	ok := true
	for _, rc := range s.Ready {
		if err := rc.Check(ctx); err != nil {
			// /readyz is unauthenticated: why goes to the log (addresses,
			// driver errors), the answer says only which check fails.
			ok = false
			checks[rc.Name] = "failing"
			s.Log.WarnContext(ctx, "readiness check failed", "check", rc.Name, "error", err, "request_id", RequestID(c))
		} else {
			checks[rc.Name] = "ok"
		}
	}
	if !ok {
		c.JSON(http.StatusServiceUnavailable, gin.H{"status": "not_ready", "checks": checks})
		return
	}
	c.JSON(http.StatusOK, gin.H{"status": "ready", "checks": checks})
}

const requestIDHeader = "X-Request-Id"

// requestID takes the caller's X-Request-Id when it is safe to log, answer
// and audit (audit.ValidRequestID: at most 128 bytes of [A-Za-z0-9._:-])
// and otherwise makes one. It answers the id and puts it in the request in
// place of the caller's, so whatever reads the request header afterwards
// (the middleware's RequestID, RequestIDOf) sees only the accepted id; the
// response header is where RequestID reads it back.
func (s *Server) requestID(c *gin.Context) {
	h := c.Request.Header[requestIDHeader]
	id := ""
	if len(h) == 1 && audit.ValidRequestID(h[0]) {
		id = h[0]
	} else {
		id = s.ids.next()
		c.Request.Header[requestIDHeader] = []string{id}
	}
	c.Writer.Header()[requestIDHeader] = []string{id}
	c.Next()
}

// RequestIDOf is the request id of a request served by Server: the
// caller's when it was accepted, else the generated one.
func RequestIDOf(r *http.Request) string { return r.Header.Get(requestIDHeader) }

// hotRoutes are the decision endpoints applications call on every request.
var hotRoutes = map[string]bool{"/v1/check": true, "/oauth2/introspect": true, "/v1/forward-auth": true}

// RequestID returns the request's id.
func RequestID(c *gin.Context) string {
	if v := c.Writer.Header()[requestIDHeader]; len(v) > 0 {
		return v[0]
	}
	return ""
}

func (s *Server) observe(c *gin.Context) {
	start := time.Now()
	c.Next()
	route := c.FullPath() // the template, never the raw path: bounded labels
	if route == "" {
		route = "unmatched"
	}
	status := c.Writer.Status()
	d := time.Since(start)
	m := s.routeMetrics(route, c.Request.Method, status)
	m.requests.Inc()
	m.duration.Observe(d.Seconds())
	if route == "/metrics" || route == "/healthz" || route == "/readyz" {
		return
	}
	level := slog.LevelInfo
	switch {
	case status >= 500:
		level = slog.LevelError
	case status < 400 && hotRoutes[route]:
		// Successful decisions run thousands a second: their volume is in
		// the metrics, their lines only at debug. Refusals stay at info.
		level = slog.LevelDebug
	}
	if !s.Log.Enabled(c.Request.Context(), level) {
		return
	}
	s.Log.Log(c.Request.Context(), level, "http request", "request_id", RequestID(c), "method", c.Request.Method,
		"route", route, "status", status, "duration_ms", float64(d.Microseconds())/1000, "client_ip", c.ClientIP())
}

// routeSeries are one route's metric series, looked up once: resolving the
// label values of a vector on every request costs more than the request's
// decision.
type routeSeries struct {
	requests prometheus.Counter
	duration prometheus.Observer
}

type routeKey struct {
	route, method string
	status        int
}

func (s *Server) routeMetrics(route, method string, status int) routeSeries {
	if !knownMethods[method] {
		method = "other" // the method is the client's: bound the label
	}
	k := routeKey{route, method, status}
	s.seriesMu.RLock()
	v, ok := s.series[k]
	s.seriesMu.RUnlock()
	if ok {
		return v
	}
	v = routeSeries{requests: s.Metrics.HTTPRequests.WithLabelValues(route, method, strconv.Itoa(status)),
		duration: s.Metrics.HTTPDuration.WithLabelValues(route, method)}
	s.seriesMu.Lock()
	if s.series == nil {
		s.series = map[routeKey]routeSeries{}
	}
	s.series[k] = v
	s.seriesMu.Unlock()
	return v
}

var knownMethods = map[string]bool{"GET": true, "HEAD": true, "POST": true, "PUT": true, "PATCH": true, "DELETE": true, "OPTIONS": true}

func (s *Server) recover(c *gin.Context) {
	defer func() {
		if v := recover(); v != nil {
			if err, ok := v.(error); ok && errors.Is(err, http.ErrAbortHandler) {
				panic(v)
			}
			s.Log.ErrorContext(c.Request.Context(), "handler panic", "request_id", RequestID(c), "panic", v)
			Error(c, http.StatusInternalServerError, "internal", "internal error")
		}
	}()
	c.Next()
}

// ErrorBody is every error answer: {"error":{"code","message"}}.
type ErrorBody struct {
	Error ErrorDetail `json:"error"`
}

// ErrorDetail carries a stable code and a human message; never a stack
// trace, never a token.
type ErrorDetail struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

// Error aborts the request with a JSON error.
func Error(c *gin.Context, status int, code, message string) {
	c.AbortWithStatusJSON(status, ErrorBody{Error: ErrorDetail{Code: code, Message: message}})
}
