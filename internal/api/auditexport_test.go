package api_test

import (
	"bufio"
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/keybridge/keybridge/internal/api"
	"github.com/keybridge/keybridge/internal/audit"
	"github.com/keybridge/keybridge/internal/auth"
	"github.com/keybridge/keybridge/internal/identity"
	"github.com/keybridge/keybridge/internal/ratelimit"
	"github.com/keybridge/keybridge/internal/testenv"
	"github.com/keybridge/keybridge/middleware"
)

// exportRows is how many audit rows the export tests seed: several MB of
// export, more than the sockets between a stalled client and the server
// hold, so a stalled export really waits on its reader.
const exportRows = 60000

type exportEnv struct {
	*decEnv
	srv   *httptest.Server
	audit *testenv.AuditLog
}

// newExportEnv serves decisions and management through the real
// middleware on a real listener (the HTTP server's write timeout as given,
// 0 for none),
// with exports bounded as given, over a runtime pool of 8 connections and
// an audit log of exportRows rows in acme.
func newExportEnv(t *testing.T, maxConcurrent int, maxDuration, writeTimeout time.Duration) *exportEnv {
	t.Helper()
	e := newDecEnv(t, "")
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	if _, err := e.st.SysPool().Exec(context.Background(), `INSERT INTO audit_log (occurred_at, tenant_id, actor_id, actor_name, action, resource_type, resource_id, outcome, request_id, reason, entry_id)
		SELECT now() - i * interval '1 second', 'acme', 'u-' || i, 'person ' || i, 'people.assign', 'person', 'p-' || i, 'success', 'req-' || i, 'seeded for the export tests', gen_random_uuid()
		FROM generate_series(1, $1) AS i`, exportRows); err != nil {
		t.Fatal(err)
	}
	resolver := &identity.Resolver{Verifier: &auth.Cached{Next: e.verifier, Size: 100}, Dir: e.dir, MaxCache: 100}
	gate := &middleware.Middleware{Auth: resolver, Decider: func() middleware.Decider { return e.dir.Engine() }, DB: e.st.AppPool(),
		Limiter: &ratelimit.Limiter{}}
	au := &testenv.AuditLog{}
	mgmt := &api.Management{Log: log, Gate: gate, Engine: e.dir.Engine, Mapping: demoRules, System: e.st, Audit: au,
		Export: api.AuditExport{DB: e.st.AppPool(), MaxConcurrent: maxConcurrent, MaxDuration: maxDuration}}
	dec := &api.Decisions{Log: log, Metrics: e.m, Identify: resolver, Engine: e.dir.Engine, Audit: au, MaxBatch: 100,
		PerSubject: &ratelimit.Limiter{}, PerClient: &ratelimit.Limiter{}}
	srv := httptest.NewUnstartedServer((&api.Server{Log: log, Metrics: e.m, Modules: []api.Module{mgmt, dec}}).Handler())
	srv.Config.WriteTimeout = writeTimeout
	srv.Start()
	t.Cleanup(srv.Close)
	return &exportEnv{decEnv: e, srv: srv, audit: au}
}

// slowExport asks for an export over a connection whose receive buffer is
// tiny, reads the status and headers (a few hundred bytes) and stalls: the
// body is left unread until the caller reads or closes it.
func (e *exportEnv) slowExport(t *testing.T, token, format string) (*http.Response, net.Conn, error) {
	t.Helper()
	d := net.Dialer{Control: func(_, _ string, c syscall.RawConn) error {
		return c.Control(func(fd uintptr) { _ = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4096) })
	}}
	conn, err := d.Dial("tcp", e.srv.Listener.Addr().String())
	if err != nil {
		return nil, nil, err
	}
	req, _ := http.NewRequest("GET", e.srv.URL+"/v1/audit?format="+format, nil)
	req.Header.Set("Authorization", "Bearer "+token)
	_ = conn.SetDeadline(time.Now().Add(15 * time.Second))
	if err := req.Write(conn); err != nil {
		conn.Close()
		return nil, nil, err
	}
	res, err := http.ReadResponse(bufio.NewReaderSize(conn, 256), req)
	if err != nil {
		conn.Close()
		return nil, nil, err
	}
	return res, conn, nil
}

func (e *exportEnv) get(token, method, path, body string) (int, string, error) {
	req, _ := http.NewRequest(method, e.srv.URL+path, strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+token)
	client := &http.Client{Timeout: 20 * time.Second}
	res, err := client.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	return res.StatusCode, string(b), err
}

// exportLines counts the rows of an export body (without a CSV header).
func exportLines(format, body string) int {
	n := strings.Count(body, "\n")
	if format == "csv" && n > 0 {
		n--
	}
	return n
}

