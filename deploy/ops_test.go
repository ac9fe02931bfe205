// Package deploy_test checks what operators deploy: alert rules with
// promtool, the Kubernetes manifests' invariants, that every metric the
// dashboard and alerts use exists, and a real Prometheus scraping a real
// keybridge.
package deploy_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"gopkg.in/yaml.v3"

	"github.com/keybridge/keybridge/internal/metrics"
	"github.com/keybridge/keybridge/internal/testenv"
)

func tool(t *testing.T, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("%s not installed (scripts/ensure-tools installs it)", name)
		}
		t.Skipf("%s not installed", name)
	}
	return p
}

func promtool(t *testing.T, args ...string) error {
	t.Helper()
	out, err := exec.Command(tool(t, "promtool"), args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%v: %s", err, out)
	}
	return nil
}

func TestAlertRules(t *testing.T) {
	if err := promtool(t, "check", "rules", "prometheus/alerts.yaml"); err != nil {
		t.Errorf("check rules: %v", err)
	}
	if err := promtool(t, "test", "rules", "prometheus/alerts_test.yaml"); err != nil {
		t.Errorf("test rules: %v", err)
	}
	if err := promtool(t, "check", "rules", "testdata/broken-alerts.yaml"); err == nil {
		t.Error("a broken rule file passed the check")
	}
	var rules struct {
		Groups []struct {
			Rules []struct {
				Alert       string            `yaml:"alert"`
				Annotations map[string]string `yaml:"annotations"`
			} `yaml:"rules"`
		} `yaml:"groups"`
	}
	b, _ := os.ReadFile("prometheus/alerts.yaml")
	if err := yaml.Unmarshal(b, &rules); err != nil {
		t.Fatal(err)
	}
	ops, _ := os.ReadFile("../docs/operations.md")
	for _, g := range rules.Groups {
		for _, r := range g.Rules {
			rb := r.Annotations["runbook"]
			anchor := "#" + strings.ToLower(r.Alert)
			if !strings.Contains(rb, "docs/operations.md"+anchor) {
				t.Errorf("%s: runbook does not link docs/operations.md%s", r.Alert, anchor)
			}
			if !strings.Contains(string(ops), "### "+r.Alert) {
				t.Errorf("%s: no section in docs/operations.md", r.Alert)
			}
		}
	}
}

var metricName = regexp.MustCompile(`keybridge_[a-z_]+`)

func TestDashboardAndAlertsUseExistingMetrics(t *testing.T) {
	known := metrics.New("t", "t").Names()
	for _, f := range []string{"grafana/keybridge.json", "prometheus/alerts.yaml"} {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		used := map[string]bool{}
		for _, n := range metricName.FindAllString(string(b), -1) {
			for _, suf := range []string{"_bucket", "_sum", "_count"} {
				if strings.HasSuffix(n, suf) && slices.Contains(known, strings.TrimSuffix(n, suf)) {
					n = strings.TrimSuffix(n, suf)
				}
			}
			used[n] = true
		}
		if len(used) < 5 {
			t.Errorf("%s: only %d metrics found", f, len(used))
		}
		for n := range used {
			if !slices.Contains(known, n) {
				t.Errorf("%s uses %s, which keybridge does not export", f, n)
			}
		}
	}
	var dash struct {
		Templating struct {
			List []struct{ Name string } `json:"list"`
		} `json:"templating"`
	}
	b, _ := os.ReadFile("grafana/keybridge.json")
	if err := json.Unmarshal(b, &dash); err != nil {
		t.Fatal(err)
	}
	var vars []string
	for _, v := range dash.Templating.List {
		vars = append(vars, v.Name)
	}
	if !slices.Contains(vars, "instance") || !slices.Contains(vars, "realm") {
		t.Errorf("dashboard variables %v, want instance and realm", vars)
	}
}

