package api_test

import (
	"fmt"
	"io"
	"math"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime/debug"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/keybridge/keybridge/config"
	"github.com/keybridge/keybridge/internal/testenv"
)

// The decision benchmark measures keybridge as it ships: the real daemon
// (`keybridge serve`, the reference config, rate limits and audit on, its
// own process) under wrk, an external load generator written in C, so the
// client takes as little CPU from the server as possible. In the same run
// and with the same load (wrk -t2 -c16, same token, loopback) it measures
// the two references: Keycloak's own introspection endpoint and a Gin route
// that does nothing. Every target is warmed up first with the same load.
//
// Besides requests per second, every target is charged the CPU time its
// server process used during the measured run (utime+stime from /proc), and
// the benchmark reports requests per CPU-second. On a 2-core machine wrk
// shares the cores with the server, and takes more of them from a server
// answering 20 000 req/s than from one answering 2 500, so raw throughput
// understates the faster server; CPU per request compares the servers on
// equal resources. The no-op route runs in its own process (this test binary
// re-executed) with the daemon's GC setting, so it is charged the same way.
//
// Keycloak needs far more warming than a Go binary: its JIT keeps raising
// its introspection throughput for ~250 000 requests (measured on a
// 2-core machine after a restart: ~300 req/s in the first 5 s, a false
// plateau at ~750 req/s from 15 to 50 s, ~2 700 req/s after 150 s). A short
// warm-up would flatter keybridge by 3x or more, so Keycloak is loaded
// until it has served warmKeycloakRequests and its last three rounds agree
// within 5%.

const (
	wrkThreads     = 2
	wrkConnections = 16
	batchSize      = 100 // checks in the batch target: server.max_batch's default
)

var (
	wrkDuration           = envDuration("KEYBRIDGE_BENCH_DURATION", 5*time.Second)
	warmKeycloakRequests  = envInt("KEYBRIDGE_BENCH_KEYCLOAK_WARMUP_REQUESTS", 300_000)
	warmKeycloakLongest   = envDuration("KEYBRIDGE_BENCH_KEYCLOAK_WARMUP_MAX", 8*time.Minute)
	warmKeycloakAgreement = 0.05
)

func envInt(key string, def int) int {
	if n, err := strconv.Atoi(os.Getenv(key)); err == nil && n >= 0 {
		return n
	}
	return def
}

func envDuration(key string, def time.Duration) time.Duration {
	if d, err := time.ParseDuration(os.Getenv(key)); err == nil && d > 0 {
		return d
	}
	return def
}

// load is one wrk result.
type load struct {
	requests int
	rps      float64
	p50, p99 time.Duration
	non2xx   int
	cpu      time.Duration // CPU the server process used during the run; 0 if unknown
}

// perCPUSecond is the requests served per second of server CPU.
func (l load) perCPUSecond() float64 {
	if l.cpu <= 0 {
		return 0
	}
	return float64(l.requests) / l.cpu.Seconds()
}

// target is one endpoint under load: a method, headers and a body.
type target struct {
	url, method, body string
	headers           map[string]string
	pid               int // the serving process, for CPU accounting; 0 if unknown
}

func (tg target) script(b *testing.B) string {
	b.Helper()
	var s strings.Builder
	fmt.Fprintf(&s, "wrk.method = %q\n", tg.method)
	fmt.Fprintf(&s, "wrk.body = %q\n", tg.body)
	for k, v := range tg.headers {
		fmt.Fprintf(&s, "wrk.headers[%q] = %q\n", k, v)
	}
	path := filepath.Join(b.TempDir(), "target.lua")
	if err := os.WriteFile(path, []byte(s.String()), 0o600); err != nil {
		b.Fatal(err)
	}
	return path
}

