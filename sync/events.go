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
// applies one twice. What it marks is recorded in PostgreSQL too (flush),
// and a round first learns what any leader recorded (load): a new leader
// skips what the old one applied.
type seen struct {
	mu  gosync.Mutex
	ids map[string]time.Time
	// keep is how long an id is remembered: past the overlap window an
	// event is never read again. An hour when zero.
	keep    time.Duration
	swept   time.Time // last eviction sweep: at most one per keep/2
	pruned  time.Time // last deletion of old records: at most one per keep/2
	pending []string  // marked, not yet recorded
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
	s.pending = append(s.pending, ids...)
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

func (s *seen) keepFor() time.Duration {
	if s.keep <= 0 {
		return time.Hour
	}
	return s.keep
}

// load marks, without recording them again, those of keys that a leader
// recorded as applied.
func (s *seen) load(ctx context.Context, q store.Querier, now time.Time, keys []string) error {
	applied, err := store.AppliedEvents(ctx, q, keys)
	if err != nil || len(applied) == 0 {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ids == nil {
		s.ids = map[string]time.Time{}
	}
	for _, k := range applied {
		if _, ok := s.ids[k]; !ok {
			s.ids[k] = now
		}
	}
	return nil
}

// flush records what was marked since the last flush, and now and then
// deletes records older than keep. Keys it could not record are kept for
// the next flush.
func (s *seen) flush(ctx context.Context, q store.Querier) error {
	s.mu.Lock()
	keys := s.pending
	s.pending = nil
	prune := time.Since(s.pruned) > s.keepFor()/2
	if prune {
		s.pruned = time.Now()
	}
	s.mu.Unlock()
	if err := store.RecordAppliedEvents(ctx, q, keys); err != nil {
		s.mu.Lock()
		s.pending = append(keys, s.pending...)
		s.mu.Unlock()
		return err
	}
	if prune {
		return store.PruneAppliedEvents(ctx, q, s.keepFor())
	}
	return nil
}

// pollEvents reads admin and user events since stored cursors, with an
// overlap because events can land out of commit order, until ctx ends. A
// round that took new events is followed at once by another: while changes
// keep coming, each waits for the round under way, not for the interval,
// which paces an idle realm.
func (s *Service) pollEvents(ctx context.Context) {
	interval := s.EventsInterval
	if interval <= 0 {
		interval = 2 * time.Second
	}
	dedup := &seen{keep: 2*s.EventsOverlap + time.Minute}
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		took, err := s.pollOnce(ctx, dedup)
		if err != nil && ctx.Err() == nil && s.Log != nil {
			s.Log.WarnContext(ctx, "event poll failed", "error", err)
		}
		if took > 0 && err == nil && ctx.Err() == nil {
			continue
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
	_, err := s.pollOnce(ctx, dedup)
	return err
}

// pollOnce is PollOnce, reporting how many admin and user events the round
// took that no round had taken before.
func (s *Service) pollOnce(ctx context.Context, dedup *seen) (took int, err error) {
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
		return took, err
	}
	admin, err := pages[AdminEvent](ctx, s.KC, "list_admin_events", "/admin-events", url.Values{"dateFrom": {strconv.FormatInt(aFrom, 10)}, "direction": {"asc"}})
	if err != nil {
		return took, fmt.Errorf("admin events: %w", err)
	}
	uStored, uFrom, err := from(userCursor)
	if err != nil {
		return took, err
	}
	user, err := pages[UserEvent](ctx, s.KC, "list_user_events", "/events", url.Values{"dateFrom": {strconv.FormatInt(uFrom, 10)}, "direction": {"asc"}})
	if err != nil {
		return took, fmt.Errorf("user events: %w", err)
	}
	// What a leader already applied of these events (the overlap, read
	// again after a takeover) is skipped.
	if err := dedup.load(ctx, sys, now, eventKeys(admin, user)); err != nil {
		return took, err
	}
	// Issue 14 hook (sessions.go): session ends and not-before pushes,
	// recorded before the rest; a failed write returns before any cursor moves.
	if err := s.applyRevocations(ctx, admin, user, dedup); err != nil {
		return took, err
	}
	if err := dedup.flush(ctx, sys); err != nil {
		return took, err
	}
	// Each admin event is applied to what it names (incremental.go); one it
	// cannot place, or whose re-read fails, is taken all the same and asks
	// for a full run, which reconciles everything: so the cursor moves on,
	// and a user disabled after it still takes effect within one round.
	needFull := false
	var aMax, uMax int64
	for _, e := range admin {
		aMax = max(aMax, e.Time)
		key := adminEventKey(e)
		if dedup.has(key) {
			s.countEvent("admin", "duplicate")
			continue
		}
		full, err := s.ApplyAdminEvent(ctx, e, "admin")
		if err != nil {
			// A full run covers any admin change; it also keeps one event
			// that cannot be applied from holding up the rest.
			if ctx.Err() != nil {
				return took, err
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
		took++
		dedup.mark(now, key)
		if err := dedup.flush(ctx, sys); err != nil {
			return took, err
		}
	}
	if needFull {
		s.RequestFull(ctx, "event")
	}
	for _, e := range user {
		uMax = max(uMax, e.Time)
		key := userEventID(e)
		if dedup.has("u:" + key) {
			s.countEvent("user", "duplicate")
			continue
		}
		if err := s.ApplyUserEvent(ctx, key, e.Type, e.UserID, e.Error, time.UnixMilli(e.Time)); err != nil {
			s.countEvent("user", "failed")
			return took, err
		}
		took++
		dedup.mark(now, "u:"+key)
		if err := dedup.flush(ctx, sys); err != nil {
			return took, err
		}
		s.countEvent("user", "applied")
	}
	if aMax > aStored {
		if err := store.SetState(ctx, sys, adminCursor, strconv.FormatInt(aMax, 10)); err != nil {
			return took, err
		}
	}
	if uMax > uStored {
		if err := store.SetState(ctx, sys, userCursor, strconv.FormatInt(uMax, 10)); err != nil {
			return took, err
		}
	}
	return took, nil
}

// adminEventKey is the poller's key for an admin event: Keycloak's id, or
// what identifies one without.
func adminEventKey(e AdminEvent) string {
	if e.ID != "" {
		return "a:" + e.ID
	}
	return fmt.Sprintf("a:%d|%s|%s", e.Time, e.OperationType, e.ResourcePath)
}

// userEventID identifies a user event: Keycloak's id, or what identifies
// one without. Its key is "u:" and this.
func userEventID(e UserEvent) string {
	if e.ID != "" {
		return e.ID
	}
	return fmt.Sprintf("%d|%s|%s", e.Time, e.Type, e.UserID)
}

// eventKeys lists every key a round may mark for these events.
func eventKeys(admin []AdminEvent, user []UserEvent) []string {
	keys := make([]string, 0, 2*(len(admin)+len(user)))
	for _, e := range admin {
		keys = append(keys, adminEventKey(e), adminRevocationKey(e))
	}
	for _, e := range user {
		keys = append(keys, "u:"+userEventID(e), userRevocationKey(e))
	}
	return keys
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
	e := audit.Entry{ID: uuid.NewSHA1(eventNS, []byte(eventKey)).String(), OccurredAt: at, TenantID: tenant,
		ActorID: userID, ActorName: name, Action: action, ResourceType: "session", ResourceID: userID, Outcome: outcome, Reason: errText}
	// The event is marked applied, in PostgreSQL, once this returns: its
	// audit row must be durable by then, or a leader killed with the row
	// still queued would lose it and its successor would skip the event.
	if d, ok := s.Audit.(interface {
		WriteNow(context.Context, audit.Entry) error
	}); ok {
		if err := d.WriteNow(ctx, e); err != nil {
			return err
		}
	} else if s.Audit != nil {
		s.Audit.Record(ctx, e)
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
