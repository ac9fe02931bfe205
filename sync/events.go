package sync

import (
	"context"
	"fmt"
	"net/url"
	"strconv"
	gosync "sync"
	"time"

	"github.com/google/uuid"

	"github.com/keybridge/keybridge/internal/audit"
	"github.com/keybridge/keybridge/internal/store"
)

// AdminEvent is a Keycloak admin event (admin-API changes).
type AdminEvent struct {
	ID            string `json:"id"`
	Time          int64  `json:"time"`
	OperationType string `json:"operationType"`
	ResourceType  string `json:"resourceType"`
	ResourcePath  string `json:"resourcePath"`
}

// UserEvent is a Keycloak user event (logins, refreshes, self-service).
type UserEvent struct {
	ID     string `json:"id"`
	Time   int64  `json:"time"`
	Type   string `json:"type"`
	UserID string `json:"userId"`
	Client string `json:"clientId"`
	Error  string `json:"error"`

	// SessionID is the Keycloak session (tokens' sid) a LOGOUT ended.
	SessionID string `json:"sessionId"`
}

// seen remembers the event ids already taken, so the overlap window never
// applies one twice.
type seen struct {
	mu  gosync.Mutex
	ids map[string]time.Time
	// keep is how long an id is remembered: past the overlap window an
	// event is never read again. An hour when zero.
	keep  time.Duration
	swept time.Time // last eviction sweep: at most one per keep/2
}

// has reports whether the event was applied already.
func (s *seen) has(id string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, ok := s.ids[id]
	return ok
}

// mark records events as taken. A user event whose application failed is
// not marked, and the cursor does not move past it, so the next round reads
// and applies it again.
func (s *seen) mark(now time.Time, ids ...string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ids == nil {
		s.ids = map[string]time.Time{}
	}
	for _, id := range ids {
		s.ids[id] = now
	}
	keep := s.keep
	if keep <= 0 {
		keep = time.Hour
	}
	if len(s.ids) > 1000 && now.Sub(s.swept) > keep/2 {
		s.swept = now
		for k, t := range s.ids {
			if now.Sub(t) > keep {
				delete(s.ids, k)
			}
		}
	}
}

