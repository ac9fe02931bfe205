package api_test

import (
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/keybridge/keybridge/internal/api"
	"github.com/keybridge/keybridge/internal/metrics"
)

func newTestServer() (*api.Server, http.Handler) {
	s := &api.Server{Log: slog.New(slog.NewTextHandler(io.Discard, nil)), Metrics: metrics.New("test", "test")}
	return s, s.Handler()
}

// TestRequestIDs: every answer carries an id; ids are unique per request;
// a caller's own id (up to 128 bytes) is kept, a longer one replaced.
func TestRequestIDs(t *testing.T) {
	_, h := newTestServer()
	get := func(id string) string {
		req := httptest.NewRequest("GET", "/healthz", nil)
		if id != "" {
			req.Header.Set("X-Request-Id", id)
		}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		return rec.Header().Get("X-Request-Id")
	}
	seen := map[string]bool{}
	for range 1000 {
		id := get("")
		if id == "" || seen[id] {
			t.Fatalf("request id %q empty or repeated", id)
		}
		seen[id] = true
	}
	if got := get("caller-id-1"); got != "caller-id-1" {
		t.Errorf("caller's id replaced by %q", got)
	}
	long := strings.Repeat("x", 129)
	if got := get(long); got == long || got == "" {
		t.Errorf("a 129-byte id was kept (or none given): %q", got)
	}
}

// TestMethodLabelBounded: the method label of the request metrics takes
// only standard methods, so a client inventing methods cannot grow the
// series without bound.
func TestMethodLabelBounded(t *testing.T) {
	s, h := newTestServer()
	for _, m := range []string{"FOO", "BAR", "BAZ", "GET"} {
		h.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest(m, "/nowhere", nil))
	}
	if n := testutil.CollectAndCount(s.Metrics.HTTPRequests); n != 2 {
		t.Errorf("%d request series, want 2 (GET and other)", n)
	}
	if v := testutil.ToFloat64(s.Metrics.HTTPRequests.WithLabelValues("unmatched", "other", "404")); v != 3 {
		t.Errorf("other-method requests counted %v, want 3", v)
	}
}
