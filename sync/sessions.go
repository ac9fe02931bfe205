package sync

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"time"

	"github.com/keybridge/keybridge/internal/store"
)

// Session ends and not-before pushes (issue 14). Keycloak's own
// introspection calls a token inactive once its session ended or once it
// was issued before a not-before of the realm, its client or its user;
// these events and values are recorded in the revocations table, which
// every replica's revocation list refuses tokens by. What Keycloak 26.5
// emits, as read from its /events and /admin-events:
//
//   - OIDC logout (…/protocol/openid-connect/logout): user event LOGOUT
//     with sessionId, the tokens' sid;
//   - DELETE /sessions/{id}: admin event DELETE USER_SESSION
//     "sessions/{id}" (no user event);
//   - POST /users/{id}/logout: admin event ACTION USER "users/{id}/logout";
//     the user's notBefore becomes the time, in seconds, and the user's
//     sessions end;
//   - PUT of the realm with notBefore, POST /push-revocation, POST
//     /logout-all (which sets the realm's notBefore too): admin events
//     UPDATE REALM (no path), ACTION REALM "push-revocation", ACTION REALM
//     "logout-all";
//   - PUT /clients/{id} with notBefore, POST /clients/{id}/push-revocation:
//     UPDATE CLIENT "clients/{id}", ACTION CLIENT
//     "clients/{id}/push-revocation".
//
// Not-befores are re-read from Keycloak (realm, client and user
// representations carry notBefore, in seconds, 0 when none), never taken
// from an event's representation.

// revocationKeep is how long a revocation can still refuse a valid token.
func (s *Service) revocationKeep() time.Duration {
	if s.RevocationKeep > 0 {
		return s.RevocationKeep
	}
	return 24*time.Hour + 30*time.Second
}

// revocationTarget names what an admin event may have revoked: an ended
// session (kind store.RevokedSession, the session id), the realm's
// not-before, a client's (by its internal id) or a user's (after a logout
// of all their sessions). kind is "" for any other event.
func revocationTarget(e AdminEvent) (kind, id string) {
	path := strings.Trim(e.ResourcePath, "/")
	parts := strings.Split(path, "/")
	switch e.ResourceType {
	case "USER_SESSION":
		if e.OperationType == "DELETE" && len(parts) == 2 && parts[0] == "sessions" && parts[1] != "" {
			return store.RevokedSession, parts[1]
		}
	case "REALM":
		// A realm update may set notBefore; push-revocation and logout-all
		// follow one. Reading the realm again is one request.
		return store.RealmNotBefore, ""
	case "CLIENT":
		if e.OperationType == "DELETE" || len(parts) < 2 || parts[0] != "clients" || parts[1] == "" {
			return "", ""
		}
		if len(parts) == 2 || (len(parts) == 3 && parts[2] == "push-revocation") {
			return store.ClientNotBefore, parts[1]
		}
	case "USER":
		if len(parts) == 3 && parts[0] == "users" && parts[1] != "" && parts[2] == "logout" {
			return store.UserNotBefore, parts[1]
		}
	}
	return "", ""
}

// adminRevocationKey and userRevocationKey are the dedup keys the
// revocation hook marks, apart from the ones the poller's loops mark for
// the same events.
func adminRevocationKey(e AdminEvent) string {
	if e.ID != "" {
		return "r:a:" + e.ID
	}
	return fmt.Sprintf("r:a:%d|%s|%s", e.Time, e.OperationType, e.ResourcePath)
}

func userRevocationKey(e UserEvent) string {
	if e.ID != "" {
		return "r:u:" + e.ID
	}
	return fmt.Sprintf("r:u:%d|%s|%s", e.Time, e.Type, e.UserID)
}

// nextSecond is the first whole second after t: a not-before at it refuses
// every token issued (iat, whole seconds) at or before t.
func nextSecond(t time.Time) time.Time { return t.Truncate(time.Second).Add(time.Second) }

