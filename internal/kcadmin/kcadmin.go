// Package kcadmin writes to Keycloak on behalf of the management API:
// inviting people and writing their enabled flag back. Reading the realm is
// sync's job; this package only changes what an admin asked to change.
package kcadmin

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/Nerzal/gocloak/v13"
)

// ErrExists is returned when a user with the email or username exists.
var ErrExists = errors.New("keycloak: user already exists")

// ErrAttributeDropped is returned when Keycloak's user profile discarded an
// attribute the invitee needs (its tenant).
var ErrAttributeDropped = errors.New("keycloak dropped the user attribute")

// ErrNoMail is returned when the realm has no SMTP server, so Keycloak can't
// send its action email.
var ErrNoMail = errors.New("keycloak: the realm has no SMTP server configured, so no invitation email can be sent; the user can be sent a link by an admin or the realm's mail settings completed")

// Admin is a Keycloak admin client acting as keybridge's service account.
type Admin struct {
	gc                      *gocloak.GoCloak
	base                    string
	realm, clientID, secret string
	mu                      sync.Mutex
	token                   string
	expires                 time.Time
	now                     func() time.Time
}

// New returns an Admin for the realm at baseURL.
func New(baseURL, realm, clientID, secret string, timeout time.Duration) *Admin {
	gc := gocloak.NewClient(strings.TrimRight(baseURL, "/"))
	gc.RestyClient().SetTimeout(timeout)
	return &Admin{gc: gc, base: strings.TrimRight(baseURL, "/"), realm: realm, clientID: clientID, secret: secret, now: time.Now}
}

func (a *Admin) accessToken(ctx context.Context) (string, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.token != "" && a.now().Before(a.expires) {
		return a.token, nil
	}
	jwt, err := a.gc.LoginClient(ctx, a.clientID, a.secret, a.realm)
	if err != nil {
		return "", fmt.Errorf("keycloak client login: %w", scrub(err))
	}
	a.token = jwt.AccessToken
	// Refresh well before expiry so a request never carries a dying token.
	a.expires = a.now().Add(time.Duration(jwt.ExpiresIn)*time.Second*3/4 - time.Second)
	return a.token, nil
}

// Invitee is a person to create.
type Invitee struct {
	Email     string
	FirstName string
	LastName  string
	Groups    []string // Keycloak group ids
	Realm     []string // realm role names
	// Attributes are set on the user (a tenant attribute, say).
	Attributes map[string][]string
	// Organization is the id of a Keycloak organization to join.
	Organization string
}

