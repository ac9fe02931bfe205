package api

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/gin-gonic/gin"
	"github.com/jackc/pgx/v5"

	"github.com/keybridge/keybridge/mapping"
)

// noGate lets every request through with no transaction.
type noGate struct{}

func (noGate) Require(string, ...string) gin.HandlerFunc { return func(c *gin.Context) { c.Next() } }
func (noGate) Tx(*gin.Context) pgx.Tx                    { return nil }
func (noGate) Grant(*gin.Context) *mapping.Grant         { return &mapping.Grant{Subject: "s"} }
func (noGate) Platform(*gin.Context) bool                { return false }

// An export that fails after part of it was sent — the database lost, or
// the rows stopping until the export's maximum duration cuts it — ends
// without the end of the stream: the client sees a broken answer and never
// takes the part for the whole export.
func TestExportFailingMidStreamBreaksTheAnswer(t *testing.T) {
	for name, fail := range map[string]func(ctx context.Context) error{
		"database lost": func(context.Context) error { return errors.New("conn closed") },
		"cut":           func(ctx context.Context) error { <-ctx.Done(); return ctx.Err() },
	} {
		t.Run(name, func(t *testing.T) { exportFailsMidStream(t, fail) })
	}
}

func exportFailsMidStream(t *testing.T, fail func(ctx context.Context) error) {
	m := &Management{Log: slog.New(slog.NewTextHandler(io.Discard, nil)), Gate: noGate{}, Export: AuditExport{MaxDuration: 300 * time.Millisecond}}
	gin.SetMode(gin.ReleaseMode)
	r := gin.New()
	r.GET("/export", func(c *gin.Context) {
		m.exportAudit(c, func(ctx context.Context, _ pgx.Tx) error {
			c.Header("Content-Type", "application/x-ndjson")
			for i := 0; i < 3; i++ {
				if _, err := c.Writer.WriteString(`{"row":1}` + "\n"); err != nil {
					return err
				}
			}
			c.Writer.Flush()
			return fail(ctx)
		})
	})
	srv := httptest.NewServer(r)
	defer srv.Close()
	res, err := (&http.Client{Timeout: 10 * time.Second}).Get(srv.URL + "/export")
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	body, err := io.ReadAll(res.Body)
	if res.StatusCode != http.StatusOK || strings.Count(string(body), "\n") != 3 {
		t.Fatalf("export: %d %q", res.StatusCode, body)
	}
	if err == nil {
		t.Fatal("an export failing mid-stream ended like a whole one")
	}
}