// applyRevocations is the event poller's hook: it records the sessions the
// round's LOGOUT user events and session deletions ended, and re-reads the
// not-befores its admin events may have moved, in one write that notifies
// every replica. A not-before Keycloak cannot be read for now is left
// unmarked, so the next round reads it again, and a full run (whose
// catch-up reads every not-before) is requested; a refusal (403) is logged
// and left to the operator. Only a failure to write returns an error: the
// round then stops, and the cursors stay, so the next round retries.
func (s *Service) applyRevocations(ctx context.Context, admin []AdminEvent, user []UserEvent, dedup *seen) error {
	now := s.now()
	var rows []store.Revocation
	var keys []string
	var oldest time.Time
	took := func(key string, at time.Time) {
		keys = append(keys, key)
		if oldest.IsZero() || at.Before(oldest) {
			oldest = at
		}
	}
	for _, e := range user {
		// LOGOUT_ERROR ends nothing.
		if e.Type != "LOGOUT" || e.Error != "" || e.SessionID == "" {
			continue
		}
		key := userRevocationKey(e)
		if dedup.has(key) {
			continue
		}
		at := time.UnixMilli(e.Time)
		rows = append(rows, store.Revocation{Kind: store.RevokedSession, ID: e.SessionID, At: at})
		took(key, at)
	}
	realmRead, clientsRead := false, map[string]bool{}
	for _, e := range admin {
		kind, id := revocationTarget(e)
		if kind == "" {
			continue
		}
		key := adminRevocationKey(e)
		if dedup.has(key) {
			continue
		}
		at := time.UnixMilli(e.Time)
		var row store.Revocation
		var err error
		switch kind {
		case store.RevokedSession:
			row = store.Revocation{Kind: kind, ID: id, At: at}
		case store.RealmNotBefore:
			if realmRead {
				took(key, at)
				continue
			}
			row, err = s.realmNotBefore(ctx)
			realmRead = err == nil
		case store.ClientNotBefore:
			if clientsRead[id] {
				took(key, at)
				continue
			}
			row, err = s.clientNotBefore(ctx, id)
			clientsRead[id] = err == nil
		case store.UserNotBefore:
			row, err = s.userNotBefore(ctx, id)
			// The user's sessions ended at the event, which may share its
			// second with tokens issued before it: Keycloak refuses those for
			// their session, so the not-before covers the event's second.
			if err == nil && row.At.Before(nextSecond(at)) {
				row.At = nextSecond(at)
			}
		}
		switch {
		case errors.Is(err, ErrNotFound):
			// The client or user is gone: Keycloak refuses its tokens, and
			// so does the directory for a deleted user.
		case errors.Is(err, ErrForbidden):
			if s.Log != nil {
				s.Log.WarnContext(ctx, "not-before unreadable: the service account lacks a role (view-realm, view-clients, view-users)", "kind", kind, "error", err)
			}
		case err != nil:
			if s.Log != nil {
				s.Log.WarnContext(ctx, "not-before not read; the next round and a full sync retry", "kind", kind, "error", err)
			}
			s.RequestFull(ctx, "event")
			continue
		default:
			rows = append(rows, row)
		}
		took(key, at)
	}
	if len(keys) == 0 {
		return nil
	}
	if len(rows) > 0 {
		if _, err := store.SaveRevocations(ctx, s.Store.SysPool(), rows, now.Add(-s.revocationKeep()), store.AnySeq); err != nil {
			return err
		}
		if s.Metrics != nil {
			s.Metrics.EventApplyLag.WithLabelValues("revocation").Observe(s.now().Sub(oldest).Seconds())
		}
	}
	dedup.mark(now, keys...)
	return nil
}

// notBefore is a Keycloak representation's not-before, in seconds; 0 when
// none.
type notBefore struct {
	ClientID  string `json:"clientId"`
	NotBefore int64  `json:"notBefore"`
}

// at is the not-before as a time; zero when none.
func (n notBefore) at() time.Time {
	if n.NotBefore <= 0 {
		return time.Time{}
	}
	return time.Unix(n.NotBefore, 0)
}

func (s *Service) realmNotBefore(ctx context.Context) (store.Revocation, error) {
	var r notBefore
	if err := s.KC.get(ctx, "get_realm", "", nil, &r); err != nil {
		return store.Revocation{}, fmt.Errorf("read the realm's not-before: %w", err)
	}
	return store.Revocation{Kind: store.RealmNotBefore, At: r.at()}, nil
}

