package deploy_test

import (
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/keybridge/keybridge/internal/testenv"
)

// TestProfilerOnlyOnItsLoopbackListener: server.debug_listen serves Go's
// profiler on its own listener, and the API listener never does, although
// importing net/http/pprof registers it on Go's default mux.
func TestProfilerOnlyOnItsLoopbackListener(t *testing.T) {
	kc := testenv.RequireKeycloak(t)
	db := testenv.NewDatabase(t)
	debugAddr := fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))
	d := testenv.StartDaemon(t, testenv.BuildDaemon(t), db, kc, "KEYBRIDGE_SERVER_DEBUG_LISTEN="+debugAddr)
	d.WaitReady(t, time.Minute)

	get := func(url string) (int, string) {
		t.Helper()
		res, err := http.Get(url)
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		b, _ := io.ReadAll(res.Body)
		return res.StatusCode, string(b)
	}
	if code, body := get("http://" + debugAddr + "/debug/pprof/cmdline"); code != 200 || !strings.Contains(body, "serve") {
		t.Errorf("profiler cmdline: %d %q", code, body)
	}
	if code, body := get("http://" + debugAddr + "/debug/pprof/heap?debug=1"); code != 200 || !strings.Contains(body, "heap profile") {
		t.Errorf("profiler heap: %d %.80q", code, body)
	}
	for _, path := range []string{"/debug/pprof/", "/debug/pprof/cmdline", "/debug/pprof/heap"} {
		if code, _ := get(d.Base + path); code != http.StatusNotFound {
			t.Errorf("API listener answers %s with %d, want 404", path, code)
		}
	}
}
