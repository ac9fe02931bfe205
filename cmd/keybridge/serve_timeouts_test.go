package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"testing"
	"time"

	"github.com/keybridge/keybridge/config"
	"github.com/keybridge/keybridge/internal/testenv"
)

// The daemon's HTTP server closes a connection whose request body trickles
// past server.read_timeout, and a kept-alive connection idle past
// server.idle_timeout: neither holds a connection for as long as the client
// likes.
func TestServeCutsSlowAndIdleConnections(t *testing.T) {
	db := testenv.NewDatabase(t)
	addr := fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))
	cfg, err := config.Parse(nil, func(k string) (string, bool) {
		v, ok := map[string]string{
			"KEYBRIDGE_SERVER_LISTEN": addr, "KEYBRIDGE_DATABASE_URL": db.AppURL, "KEYBRIDGE_DATABASE_SYNC_URL": db.SyncURL,
			"KEYBRIDGE_KEYCLOAK_URL": "http://127.0.0.1:1", "KEYBRIDGE_KEYCLOAK_REALM": "fastn", "KEYBRIDGE_KEYCLOAK_CLIENT_SECRET": "x",
			"KEYBRIDGE_SYNC_ENABLED": "false", "KEYBRIDGE_WEBHOOK_SECRET": "w",
			"KEYBRIDGE_SERVER_READ_TIMEOUT": "500ms", "KEYBRIDGE_SERVER_IDLE_TIMEOUT": "500ms", "KEYBRIDGE_SERVER_WRITE_TIMEOUT": "5s",
		}[k]
		return v, ok
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- serve(ctx, cfg, slog.New(slog.NewTextHandler(io.Discard, nil))) }()
	defer func() {
		cancel()
		<-done
	}()
	testenv.Eventually(t, "keybridge serving", 30*time.Second, func() bool {
		res, err := http.Get("http://" + addr + "/healthz")
		if err == nil {
			res.Body.Close()
		}
		return err == nil
	})

	// closedWithin reports whether the server ends conn (answering first or
	// not) within limit.
	closedWithin := func(conn net.Conn, br *bufio.Reader, limit time.Duration) error {
		_ = conn.SetReadDeadline(time.Now().Add(limit))
		_, err := io.Copy(io.Discard, br)
		if errors.Is(err, os.ErrDeadlineExceeded) {
			return fmt.Errorf("connection still open after %s", limit)
		}
		return nil
	}

	// A body announced and never sent.
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprint(conn, "POST /webhooks/keycloak HTTP/1.1\r\nHost: keybridge\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{")
	if err := closedWithin(conn, bufio.NewReader(conn), 10*time.Second); err != nil {
		t.Errorf("a request whose body stalls past server.read_timeout (500ms): %v", err)
	}

	// A kept-alive connection left idle after its answer.
	idle, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer idle.Close()
	fmt.Fprint(idle, "GET /healthz HTTP/1.1\r\nHost: keybridge\r\n\r\n")
	br := bufio.NewReader(idle)
	res, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, res.Body)
	res.Body.Close()
	if res.StatusCode != http.StatusOK || res.Close {
		t.Fatalf("healthz: %d, close %v", res.StatusCode, res.Close)
	}
	if err := closedWithin(idle, br, 10*time.Second); err != nil {
		t.Errorf("a kept-alive connection idle past server.idle_timeout (500ms): %v", err)
	}
}

// The server serve builds carries every configured timeout.
func TestHTTPServerHasTheConfiguredTimeouts(t *testing.T) {
	c := config.Default().Server
	hs := newHTTPServer(context.Background(), c, http.NotFoundHandler())
	if hs.ReadHeaderTimeout != c.ReadHeaderTimeout || hs.ReadTimeout != c.ReadTimeout || hs.WriteTimeout != c.WriteTimeout || hs.IdleTimeout != c.IdleTimeout {
		t.Errorf("server timeouts: header %s, read %s, write %s, idle %s; config %+v", hs.ReadHeaderTimeout, hs.ReadTimeout, hs.WriteTimeout, hs.IdleTimeout, c)
	}
	if hs.WriteTimeout <= 0 || hs.ReadTimeout <= 0 || hs.IdleTimeout <= 0 {
		t.Errorf("default timeouts must be set: %+v", c)
	}
}