// clientNotBefore reads the not-before of the client with internal id id.
func (s *Service) clientNotBefore(ctx context.Context, id string) (store.Revocation, error) {
	var c notBefore
	if err := s.KC.get(ctx, "get_client", "/clients/"+url.PathEscape(id), nil, &c); err != nil {
		return store.Revocation{}, fmt.Errorf("read client %s's not-before: %w", id, err)
	}
	if c.ClientID == "" {
		return store.Revocation{}, fmt.Errorf("client %s: %w", id, ErrNotFound)
	}
	return store.Revocation{Kind: store.ClientNotBefore, ID: c.ClientID, At: c.at()}, nil
}

func (s *Service) userNotBefore(ctx context.Context, id string) (store.Revocation, error) {
	u, err := s.KC.User(ctx, id)
	if err != nil {
		return store.Revocation{}, fmt.Errorf("read user %s's not-before: %w", id, err)
	}
	return store.Revocation{Kind: store.UserNotBefore, ID: id, At: notBefore{NotBefore: u.NotBefore}.at()}, nil
}

// catchUpRevocations reads the realm's and every client's not-before, and
// takes the users' from the full run's snapshot, so a not-before whose
// event the poller missed (events off, expired, or the poller down) is
// still refused after the next full run. The realm's and clients' values
// are read after the table and written as read, cleared ones included,
// unless the poller changed them meanwhile; a user's only raises what is
// stored, for the snapshot is older than the table's read and may miss a
// logout the poller has just recorded. Values older than the longest token lifetime
// refuse nothing and are not stored. Failures are logged: the run's
// outcome does not depend on them.
func (s *Service) catchUpRevocations(ctx context.Context, snap *Snapshot) {
	now := s.now()
	since := now.Add(-s.revocationKeep())
	sys := s.Store.SysPool()
	stored, err := store.LoadRevocations(ctx, sys, 0, time.Time{})
	if err != nil {
		s.warnCatchUp(ctx, err)
		return
	}
	held := map[[2]string]time.Time{}
	var upTo int64 // rows written after this read are newer than it: they stay
	for _, r := range stored {
		held[[2]string{r.Kind, r.ID}] = r.At
		upTo = max(upTo, r.Seq)
	}
	var rows []store.Revocation
	// take keeps a value read from Keycloak that differs from the one held;
	// raiseOnly keeps only a later one.
	take := func(r store.Revocation, raiseOnly bool) {
		h, ok := held[[2]string{r.Kind, r.ID}]
		switch {
		case !r.At.IsZero() && r.At.Before(since):
			// Refuses no valid token.
		case raiseOnly && (r.At.IsZero() || (ok && !r.At.After(h))):
		case !ok && r.At.IsZero():
		case ok && h.Equal(r.At):
		default:
			rows = append(rows, r)
		}
	}
	realm, err := s.realmNotBefore(ctx)
	if err != nil {
		s.warnCatchUp(ctx, err)
	} else {
		take(realm, false)
	}
	clients, err := pages[notBefore](ctx, s.KC, "list_clients", "/clients", nil)
	if err != nil {
		s.warnCatchUp(ctx, fmt.Errorf("read the clients' not-befores: %w", err))
	}
	for _, c := range clients {
		if c.ClientID != "" {
			take(store.Revocation{Kind: store.ClientNotBefore, ID: c.ClientID, At: c.at()}, false)
		}
	}
	if snap != nil {
		for _, u := range snap.Users {
			if u.NotBefore > 0 {
				take(store.Revocation{Kind: store.UserNotBefore, ID: u.ID, At: notBefore{NotBefore: u.NotBefore}.at()}, true)
			}
		}
	}
	// Saving with no rows still prunes what has aged out.
	n, err := store.SaveRevocations(ctx, sys, rows, since, upTo)
	if err != nil {
		s.warnCatchUp(ctx, err)
		return
	}
	if n > 0 && s.Log != nil {
		s.Log.InfoContext(ctx, "not-befores caught up by the full sync", "changed", n)
	}
}

func (s *Service) warnCatchUp(ctx context.Context, err error) {
	if s.Log != nil {
		s.Log.WarnContext(ctx, "not-befores not caught up; events and the next full sync retry", "error", err)
	}
}
