package testenv

import (
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// PgBouncer is Debian's pgbouncer, in transaction pooling mode, in front of
// one test database: each transaction may run on any server connection, and
// nothing is reset between them.
type PgBouncer struct {
	// AppURL reaches the database as the runtime role through the pooler,
	// with pgx told to use unnamed statements (pgbouncer before 1.21 cannot
	// carry prepared statements across transactions).
	AppURL string
}

// StartPgBouncer runs pgbouncer on a free loopback port with
// default_pool_size=poolSize server connections per user and database, as a
// child process killed at cleanup (no systemd, no daemon mode). A missing
// pgbouncer skips the test, or fails it under CI=true (scripts/ensure-tools
// installs it).
func StartPgBouncer(t testing.TB, db Database, poolSize int) PgBouncer {
	t.Helper()
	bin, err := exec.LookPath("pgbouncer")
	if err != nil {
		bin = "/usr/sbin/pgbouncer"
		if _, err := os.Stat(bin); err != nil {
			msg := "pgbouncer not installed (scripts/ensure-tools installs it)"
			if os.Getenv("CI") == "true" {
				t.Fatal(msg)
			}
			t.Skip(msg)
		}
	}
	app, err := url.Parse(db.AppURL)
	if err != nil {
		t.Fatal(err)
	}
	pw, _ := app.User.Password()
	host, pgPort, err := net.SplitHostPort(app.Host)
	if err != nil {
		t.Fatal(err)
	}
	port := FreePort(t)
	// Not t.TempDir(): its parent is private to root, and pgbouncer runs
	// as nobody when the tests run as root.
	dir, err := os.MkdirTemp("", "keybridge-pgbouncer-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	ini := fmt.Sprintf(`[databases]
%s = host=%s port=%s dbname=%s

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = %d
unix_socket_dir =
auth_type = plain
auth_file = %s
pool_mode = transaction
default_pool_size = %d
min_pool_size = 0
reserve_pool_size = 0
max_client_conn = 200
ignore_startup_parameters = extra_float_digits
`, db.Name, host, pgPort, db.Name, port, filepath.Join(dir, "userlist.txt"), poolSize)
	users := fmt.Sprintf("%q %q\n", app.User.Username(), pw)
	if err := os.WriteFile(filepath.Join(dir, "pgbouncer.ini"), []byte(ini), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "userlist.txt"), []byte(users), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, filepath.Join(dir, "pgbouncer.ini"))
	// pgbouncer refuses to run as root: run it as nobody, owning its files.
	if os.Geteuid() == 0 {
		u, err := user.Lookup("nobody")
		if err != nil {
			t.Fatalf("pgbouncer runs as nobody: %v", err)
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		for _, f := range []string{dir, filepath.Join(dir, "pgbouncer.ini"), filepath.Join(dir, "userlist.txt")} {
			if err := os.Chown(f, uid, gid); err != nil {
				t.Fatal(err)
			}
		}
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}}
	}
	var logs strings.Builder
	cmd.Stdout, cmd.Stderr = &logs, &logs
	if err := cmd.Start(); err != nil {
		t.Fatalf("start pgbouncer: %v", err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-exited
		if t.Failed() {
			t.Logf("pgbouncer output:\n%s", tail(logs.String(), 4000))
		}
	})
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
		if err == nil {
			c.Close()
			break
		}
		select {
		case <-exited:
			t.Fatalf("pgbouncer exited: %s", logs.String())
		default:
		}
		if time.Now().After(deadline) {
			_ = cmd.Process.Kill()
			<-exited
			t.Fatalf("pgbouncer not listening on %s within 10s: %s", addr, logs.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	through := *app
	through.Host = addr
	q := through.Query()
	q.Set("default_query_exec_mode", "exec")
	through.RawQuery = q.Encode()
	return PgBouncer{AppURL: through.String()}
}
