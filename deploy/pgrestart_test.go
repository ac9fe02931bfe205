package deploy_test

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/keybridge/keybridge/internal/testenv"
)

// TestFaultPostgresRestartDuringChecks restarts the real PostgreSQL cluster
// while a daemon answers a stream of checks: checks keep answering, readiness
// reports the outage, and every audit entry of a denied check is written
// once PostgreSQL is back. It restarts the shared cluster, so it runs only
// under make reliability.
func TestFaultPostgresRestartDuringChecks(t *testing.T) {
	if os.Getenv("KEYBRIDGE_RELIABILITY") == "" {
		t.Skip("restarts the shared PostgreSQL cluster: run by make reliability")
	}
	kc := testenv.RequireKeycloak(t)
	db := testenv.NewDatabase(t)
	bin := testenv.BuildDaemon(t)
	d := startDaemon(t, bin, db, kc)
	testenv.Eventually(t, "ready", 60*time.Second, func() bool {
		res, err := http.Get(d.Base + "/readyz")
		if err != nil {
			return false
		}
		res.Body.Close()
		return res.StatusCode == 200
	})
	token := kc.UserToken(t, "dana")

	var answered, failed, notReady atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { // a steady load of denied checks, each audited
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			req, _ := http.NewRequest("POST", d.Base+"/v1/check", strings.NewReader(`{"permission":"billing.manage"}`))
			req.Header.Set("Authorization", "Bearer "+token)
			res, err := http.DefaultClient.Do(req)
			if err != nil || res.StatusCode != 200 {
				failed.Add(1)
			} else {
				answered.Add(1)
			}
			if res != nil {
				res.Body.Close()
			}
			time.Sleep(5 * time.Millisecond)
		}
	}()
	go func() {
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			if res, err := http.Get(d.Base + "/readyz"); err == nil {
				if res.StatusCode == 503 {
					notReady.Add(1)
				}
				res.Body.Close()
			}
			time.Sleep(100 * time.Millisecond)
		}
	}()
	time.Sleep(2 * time.Second)
	vers, _ := filepath.Glob("/usr/lib/postgresql/*")
	sort.Strings(vers)
	ver := filepath.Base(vers[len(vers)-1])
	if out, err := exec.Command("pg_ctlcluster", ver, "main", "stop", "-m", "fast").CombinedOutput(); err != nil {
		t.Fatalf("stop PostgreSQL: %v %s", err, out)
	}
	time.Sleep(3 * time.Second)
	if out, err := exec.Command("pg_ctlcluster", ver, "main", "start").CombinedOutput(); err != nil {
		t.Fatalf("start PostgreSQL: %v %s", err, out)
	}
	time.Sleep(3 * time.Second)
	close(stop)
	wg.Wait()
	if failed.Load() != 0 {
		t.Errorf("%d checks failed while PostgreSQL restarted (%d answered)", failed.Load(), answered.Load())
	}
	if notReady.Load() == 0 {
		t.Error("readiness never reported the outage")
	}
	pool := openOwner(t, db)
	var n int64
	testenv.Eventually(t, "every audit entry written", 60*time.Second, func() bool {
		_ = pool.QueryRow(context.Background(), `SELECT count(*) FROM audit_log WHERE action = 'check.billing.manage' AND outcome = 'denied'`).Scan(&n)
		return n >= answered.Load()
	})
	if n != answered.Load() {
		t.Errorf("%d audit rows for %d denied checks", n, answered.Load())
	}
	fmt.Printf("RELIABILITY faults tried=1 bad=%d note=PostgreSQL restarted under %d checks: %d failed, readiness 503 seen %d times, %d audit rows\n",
		failed.Load()+abs(answered.Load()-n), answered.Load(), failed.Load(), notReady.Load(), n)
}

func abs(x int64) int64 {
	if x < 0 {
		return -x
	}
	return x
}
