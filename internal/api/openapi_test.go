package api_test

import (
	"encoding/json"
	"io"
	"log/slog"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"

	"github.com/gin-gonic/gin"
	"github.com/jackc/pgx/v5"

	"github.com/keybridge/keybridge/mapping"

	"github.com/keybridge/keybridge/internal/api"
	"github.com/keybridge/keybridge/internal/metrics"
)

// TestEveryRouteIsDocumented builds the server with every module and checks
// each registered route against /openapi.json.
func TestEveryRouteIsDocumented(t *testing.T) {
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	srv := &api.Server{Log: log, Metrics: metrics.New("t", "t"), Modules: []api.Module{
		&api.Decisions{}, &api.Management{Gate: openGate{}}, &api.Sync{Gate: openGate{}}, &api.Tenants{Gate: openGate{}},
	}}
	h := srv.Handler().(*gin.Engine)
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("GET", "/openapi.json", nil))
	var doc struct {
		Paths map[string]map[string]any `json:"paths"`
	}
	if err := json.Unmarshal(rec.Body.Bytes(), &doc); err != nil {
		t.Fatal(err)
	}
	param := regexp.MustCompile(`[:*]([a-z_]+)`)
	routes := h.Routes()
	if len(routes) < 25 {
		t.Fatalf("only %d routes registered", len(routes))
	}
	for _, r := range routes {
		p := param.ReplaceAllString(r.Path, "{$1}")
		ops, ok := doc.Paths[p]
		if !ok {
			t.Errorf("%s %s is not in /openapi.json", r.Method, r.Path)
			continue
		}
		if _, ok := ops[strings.ToLower(r.Method)]; !ok {
			t.Errorf("%s %s: method not documented", r.Method, r.Path)
		}
	}
}

type openGate struct{}

func (openGate) Require(string, ...string) gin.HandlerFunc { return func(c *gin.Context) { c.Next() } }
func (openGate) Tx(*gin.Context) pgx.Tx                    { return nil }
func (openGate) Grant(*gin.Context) *mapping.Grant         { return nil }
func (openGate) Platform(*gin.Context) bool                { return false }

func TestClientAddressIgnoresForwardedHeadersUnlessTrusted(t *testing.T) {
	for _, tc := range []struct {
		trusted []string
		want    string
	}{{nil, "192.0.2.1"}, {[]string{"192.0.2.0/24"}, "203.0.113.7"}} {
		srv := &api.Server{Log: slog.New(slog.NewTextHandler(io.Discard, nil)), Metrics: metrics.New("t", "t"), TrustedProxies: tc.trusted,
			Modules: []api.Module{ipModule{}}}
		req := httptest.NewRequest("GET", "/ip", nil)
		req.RemoteAddr = "192.0.2.1:1234"
		req.Header.Set("X-Forwarded-For", "203.0.113.7")
		rec := httptest.NewRecorder()
		srv.Handler().ServeHTTP(rec, req)
		if rec.Body.String() != tc.want {
			t.Errorf("trusted %v: client %q, want %q", tc.trusted, rec.Body.String(), tc.want)
		}
	}
}

type ipModule struct{}

func (ipModule) Register(r gin.IRouter) {
	r.GET("/ip", func(c *gin.Context) { c.String(200, c.ClientIP()) })
}
