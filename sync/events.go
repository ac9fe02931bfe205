package sync

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"strconv"
	"strings"
	gosync "sync"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

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
}

// userOf returns the user id an admin event's path names ("users/{id}...").
func userOf(path string) string {
	rest, ok := strings.CutPrefix(path, "users/")
	if !ok {
		return ""
	}
	id, _, _ := strings.Cut(rest, "/")
	return id
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
	// Structural admin events are taken at once and request a full run,
	// which reconciles everything; so the cursor moves on, and a user
	// disabled after them still takes effect within one round.
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
		full, err := s.ApplyAdminEvent(ctx, e.ResourceType, e.ResourcePath, time.UnixMilli(e.Time), "admin")
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

// ApplyAdminEvent applies an admin change by re-reading what it names,
// never trusting the event's representation. A user's own row is updated
// at once (so a disabled user's tokens die now); anything structural
// (groups, roles, memberships, mappings) asks for a full reconcile, which
// the caller coalesces. It reports whether a full run is needed.
func (s *Service) ApplyAdminEvent(ctx context.Context, resourceType, path string, at time.Time, source string) (bool, error) {
	switch resourceType {
	case "USER":
		id := userOf(path)
		if id == "" {
			return true, nil
		}
		known, err := s.RefreshUser(ctx, id)
		if err != nil {
			return false, err
		}
		if !known {
			// A new user: memberships, roles and tenant come with a full run.
			return true, nil
		}
		if s.Metrics != nil {
			s.Metrics.EventApplyLag.WithLabelValues(source).Observe(s.now().Sub(at).Seconds())
		}
		return false, nil
	case "GROUP", "GROUP_MEMBERSHIP", "REALM_ROLE", "REALM_ROLE_MAPPING", "CLIENT_ROLE", "CLIENT_ROLE_MAPPING", "CLIENT", "ORGANIZATION", "ORGANIZATION_MEMBERSHIP":
		return true, nil
	}
	return false, nil
}

// RefreshUser re-reads one user and updates its row; a user gone from
// Keycloak becomes deleted and loses its Keycloak and rule assignments.
func (s *Service) RefreshUser(ctx context.Context, id string) (bool, error) {
	u, err := s.KC.User(ctx, id)
	gone := errors.Is(err, ErrNotFound)
	if err != nil && !gone {
		return false, err
	}
	known := false
	err = pgx.BeginFunc(ctx, s.Store.SysPool(), func(tx pgx.Tx) error {
		if err := tx.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM people WHERE id = $1)`, id).Scan(&known); err != nil || !known {
			return err
		}
		if gone {
			if _, err := tx.Exec(ctx, `UPDATE people SET status = 'deleted', deleted_at = coalesce(deleted_at, now()), updated_at = now() WHERE id = $1 AND status <> 'deleted'`, id); err != nil {
				return err
			}
			if _, err := tx.Exec(ctx, `DELETE FROM role_assignments WHERE person_id = $1 AND source IN ('keycloak', 'rule')`, id); err != nil {
				return err
			}
		} else {
			status := "active"
			if !u.Enabled {
				status = "inactive"
			}
			display := strings.TrimSpace(u.FirstName + " " + u.LastName)
			if display == "" {
				display = u.Username
			}
			// An invited person stays invited while Keycloak's actions are pending.
			if _, err := tx.Exec(ctx, `UPDATE people SET username = $2, email = nullif($3, ''), first_name = nullif($4, ''), last_name = nullif($5, ''),
				display_name = $6, email_verified = $7,
				status = CASE WHEN status = 'invited' AND $8 AND $9 = 'active' THEN 'invited' ELSE $9 END, updated_at = now()
				WHERE id = $1`, id, u.Username, u.Email, u.FirstName, u.LastName, display, u.EmailVerified, len(u.RequiredActions) > 0, status); err != nil {
				return err
			}
		}
		_, err := tx.Exec(ctx, `SELECT pg_notify('keybridge_changed', json_build_object('kind', 'person', 'id', $1::text)::text)`, id)
		return err
	})
	return known, err
}

var eventNS = uuid.MustParse("6f6b2b0e-4b1f-4c1e-9a57-6b6579627269")

// ApplyUserEvent turns logins, failed logins and refreshes into audit rows
// (idempotent by event id) and moves people's last-active time.
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
