package api_test

import (
	"context"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/keybridge/keybridge/internal/audit"
)

// Security item 5: denied checks are audited with the caller's resource
// text, which a body of up to 1 MB makes as large as the caller likes; the
// rows keep every field within its cap.
func TestDeniedChecksWithHugeResourcesAreAuditedCapped(t *testing.T) {
	e := newDecEnv(t, "")
	ctx, cancel := context.WithCancel(context.Background())
	writer := &audit.Writer{Pool: e.st.SysPool(), QueueSize: 1000, BatchSize: 100, FlushInterval: 20 * time.Millisecond,
		Depth: e.m.AuditQueueDepth, Dropped: e.m.AuditDropped, Written: e.m.AuditWritten, WriteErrors: e.m.AuditWriteErrors}
	done := make(chan struct{})
	go func() { _ = writer.Run(ctx); close(done) }()
	e.dec.Audit = writer
	tok := userToken(t, e.kc, e.kc.Realm, e.kc.PublicClientID, "dana")
	huge := strings.Repeat("z", 250000)
	body := `{"checks":[{"permission":"billing.manage","resource":{"type":"` + huge + `","id":"` + huge + `","owner":"` + huge + `"}},` +
		`{"any_of":["` + huge[:200000] + `"]}]}`
	req := httptest.NewRequest("POST", "/v1/check", strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+tok)
	rec := httptest.NewRecorder()
	e.h.ServeHTTP(rec, req)
	if rec.Code != 200 {
		t.Fatalf("check: %d %s", rec.Code, rec.Body.String()[:min(200, rec.Body.Len())])
	}
	cancel()
	<-done
	rows, err := e.st.SysPool().Query(context.Background(),
		`SELECT octet_length(action), octet_length(resource_type), octet_length(resource_id), octet_length(reason), reason FROM audit_log WHERE outcome = 'denied'`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	n := 0
	for rows.Next() {
		var action, rtype, rid, reasonLen int
		var reason string
		if err := rows.Scan(&action, &rtype, &rid, &reasonLen, &reason); err != nil {
			t.Fatal(err)
		}
		n++
		if action > audit.MaxActionBytes || rtype > audit.MaxResourceTypeBytes || rid > audit.MaxResourceIDBytes || reasonLen > audit.MaxReasonBytes {
			t.Errorf("row %d: action %d, resource_type %d, resource_id %d, reason %d bytes: over their caps", n, action, rtype, rid, reasonLen)
		}
	}
	if n != 2 {
		t.Errorf("%d denied rows, want 2", n)
	}
}
