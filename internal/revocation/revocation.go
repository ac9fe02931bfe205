// Package revocation keeps, in memory, what Keycloak revoked before a
// token's expiry, so that a token Keycloak's own introspection calls
// inactive is refused here too without asking Keycloak per request: the
// sessions that ended (a user's logout, an admin deleting the session) and
// the not-before times of the realm, of each client and of each user.
//
// The event poller and full syncs write the revocations table (package
// sync, sessions.go); every replica holds a List loaded from it, and
// updates it when NOTIFY keybridge_changed carries {"kind":"revocation"}.
package revocation

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/keybridge/keybridge/internal/auth"
	"github.com/keybridge/keybridge/internal/store"
)

// Kind is the NOTIFY payload kind a change of the revocations table is
// announced with.
const Kind = "revocation"

// Set is one immutable view of the revocations.
type Set struct {
	sessions map[string]time.Time // session id -> when it ended
	realm    time.Time            // zero: none
	clients  map[string]time.Time // clientId -> not-before
	users    map[string]time.Time // user id -> not-before
	seq      int64                // the last row applied
}

// Empty reports whether the set refuses nothing.
func (s *Set) Empty() bool {
	return s == nil || (len(s.sessions) == 0 && s.realm.IsZero() && len(s.clients) == 0 && len(s.users) == 0)
}

// Why returns why a token with these claims is refused, or "" when it is
// not: its session (sid) ended, or it was issued (iat) before the realm's
// not-before, its client's (azp) or its user's (sub). Each not-before
// applies on its own, strictly: a token issued in the not-before's second
// passes, as in Keycloak. A token without iat (zero) is refused wherever a
// not-before applies, for nothing shows it was issued after.
func (s *Set) Why(sid, azp, sub string, iat time.Time) string {
	if s == nil {
		return ""
	}
	if sid != "" {
		if _, ok := s.sessions[sid]; ok {
			return "its session ended in Keycloak"
		}
	}
	before := func(nb time.Time) bool { return !nb.IsZero() && iat.Before(nb) }
	if before(s.realm) {
		return "issued before the realm's not-before " + s.realm.UTC().Format(time.RFC3339)
	}
	if nb, ok := s.clients[azp]; ok && azp != "" && before(nb) {
		return "issued before client " + azp + "'s not-before " + nb.UTC().Format(time.RFC3339)
	}
	if nb, ok := s.users[sub]; ok && sub != "" && before(nb) {
		return "issued before the user's not-before " + nb.UTC().Format(time.RFC3339)
	}
	return ""
}

// With returns a copy of s with rows applied in order: a session is added;
// a not-before replaces the one held, and a zero At removes it. Rows
// whose time is before since are left out, and so are the sessions s
// holds that ended before since: no token they could refuse is valid.
func (s *Set) With(rows []store.Revocation, since time.Time) *Set {
	n := &Set{sessions: map[string]time.Time{}, clients: map[string]time.Time{}, users: map[string]time.Time{}}
	if s != nil {
		maps.Copy(n.clients, s.clients)
		maps.Copy(n.users, s.users)
		for id, at := range s.sessions {
			if !at.Before(since) {
				n.sessions[id] = at
			}
		}
		n.realm, n.seq = s.realm, s.seq
	}
	for _, r := range rows {
		n.seq = max(n.seq, r.Seq)
		old := !r.At.IsZero() && r.At.Before(since)
		switch r.Kind {
		case store.RevokedSession:
			if !old && !r.At.IsZero() {
				n.sessions[r.ID] = r.At
			}
		case store.RealmNotBefore:
			n.realm = r.At
			if old {
				n.realm = time.Time{}
			}
		case store.ClientNotBefore:
			setNotBefore(n.clients, r.ID, r.At, old)
		case store.UserNotBefore:
			setNotBefore(n.users, r.ID, r.At, old)
		}
	}
	return n
}

func setNotBefore(m map[string]time.Time, id string, at time.Time, old bool) {
	if at.IsZero() || old {
		delete(m, id)
		return
	}
	m[id] = at
}

// Size counts the sessions and not-befores held.
func (s *Set) Size() int {
	if s == nil {
		return 0
	}
	n := len(s.sessions) + len(s.clients) + len(s.users)
	if !s.realm.IsZero() {
		n++
	}
	return n
}

// List is a replica's view of the revocations table. Checks are lock-free.
type List struct {
	Pool *pgxpool.Pool // the sync role's pool
	Log  *slog.Logger
	// Keep is how long after its time a revocation can still refuse a valid
	// token: auth.max_token_lifetime plus auth.leeway. 24h30s when zero.
	Keep time.Duration
	// Interval is the full reload period, a minute when zero: it drops the
	// sessions past Keep and catches anything a notification missed.
	Interval time.Duration
	Now      func() time.Time

	cur    atomic.Pointer[Set]
	mu     sync.Mutex // serialises loads
	loaded atomic.Bool
}