func runWrk(b *testing.B, bin string, tg target, d time.Duration) load {
	b.Helper()
	script := tg.script(b)
	cpu0, cpuErr := processCPU(tg.pid)
	out, err := exec.Command(bin, "-t", strconv.Itoa(wrkThreads), "-c", strconv.Itoa(wrkConnections), "-d", d.String(),
		"--latency", "-s", script, tg.url).CombinedOutput()
	if err != nil {
		b.Fatalf("wrk: %v\n%s", err, out)
	}
	l, err := parseWrk(string(out))
	if err != nil {
		b.Fatalf("wrk output: %v\n%s", err, out)
	}
	if cpu1, err := processCPU(tg.pid); err == nil && cpuErr == nil {
		l.cpu = cpu1 - cpu0
	}
	return l
}

// processCPU is the user and system CPU time a process (all its threads) has
// used so far, from /proc/<pid>/stat.
func processCPU(pid int) (time.Duration, error) {
	if pid <= 0 {
		return 0, fmt.Errorf("no pid")
	}
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	return parseProcStatCPU(string(raw))
}

// parseProcStatCPU reads utime and stime (fields 14 and 15, in clock ticks
// of 1/100 s, USER_HZ on Linux) from a /proc/<pid>/stat line. The command
// name (field 2) is in parentheses and may hold spaces, so fields are
// counted after its closing parenthesis.
func parseProcStatCPU(stat string) (time.Duration, error) {
	i := strings.LastIndexByte(stat, ')')
	if i < 0 {
		return 0, fmt.Errorf("no command name in %q", stat)
	}
	f := strings.Fields(stat[i+1:]) // f[0] is field 3 (state)
	if len(f) < 13 {
		return 0, fmt.Errorf("short stat line %q", stat)
	}
	var ticks int64
	for _, s := range f[11:13] {
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return 0, fmt.Errorf("stat field %q: %w", s, err)
		}
		ticks += n
	}
	return time.Duration(ticks) * 10 * time.Millisecond, nil
}

// keycloakPID is the JVM serving Keycloak: the child of the launcher whose
// pid deploy/local/up writes to KEYBRIDGE_KEYCLOAK_PID_FILE. 0 if unknown.
func keycloakPID() int {
	raw, err := os.ReadFile(os.Getenv("KEYBRIDGE_KEYCLOAK_PID_FILE"))
	if err != nil {
		return 0
	}
	launcher, err := strconv.Atoi(strings.TrimSpace(string(raw)))
	if err != nil {
		return 0
	}
	children, _ := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", launcher, launcher))
	for _, c := range strings.Fields(string(children)) {
		if comm, _ := os.ReadFile("/proc/" + c + "/comm"); strings.TrimSpace(string(comm)) == "java" {
			pid, _ := strconv.Atoi(c)
			return pid
		}
	}
	if comm, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", launcher)); strings.TrimSpace(string(comm)) == "java" {
		return launcher // started without the shell launcher
	}
	return 0
}

var (
	wrkRPS     = regexp.MustCompile(`Requests/sec:\s+([0-9.]+)`)
	wrkCount   = regexp.MustCompile(`(\d+) requests in`)
	wrkPct     = regexp.MustCompile(`(?m)^\s+(50|99)%\s+([0-9.]+)(us|ms|s)\s*$`)
	wrkNon2xx  = regexp.MustCompile(`Non-2xx or 3xx responses:\s+(\d+)`)
	wrkSockErr = regexp.MustCompile(`Socket errors:.*`)
)

func parseWrk(out string) (load, error) {
	var l load
	m := wrkRPS.FindStringSubmatch(out)
	if m == nil {
		return l, fmt.Errorf("no Requests/sec")
	}
	l.rps, _ = strconv.ParseFloat(m[1], 64)
	if m := wrkCount.FindStringSubmatch(out); m != nil {
		l.requests, _ = strconv.Atoi(m[1])
	}
	for _, p := range wrkPct.FindAllStringSubmatch(out, -1) {
		v, _ := strconv.ParseFloat(p[2], 64)
		unit := map[string]time.Duration{"us": time.Microsecond, "ms": time.Millisecond, "s": time.Second}[p[3]]
		d := time.Duration(math.Round(v * float64(unit)))
		if p[1] == "50" {
			l.p50 = d
		} else {
			l.p99 = d
		}
	}
	if l.p50 == 0 || l.p99 == 0 {
		return l, fmt.Errorf("no latency distribution")
	}
	if m := wrkNon2xx.FindStringSubmatch(out); m != nil {
		l.non2xx, _ = strconv.Atoi(m[1])
	}
	if m := wrkSockErr.FindString(out); m != "" {
		return l, fmt.Errorf("%s", m)
	}
	return l, nil
}

