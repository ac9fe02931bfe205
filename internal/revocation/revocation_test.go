package revocation

import (
	"testing"
	"time"

	"github.com/keybridge/keybridge/internal/auth"
	"github.com/keybridge/keybridge/internal/store"
)

var t0 = time.Unix(1_800_000_000, 0)

func TestWhyRefusesEndedSessionsAndTokensIssuedBeforeEachNotBefore(t *testing.T) {
	s := (*Set)(nil).With([]store.Revocation{
		{Kind: store.RevokedSession, ID: "s-ended", At: t0, Seq: 1},
		{Kind: store.RealmNotBefore, At: t0.Add(-time.Hour), Seq: 2},
		{Kind: store.ClientNotBefore, ID: "app", At: t0, Seq: 3},
		{Kind: store.UserNotBefore, ID: "u-out", At: t0.Add(10 * time.Second), Seq: 4},
	}, t0.Add(-24*time.Hour))
	for _, c := range []struct {
		name          string
		sid, azp, sub string
		iat           time.Time
		refused       bool
	}{
		{"ended session", "s-ended", "other", "u", t0.Add(time.Minute), true},
		{"another session", "s-live", "other", "u", t0.Add(time.Minute), false},
		{"before the realm's not-before", "s-live", "other", "u", t0.Add(-time.Hour - time.Second), true},
		{"in the realm's not-before second", "s-live", "other", "u", t0.Add(-time.Hour), false},
		{"before the client's not-before", "s-live", "app", "u", t0.Add(-time.Second), true},
		{"same time, another client", "s-live", "app2", "u", t0.Add(-time.Second), false},
		{"in the client's not-before second", "s-live", "app", "u", t0, false},
		{"before the user's not-before", "s-live", "app2", "u-out", t0.Add(9 * time.Second), true},
		{"same time, another user", "s-live", "app2", "u", t0.Add(9 * time.Second), false},
		{"after the user's not-before", "s-live", "app2", "u-out", t0.Add(10 * time.Second), false},
		{"no iat where a not-before applies", "", "app", "u", time.Time{}, true},
		{"no sid, no azp, no sub", "", "", "", t0, false},
	} {
		why := s.Why(c.sid, c.azp, c.sub, c.iat)
		if (why != "") != c.refused {
			t.Errorf("%s: refused %q, want refused %v", c.name, why, c.refused)
		}
	}
}

func TestWithAppliesRowsInOrderAndCopies(t *testing.T) {
	since := t0.Add(-24 * time.Hour)
	a := (*Set)(nil).With([]store.Revocation{
		{Kind: store.ClientNotBefore, ID: "app", At: t0, Seq: 5},
		{Kind: store.UserNotBefore, ID: "u", At: t0, Seq: 6},
		{Kind: store.RealmNotBefore, At: t0, Seq: 7},
	}, since)
	// A later not-before replaces the one held; a zero one clears it.
	b := a.With([]store.Revocation{
		{Kind: store.ClientNotBefore, ID: "app", At: t0.Add(time.Hour), Seq: 8},
		{Kind: store.UserNotBefore, ID: "u", Seq: 9},
		{Kind: store.RealmNotBefore, Seq: 10},
		{Kind: store.RevokedSession, ID: "s", At: t0, Seq: 11},
	}, since)
	if b.seq != 11 {
		t.Errorf("seq %d, want 11", b.seq)
	}
	if why := b.Why("", "app", "u", t0.Add(time.Minute)); why == "" {
		t.Error("the client's later not-before is not applied")
	}
	if why := b.Why("", "other", "u", t0.Add(-time.Minute)); why != "" {
		t.Errorf("cleared user and realm not-befores still refuse: %s", why)
	}
	if b.Why("s", "", "", t0) == "" {
		t.Error("the session added is not refused")
	}
	// a is unchanged: readers holding it see one consistent set.
	if a.Why("s", "", "", t0) != "" || a.Why("", "other", "u", t0.Add(-time.Minute)) == "" || a.Why("", "app", "", t0.Add(time.Minute)) != "" {
		t.Error("With changed the set it was called on")
	}
}

func TestWithDropsWhatNoValidTokenCanMeet(t *testing.T) {
	since := t0
	s := (*Set)(nil).With([]store.Revocation{
		{Kind: store.RevokedSession, ID: "old", At: t0.Add(-time.Second), Seq: 1},
		{Kind: store.RevokedSession, ID: "new", At: t0, Seq: 2},
		{Kind: store.ClientNotBefore, ID: "app", At: t0.Add(-time.Second), Seq: 3},
	}, since)
	if s.Size() != 1 || s.Why("new", "", "", t0) == "" {
		t.Errorf("held %d, want only the session ended at since", s.Size())
	}
	// A full reload later drops sessions that have aged out since.
	later := s.With(nil, t0.Add(time.Second))
	if !later.Empty() {
		t.Errorf("held %d after they aged out", later.Size())
	}
}

func TestListRevokedReadsTheTokensClaims(t *testing.T) {
	l := &List{}
	tok := &auth.Token{Subject: "u", IssuedAt: t0, Claims: map[string]any{"sid": "s1", "azp": "app"}}
	if _, revoked := l.Revoked(tok); revoked {
		t.Fatal("an empty list refuses")
	}
	l.cur.Store((*Set)(nil).With([]store.Revocation{{Kind: store.RevokedSession, ID: "s1", At: t0, Seq: 1}}, t0.Add(-time.Hour)))
	if why, revoked := l.Revoked(tok); !revoked || why == "" {
		t.Error("a token of an ended session passes")
	}
	// Keycloak before 26 names the session session_state.
	old := &auth.Token{Subject: "u", IssuedAt: t0, Claims: map[string]any{"session_state": "s1"}}
	if _, revoked := l.Revoked(old); !revoked {
		t.Error("a session_state token of an ended session passes")
	}
	other := &auth.Token{Subject: "u", IssuedAt: t0, Claims: map[string]any{"sid": "s2", "azp": "app"}}
	if _, revoked := l.Revoked(other); revoked {
		t.Error("another session's token is refused")
	}
}
