package testenv

import (
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// RepoRoot is the module's root directory, found from the test's working
// directory (its package directory).
func RepoRoot(t testing.TB) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatal("testenv: no go.mod above the working directory")
		}
		dir = parent
	}
}

// BuildDaemon builds cmd/keybridge into a temporary directory and returns
// the binary's path: tests run the daemon exactly as it ships.
func BuildDaemon(t testing.TB) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "keybridge")
	cmd := exec.Command("go", "build", "-o", bin, "./cmd/keybridge")
	cmd.Dir = RepoRoot(t)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build keybridge: %v\n%s", err, out)
	}
	return bin
}

// FreePort is a loopback TCP port nobody listens on right now.
func FreePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// Daemon is a running `keybridge serve`.
type Daemon struct {
	Cmd  *exec.Cmd
	Base string // http://127.0.0.1:port
}

// StartDaemon runs bin serve with the reference config
// (config/keybridge.example.yaml) pointed at db and kc on a free port; env
// adds or overrides KEYBRIDGE_* settings. The daemon is killed at cleanup.
func StartDaemon(t testing.TB, bin string, db Database, kc Keycloak, env ...string) *Daemon {
	t.Helper()
	return StartDaemonWith(t, bin, filepath.Join(RepoRoot(t), "config", "keybridge.example.yaml"), db, kc, env...)
}

// StartDaemonWith is StartDaemon with another config file: for settings the
// environment cannot carry, such as lists.
func StartDaemonWith(t testing.TB, bin, config string, db Database, kc Keycloak, env ...string) *Daemon {
	t.Helper()
	port := FreePort(t)
	cmd := exec.Command(bin, "serve", "-c", config)
	cmd.Env = append(os.Environ(), "KEYBRIDGE_SERVER_LISTEN=127.0.0.1:"+fmt.Sprint(port),
		"KEYBRIDGE_DATABASE_URL="+db.AppURL, "KEYBRIDGE_DATABASE_SYNC_URL="+db.SyncURL,
		"KEYBRIDGE_KEYCLOAK_URL="+kc.URL, "KEYBRIDGE_KEYCLOAK_CLIENT_SECRET="+kc.ClientSecret)
	cmd.Env = append(cmd.Env, env...)
	var logs strings.Builder
	cmd.Stdout, cmd.Stderr = &logs, &logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		if t.Failed() {
			t.Logf("keybridge output:\n%s", tail(logs.String(), 4000))
		}
	})
	return &Daemon{Cmd: cmd, Base: fmt.Sprintf("http://127.0.0.1:%d", port)}
}

// WaitReady waits until /readyz answers 200: database, first sync and
// signing keys all in place.
func (d *Daemon) WaitReady(t testing.TB, limit time.Duration) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for time.Now().Before(deadline) {
		if res, err := http.Get(d.Base + "/readyz"); err == nil {
			res.Body.Close()
			if res.StatusCode == http.StatusOK {
				return
			}
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Fatalf("keybridge at %s not ready within %s", d.Base, limit)
}

func tail(s string, n int) string {
	if len(s) > n {
		return "…" + s[len(s)-n:]
	}
	return s
}