// CreateUser creates a disabled-password user and returns its id.
func (a *Admin) CreateUser(ctx context.Context, in Invitee) (string, error) {
	tok, err := a.accessToken(ctx)
	if err != nil {
		return "", err
	}
	enabled, verified := true, false
	email := strings.ToLower(in.Email)
	u := gocloak.User{Username: &email, Email: &email, Enabled: &enabled, EmailVerified: &verified,
		RequiredActions: &[]string{"VERIFY_EMAIL", "UPDATE_PASSWORD"}}
	if in.FirstName != "" {
		u.FirstName = &in.FirstName
	}
	if in.LastName != "" {
		u.LastName = &in.LastName
	}
	if len(in.Attributes) > 0 {
		u.Attributes = &in.Attributes
	}
	id, err := a.gc.CreateUser(ctx, tok, a.realm, u)
	if err != nil {
		if status(err) == http.StatusConflict {
			return "", ErrExists
		}
		return "", fmt.Errorf("create user: %w", a.scrub(err))
	}
	for _, g := range in.Groups {
		if err := a.gc.AddUserToGroup(ctx, tok, a.realm, id, g); err != nil {
			return id, fmt.Errorf("add user to group %s: %w", g, a.scrub(err))
		}
	}
	if len(in.Attributes) > 0 {
		// Keycloak's user profile drops attributes it does not declare
		// (unless unmanaged attributes are enabled): check they were kept.
		got, err := a.gc.GetUserByID(ctx, tok, a.realm, id)
		if err != nil {
			return id, fmt.Errorf("read back user: %w", a.scrub(err))
		}
		for k := range in.Attributes {
			if got.Attributes == nil || len((*got.Attributes)[k]) == 0 {
				return id, fmt.Errorf("%w: %q (declare it in the realm's user profile, or enable unmanaged attributes)", ErrAttributeDropped, k)
			}
		}
	}
	if in.Organization != "" {
		// gocloak has no organizations API: the member is added by id, the
		// body being the id as a JSON string.
		res, err := a.gc.GetRequestWithBearerAuth(ctx, tok).SetHeader("Content-Type", "application/json").SetBody(`"` + id + `"`).
			Post(a.base + "/admin/realms/" + url.PathEscape(a.realm) + "/organizations/" + url.PathEscape(in.Organization) + "/members")
		switch {
		case err != nil:
			return id, fmt.Errorf("add user to organization: %w", a.scrub(err))
		case res.StatusCode() == http.StatusForbidden:
			return id, fmt.Errorf("add user to organization %s: status 403 (the service account needs realm-management manage-realm to add organization members)", in.Organization)
		case res.StatusCode() != http.StatusCreated && res.StatusCode() != http.StatusNoContent && res.StatusCode() != http.StatusOK:
			return id, fmt.Errorf("add user to organization %s: status %d", in.Organization, res.StatusCode())
		}
	}
	if len(in.Realm) > 0 {
		var roles []gocloak.Role
		for _, name := range in.Realm {
			r, err := a.gc.GetRealmRole(ctx, tok, a.realm, name)
			if err != nil {
				return id, fmt.Errorf("get realm role %s: %w", name, a.scrub(err))
			}
			roles = append(roles, *r)
		}
		if err := a.gc.AddRealmRoleToUser(ctx, tok, a.realm, id, roles); err != nil {
			return id, fmt.Errorf("assign realm roles: %w", a.scrub(err))
		}
	}
	return id, nil
}

// MailConfigured reports whether the realm can send email.
func (a *Admin) MailConfigured(ctx context.Context) (bool, error) {
	tok, err := a.accessToken(ctx)
	if err != nil {
		return false, err
	}
	r, err := a.gc.GetRealm(ctx, tok, a.realm)
	if err != nil {
		return false, fmt.Errorf("get realm: %w", a.scrub(err))
	}
	return r.SMTPServer != nil && (*r.SMTPServer)["host"] != "", nil
}

// SendInvitation asks Keycloak to send its own action email (verify email,
// set password). ErrNoMail when the realm has no mail server.
func (a *Admin) SendInvitation(ctx context.Context, userID string) error {
	ok, err := a.MailConfigured(ctx)
	if err != nil {
		return err
	}
	if !ok {
		return ErrNoMail
	}
	tok, err := a.accessToken(ctx)
	if err != nil {
		return err
	}
	lifespan := int((72 * time.Hour).Seconds())
	err = a.gc.ExecuteActionsEmail(ctx, tok, a.realm, gocloak.ExecuteActionsEmail{
		UserID: &userID, Lifespan: &lifespan, Actions: &[]string{"VERIFY_EMAIL", "UPDATE_PASSWORD"}})
	if err != nil {
		return fmt.Errorf("send actions email: %w", a.scrub(err))
	}
	return nil
}

// SetEnabled writes a person's enabled flag back to Keycloak.
func (a *Admin) SetEnabled(ctx context.Context, userID string, enabled bool) error {
	tok, err := a.accessToken(ctx)
	if err != nil {
		return err
	}
	u, err := a.gc.GetUserByID(ctx, tok, a.realm, userID)
	if err != nil {
		return fmt.Errorf("get user: %w", a.scrub(err))
	}
	u.Enabled = &enabled
	if err := a.gc.UpdateUser(ctx, tok, a.realm, *u); err != nil {
		return fmt.Errorf("update user: %w", a.scrub(err))
	}
	return nil
}

