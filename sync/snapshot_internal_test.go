package sync

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	gosync "sync"
	"testing"
	"time"
)

// fakeRealm is a Keycloak admin API holding users u0000.. of which the
// default role is held by defaultHolders and role "small" by the first
// three; user "gone" is listed but answers 404 for its role mappings, as
// a user deleted mid-read does.
type fakeRealm struct {
	users          int
	defaultHolders int
	gone           string
	// counted is what GET /users/count answers (users when 0): fewer
	// than listed, as when service accounts hold the default role.
	counted int
	// delay, when set, is how long each request takes.
	delay time.Duration

	mu       gosync.Mutex
	requests []string // path?first= of every admin request
	inFlight int
	peak     int // most requests in flight at once
	// firstMapping and lastListing are the order of the first per-user
	// read and the last page of the listing, among all requests.
	firstMapping, lastListing int
}

func (f *fakeRealm) user(i int) string { return fmt.Sprintf("u%04d", i) }

func (f *fakeRealm) holds(role string, i int) bool {
	switch role {
	case "default-roles-r":
		return i < f.defaultHolders
	case "small":
		return i < 3
	}
	return false
}

func (f *fakeRealm) server(t *testing.T) *httptest.Server {
	s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		if strings.HasSuffix(r.URL.Path, "/openid-connect/token") {
			_, _ = w.Write([]byte(`{"access_token":"t","expires_in":300}`))
			return
		}
		path, ok := strings.CutPrefix(r.URL.Path, "/admin/realms/r")
		if !ok {
			http.NotFound(w, r)
			return
		}
		f.mu.Lock()
		f.requests = append(f.requests, path+"?first="+r.URL.Query().Get("first"))
		seq := len(f.requests)
		if strings.HasSuffix(path, "/role-mappings") && f.firstMapping == 0 {
			f.firstMapping = seq
		}
		if path == "/users" {
			f.lastListing = seq
		}
		f.inFlight++
		f.peak = max(f.peak, f.inFlight)
		f.mu.Unlock()
		defer func() {
			f.mu.Lock()
			f.inFlight--
			f.mu.Unlock()
		}()
		time.Sleep(f.delay)
		first, _ := strconv.Atoi(r.URL.Query().Get("first"))
		max, _ := strconv.Atoi(r.URL.Query().Get("max"))
		page := func(ids []map[string]any) any {
			ids = ids[min(first, len(ids)):]
			return ids[:min(max, len(ids))]
		}
		list := func(role string) []map[string]any {
			var out []map[string]any
			for i := 0; i < f.users; i++ {
				if role == "" || f.holds(role, i) {
					out = append(out, map[string]any{"id": f.user(i), "username": f.user(i), "enabled": true})
				}
			}
			return out
		}
		var out any
		switch {
		case path == "":
			out = map[string]any{"defaultRole": map[string]any{"id": "id-default-roles-r", "name": "default-roles-r"}}
		case path == "/users":
			out = page(list(""))
		case path == "/users/count":
			out = f.users
			if f.counted > 0 {
				out = f.counted
			}
		case path == "/groups", path == "/identity-provider/instances":
			out = []any{}
		case path == "/roles":
			out = page([]map[string]any{{"id": "id-default-roles-r", "name": "default-roles-r", "composite": true}, {"id": "id-small", "name": "small"}})
		case path == "/roles-by-id/id-default-roles-r/composites":
			out = []map[string]any{{"id": "id-small", "name": "small"}}
		case strings.HasPrefix(path, "/roles/") && strings.HasSuffix(path, "/users"):
			out = page(list(strings.TrimSuffix(strings.TrimPrefix(path, "/roles/"), "/users")))
		case strings.HasPrefix(path, "/users/") && strings.HasSuffix(path, "/role-mappings"):
			id := strings.TrimSuffix(strings.TrimPrefix(path, "/users/"), "/role-mappings")
			if id == f.gone {
				http.NotFound(w, r)
				return
			}
			i, _ := strconv.Atoi(strings.TrimPrefix(id, "u"))
			var realm []map[string]any
			for _, role := range []string{"default-roles-r", "small"} {
				if f.holds(role, i) {
					realm = append(realm, map[string]any{"id": "id-" + role, "name": role})
				}
			}
			// A client the mapping does not name: its roles are not in the
			// snapshot and must not turn up as holders.
			out = map[string]any{"realmMappings": realm, "clientMappings": map[string]any{
				"other": map[string]any{"client": "other", "mappings": []map[string]any{{"id": "id-other-role", "name": "x"}}}}}
		default:
			http.NotFound(w, r)
			return
		}
		_ = json.NewEncoder(w).Encode(out)
	}))
	t.Cleanup(s.Close)
	return s
}

func (f *fakeRealm) count(prefix, suffix string) (n, maxFirst int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, r := range f.requests {
		path, first, _ := strings.Cut(r, "?first=")
		if strings.HasPrefix(path, prefix) && strings.HasSuffix(path, suffix) {
			n++
			v, _ := strconv.Atoi(first)
			maxFirst = max(maxFirst, v)
		}
	}
	return n, maxFirst
}

func snapshotOf(t *testing.T, f *fakeRealm) (*Snapshot, map[string]int) {
	t.Helper()
	srv := f.server(t)
	k := NewKeycloak(KeycloakOptions{URL: srv.URL, Realm: "r", ClientID: "c", ClientSecret: "s", Timeout: 5 * time.Second, PageSize: 200, Concurrency: 4})
	var mu gosync.Mutex
	read := map[string]int{}
	s, err := k.Snapshot(context.Background(), SnapshotOptions{Progress: func(phase string, n int) {
		mu.Lock()
		read[phase] += n
		mu.Unlock()
	}})
	if err != nil {
		t.Fatal(err)
	}
	return s, read
}

