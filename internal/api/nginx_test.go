package api_test

import (
	"bufio"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/keybridge/keybridge/internal/api"
	"github.com/keybridge/keybridge/internal/ratelimit"
)

func freePort(t *testing.T) int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// nginxConf is the auth_request setup docs/operations.md documents: the
// original method and URI, the client address in X-Forwarded-For, every
// identity header copied, and keybridge's rate-limit answer (403 with
// X-Auth-Error: rate_limited) turned back into 429.
const nginxConf = `
worker_processes 1;
user root;
error_log %[1]s/error.log warn;
pid %[1]s/nginx.pid;
events { worker_connections 64; }
http {
  access_log off;
  client_body_temp_path %[1]s/body; proxy_temp_path %[1]s/proxy; fastcgi_temp_path %[1]s/fcgi; uwsgi_temp_path %[1]s/uwsgi; scgi_temp_path %[1]s/scgi;
  server {
    listen 127.0.0.1:%[2]d;
    location / {
      auth_request /_keybridge;
      auth_request_set $auth_user $upstream_http_x_auth_user;
      auth_request_set $auth_tenant $upstream_http_x_auth_tenant;
      auth_request_set $auth_roles $upstream_http_x_auth_roles;
      auth_request_set $auth_error $upstream_http_x_auth_error;
      auth_request_set $auth_retry_after $upstream_http_retry_after;
      error_page 403 = @keybridge_denied;
      proxy_set_header X-Auth-User $auth_user;
      proxy_set_header X-Auth-Tenant $auth_tenant;
      proxy_set_header X-Auth-Roles $auth_roles;
      proxy_pass %[3]s;
    }
    location @keybridge_denied {
      if ($auth_error = rate_limited) {
        add_header Retry-After $auth_retry_after always;
        return 429;
      }
      return 403;
    }
    location = /_keybridge {
      internal;
      proxy_pass %[4]s/v1/forward-auth;
      proxy_pass_request_body off;
      proxy_set_header Content-Length "";
      proxy_set_header X-Original-URI $request_uri;
      proxy_set_header X-Original-Method $request_method;
      proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
    }
  }
}`

// startNginx runs nginx with nginxConf in front of upstream and keybridge
// and answers its base URL.
func startNginx(t *testing.T, upstream, keybridge string) string {
	t.Helper()
	bin, err := exec.LookPath("nginx")
	if err != nil {
		bin = "/usr/sbin/nginx"
		if _, err := os.Stat(bin); err != nil {
			if os.Getenv("CI") == "true" {
				t.Fatal("nginx is not installed (scripts/ensure-tools installs it)")
			}
			t.Skip("nginx not installed")
		}
	}
	dir := t.TempDir()
	port := freePort(t)
	cf := filepath.Join(dir, "nginx.conf")
	if err := os.WriteFile(cf, []byte(fmt.Sprintf(nginxConf, dir, port, upstream, keybridge)), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "-p", dir, "-c", cf, "-g", "daemon off;")
	out, _ := os.Create(filepath.Join(dir, "stdout"))
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	for i := 0; ; i++ {
		if c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", port)); err == nil {
			c.Close()
			break
		}
		if i > 100 {
			b, _ := os.ReadFile(filepath.Join(dir, "error.log"))
			t.Fatalf("nginx did not start: %s", b)
		}
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Sprintf("http://127.0.0.1:%d", port)
}