// pollEvents reads admin and user events since stored cursors, with an
// overlap because events can land out of commit order, until ctx ends.
func (s *Service) pollEvents(ctx context.Context) {
	interval := s.EventsInterval
	if interval <= 0 {
		interval = 2 * time.Second
	}
	dedup := &seen{keep: 2*s.EventsOverlap + time.Minute}
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		if err := s.PollOnce(ctx, dedup); err != nil && ctx.Err() == nil && s.Log != nil {
			s.Log.WarnContext(ctx, "event poll failed", "error", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

const (
	adminCursor = "events.admin.time"
	userCursor  = "events.user.time"
)

// PollOnce reads and applies one round of events.
func (s *Service) PollOnce(ctx context.Context, dedup *seen) error {
	if dedup == nil {
		dedup = &seen{}
	}
	sys := s.Store.SysPool()
	now := s.now()
	// A cursor is the newest event time applied; a round reads from it
	// less the overlap (events land out of commit order), every page, and
	// never moves it backwards.
	from := func(key string) (stored, since int64, err error) {
		v, err := store.GetState(ctx, sys, key)
		if err != nil {
			return 0, 0, err
		}
		ms, perr := strconv.ParseInt(v, 10, 64)
		if v == "" || perr != nil {
			return 0, now.Add(-s.EventsOverlap).UnixMilli(), nil
		}
		return ms, ms - s.EventsOverlap.Milliseconds(), nil
	}
	aStored, aFrom, err := from(adminCursor)
	if err != nil {
		return err
	}
	admin, err := pages[AdminEvent](ctx, s.KC, "list_admin_events", "/admin-events", url.Values{"dateFrom": {strconv.FormatInt(aFrom, 10)}, "direction": {"asc"}})
	if err != nil {
		return fmt.Errorf("admin events: %w", err)
	}
	uStored, uFrom, err := from(userCursor)
	if err != nil {
		return err
	}
	user, err := pages[UserEvent](ctx, s.KC, "list_user_events", "/events", url.Values{"dateFrom": {strconv.FormatInt(uFrom, 10)}, "direction": {"asc"}})
	if err != nil {
		return fmt.Errorf("user events: %w", err)
	}
	// Issue 14 hook (sessions.go): session ends and not-before pushes,
	// recorded before the rest; a failed write returns before any cursor moves.
	if err := s.applyRevocations(ctx, admin, user, dedup); err != nil {
		return err
	}
	// Each admin event is applied to what it names (incremental.go); one it
	// cannot place, or whose re-read fails, is taken all the same and asks
	// for a full run, which reconciles everything: so the cursor moves on,
	// and a user disabled after it still takes effect within one round.
	needFull := false
	var aMax, uMax int64
	for _, e := range admin {
		aMax = max(aMax, e.Time)
		key := e.ID
		if key == "" {
			key = fmt.Sprintf("%d|%s|%s", e.Time, e.OperationType, e.ResourcePath)
		}
		key = "a:" + key
		if dedup.has(key) {
			s.countEvent("admin", "duplicate")
			continue
		}
		full, err := s.ApplyAdminEvent(ctx, e, "admin")
		if err != nil {
			// A full run covers any admin change; it also keeps one event
			// that cannot be applied from holding up the rest.
			if ctx.Err() != nil {
				return err
			}
			if s.Log != nil {
				s.Log.WarnContext(ctx, "admin event not applied; a full sync will cover it", "resource_type", e.ResourceType, "error", err)
			}
			s.countEvent("admin", "deferred")
			if s.Metrics != nil {
				s.Metrics.SyncFullFallbacks.WithLabelValues(FallbackApplyFailed).Inc()
			}
			full = true
		} else {
			s.countEvent("admin", "applied")
		}
		needFull = needFull || full
		dedup.mark(now, key)
	}
	if needFull {
		s.RequestFull(ctx, "event")
	}
	for _, e := range user {
		uMax = max(uMax, e.Time)
		key := e.ID
		if key == "" {
			key = fmt.Sprintf("%d|%s|%s", e.Time, e.Type, e.UserID)
		}
		if dedup.has("u:" + key) {
			s.countEvent("user", "duplicate")
			continue
		}
		if err := s.ApplyUserEvent(ctx, key, e.Type, e.UserID, e.Error, time.UnixMilli(e.Time)); err != nil {
			s.countEvent("user", "failed")
			return err
		}
		dedup.mark(now, "u:"+key)
		s.countEvent("user", "applied")
	}
	if aMax > aStored {
		if err := store.SetState(ctx, sys, adminCursor, strconv.FormatInt(aMax, 10)); err != nil {
			return err
		}
	}
	if uMax > uStored {
		if err := store.SetState(ctx, sys, userCursor, strconv.FormatInt(uMax, 10)); err != nil {
			return err
		}
	}
	return nil
}

func (s *Service) countEvent(source, outcome string) {
	if s.Metrics != nil {
		s.Metrics.KeycloakEvents.WithLabelValues(source, outcome).Inc()
	}
}

var eventNS = uuid.MustParse("6f6b2b0e-4b1f-4c1e-9a57-6b6579627269")

// userChanges are the user events by which users change what keybridge
// syncs of them (a registration, their profile or email, a link to an
// identity provider, deleting their account, a lockout that disables them):
// each re-reads the user whole (RefreshUser).
var userChanges = map[string]bool{
	"REGISTER": true, "UPDATE_PROFILE": true, "UPDATE_EMAIL": true, "VERIFY_EMAIL": true, "DELETE_ACCOUNT": true,
	"FEDERATED_IDENTITY_LINK": true, "REMOVE_FEDERATED_IDENTITY": true, "IDENTITY_PROVIDER_FIRST_LOGIN": true,
	"IDENTITY_PROVIDER_LINK_ACCOUNT": true, "USER_DISABLED_BY_PERMANENT_LOCKOUT": true,
}

// ApplyUserEvent turns logins, failed logins and refreshes into audit rows
// (idempotent by event id) and moves people's last-active time; the events
// in userChanges re-read their user.
func (s *Service) ApplyUserEvent(ctx context.Context, eventKey, typ, userID, errText string, at time.Time) error {
	action := ""
	switch typ {
	case "LOGIN":
		action = "auth.login"
	case "LOGIN_ERROR":
		action = "auth.login_failed"
	case "REFRESH_TOKEN":
		action = "credential.token_refresh"
	default:
		if userChanges[typ] {
			return s.RefreshUser(ctx, userID)
		}
		return nil
	}
	sys := s.Store.SysPool()
	var tenant, name string
	_ = sys.QueryRow(ctx, `SELECT coalesce((SELECT min(tenant_id) FROM tenant_members WHERE person_id = $1), ''), coalesce((SELECT display_name FROM people WHERE id = $1), '')`, userID).Scan(&tenant, &name)
	if name == "" {
		name = userID
	}
	outcome := audit.Success
	if typ == "LOGIN_ERROR" {
		outcome = audit.Failure
	}
	if s.Audit != nil {
		s.Audit.Record(ctx, audit.Entry{ID: uuid.NewSHA1(eventNS, []byte(eventKey)).String(), OccurredAt: at, TenantID: tenant,
			ActorID: userID, ActorName: name, Action: action, ResourceType: "session", ResourceID: userID, Outcome: outcome, Reason: errText})
	}
	if typ == "LOGIN" || typ == "REFRESH_TOKEN" {
		if err := store.TouchLastActive(ctx, sys, userID, at); err != nil {
			return err
		}
		// A first completed login turns an invitation into a member.
		if _, err := sys.Exec(ctx, `UPDATE people SET status = 'active', updated_at = now() WHERE id = $1 AND status = 'invited'`, userID); err != nil {
			return err
		}
	}
	return nil
}
