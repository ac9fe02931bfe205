package api_test

import (
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"
)

func freePort(t *testing.T) int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// TestNginxAuthRequest runs a real nginx with auth_request pointed at
// /v1/forward-auth in front of a test upstream.
func TestNginxAuthRequest(t *testing.T) {
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
	e := newDecEnv(t, "")
	kb := httptest.NewServer(e.h)
	defer kb.Close()
	upstream := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "upstream saw user=%s tenant=%s", r.Header.Get("X-Auth-User"), r.Header.Get("X-Auth-Tenant"))
	}))
	defer upstream.Close()
	dir := t.TempDir()
	port := freePort(t)
	conf := fmt.Sprintf(`
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
      proxy_set_header X-Auth-User $auth_user;
      proxy_set_header X-Auth-Tenant $auth_tenant;
      proxy_pass %[3]s;
    }
    location = /_keybridge {
      internal;
      proxy_pass %[4]s/v1/forward-auth;
      proxy_pass_request_body off;
      proxy_set_header Content-Length "";
      proxy_set_header X-Original-URI $request_uri;
      proxy_set_header X-Original-Method $request_method;
    }
  }
}`, dir, port, upstream.URL, kb.URL)
	cf := filepath.Join(dir, "nginx.conf")
	if err := os.WriteFile(cf, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "-p", dir, "-c", cf, "-g", "daemon off;")
	out, _ := os.Create(filepath.Join(dir, "stdout"))
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
	base := fmt.Sprintf("http://127.0.0.1:%d", port)
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
}
