package sync

import (
	"testing"
	"time"

	"github.com/keybridge/keybridge/internal/store"
)

// The admin events Keycloak 26.5 emits for session ends and not-before
// pushes (as read from /admin-events) name what to record or re-read;
// others name nothing.
func TestRevocationTargetOfAdminEvents(t *testing.T) {
	for _, c := range []struct {
		op, typ, path string
		kind, id      string
	}{
		{"DELETE", "USER_SESSION", "sessions/RsL06oTRVW9WDxNUiwp-0VXe", store.RevokedSession, "RsL06oTRVW9WDxNUiwp-0VXe"},
		{"ACTION", "USER", "users/0d4d95a2/logout", store.UserNotBefore, "0d4d95a2"},
		{"UPDATE", "REALM", "", store.RealmNotBefore, ""},
		{"ACTION", "REALM", "push-revocation", store.RealmNotBefore, ""},
		{"ACTION", "REALM", "logout-all", store.RealmNotBefore, ""},
		{"UPDATE", "CLIENT", "clients/88df1f26", store.ClientNotBefore, "88df1f26"},
		{"ACTION", "CLIENT", "clients/88df1f26/push-revocation", store.ClientNotBefore, "88df1f26"},
		{"DELETE", "CLIENT", "clients/88df1f26", "", ""},
		{"CREATE", "CLIENT_ROLE", "clients/88df1f26/roles/x", "", ""},
		{"UPDATE", "CLIENT", "clients/88df1f26/protocol-mappers/models/1", "", ""},
		{"UPDATE", "USER", "users/0d4d95a2", "", ""},
		{"DELETE", "USER", "users/0d4d95a2", "", ""},
		{"CREATE", "USER_SESSION", "sessions/x", "", ""},
		{"DELETE", "USER_SESSION", "sessions/", "", ""},
		{"CREATE", "GROUP", "groups/1", "", ""},
	} {
		kind, id := revocationTarget(AdminEvent{OperationType: c.op, ResourceType: c.typ, ResourcePath: c.path})
		if kind != c.kind || id != c.id {
			t.Errorf("%s %s %q: (%q, %q), want (%q, %q)", c.op, c.typ, c.path, kind, id, c.kind, c.id)
		}
	}
}

// A logout of all a user's sessions at 12:00:00.400 refuses the tokens
// issued in that second: their iat is 12:00:00 whether they came before or
// after it, and Keycloak refuses the earlier ones for their session.
func TestNextSecond(t *testing.T) {
	at := time.Date(2026, 1, 2, 12, 0, 0, 400e6, time.UTC)
	if got, want := nextSecond(at), time.Date(2026, 1, 2, 12, 0, 1, 0, time.UTC); !got.Equal(want) {
		t.Errorf("nextSecond(%s) = %s, want %s", at, got, want)
	}
}