// DefaultKeep is Keep when unset: the default auth.max_token_lifetime
// (24h) and auth.leeway (30s).
const DefaultKeep = 24*time.Hour + 30*time.Second

func (l *List) since() time.Time {
	keep := l.Keep
	if keep <= 0 {
		keep = DefaultKeep
	}
	now := time.Now
	if l.Now != nil {
		now = l.Now
	}
	return now().Add(-keep)
}

// Revoked reports why tok is refused, if it is (see Set.Why).
func (l *List) Revoked(tok *auth.Token) (string, bool) {
	s := l.cur.Load()
	if s.Empty() {
		return "", false
	}
	sid, _ := tok.Claims["sid"].(string)
	if sid == "" {
		// Keycloak before 26 names the session session_state.
		sid, _ = tok.Claims["session_state"].(string)
	}
	azp, _ := tok.Claims["azp"].(string)
	why := s.Why(sid, azp, tok.Subject, tok.IssuedAt)
	return why, why != ""
}

// Current is the set held.
func (l *List) Current() *Set { return l.cur.Load() }

// Loaded reports whether a first load succeeded.
func (l *List) Loaded() bool { return l.loaded.Load() }

// Load reads the whole table.
func (l *List) Load(ctx context.Context) error { return l.load(ctx, l.Pool) }

func (l *List) load(ctx context.Context, q store.Querier) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	since := l.since()
	rows, err := store.LoadRevocations(ctx, q, 0, since)
	if err != nil {
		return err
	}
	l.cur.Store((*Set)(nil).With(rows, since))
	l.loaded.Store(true)
	return nil
}

// Update reads the rows written after the last one held.
func (l *List) Update(ctx context.Context) error { return l.update(ctx, l.Pool) }

func (l *List) update(ctx context.Context, q store.Querier) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	cur := l.cur.Load()
	if cur == nil {
		return errors.New("revocations not loaded")
	}
	since := l.since()
	rows, err := store.LoadRevocations(ctx, q, cur.seq, since)
	if err != nil || len(rows) == 0 {
		return err
	}
	l.cur.Store(cur.With(rows, since))
	return nil
}

// Run listens on keybridge_changed until ctx ends, reconnecting with
// backoff (and loading the whole table after each reconnect), and reloads
// the whole table every Interval.
func (l *List) Run(ctx context.Context) error {
	interval := l.Interval
	if interval <= 0 {
		interval = time.Minute
	}
	backoff := 100 * time.Millisecond
	for ctx.Err() == nil {
		err := l.listen(ctx, interval)
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if l.Log != nil {
			l.Log.WarnContext(ctx, "revocation listener lost; refusing by the last list", "error", err, "retry_in", backoff.String())
		}
		select {
		case <-ctx.Done():
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, 10*time.Second)
	}
	return ctx.Err()
}

// listen holds one connection: it listens, loads the table and applies
// each notification through it, so a reload never waits behind the pool.
func (l *List) listen(ctx context.Context, interval time.Duration) error {
	conn, err := l.Pool.Acquire(ctx)
	if err != nil {
		return fmt.Errorf("acquire: %w", err)
	}
	defer func() {
		// Closed rather than returned to the pool still listening, where
		// notifications would pile up unread.
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Second)
		defer cancel()
		_ = conn.Conn().Close(cctx)
		conn.Release()
	}()
	if _, err := conn.Exec(ctx, "LISTEN keybridge_changed"); err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	// Whatever was written while nobody listened.
	if err := l.load(ctx, conn); err != nil {
		return err
	}
	next := time.Now().Add(interval)
	for {
		wctx, cancel := context.WithDeadline(ctx, next)
		n, err := conn.Conn().WaitForNotification(wctx)
		cancel()
		switch {
		case err == nil:
			var msg struct {
				Kind string `json:"kind"`
			}
			if json.Unmarshal([]byte(n.Payload), &msg) != nil || msg.Kind != Kind {
				continue
			}
			// A failure reconnects, and the reconnection loads the whole table.
			if err := l.update(ctx, conn); err != nil {
				return err
			}
		case ctx.Err() != nil:
			return ctx.Err()
		case errors.Is(err, context.DeadlineExceeded):
			if err := l.load(ctx, conn); err != nil {
				return err
			}
			next = time.Now().Add(interval)
		default:
			return err
		}
	}
}
