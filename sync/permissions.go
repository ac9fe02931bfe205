package sync

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"strings"
	gosync "sync"
	"time"
)

// Issue 16: what the configured mapping needs of the service account,
// probed with one cheap request each, so a missing realm-management role
// is named (in the log, in /readyz as the check keycloak_permissions, in the
// failed run's error) instead of every sync failing on a bare 403.
//
//	needs                                  probe                           without it
//	mapping.tenant.organization            GET /organizations?max=1        403: manage-realm (Keycloak 26.5's organization API
//	                                                                        requires it); 404: organizations off in the realm
//	people.identity_provider (any mapping) GET /identity-provider/...?max=1 403: view-identity-providers; the column stays
//	                                                                        empty: logged (INFO) at start-up, never a failure

// ErrMissingAccess is what an *AccessError wraps.
var ErrMissingAccess = errors.New("the keycloak service account lacks access the mapping needs")

// Missing is one thing the service account lacks.
type Missing struct {
	// Role is the realm-management role to grant; "" when a realm setting
	// is missing instead.
	Role string
	// Needed says what needs it.
	Needed string
	// Fix says what to do.
	Fix string
}

// AccessError lists what the service account lacks for the mapping to sync.
type AccessError struct{ Missing []Missing }

func (e *AccessError) Error() string {
	parts := make([]string, len(e.Missing))
	for i, m := range e.Missing {
		parts[i] = m.Needed + ": " + m.Fix
	}
	return ErrMissingAccess.Error() + ": " + strings.Join(parts, "; ")
}

func (e *AccessError) Unwrap() error { return ErrMissingAccess }

// Roles lists the realm-management roles to grant.
func (e *AccessError) Roles() []string {
	var out []string
	for _, m := range e.Missing {
		if m.Role != "" {
			out = append(out, m.Role)
		}
	}
	return out
}

// accessState is the last probe's verdict, for readiness.
type accessState struct {
	mu      gosync.Mutex
	checked bool      // a probe gave a verdict (not merely "Keycloak unreachable")
	err     error     // the verdict: an *AccessError, or nil
	verdict string    // err's text, "" when nothing is missing
	at      time.Time // when the last probe ran
}

// accessRetry is how often readiness probes again while the verdict is a
// failure, or still unknown: an operator who grants the role sees the
// replica turn ready within it.
const accessRetry = 15 * time.Second

// probeAccess asks Keycloak, one request per need, whether the service
// account has what the mapping needs. It returns the blocking gaps as an
// *AccessError; optional ones (view-identity-providers) only in optional.
// Any other error means Keycloak could not tell (unreachable).
func (s *Service) probeAccess(ctx context.Context, identityProviders bool) (optional []Missing, err error) {
	var missing []Missing
	one := url.Values{"first": {"0"}, "max": {"1"}, "briefRepresentation": {"true"}}
	if s.Engine().Config().Tenant.Organization {
		var orgs []brief
		err := s.KC.get(ctx, "probe_organizations", "/organizations", one, &orgs)
		switch {
		case errors.Is(err, ErrForbidden):
			missing = append(missing, Missing{Role: "manage-realm", Needed: "mapping.tenant.organization",
				Fix: fmt.Sprintf("Keycloak answers 403 to the organization API: grant the service account of client %q the realm-management role manage-realm "+
					"(Clients → %s → Service account roles → Assign role)", s.KC.clientID, s.KC.clientID)})
		case errors.Is(err, ErrNotFound):
			missing = append(missing, Missing{Needed: "mapping.tenant.organization",
				Fix: "organizations are off in realm " + s.KC.realm + ": turn them on (Realm settings → General → Organizations)"})
		case err != nil:
			return nil, err
		}
	}
	if identityProviders {
		var idps []struct{}
		err := s.KC.get(ctx, "probe_identity_providers", "/identity-provider/instances", one, &idps)
		switch {
		case errors.Is(err, ErrForbidden):
			optional = append(optional, Missing{Role: "view-identity-providers", Needed: "people.identity_provider",
				Fix: fmt.Sprintf("Keycloak answers 403 to the identity-provider list, so every person's identity provider stays empty: grant the service account of client %q "+
					"the realm-management role view-identity-providers", s.KC.clientID)})
		case err != nil && !errors.Is(err, ErrNotFound):
			return nil, err
		}
	}
	if len(missing) > 0 {
		return optional, &AccessError{Missing: missing}
	}
	return optional, nil
}

// CheckAccess probes what the mapping needs of the service account (serve
// calls it at start-up; Run, for the organization API, before every full
// sync) and records the verdict for AccessReady. It logs what to grant
// whenever the verdict changes, and returns an *AccessError for a gap that
// stops syncs, the error of a probe that could not tell, or nil.
func (s *Service) CheckAccess(ctx context.Context) error {
	return s.checkAccess(ctx, true)
}

func (s *Service) checkAccess(ctx context.Context, identityProviders bool) error {
	optional, err := s.probeAccess(ctx, identityProviders)
	st := &s.access
	var ae *AccessError
	if err != nil && !errors.As(err, &ae) {
		st.mu.Lock()
		st.at = time.Now() // unknown: the last verdict stands
		st.mu.Unlock()
		return fmt.Errorf("check the keycloak service account's access: %w", err)
	}
	verdict := ""
	if ae != nil {
		verdict = ae.Error()
	}
	st.mu.Lock()
	changed, wasFailing := !st.checked || verdict != st.verdict, st.checked && st.verdict != ""
	st.checked, st.err, st.verdict, st.at = true, nil, verdict, time.Now()
	if ae != nil {
		st.err = ae
	}
	st.mu.Unlock()
	if s.Log != nil {
		switch {
		case changed && ae != nil:
			s.Log.ErrorContext(ctx, "keycloak service account lacks access: syncs fail until it is granted", "roles", ae.Roles(), "detail", verdict)
		case changed && wasFailing:
			s.Log.InfoContext(ctx, "keycloak service account has the access the mapping needs again")
		}
		for _, m := range optional {
			s.Log.InfoContext(ctx, "keycloak service account lacks an optional role", "role", m.Role, "needed_for", m.Needed, "detail", m.Fix)
		}
	}
	if ae != nil {
		return ae
	}
	return nil
}

// AccessReady is the readiness check keycloak_permissions: the last
// verdict, probed again (at most every accessRetry) while it is a failure or
// unknown. A probe that cannot reach Keycloak does not fail it: readiness
// says so elsewhere (first_sync, signing_keys).
func (s *Service) AccessReady(ctx context.Context) error {
	st := &s.access
	st.mu.Lock()
	checked, err, at := st.checked, st.err, st.at
	st.mu.Unlock()
	if checked && err == nil {
		return nil
	}
	if time.Since(at) >= accessRetry {
		perr := s.checkAccess(ctx, false)
		var ae *AccessError
		switch {
		case errors.As(perr, &ae):
			return ae
		case perr == nil:
			return nil
		}
	}
	return err
}