// checkManifest returns every broken invariant of one Kubernetes object.
func checkManifest(doc map[string]any) []string {
	var errs []string
	kind, _ := doc["kind"].(string)
	allowed := map[string]bool{"apiVersion": true, "kind": true, "metadata": true, "spec": true, "data": true, "automountServiceAccountToken": true}
	for k := range doc {
		if !allowed[k] {
			errs = append(errs, fmt.Sprintf("%s: unknown top-level field %q", kind, k))
		}
	}
	get := func(m any, path ...string) any {
		for _, p := range path {
			mm, ok := m.(map[string]any)
			if !ok {
				return nil
			}
			m = mm[p]
		}
		return m
	}
	switch kind {
	case "Secret":
		errs = append(errs, "a Secret is committed: reference secrets, never ship their values")
	case "Deployment":
		if r, _ := get(doc, "spec", "replicas").(int); r < 2 {
			errs = append(errs, fmt.Sprintf("Deployment: %d replicas, want at least 2", r))
		}
		pod := get(doc, "spec", "template", "spec")
		if nr, _ := get(pod, "securityContext", "runAsNonRoot").(bool); !nr {
			errs = append(errs, "Deployment: pod must run as non-root")
		}
		cs, _ := get(pod, "containers").([]any)
		if len(cs) == 0 {
			errs = append(errs, "Deployment: no containers")
		}
		for _, c := range cs {
			if p, _ := get(c, "livenessProbe", "httpGet", "path").(string); p != "/healthz" {
				errs = append(errs, "Deployment: liveness probe must be /healthz")
			}
			if p, _ := get(c, "readinessProbe", "httpGet", "path").(string); p != "/readyz" {
				errs = append(errs, "Deployment: readiness probe must be /readyz")
			}
			if get(c, "resources", "requests") == nil {
				errs = append(errs, "Deployment: resource requests missing")
			}
			if ro, _ := get(c, "securityContext", "readOnlyRootFilesystem").(bool); !ro {
				errs = append(errs, "Deployment: root filesystem must be read-only")
			}
			env, _ := get(c, "env").([]any)
			for _, e := range env {
				if _, literal := get(e, "value").(string); literal {
					errs = append(errs, fmt.Sprintf("Deployment: env %v has a literal value: use secretKeyRef", get(e, "name")))
				}
			}
		}
	case "Job":
		cs, _ := get(doc, "spec", "template", "spec", "containers").([]any)
		if len(cs) != 1 || fmt.Sprint(get(cs[0], "args")) != "[migrate up]" {
			errs = append(errs, "Job: the migration job must run keybridge migrate up")
		}
	case "ServiceMonitor":
		eps, _ := get(doc, "spec", "endpoints").([]any)
		if len(eps) == 0 || get(eps[0], "path") != "/metrics" {
			errs = append(errs, "ServiceMonitor: must scrape /metrics")
		}
	}
	return errs
}

func loadManifests(t *testing.T, files ...string) []map[string]any {
	t.Helper()
	var out []map[string]any
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		dec := yaml.NewDecoder(strings.NewReader(string(b)))
		for {
			var doc map[string]any
			if err := dec.Decode(&doc); errors.Is(err, io.EOF) {
				break
			} else if err != nil {
				t.Fatalf("%s: %v", f, err)
			}
			out = append(out, doc)
		}
	}
	return out
}

// kustomize pinned; run through the Go toolchain so nothing is installed.
const kustomize = "sigs.k8s.io/kustomize/kustomize/v5@v5.7.1"

func kustomizeBuild(t *testing.T, dir string) (string, error) {
	t.Helper()
	out, err := exec.Command("go", "run", kustomize, "build", dir).Output()
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return "", fmt.Errorf("%v: %s", err, ee.Stderr)
		}
		return "", err
	}
	return string(out), nil
}

func TestKubernetesManifests(t *testing.T) {
	built, err := kustomizeBuild(t, "kubernetes")
	if err != nil {
		t.Fatalf("kustomize build: %v", err)
	}
	f := filepath.Join(t.TempDir(), "built.yaml")
	if err := os.WriteFile(f, []byte(built), 0o644); err != nil {
		t.Fatal(err)
	}
	docs := loadManifests(t, f)
	if _, err := kustomizeBuild(t, "testdata/broken-kustomization"); err == nil {
		t.Error("kustomize built a kustomization that names a missing resource")
	}
	kinds := map[string]map[string]any{}
	for _, d := range docs {
		kinds[d["kind"].(string)] = d
		for _, e := range checkManifest(d) {
			t.Error(e)
		}
	}
	for _, want := range []string{"Deployment", "Service", "PodDisruptionBudget", "NetworkPolicy", "ServiceMonitor", "Job", "ConfigMap"} {
		if kinds[want] == nil {
			t.Errorf("no %s in the kustomization", want)
		}
	}
	podLabels := kinds["Deployment"]["spec"].(map[string]any)["template"].(map[string]any)["metadata"].(map[string]any)["labels"].(map[string]any)
	pdbSel := kinds["PodDisruptionBudget"]["spec"].(map[string]any)["selector"].(map[string]any)["matchLabels"].(map[string]any)
	for k, v := range pdbSel {
		if podLabels[k] != v {
			t.Errorf("the PodDisruptionBudget selector %s=%v does not select the Deployment's pods", k, v)
		}
	}
	broken := loadManifests(t, "testdata/broken-deployment.yaml")
	if errs := checkManifest(broken[0]); len(errs) < 4 {
		t.Errorf("a broken deployment passed with only %v", errs)
	}
}

