package api_test

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/keybridge/keybridge/config"
	"github.com/keybridge/keybridge/internal/api"
	"github.com/keybridge/keybridge/internal/auth"
	"github.com/keybridge/keybridge/internal/identity"
	"github.com/keybridge/keybridge/internal/metrics"
	"github.com/keybridge/keybridge/mapping"
)

// identifyFacts resolves every token to one subject's facts, acting in
// the tenant the request names, else in active.
type identifyFacts struct {
	e      *mapping.Engine
	f      mapping.Facts
	active string
}

func (i identifyFacts) IdentifyIn(_ context.Context, _, tenant string) (identity.Caller, error) {
	if tenant == "" {
		tenant = i.active
	}
	g, err := i.e.ResolveIn(i.f, nil, time.Now(), mapping.Placement{Named: tenant})
	if err != nil {
		return identity.Caller{}, err
	}
	return identity.Caller{Token: &auth.Token{Subject: i.f.Subject, Expiry: time.Now().Add(time.Hour), Claims: map[string]any{}}, Grant: g}, nil
}

// Issue 12b: introspection answers for the token's active tenant, so its
// teams are that tenant's groups only: not another tenant's group paths the
// subject also belongs to, nor realm-wide groups outside the tenant prefix.
func TestIntrospectionTeamsStayInTheActiveTenant(t *testing.T) {
	e, err := mapping.New(demoRules)
	if err != nil {
		t.Fatal(err)
	}
	facts := mapping.Facts{Subject: "kim", RealmRoles: []string{"fastn-developer"},
		Groups: []string{"/customers/acme", "/customers/acme/eng", "/customers/globex", "/customers/globex/secret-project", "/staff"}}
	dec := &api.Decisions{Log: slog.New(slog.NewTextHandler(io.Discard, nil)), Metrics: metrics.New("test", "test"),
		Identify: identifyFacts{e, facts, "acme"}, Engine: func() *mapping.Engine { return e }, Clients: []config.Client{{ID: "app", Secret: "s3cret"}}}
	h := (&api.Server{Log: slog.New(slog.NewTextHandler(io.Discard, nil)), Metrics: metrics.New("test", "test"), Modules: []api.Module{dec}}).Handler()
	req := httptest.NewRequest("POST", "/oauth2/introspect", strings.NewReader(url.Values{"token": {"t"}}.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.SetBasicAuth("app", "s3cret")
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	var out struct {
		Active bool     `json:"active"`
		Tenant string   `json:"tenant_id"`
		Teams  []string `json:"teams"`
	}
	if err := json.Unmarshal(rec.Body.Bytes(), &out); err != nil || !out.Active {
		t.Fatalf("introspect: %d %s", rec.Code, rec.Body)
	}
	if want := []string{"/customers/acme", "/customers/acme/eng"}; out.Tenant != "acme" || !slices.Equal(out.Teams, want) {
		t.Errorf("tenant %q teams %v, want acme with %v", out.Tenant, out.Teams, want)
	}
}