func TestParseWrk(t *testing.T) {
	out := `Running 5s test @ http://127.0.0.1:8080/v1/check
  2 threads and 16 connections
  Latency Distribution
     50%  716.00us
     75%    1.03ms
     90%    1.62ms
     99%    4.06ms
  102626 requests in 5.00s, 45.11MB read
  Non-2xx or 3xx responses: 3
Requests/sec:  20525.17
Transfer/sec:      9.02MB
`
	l, err := parseWrk(out)
	if err != nil || l.rps != 20525.17 || l.p50 != 716*time.Microsecond || l.p99 != 4060*time.Microsecond || l.non2xx != 3 || l.requests != 102626 {
		t.Fatalf("parsed %+v, %v", l, err)
	}
	if _, err := parseWrk(out + "  Socket errors: connect 0, read 2, write 0, timeout 0\n"); err == nil {
		t.Error("socket errors not reported")
	}
	if _, err := parseWrk("Requests/sec: 1\n"); err == nil {
		t.Error("missing latency accepted")
	}
}

func BenchmarkDecisions(b *testing.B) {
	wrk, err := exec.LookPath("wrk")
	if err != nil {
		b.Fatal("wrk not found: make bench installs it (apt-get install -y wrk)")
	}
	kc := testenv.RequireKeycloak(b)
	db := testenv.NewDatabase(b)
	kb := testenv.StartDaemon(b, testenv.BuildDaemon(b), db, kc,
		// Rate limits stay on, far above the load, so their cost is measured.
		"KEYBRIDGE_RATE_LIMIT_PER_SUBJECT_RATE=10000000", "KEYBRIDGE_RATE_LIMIT_PER_SUBJECT_BURST=10000000",
		"KEYBRIDGE_RATE_LIMIT_PER_CLIENT_RATE=10000000", "KEYBRIDGE_RATE_LIMIT_PER_CLIENT_BURST=10000000",
		"KEYBRIDGE_LOG_LEVEL=warn")
	kb.WaitReady(b, 2*time.Minute)

	noop := startNoop(b)
	kcPID := keycloakPID()
	if kcPID == 0 {
		b.Log("Keycloak's JVM not found from KEYBRIDGE_KEYCLOAK_PID_FILE: its CPU is not measured")
	}

	kcIntrospect := func(tok string) target {
		return target{url: kc.URL + "/realms/" + kc.Realm + "/protocol/openid-connect/token/introspect", method: "POST",
			body:    url.Values{"token": {tok}, "client_id": {kc.ClientID}, "client_secret": {kc.ClientSecret}}.Encode(),
			headers: map[string]string{"Content-Type": "application/x-www-form-urlencoded"}, pid: kcPID}
	}
	warmKeycloak(b, wrk, func() target { return kcIntrospect(freshToken(b, kc, "dana")) })

	// One token for every measured run (an access token lives 5 minutes).
	tok := freshToken(b, kc, "dana")
	checkBody := `{"permission":"workflows.deploy_prod","resource":{"type":"workflow","id":"w1","tenant":"acme"}}`
	batchBody := `{"checks":[` + strings.TrimSuffix(strings.Repeat(checkBody+",", batchSize), ",") + `]}`
	bearer := map[string]string{"Authorization": "Bearer " + tok}
	basic := map[string]string{"Content-Type": "application/x-www-form-urlencoded",
		"Authorization": "Basic " + basicAuth("demo-api", "demo-api-secret")} // the reference config's introspection client
	targets := []struct {
		name string
		tg   target
	}{
		{"check", target{url: kb.Base + "/v1/check", method: "POST", body: checkBody, headers: bearer, pid: kb.Cmd.Process.Pid}},
		// Informational: one request carrying the default maximum batch of
		// checks, for callers that need many decisions at once.
		{"check_batch100", target{url: kb.Base + "/v1/check", method: "POST", body: batchBody, headers: bearer, pid: kb.Cmd.Process.Pid}},
		{"introspect", target{url: kb.Base + "/oauth2/introspect", method: "POST", body: url.Values{"token": {tok}}.Encode(), headers: basic, pid: kb.Cmd.Process.Pid}},
		{"reference_keycloak_introspect", kcIntrospect(tok)},
		{"reference_noop_gin", target{url: noop.Base + "/noop", method: "POST", body: checkBody, headers: bearer, pid: noop.Cmd.Process.Pid}},
	}
	// Prove each target answers what it should before loading it.
	for _, t := range targets {
		if code, body := once(b, t.tg); code != http.StatusOK || !strings.Contains(body, `true`) {
			b.Fatalf("%s answers %d %s", t.name, code, body)
		}
	}
	results := map[string]load{}
	for _, t := range targets {
		b.Run(t.name, func(b *testing.B) {
			runWrk(b, wrk, t.tg, wrkDuration) // warm-up, same load
			l := runWrk(b, wrk, t.tg, wrkDuration)
			if l.non2xx > 0 {
				b.Fatalf("%d answers were not 2xx", l.non2xx)
			}
			results[t.name] = l
			b.ReportMetric(0, "ns/op")
			b.ReportMetric(l.rps, "req/s")
			b.ReportMetric(float64(l.p50.Microseconds()), "p50-µs")
			b.ReportMetric(float64(l.p99.Microseconds()), "p99-µs")
			if l.cpu > 0 {
				b.ReportMetric(l.perCPUSecond(), "req/cpu-s")
			}
			if t.name == "check_batch100" {
				b.ReportMetric(l.rps*batchSize, "decisions/s")
			}
		})
	}
	kc0, noop0 := results["reference_keycloak_introspect"], results["reference_noop_gin"]
	for _, name := range []string{"check", "introspect"} {
		b.Run("ratio_"+name, func(b *testing.B) {
			if kc0.rps == 0 || noop0.rps == 0 {
				b.Skip("a reference did not run")
			}
			r := results[name]
			b.ReportMetric(0, "ns/op")
			b.ReportMetric(r.rps/kc0.rps, "x-keycloak")
			b.ReportMetric(r.rps/noop0.rps, "of-noop")
			if r.cpu > 0 && kc0.cpu > 0 && noop0.cpu > 0 {
				b.ReportMetric(r.perCPUSecond()/kc0.perCPUSecond(), "x-keycloak-per-cpu")
				b.ReportMetric(r.perCPUSecond()/noop0.perCPUSecond(), "of-noop-per-cpu")
			}
		})
	}
}

