package deploy_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/keybridge/keybridge/internal/testenv"
)

// TestSecretsNeverLeak runs the real daemon at debug level and feeds it
// valid and hostile traffic; no token, client secret, webhook secret or
// password may appear in its logs, its error answers or its metrics.
func TestSecretsNeverLeak(t *testing.T) {
	kc := testenv.RequireKeycloak(t)
	db := testenv.NewDatabase(t)
	bin := testenv.BuildDaemon(t)
	port := testenv.FreePort(t)
	webhookSecret := "whsec-" + fmt.Sprint(time.Now().UnixNano())
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var logs bytes.Buffer
	cmd := exec.CommandContext(ctx, bin, "serve", "-c", "../config/keybridge.example.yaml")
	cmd.Env = append(os.Environ(), "KEYBRIDGE_SERVER_LISTEN=127.0.0.1:"+fmt.Sprint(port), "KEYBRIDGE_DATABASE_URL="+db.AppURL,
		"KEYBRIDGE_DATABASE_SYNC_URL="+db.SyncURL, "KEYBRIDGE_KEYCLOAK_URL="+kc.URL, "KEYBRIDGE_KEYCLOAK_CLIENT_SECRET="+kc.ClientSecret,
		"KEYBRIDGE_WEBHOOK_SECRET="+webhookSecret, "KEYBRIDGE_LOG_LEVEL=debug", "KEYBRIDGE_SYNC_EVENTS_ENABLED=false")
	cmd.Stdout, cmd.Stderr = &logs, &logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cancel(); _ = cmd.Wait() }()
	base := fmt.Sprintf("http://127.0.0.1:%d", port)
	for i := 0; ; i++ {
		res, err := http.Get(base + "/readyz")
		if err == nil {
			res.Body.Close()
			if res.StatusCode == 200 {
				break
			}
		}
		if i > 300 {
			t.Fatalf("not ready: %s", logs.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
	token := kc.UserToken(t, "dana")
	var answers bytes.Buffer
	do := func(method, path, body string, hdr map[string]string) {
		req, _ := http.NewRequest(method, base+path, strings.NewReader(body))
		for k, v := range hdr {
			req.Header.Set(k, v)
		}
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(&answers, res.Body)
		res.Body.Close()
	}
	form := map[string]string{"Content-Type": "application/x-www-form-urlencoded", "Authorization": "Basic ZGVtby1hcGk6ZGVtby1hcGktc2VjcmV0"}
	do("POST", "/oauth2/introspect", "token="+token, form)
	do("POST", "/oauth2/introspect", "token="+token+"x", form)
	do("POST", "/v1/check", `{"permission":"billing.manage"}`, map[string]string{"Authorization": "Bearer " + token})
	do("POST", "/v1/check", `{"permission":"x"}`, map[string]string{"Authorization": "Bearer " + token[:len(token)-4] + "AAAA"})
	do("GET", "/v1/people", "", map[string]string{"Authorization": "Bearer " + token})
	do("POST", "/webhooks/keycloak", `{"type":"admin.USER-UPDATE","uid":"1"}`, map[string]string{"X-Keycloak-Signature": "00"})
	do("GET", "/metrics", "", nil)
	// A config error that carries a password must not print it.
	out, _ := exec.Command(bin, "config", "validate").CombinedOutput()
	cfgErr := string(out)
	cmdEnv := exec.Command(bin, "config", "validate")
	cmdEnv.Env = append(os.Environ(), "KEYBRIDGE_DATABASE_URL=postgres://u:hunter2-secret@h:notaport/db")
	out2, _ := cmdEnv.CombinedOutput()
	cancel()
	_ = cmd.Wait()

	secrets := map[string]string{"access token": token, "token signature": token[strings.LastIndex(token, ".")+1:],
		"client secret": kc.ClientSecret, "webhook secret": webhookSecret, "user password": kc.UserPassword,
		"database password (app)": password(db.AppURL), "database password (sync)": password(db.SyncURL), "introspection secret": "demo-api-secret",
		"config password": "hunter2-secret"}
	haystacks := map[string]string{"logs": logs.String(), "answers and metrics": answers.String(), "config errors": cfgErr + string(out2)}
	probes, leaks := 0, 0
	for where, text := range haystacks {
		for what, s := range secrets {
			probes++
			if s != "" && strings.Contains(text, s) {
				leaks++
				t.Errorf("%s leaked into the %s", what, where)
			}
		}
	}
	if !strings.Contains(logs.String(), `"reason":"signature"`) {
		t.Error("the refused token's reason is not in the log (the test would prove nothing)")
	}
	fmt.Printf("RELIABILITY secrets tried=%d bad=%d\n", probes, leaks)
}

func password(dsn string) string {
	u, err := url.Parse(dsn)
	if err != nil || u.User == nil {
		return ""
	}
	p, _ := u.User.Password()
	return p
}
