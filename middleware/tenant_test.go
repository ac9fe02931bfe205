package middleware_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/keybridge/keybridge/mapping"
	"github.com/keybridge/keybridge/middleware"
)

// resolvesIn is a TenantAuthenticator over one subject's facts and synced
// memberships.
type resolvesIn struct {
	e      *mapping.Engine
	f      mapping.Facts
	synced []string
}

func (a resolvesIn) Authenticate(ctx context.Context, bearer string) (*mapping.Grant, error) {
	return a.AuthenticateIn(ctx, bearer, "")
}

func (a resolvesIn) AuthenticateIn(_ context.Context, _, tenant string) (*mapping.Grant, error) {
	return a.e.ResolveIn(a.f, nil, time.Now(), mapping.Placement{Named: tenant, Synced: a.synced})
}

// Issue 16: the middleware refuses, before opening any transaction, what
// would leave the tenant ambiguous or out of reach, and audits each: no
// tenant named by a caller of two (409), a tenant not theirs (403), the
// header twice (400), and a tenant an Authenticator that cannot choose one
// would not place the caller in (403).
func TestMiddlewareRefusesTenantChoices(t *testing.T) {
	e, err := mapping.New(mapping.Config{Preset: "fastn", Tenant: mapping.TenantSource{Organization: true},
		Rules: []mapping.Rule{{RealmRole: "dev", GrantRole: "Developer"}}})
	if err != nil {
		t.Fatal(err)
	}
	tess := mapping.Facts{Subject: "tess", Username: "tess", RealmRoles: []string{"dev"}}
	var events []middleware.Event
	mw := func(auth middleware.Authenticator) *middleware.Middleware {
		return &middleware.Middleware{Auth: auth, Decider: func() middleware.Decider { return e }, TenantHeader: "X-Keybridge-Tenant",
			Audit: func(_ context.Context, ev middleware.Event) { events = append(events, ev) }}
	}
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { t.Error("the handler ran") })
	two := resolvesIn{e, tess, []string{"acme", "globex"}}
	legacy := tokens{e: e, facts: map[string]mapping.Facts{"t": {Subject: "tess", Username: "tess", RealmRoles: []string{"dev"}, Organizations: []string{"acme"}}}}
	tests := []struct {
		name    string
		auth    middleware.Authenticator
		headers []string
		code    int
		errCode string
		reason  string
	}{
		{"two tenants, none named", two, nil, http.StatusConflict, "tenant_required", mapping.TenantRequiredReason},
		{"a tenant not theirs", two, []string{"initech"}, http.StatusForbidden, "tenant_forbidden", `"initech"`},
		{"the header twice", two, []string{"acme", "globex"}, http.StatusBadRequest, "invalid_request", "at most one X-Keybridge-Tenant"},
		{"a control character", two, []string{"ac\x01me"}, http.StatusBadRequest, "invalid_request", "control characters"},
		{"an authenticator that resolves the token's tenant only", legacy, []string{"globex"}, http.StatusForbidden, "tenant_forbidden", "token's tenant only"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			events = nil
			req := httptest.NewRequest("GET", "/", nil)
			req.Header.Set("Authorization", "Bearer t")
			for _, h := range tt.headers {
				req.Header.Add("X-Keybridge-Tenant", h)
			}
			rec := httptest.NewRecorder()
			mw(tt.auth).HTTP("workflows.list", []string{"workflows.read"}, handler).ServeHTTP(rec, req)
			if rec.Code != tt.code || !strings.Contains(rec.Body.String(), `"code":"`+tt.errCode+`"`) {
				t.Errorf("answer %d %s, want %d %s", rec.Code, rec.Body, tt.code, tt.errCode)
			}
			if len(events) != 1 || events[0].Outcome != "denied" || events[0].Grant == nil || events[0].Grant.Subject != "tess" ||
				!strings.Contains(events[0].Reason, tt.reason) || events[0].Status != tt.code {
				t.Errorf("audited %+v, want one denial by tess saying %q", events, tt.reason)
			}
		})
	}
}
