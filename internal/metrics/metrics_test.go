package metrics_test

import (
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/keybridge/keybridge/internal/metrics"
)

var update = flag.Bool("update", false, "rewrite the golden files")

// TestScenarioExposition plays a known scenario and compares the exposition
// of the sync and serving series with the golden text.
func TestScenarioExposition(t *testing.T) {
	m := metrics.New("1.2.3", "abc")
	m.SyncRuns.WithLabelValues("schedule", "success").Add(2)
	m.SyncRuns.WithLabelValues("schedule", "failure").Inc()
	m.SyncRuns.WithLabelValues("api", "guard_abort").Inc()
	m.SyncGuardAborts.WithLabelValues("people").Inc()
	m.SyncChanges.WithLabelValues("people", "create").Add(11)
	m.SyncLastSuccess.Set(1.7e9)
	m.Leader.Set(1)
	m.TokenFailures.WithLabelValues("expired").Add(3)
	m.TokenFailures.WithLabelValues("signature").Inc()
	m.Decisions.WithLabelValues("check", "allowed").Add(5)
	m.Decisions.WithLabelValues("check", "denied").Add(2)
	m.RateLimited.WithLabelValues("subject", "/v1/check").Inc()
	m.AuditDropped.Add(0)
	names := []string{"keybridge_sync_runs_total", "keybridge_sync_guard_aborts_total", "keybridge_sync_changes_total",
		"keybridge_sync_last_success_timestamp_seconds", "keybridge_sync_leader", "keybridge_token_verification_failures_total",
		"keybridge_decisions_total", "keybridge_ratelimit_rejections_total", "keybridge_audit_dropped_total"}
	golden := filepath.Join("testdata", "scenario.prom")
	if *update {
		// Write the current exposition of these series as the new golden.
		var b strings.Builder
		mfs, _ := m.Registry.Gather()
		for _, mf := range mfs {
			for _, n := range names {
				if mf.GetName() == n {
					b.WriteString(expose(t, m, n))
				}
			}
		}
		if err := os.WriteFile(golden, []byte(b.String()), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatalf("%v (run go test ./internal/metrics -update)", err)
	}
	if err := testutil.GatherAndCompare(m.Registry, strings.NewReader(string(want)), names...); err != nil {
		t.Error(err)
	}
}

func expose(t *testing.T, m *metrics.Metrics, name string) string {
	t.Helper()
	var out strings.Builder
	mfs, err := m.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		out.WriteString("# HELP " + name + " " + mf.GetHelp() + "\n# TYPE " + name + " " + strings.ToLower(mf.GetType().String()) + "\n")
		for _, mt := range mf.GetMetric() {
			var labels []string
			for _, l := range mt.GetLabel() {
				labels = append(labels, l.GetName()+`="`+l.GetValue()+`"`)
			}
			v := 0.0
			switch {
			case mt.Counter != nil:
				v = mt.Counter.GetValue()
			case mt.Gauge != nil:
				v = mt.Gauge.GetValue()
			}
			l := ""
			if len(labels) > 0 {
				l = "{" + strings.Join(labels, ",") + "}"
			}
			out.WriteString(name + l + " " + strings.TrimSuffix(strings.TrimSuffix(formatFloat(v), ".0"), "") + "\n")
		}
	}
	return out.String()
}

func formatFloat(v float64) string {
	return strings.TrimRight(strings.TrimRight(strconvFormat(v), "0"), ".")
}

func TestLabelsAreBounded(t *testing.T) {
	for _, n := range metrics.New("t", "t").Names() {
		if !strings.HasPrefix(n, "keybridge_") {
			t.Errorf("%s lacks the keybridge_ prefix", n)
		}
	}
}
