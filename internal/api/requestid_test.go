package api_test

import (
	"io"
	"log/slog"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/gin-gonic/gin"

	"github.com/keybridge/keybridge/internal/api"
	"github.com/keybridge/keybridge/internal/metrics"
)

// echoModule answers the X-Request-Id its handler sees on the request.
type echoModule struct{}

func (echoModule) Register(r gin.IRouter) {
	r.GET("/echo", func(c *gin.Context) { c.String(200, "%s", c.Request.Header.Get("X-Request-Id")) })
}

// Security item 4: a caller's X-Request-Id is kept only when it is at most
// 128 bytes of [A-Za-z0-9._:-]; anything else is replaced by a generated
// id, and handlers reading the request header see the id that was
// answered, never the caller's.
func TestRequestIDsOnlyOfASafeCharsetAndLength(t *testing.T) {
	h := (&api.Server{Log: slog.New(slog.NewTextHandler(io.Discard, nil)), Metrics: metrics.New("test", "test"),
		Modules: []api.Module{echoModule{}}}).Handler()
	get := func(id string) (answered, seen string) {
		req := httptest.NewRequest("GET", "/echo", nil)
		req.Header["X-Request-Id"] = []string{id}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		return rec.Header().Get("X-Request-Id"), rec.Body.String()
	}
	for _, id := range []string{"abc-DEF_0.9:1", strings.Repeat("k", 128), "0f3c2a7e-5b1d-4c8e-9a0b-1d2e3f4a5b6c"} {
		if got, seen := get(id); got != id || seen != id {
			t.Errorf("safe id %q: answered %q, handler saw %q", id, got, seen)
		}
	}
	for _, id := range []string{strings.Repeat("k", 129), strings.Repeat("a", 80000), "a b", "<script>", "é", "x/y", "a\x00b", "\xff", "id\"inject", "a,b"} {
		got, seen := get(id)
		if got == id || got == "" || len(got) > 128 || seen != got {
			t.Errorf("unsafe id %q: answered %q, handler saw %q", id[:min(len(id), 20)], got[:min(len(got), 20)], seen[:min(len(seen), 20)])
		}
	}
}