// GroupRoles lists the roles membership in a group gives: its effective
// realm roles and its effective roles of the named clients ("client:role"),
// as Keycloak computes them (composites expanded, the parent groups'
// mappings included). An invitation asks before it adds the invitee to a
// group, so the grant ceiling can judge what the group would give.
func (a *Admin) GroupRoles(ctx context.Context, groupID string, clients []string) (realm, client []string, err error) {
	tok, err := a.accessToken(ctx)
	if err != nil {
		return nil, nil, err
	}
	get := func(path string, q url.Values, out any) error {
		res, err := a.gc.GetRequestWithBearerAuth(ctx, tok).SetQueryParamsFromValues(q).SetResult(out).
			Get(a.base + "/admin/realms/" + url.PathEscape(a.realm) + path)
		switch {
		case err != nil:
			return a.scrub(err)
		case res.StatusCode() == http.StatusUnauthorized:
			a.mu.Lock()
			a.token = ""
			a.mu.Unlock()
			return fmt.Errorf("status %d", res.StatusCode())
		case res.StatusCode() != http.StatusOK:
			return fmt.Errorf("status %d", res.StatusCode())
		}
		return nil
	}
	type named struct {
		Name string `json:"name"`
	}
	brief := url.Values{"briefRepresentation": {"true"}}
	g := "/groups/" + url.PathEscape(groupID) + "/role-mappings"
	var rs []named
	if err := get(g+"/realm/composite", brief, &rs); err != nil {
		return nil, nil, fmt.Errorf("realm roles of group %s: %w", groupID, err)
	}
	for _, r := range rs {
		realm = append(realm, r.Name)
	}
	for _, clientID := range clients {
		var cs []struct {
			ID       string `json:"id"`
			ClientID string `json:"clientId"`
		}
		if err := get("/clients", url.Values{"clientId": {clientID}}, &cs); err != nil {
			return nil, nil, fmt.Errorf("find client %s: %w", clientID, err)
		}
		for _, c := range cs {
			if c.ClientID != clientID {
				continue
			}
			var crs []named
			if err := get(g+"/clients/"+url.PathEscape(c.ID)+"/composite", brief, &crs); err != nil {
				return nil, nil, fmt.Errorf("roles of client %s of group %s: %w", clientID, groupID, err)
			}
			for _, r := range crs {
				client = append(client, clientID+":"+r.Name)
			}
		}
	}
	return realm, client, nil
}

// Enabled reports whether a user is enabled in Keycloak now.
func (a *Admin) Enabled(ctx context.Context, userID string) (bool, error) {
	tok, err := a.accessToken(ctx)
	if err != nil {
		return false, err
	}
	u, err := a.gc.GetUserByID(ctx, tok, a.realm, userID)
	if err != nil {
		return false, fmt.Errorf("get user: %w", a.scrub(err))
	}
	return u.Enabled != nil && *u.Enabled, nil
}

// DeleteUser removes a user (used to roll back a half-made invitation).
func (a *Admin) DeleteUser(ctx context.Context, userID string) error {
	tok, err := a.accessToken(ctx)
	if err != nil {
		return err
	}
	return scrub(a.gc.DeleteUser(ctx, tok, a.realm, userID))
}

func status(err error) int {
	var ae *gocloak.APIError
	if errors.As(err, &ae) {
		return ae.Code
	}
	return 0
}

// scrub keeps the status and message of a Keycloak error but never a token
// or secret that a library might have put into it.
// scrub is scrub for a call made with the cached token: a 401 means
// Keycloak no longer takes it (a restart, a revoked session), so it is
// dropped and the next call logs in again instead of failing until expiry.
func (a *Admin) scrub(err error) error {
	if status(err) == http.StatusUnauthorized {
		a.mu.Lock()
		a.token = ""
		a.mu.Unlock()
	}
	return scrub(err)
}

func scrub(err error) error {
	if err == nil {
		return nil
	}
	var ae *gocloak.APIError
	if errors.As(err, &ae) {
		return fmt.Errorf("keycloak answered %d: %s", ae.Code, ae.Message)
	}
	return err
}