// noopListenEnv, when set, makes this test binary the no-op reference
// server instead of running tests.
const noopListenEnv = "KEYBRIDGE_BENCH_NOOP_LISTEN"

func TestMain(m *testing.M) {
	if addr := os.Getenv(noopListenEnv); addr != "" {
		serveNoop(addr)
		return
	}
	os.Exit(m.Run())
}

// serveNoop serves a Gin route that answers {"ok":true} to any POST, with
// the daemon's default GC setting, until the process is killed.
func serveNoop(addr string) {
	debug.SetGCPercent(config.Default().Server.GCPercent)
	gin.SetMode(gin.ReleaseMode)
	g := gin.New()
	g.POST("/noop", func(c *gin.Context) { c.JSON(http.StatusOK, gin.H{"ok": true}) })
	if err := http.ListenAndServe(addr, g); err != nil {
		fmt.Fprintln(os.Stderr, "noop server:", err)
		os.Exit(1)
	}
}

// startNoop re-executes this test binary as the no-op reference server.
func startNoop(b *testing.B) *testenv.Daemon {
	b.Helper()
	addr := fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(b))
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), noopListenEnv+"="+addr)
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	base := "http://" + addr
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if res, err := http.Post(base+"/noop", "application/json", nil); err == nil {
			res.Body.Close()
			break
		}
		if time.Now().After(deadline) {
			b.Fatal("the no-op server did not start")
		}
	}
	return &testenv.Daemon{Cmd: cmd, Base: base}
}