func getJSON(url string, out any) error {
	res, err := http.Get(url)
	if err != nil {
		return err
	}
	defer res.Body.Close()
	return json.NewDecoder(res.Body).Decode(out)
}

// TestPrometheusScrapesKeybridge runs the real binary and a real Prometheus.
func TestPrometheusScrapesKeybridge(t *testing.T) {
	prom := tool(t, "prometheus")
	kc := testenv.RequireKeycloak(t)
	db := testenv.NewDatabase(t)
	dir := t.TempDir()
	bin := testenv.BuildDaemon(t)
	kbPort, promPort := testenv.FreePort(t), testenv.FreePort(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	kb := exec.CommandContext(ctx, bin, "serve", "-c", "../config/keybridge.example.yaml")
	kb.Env = append(os.Environ(), "KEYBRIDGE_SERVER_LISTEN=127.0.0.1:"+fmt.Sprint(kbPort), "KEYBRIDGE_DATABASE_URL="+db.AppURL,
		"KEYBRIDGE_DATABASE_SYNC_URL="+db.SyncURL, "KEYBRIDGE_KEYCLOAK_URL="+kc.URL, "KEYBRIDGE_KEYCLOAK_CLIENT_SECRET="+kc.ClientSecret,
		"KEYBRIDGE_SYNC_EVENTS_ENABLED=false")
	kbLog, _ := os.Create(filepath.Join(dir, "keybridge.log"))
	kb.Stdout, kb.Stderr = kbLog, kbLog
	if err := kb.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cancel(); _ = kb.Wait() }()
	alerts, _ := filepath.Abs("prometheus/alerts.yaml")
	cfg := fmt.Sprintf("global: {scrape_interval: 1s, evaluation_interval: 1s}\nrule_files: [%q]\nscrape_configs:\n  - job_name: keybridge\n    static_configs: [{targets: [\"127.0.0.1:%d\"], labels: {realm: fastn}}]\n", alerts, kbPort)
	if err := os.WriteFile(filepath.Join(dir, "prometheus.yml"), []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	pr := exec.CommandContext(ctx, prom, "--config.file="+filepath.Join(dir, "prometheus.yml"), "--storage.tsdb.path="+filepath.Join(dir, "data"),
		"--web.listen-address=127.0.0.1:"+fmt.Sprint(promPort))
	prLog, _ := os.Create(filepath.Join(dir, "prometheus.log"))
	pr.Stdout, pr.Stderr = prLog, prLog
	if err := pr.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cancel(); _ = pr.Wait() }()
	base := fmt.Sprintf("http://127.0.0.1:%d", promPort)
	deadline := time.Now().Add(60 * time.Second)
	want := []string{"keybridge_build_info", "keybridge_http_requests_total", "keybridge_database_up", "keybridge_sync_leader", "keybridge_sync_runs_total"}
	var missing []string
	for time.Now().Before(deadline) {
		missing = nil
		for _, m := range want {
			var r struct {
				Data struct {
					Result []any `json:"result"`
				} `json:"data"`
			}
			if err := getJSON(base+"/api/v1/query?query="+m, &r); err != nil || len(r.Data.Result) == 0 {
				missing = append(missing, m)
			}
		}
		if len(missing) == 0 {
			break
		}
		time.Sleep(500 * time.Millisecond)
	}
	if len(missing) > 0 {
		b, _ := os.ReadFile(filepath.Join(dir, "keybridge.log"))
		t.Fatalf("series never scraped: %v\nkeybridge log tail: %s", missing, tail(string(b)))
	}
	var rules struct {
		Data struct {
			Groups []struct {
				Rules []struct {
					Name, Health, LastError string
				} `json:"rules"`
			} `json:"groups"`
		} `json:"data"`
	}
	var n int
	for time.Now().Before(deadline) {
		n = 0
		_ = getJSON(base+"/api/v1/rules", &rules)
		ok := true
		for _, g := range rules.Data.Groups {
			for _, r := range g.Rules {
				n++
				if r.Health != "ok" {
					ok = false
				}
			}
		}
		if ok && n >= 12 {
			break
		}
		time.Sleep(500 * time.Millisecond)
	}
	for _, g := range rules.Data.Groups {
		for _, r := range g.Rules {
			if r.Health != "ok" {
				t.Errorf("rule %s health %s: %s", r.Name, r.Health, r.LastError)
			}
		}
	}
	if n < 12 {
		t.Errorf("only %d rules evaluated", n)
	}
}

func tail(s string) string {
	if len(s) > 2000 {
		return s[len(s)-2000:]
	}
	return s
}

func openOwner(t *testing.T, db testenv.Database) *pgxpool.Pool {
	t.Helper()
	p, err := pgxpool.New(context.Background(), db.OwnerURL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Close)
	return p
}