// Two dozen exports by a Viewer whose reader stalls after a few bytes do not
// take the runtime pool from decisions and the management API: exports
// beyond the export budget are answered 503 with Retry-After at once, and
// a people list and a permission check still answer.
func TestStalledAuditExportsLeaveTheAPIItsConnections(t *testing.T) {
	// No server write timeout: the export budget alone must protect.
	e := newExportEnv(t, 2, time.Minute, 0)
	viewer := userToken(t, e.kc, e.kc.Realm, e.kc.PublicClientID, "victor")
	admin := userToken(t, e.kc, e.kc.Realm, e.kc.PublicClientID, "adam")
	dana := userToken(t, e.kc, e.kc.Realm, e.kc.PublicClientID, "dana")

	const n = 24
	var wg sync.WaitGroup
	var mu sync.Mutex
	statuses := map[int]int{}
	var conns []net.Conn
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			res, conn, err := e.slowExport(t, viewer, []string{"csv", "ndjson"}[i%2])
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				statuses[0]++
				t.Logf("export %d: %v", i, err)
				return
			}
			conns = append(conns, conn)
			statuses[res.StatusCode]++
			if res.StatusCode == http.StatusServiceUnavailable && res.Header.Get("Retry-After") == "" {
				t.Errorf("export %d: 503 without Retry-After", i)
			}
		}()
	}
	wg.Wait()
	if statuses[http.StatusOK] < 1 || statuses[http.StatusOK] > 2 || statuses[http.StatusOK]+statuses[http.StatusServiceUnavailable] != n {
		t.Errorf("exports answered %v, want 1 or 2 streaming (the budget) and the rest 503", statuses)
	}

	// Each admitted export holds one connection: its own transaction, the
	// request's having gone back to the pool.
	testenv.Eventually(t, "one runtime-pool connection per stalled export", 10*time.Second, func() bool {
		return int(e.st.AppPool().Stat().AcquiredConns()) <= statuses[http.StatusOK]
	})

	// While the admitted exports stall, the API answers.
	for i := range 5 {
		if code, body, err := e.get(admin, "GET", "/v1/people?limit=5", ""); err != nil || code != http.StatusOK {
			t.Fatalf("people list %d with exports stalled: %d %v %.200s", i, code, err, body)
		}
		if code, body, err := e.get(dana, "POST", "/v1/check", `{"permission":"workflows.read"}`); err != nil || code != http.StatusOK || !strings.Contains(body, `"allowed":true`) {
			t.Fatalf("check %d with exports stalled: %d %v %.200s", i, code, err, body)
		}
	}
}

// An export whose reader stalls is cut at the export's maximum duration:
// the connection closes short of the last row, its database connection
// returns to the pool, the cut is audited, and the next export runs.
func TestStalledAuditExportIsCutAtMaxDuration(t *testing.T) {
	e := newExportEnv(t, 1, time.Second, 30*time.Second)
	viewer := userToken(t, e.kc, e.kc.Realm, e.kc.PublicClientID, "victor")
	res, conn, err := e.slowExport(t, viewer, "ndjson")
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if res.StatusCode != http.StatusOK {
		t.Fatalf("export: %d", res.StatusCode)
	}
	time.Sleep(3 * time.Second) // stalled past the maximum duration
	body, err := io.ReadAll(res.Body)
	if err == nil {
		t.Fatalf("a stalled export ran to its end (%d rows) past its 1s maximum duration", exportLines("ndjson", string(body)))
	}
	if got := exportLines("ndjson", string(body)); got >= exportRows {
		t.Errorf("cut export delivered %d rows, want fewer than %d", got, exportRows)
	}
	testenv.Eventually(t, "the cut export's database connection back in the pool", 10*time.Second, func() bool {
		return e.st.AppPool().Stat().AcquiredConns() == 0
	})
	if e.audit.Count("audit.list", audit.Failure) != 1 {
		t.Errorf("the cut export was not audited as a failure: %+v", e.audit.Entries())
	}
	code, body2, err := e.get(viewer, "GET", "/v1/audit?format=csv", "")
	if err != nil || code != http.StatusOK || exportLines("csv", body2) != exportRows {
		t.Errorf("export after the cut: %d %v, %d rows of %d", code, err, exportLines("csv", body2), exportRows)
	}
}

// The server's write timeout does not cut an export that outlasts it while
// its reader keeps reading: the export moves its own deadline to its
// maximum duration, and every row arrives.
func TestAuditExportOutlastsTheServerWriteTimeout(t *testing.T) {
	e := newExportEnv(t, 2, time.Minute, 300*time.Millisecond)
	viewer := userToken(t, e.kc, e.kc.Realm, e.kc.PublicClientID, "victor")
	for _, format := range []string{"csv", "ndjson"} {
		res, conn, err := e.slowExport(t, viewer, format)
		if err != nil {
			t.Fatal(err)
		}
		if res.StatusCode != http.StatusOK {
			t.Fatalf("%s export: %d", format, res.StatusCode)
		}
		head := make([]byte, 1024)
		if _, err := io.ReadFull(res.Body, head); err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Second) // a reader pausing, past the server's write timeout
		rest, err := io.ReadAll(res.Body)
		conn.Close()
		if got := exportLines(format, string(head)+string(rest)); err != nil || got != exportRows {
			t.Errorf("%s export: %d rows of %d, %v", format, got, exportRows, err)
		}
	}
	// A plain client reading at full speed gets every row too.
	code, body, err := e.get(viewer, "GET", "/v1/audit?format=ndjson", "")
	if err != nil || code != http.StatusOK || exportLines("ndjson", body) != exportRows {
		t.Errorf("export: %d %v, %d rows of %d", code, err, exportLines("ndjson", body), exportRows)
	}
}
