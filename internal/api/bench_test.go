package api_test

import (
	"fmt"
	"io"
	"math"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gin-gonic/gin"

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
}

// target is one endpoint under load: a method, headers and a body.
type target struct {
	url, method, body string
	headers           map[string]string
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
	out, err := exec.Command(bin, "-t", strconv.Itoa(wrkThreads), "-c", strconv.Itoa(wrkConnections), "-d", d.String(),
		"--latency", "-s", tg.script(b), tg.url).CombinedOutput()
	if err != nil {
		b.Fatalf("wrk: %v\n%s", err, out)
	}
	l, err := parseWrk(string(out))
	if err != nil {
		b.Fatalf("wrk output: %v\n%s", err, out)
	}
	return l
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

	gin.SetMode(gin.ReleaseMode)
	g := gin.New()
	g.POST("/noop", func(c *gin.Context) { c.JSON(http.StatusOK, gin.H{"ok": true}) })
	noop := httptest.NewServer(g)
	defer noop.Close()

	kcIntrospect := func(tok string) target {
		return target{url: kc.URL + "/realms/" + kc.Realm + "/protocol/openid-connect/token/introspect", method: "POST",
			body:    url.Values{"token": {tok}, "client_id": {kc.ClientID}, "client_secret": {kc.ClientSecret}}.Encode(),
			headers: map[string]string{"Content-Type": "application/x-www-form-urlencoded"}}
	}
	warmKeycloak(b, wrk, func() target { return kcIntrospect(freshToken(b, kc, "dana")) })

	// One token for every measured run (an access token lives 5 minutes).
	tok := freshToken(b, kc, "dana")
	checkBody := `{"permission":"workflows.deploy_prod","resource":{"type":"workflow","id":"w1","tenant":"acme"}}`
	bearer := map[string]string{"Authorization": "Bearer " + tok}
	basic := map[string]string{"Content-Type": "application/x-www-form-urlencoded",
		"Authorization": "Basic " + basicAuth("demo-api", "demo-api-secret")} // the reference config's introspection client
	targets := []struct {
		name string
		tg   target
	}{
		{"check", target{url: kb.Base + "/v1/check", method: "POST", body: checkBody, headers: bearer}},
		{"introspect", target{url: kb.Base + "/oauth2/introspect", method: "POST", body: url.Values{"token": {tok}}.Encode(), headers: basic}},
		{"reference_keycloak_introspect", kcIntrospect(tok)},
		{"reference_noop_gin", target{url: noop.URL + "/noop", method: "POST", body: checkBody, headers: bearer}},
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
		})
	}
	kcRPS, noopRPS := results["reference_keycloak_introspect"].rps, results["reference_noop_gin"].rps
	for _, name := range []string{"check", "introspect"} {
		b.Run("ratio_"+name, func(b *testing.B) {
			if kcRPS == 0 || noopRPS == 0 {
				b.Skip("a reference did not run")
			}
			b.ReportMetric(0, "ns/op")
			b.ReportMetric(results[name].rps/kcRPS, "x-keycloak")
			b.ReportMetric(results[name].rps/noopRPS, "of-noop")
		})
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