// holdersOf lists the users of a snapshot who hold a role directly.
func holdersOf(s *Snapshot, roleID string) []string {
	var out []string
	for _, u := range s.Users {
		for _, r := range u.Roles {
			if s.Roles[r].ID == roleID {
				out = append(out, u.ID)
			}
		}
	}
	return out
}

// A realm of holderPagingLimit users or more never pages a role's holders:
// every user's mappings are read, once, and give every role's holders. A
// user gone by then leaves the snapshot.
func TestSnapshotOfALargeRealmReadsHoldersPerUser(t *testing.T) {
	f := &fakeRealm{users: holderPagingLimit + 200, gone: "u0007"}
	f.defaultHolders = f.users
	s, read := snapshotOf(t, f)

	if n, _ := f.count("/roles/", "/users"); n != 0 {
		t.Errorf("%d pages of role holders read in a realm of %d users", n, f.users)
	}
	if n, _ := f.count("/users/", "/role-mappings"); n != f.users {
		t.Errorf("%d per-user reads, want one for each of %d users", n, f.users)
	}
	checkPerUser(t, f, s)
	if read[PhaseRoleMappings] != f.users || read[PhaseUsers] != f.users || read[PhaseRoleHolders] != 0 {
		t.Errorf("progress reported %v", read)
	}
}

func checkPerUser(t *testing.T, f *fakeRealm, s *Snapshot) {
	t.Helper()
	if len(s.Users) != f.users-1 || slices.ContainsFunc(s.Users, func(u User) bool { return u.ID == f.gone }) {
		t.Errorf("%d users in the snapshot, want %d without %s", len(s.Users), f.users-1, f.gone)
	}
	if got := len(holdersOf(s, "id-default-roles-r")); got != f.users-1 {
		t.Errorf("default role: %d holders, want %d", got, f.users-1)
	}
	if got := holdersOf(s, "id-small"); !slices.Equal(got, []string{"u0000", "u0001", "u0002"}) {
		t.Errorf("role small: holders %v", got)
	}
	for _, u := range s.Users {
		for _, r := range u.Roles {
			if s.Roles[r].ID == "id-other-role" {
				t.Fatal("a role of a client outside the snapshot got holders")
			}
		}
	}
}

// In a realm that counts fewer users than the limit, a role with more
// holders (service accounts hold roles, and are not counted) is paged only
// up to holderPagingLimit; then every user's mappings are read instead.
func TestSnapshotTurnsToPerUserReadsAtALargeRole(t *testing.T) {
	f := &fakeRealm{users: holderPagingLimit + 200, counted: holderPagingLimit - 100, gone: "u0007"}
	f.defaultHolders = f.users
	s, read := snapshotOf(t, f)

	pagedDefault, maxFirst := f.count("/roles/default-roles-r/", "/users")
	if maxFirst >= holderPagingLimit || pagedDefault != holderPagingLimit/200 {
		t.Errorf("default role paged %d times up to first=%d, want %d pages below %d", pagedDefault, maxFirst, holderPagingLimit/200, holderPagingLimit)
	}
	if n, _ := f.count("/roles/small/", "/users"); n != 0 {
		t.Errorf("role small was paged %d times after the default role turned out large", n)
	}
	if n, _ := f.count("/users/", "/role-mappings"); n != f.users {
		t.Errorf("%d per-user reads, want one for each of %d users", n, f.users)
	}
	checkPerUser(t, f, s)
	if read[PhaseRoleMappings] != f.users || read[PhaseUsers] != f.users || read[PhaseRoleHolders] != holderPagingLimit {
		t.Errorf("progress reported %v", read)
	}
}

// A large realm's parts are read at once, per-user reads starting while the
// listing goes on, and never more than keycloak.concurrency requests in
// flight.
func TestSnapshotPipelinesWithinTheConcurrencyLimit(t *testing.T) {
	f := &fakeRealm{users: 2 * holderPagingLimit, delay: time.Millisecond}
	f.defaultHolders = f.users
	s, _ := snapshotOf(t, f)
	if len(s.Users) != f.users {
		t.Fatalf("%d users in the snapshot, want %d", len(s.Users), f.users)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.peak > 4 || f.peak < 2 {
		t.Errorf("%d requests in flight at most, want 2 to keycloak.concurrency (4)", f.peak)
	}
	if f.firstMapping == 0 || f.firstMapping > f.lastListing {
		t.Errorf("the first per-user read was request %d, the listing's last page %d: per-user reads waited for the whole listing", f.firstMapping, f.lastListing)
	}
}

// While every role stays small, holders are paged and no user is read on
// its own.
func TestSnapshotPagesSmallRoles(t *testing.T) {
	f := &fakeRealm{users: 500, defaultHolders: 250}
	s, read := snapshotOf(t, f)
	if n, _ := f.count("/users/", "/role-mappings"); n != 0 {
		t.Errorf("%d per-user reads in a realm without a large role", n)
	}
	if got := len(holdersOf(s, "id-default-roles-r")); got != 250 {
		t.Errorf("default role: %d holders, want 250", got)
	}
	if got := holdersOf(s, "id-small"); !slices.Equal(got, []string{"u0000", "u0001", "u0002"}) {
		t.Errorf("role small: holders %v", got)
	}
	if read[PhaseRoleMappings] != 0 || read[PhaseRoleHolders] != 253 {
		t.Errorf("progress reported %v", read)
	}
}