func TestParseProcStatCPU(t *testing.T) {
	// A command name with spaces and parentheses; utime 1234, stime 56.
	stat := "4242 (kc (main) x) S 1 4242 4242 0 -1 4194560 100 0 0 0 1234 56 0 0 20 0 42 0 100 0 0"
	if d, err := parseProcStatCPU(stat); err != nil || d != 12900*time.Millisecond {
		t.Fatalf("got %v, %v; want 12.9s", d, err)
	}
	if _, err := parseProcStatCPU("4242 (x) S 1 2"); err == nil {
		t.Error("short line accepted")
	}
	// Our own process: its CPU time grows while we spin (10 ms ticks).
	before, err := processCPU(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	after, x := before, 0
	for deadline := time.Now().Add(5 * time.Second); after <= before && time.Now().Before(deadline); {
		for i := 0; i < 1_000_000; i++ {
			x ^= i * i
		}
		if after, err = processCPU(os.Getpid()); err != nil {
			t.Fatal(err)
		}
	}
	if after <= before {
		t.Errorf("own CPU time stayed at %v while spinning (%d)", before, x)
	}
}

// warmKeycloak loads Keycloak's introspection in rounds, each with a new
// token, until it has served warmKeycloakRequests and the last three rounds
// agree within warmKeycloakAgreement, or warmKeycloakLongest has passed.
func warmKeycloak(b *testing.B, wrk string, next func() target) {
	b.Helper()
	start := time.Now()
	var served int
	var rounds []float64
	for {
		l := runWrk(b, wrk, next(), wrkDuration)
		served += l.requests
		rounds = append(rounds, l.rps)
		settled := false
		if n := len(rounds); n >= 3 {
			lo, hi := min(rounds[n-1], rounds[n-2], rounds[n-3]), max(rounds[n-1], rounds[n-2], rounds[n-3])
			settled = hi <= lo*(1+warmKeycloakAgreement)
		}
		if served >= warmKeycloakRequests && settled {
			b.Logf("Keycloak warmed: %d requests in %s, last rounds %.0f req/s", served, time.Since(start).Round(time.Second), rounds[len(rounds)-3:])
			return
		}
		if time.Since(start) > warmKeycloakLongest {
			b.Logf("Keycloak still not settled after %s (%d requests, rounds %.0f req/s): its figure below may be low", warmKeycloakLongest, served, rounds)
			return
		}
	}
}

// freshToken is a new access token for a demo user, never a cached one.
func freshToken(b *testing.B, kc testenv.Keycloak, user string) string {
	b.Helper()
	delete(tokenCache, kc.Realm+"/"+kc.PublicClientID+"/"+user)
	return userToken(b, kc, kc.Realm, kc.PublicClientID, user)
}

func basicAuth(id, secret string) string {
	r, _ := http.NewRequest("GET", "/", nil)
	r.SetBasicAuth(id, secret)
	return strings.TrimPrefix(r.Header.Get("Authorization"), "Basic ")
}

// once sends one request of the target and returns the status and body.
func once(b *testing.B, tg target) (int, string) {
	b.Helper()
	r, _ := http.NewRequest(tg.method, tg.url, strings.NewReader(tg.body))
	for k, v := range tg.headers {
		r.Header.Set(k, v)
	}
	res, err := http.DefaultClient.Do(r)
	if err != nil {
		b.Fatal(err)
	}
	defer res.Body.Close()
	body, _ := io.ReadAll(res.Body)
	return res.StatusCode, string(body)
}
