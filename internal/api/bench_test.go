package api_test

import (
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"sort"
	"strings"
	gosync "sync"
	"testing"
	"time"

	"github.com/gin-gonic/gin"
)

// loadBench drives one endpoint over loopback with keep-alive clients in
// parallel and reports throughput and latency quantiles. Every decision
// benchmark below runs beside two references in the same process and run:
// Keycloak's own introspection endpoint, and a Gin route that does nothing.
func loadBench(b *testing.B, newReq func() *http.Request) {
	b.Helper()
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64, MaxConnsPerHost: 64}}
	var mu gosync.Mutex
	var all []time.Duration
	b.SetParallelism(8)
	b.ResetTimer()
	start := time.Now()
	b.RunParallel(func(pb *testing.PB) {
		var lat []time.Duration
		for pb.Next() {
			t0 := time.Now()
			res, err := client.Do(newReq())
			if err != nil {
				b.Error(err)
				return
			}
			_, _ = io.Copy(io.Discard, res.Body)
			res.Body.Close()
			if res.StatusCode != 200 {
				b.Errorf("status %d", res.StatusCode)
				return
			}
			lat = append(lat, time.Since(t0))
		}
		mu.Lock()
		all = append(all, lat...)
		mu.Unlock()
	})
	elapsed := time.Since(start)
	b.StopTimer()
	sort.Slice(all, func(i, j int) bool { return all[i] < all[j] })
	if len(all) == 0 {
		return
	}
	b.ReportMetric(float64(len(all))/elapsed.Seconds(), "req/s")
	b.ReportMetric(float64(all[len(all)/2].Microseconds()), "p50-µs")
	b.ReportMetric(float64(all[len(all)*99/100].Microseconds()), "p99-µs")
}

func BenchmarkDecisions(b *testing.B) {
	e := newDecEnvB(b)
	srv := httptest.NewServer(e.h)
	defer srv.Close()
	tok := userTokenB(b, e)
	checkBody := `{"permission":"workflows.deploy_prod","resource":{"type":"workflow","id":"w1","tenant":"acme"}}`
	b.Run("check", func(b *testing.B) {
		loadBench(b, func() *http.Request {
			r, _ := http.NewRequest("POST", srv.URL+"/v1/check", strings.NewReader(checkBody))
			r.Header.Set("Authorization", "Bearer "+tok)
			return r
		})
	})
	form := url.Values{"token": {tok}}.Encode()
	b.Run("introspect", func(b *testing.B) {
		loadBench(b, func() *http.Request {
			r, _ := http.NewRequest("POST", srv.URL+"/oauth2/introspect", strings.NewReader(form))
			r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
			r.SetBasicAuth("api", "api-secret")
			return r
		})
	})
	b.Run("reference_keycloak_introspect", func(b *testing.B) {
		kcForm := url.Values{"token": {tok}, "client_id": {e.kc.ClientID}, "client_secret": {e.kc.ClientSecret}}.Encode()
		loadBench(b, func() *http.Request {
			r, _ := http.NewRequest("POST", e.kc.URL+"/realms/"+e.kc.Realm+"/protocol/openid-connect/token/introspect", strings.NewReader(kcForm))
			r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
			return r
		})
	})
	b.Run("reference_noop_gin", func(b *testing.B) {
		gin.SetMode(gin.ReleaseMode)
		g := gin.New()
		g.POST("/noop", func(c *gin.Context) { c.JSON(200, gin.H{"ok": true}) })
		noop := httptest.NewServer(g)
		defer noop.Close()
		loadBench(b, func() *http.Request {
			r, _ := http.NewRequest("POST", noop.URL+"/noop", strings.NewReader(checkBody))
			r.Header.Set("Authorization", "Bearer "+tok)
			return r
		})
	})
}