// rawRequest sends a request line as is (no client-side cleaning of the
// target) from the local address from, and answers the response.
func rawRequest(t *testing.T, base, from, method, target string, headers map[string]string) *http.Response {
	t.Helper()
	d := net.Dialer{Timeout: 5 * time.Second}
	if from != "" {
		d.LocalAddr = &net.TCPAddr{IP: net.ParseIP(from)}
	}
	conn, err := d.Dial("tcp", strings.TrimPrefix(base, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s HTTP/1.1\r\nHost: app.example\r\nConnection: close\r\n", method, target)
	for k, v := range headers {
		fmt.Fprintf(&b, "%s: %s\r\n", k, v)
	}
	b.WriteString("\r\n")
	if _, err := io.WriteString(conn, b.String()); err != nil {
		t.Fatal(err)
	}
	res, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("%s %q: %v", method, target, err)
	}
	body, _ := io.ReadAll(res.Body)
	res.Body.Close()
	res.Body = io.NopCloser(strings.NewReader(string(body)))
	return res
}

// TestNginxAuthRequest runs a real nginx with auth_request pointed at
// /v1/forward-auth in front of a test upstream.
func TestNginxAuthRequest(t *testing.T) {
	e := newDecEnv(t, "")
	// nginx connects from 127.0.0.1: the trusted proxy whose
	// X-Forwarded-For names the client.
	kb := httptest.NewServer((&api.Server{Log: slog.New(slog.NewTextHandler(io.Discard, nil)), Metrics: e.m,
		Modules: []api.Module{e.dec}, TrustedProxies: []string{"127.0.0.1/32"}}).Handler())
	defer kb.Close()
	var hits atomic.Int64
	upstream := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		fmt.Fprintf(w, "upstream saw user=%s tenant=%s roles=%s", r.Header.Get("X-Auth-User"), r.Header.Get("X-Auth-Tenant"), r.Header.Get("X-Auth-Roles"))
	}))
	defer upstream.Close()
	base := startNginx(t, upstream.URL, kb.URL)
	dana := userToken(t, e.kc, e.kc.Realm, e.kc.PublicClientID, "dana")
	victor := userToken(t, e.kc, e.kc.Realm, e.kc.PublicClientID, "victor")
	tests := []struct {
		name, method, path, token string
		want                      int
		spoof                     bool // the client adds Traefik's headers, naming a public URI and GET
	}{
		{"allowed", "POST", "/workflows/7/deploy", dana, 200, false},
		{"no token", "GET", "/workflows/7", "", 401, false},
		{"forbidden", "POST", "/workflows/7/deploy", victor, 403, false},
		{"client headers naming another URI", "POST", "/workflows/7/deploy", "", 401, true},
		{"client headers naming another method", "POST", "/workflows/7/deploy", victor, 403, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req, _ := http.NewRequest(tt.method, base+tt.path, nil)
			if tt.token != "" {
				req.Header.Set("Authorization", "Bearer "+tt.token)
			}
			if tt.spoof {
				req.Header.Set("X-Forwarded-Uri", "/public/logo.png")
				req.Header.Set("X-Forwarded-Method", "GET")
			}
			res, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			res.Body.Close()
			if res.StatusCode != tt.want {
				t.Fatalf("%d, want %d", res.StatusCode, tt.want)
			}
		})
	}

	// The identity headers always overwrite the client's own: on a public
	// route too, where there is no one.
	t.Run("identity headers", func(t *testing.T) {
		spoof := map[string]string{"X-Auth-User": "admin", "X-Auth-Tenant": "globex", "X-Auth-Roles": `"Owner"`}
		res := rawRequest(t, base, "", "GET", "/public/logo.png", spoof)
		body, _ := io.ReadAll(res.Body)
		if res.StatusCode != 200 || string(body) != "upstream saw user= tenant= roles=" {
			t.Errorf("public route with the client's own identity headers: %d %s", res.StatusCode, body)
		}
		spoof["Authorization"] = "Bearer " + dana
		res = rawRequest(t, base, "", "GET", "/workflows/7", spoof)
		body, _ = io.ReadAll(res.Body)
		if res.StatusCode != 200 || !strings.Contains(string(body), `tenant=acme roles="Developer"`) || strings.Contains(string(body), "user=admin") {
			t.Errorf("dana with the client's own identity headers: %d %s", res.StatusCode, body)
		}
	})

	// Whatever nginx lets through of a non-canonical target, keybridge
	// refuses it (400, which auth_request turns into 500) and the upstream
	// never sees it.
	t.Run("non-canonical paths", func(t *testing.T) {
		reachedKeybridge := 0
		for _, tt := range nonCanonicalPaths {
			if tt.reason == "not_origin_form" {
				continue // nginx's $request_uri of an absolute-form target is its origin-form path
			}
			refusedBefore := testutil.ToFloat64(e.m.ForwardAuthRefused.WithLabelValues(tt.reason))
			hitsBefore := hits.Load()
			res := rawRequest(t, base, "", tt.method, tt.uri, map[string]string{"Authorization": "Bearer " + dana})
			if res.StatusCode < 400 {
				t.Errorf("%s %q: %d through nginx", tt.name, tt.uri, res.StatusCode)
			}
			if hits.Load() != hitsBefore {
				t.Errorf("%s %q: reached the upstream", tt.name, tt.uri)
			}
			switch refused := testutil.ToFloat64(e.m.ForwardAuthRefused.WithLabelValues(tt.reason)) - refusedBefore; {
			case refused == 1:
				reachedKeybridge++
				if res.StatusCode != 500 {
					t.Errorf("%s %q: keybridge refused it, nginx answered %d, want 500", tt.name, tt.uri, res.StatusCode)
				}
			case refused != 0 || res.StatusCode != 400:
				t.Errorf("%s %q: %d, neither refused by nginx (400) nor by keybridge (reason %s)", tt.name, tt.uri, res.StatusCode, tt.reason)
			}
		}
		if reachedKeybridge == 0 {
			t.Error("nginx refused every non-canonical target itself: keybridge's refusal is not exercised")
		}
		t.Logf("%d of %d non-canonical targets reached keybridge through nginx", reachedKeybridge, len(nonCanonicalPaths))
	})

	// One client flooding does not push the others into 429, and the
	// flood is answered 429 with Retry-After, never 500.
	t.Run("rate limit per client", func(t *testing.T) {
		e.dec.PerClient = &ratelimit.Limiter{Rate: 0.01, Burst: 3}
		defer func() { e.dec.PerClient = &ratelimit.Limiter{} }()
		codes := map[int]int{}
		for range 8 {
			// The client's own X-Forwarded-For does not buy it a fresh bucket.
			res := rawRequest(t, base, "127.0.0.2", "GET", "/public/logo.png", map[string]string{"X-Forwarded-For": "203.0.113.9"})
			codes[res.StatusCode]++
			if res.StatusCode == 429 && res.Header.Get("Retry-After") == "" {
				t.Error("429 without Retry-After")
			}
		}
		if codes[200] != 3 || codes[429] != 5 {
			t.Errorf("flooding client: %v, want 3×200 and 5×429", codes)
		}
		for _, from := range []string{"127.0.0.3", "127.0.0.4"} {
			if res := rawRequest(t, base, from, "GET", "/public/logo.png", nil); res.StatusCode != 200 {
				t.Errorf("another client (%s) while the first floods: %d, want 200", from, res.StatusCode)
			}
		}
	})
}
