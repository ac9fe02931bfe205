// Package scalerealm builds large Keycloak realms for scale tests and
// benchmarks, shaped the way real realms are: every user holds the realm's
// default role directly (as every user created through the admin API or
// the registration form does), one role is held by most users, groups nest
// deep, roles are composite, client roles sit on several clients, and some
// users are disabled, lack an email or belong to an organization. Names are
// unicode.
//
// A realm is built once and reused: Ensure leaves an existing realm alone
// when it carries the fingerprint of the same Spec and the expected number
// of users, so a benchmark of 100,000 users pays the import only once.
// Users arrive through partial import in chunks, each listing its realm
// roles explicitly, so holdings are exactly what the admin API gives.
package scalerealm

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	gosync "sync"
	"time"
)

// Spec describes a realm. The same Spec always yields the same realm.
type Spec struct {
	Realm string
	Users int
	// Groups: TopGroups trees, each Fanout wide and GroupDepth levels deep.
	TopGroups, Fanout, GroupDepth int
	// RealmRoles custom realm roles (besides Keycloak's own); every tenth is
	// a composite of the two before it and a client role. The first,
	// "popular", is held by two users in three.
	RealmRoles int
	// Clients with ClientRoles roles each.
	Clients, ClientRoles int
	// Organizations; one user in ten belongs to one.
	Organizations int
	// EveryoneGroup, when set, is a top-level group (a name, no slash)
	// that every other user belongs to: a group with thousands of members.
	EveryoneGroup string
	// ClientID and ClientSecret of the confidential client keybridge reads
	// the realm with; its service account has the realm-management roles
	// docs/operations.md lists, manage-realm included (Keycloak 26.5
	// lists organizations only to it).
	ClientID, ClientSecret string
	// Chunk is the number of users per partial import (default 500).
	Chunk int
}

// Full is the reference shape for benchmarks: groups six deep, 200 realm
// roles with composites, client roles on three clients, 20 organizations.
func Full(realm string, users int, clientID, secret string) Spec {
	return Spec{Realm: realm, Users: users, TopGroups: 8, Fanout: 2, GroupDepth: 6, RealmRoles: 200, Clients: 3, ClientRoles: 10,
		Organizations: 20, EveryoneGroup: "Alle Mitarbeitenden", ClientID: clientID, ClientSecret: secret}
}

// DefaultRole is the name Keycloak gives a realm's default role.
func (s Spec) DefaultRole() string { return "default-roles-" + strings.ToLower(s.Realm) }

// ClientName is the clientId of the i-th generated client (0-based).
func (s Spec) ClientName(i int) string { return fmt.Sprintf("app-%d", i+1) }

// ExpectedUsers is the user count Keycloak reports (GET /users/count and
// the user listing leave the service account out).
func (s Spec) ExpectedUsers() int { return s.Users }

// Fingerprint identifies the realm a Spec builds; it is stored in a realm
// attribute once the build has finished.
func (s Spec) Fingerprint() string {
	c := s
	c.Chunk = 0
	b, _ := json.Marshal(c)
	sum := sha256.Sum256(append(b, version...))
	return hex.EncodeToString(sum[:8])
}

// version changes whenever the generator's output changes, so a cached
// realm from an older generator is rebuilt.
const version = "scalerealm-v4"

const fingerprintAttr = "keybridgeScaleFingerprint"

var (
	firstNames = []string{"Zoë", "Łukasz", "José", "Søren", "Ángel", "Chloé", "Maël", "Ödön", "Þóra", "Анна", "Дмитрий", "明", "さくら", "지민", "Αλέξης", "Ayşe", "Nguyễn", "Sigríður", "François", "Ana"}
	lastNames  = []string{"Müller", "Núñez", "O'Brien", "Dvořák", "Łódź", "Straße", "Иванова", "王", "山田", "김", "Παπαδόπουλος", "Öztürk", "Trần", "Jónsdóttir", "Lefèvre", "Smith", "van der Berg", "Åberg", "Çelik", "Ñandú"}
	groupNames = []string{"Vertrieb Süd", "Équipe", "研发", "Отдел", "Ωmega", "Straße", "café", "Δέλτα", "サポート", "Ærø", "İstanbul", "Kraków"}
)

// User is what the generator gives user i; tests compare against Keycloak,
// not against this, but it documents the shape.
type User struct {
	Username, Email, FirstName, LastName string
	Enabled                              bool
	RealmRoles                           []string
	ClientRoles                          map[string][]string
	Groups                               []string // paths
	Organization                         int      // -1 for none
}

// GroupPaths lists every group path, parents first.
func (s Spec) GroupPaths() []string {
	var out []string
	var walk func(prefix string, level int)
	walk = func(prefix string, level int) {
		if level > s.GroupDepth {
			return
		}
		n := s.Fanout
		if level == 1 {
			n = s.TopGroups
		}
		for i := 0; i < n; i++ {
			p := fmt.Sprintf("%s/%s %d.%d", prefix, groupNames[(level*7+i)%len(groupNames)], level, i)
			out = append(out, p)
			walk(p, level+1)
		}
	}
	walk("", 1)
	return out
}

// RoleName is the i-th custom realm role; role 0 is "popular".
func (s Spec) RoleName(i int) string {
	if i == 0 {
		return "popular"
	}
	return fmt.Sprintf("role-%03d", i)
}

// User returns user i.
func (s Spec) User(i int) User {
	u := User{Username: fmt.Sprintf("u%06d", i), FirstName: firstNames[i%len(firstNames)], LastName: lastNames[(i/len(firstNames))%len(lastNames)],
		Enabled: i%13 != 5, Organization: -1, RealmRoles: []string{s.DefaultRole()}}
	if i%7 != 3 {
		u.Email = u.Username + "@scale.test"
	}
	if i%3 != 0 && s.RealmRoles > 0 {
		u.RealmRoles = append(u.RealmRoles, s.RoleName(0))
	}
	if s.RealmRoles > 1 && i%2 == 0 {
		u.RealmRoles = append(u.RealmRoles, s.RoleName(1+(i/2)%(s.RealmRoles-1)))
	}
	if s.Clients > 0 && s.ClientRoles > 0 && i%5 == 1 {
		c := s.ClientName((i / 5) % s.Clients)
		u.ClientRoles = map[string][]string{c: {fmt.Sprintf("c-role-%d", (i/15)%s.ClientRoles)}}
	}
	if paths := s.GroupPaths(); len(paths) > 0 {
		if i%4 != 0 {
			u.Groups = append(u.Groups, paths[(i*7)%len(paths)])
		}
		if i%9 == 0 {
			u.Groups = append(u.Groups, paths[(i*13+1)%len(paths)])
		}
	}
	if s.EveryoneGroup != "" && i%2 == 1 {
		u.Groups = append(u.Groups, "/"+s.EveryoneGroup)
	}
	if s.Organizations > 0 && i%10 == 1 {
		u.Organization = (i / 10) % s.Organizations
	}
	return u
}

// Admin calls Keycloak's admin API as the master realm's admin, signing in
// again before the token expires: building a large realm outlasts one.
type Admin struct {
	Base, Username, Password string
	HTTP                     *http.Client

	mu  gosync.Mutex
	tok string
	exp time.Time
}

func (a *Admin) token(ctx context.Context) (string, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.tok != "" && time.Now().Before(a.exp) {
		return a.tok, nil
	}
	form := url.Values{"grant_type": {"password"}, "client_id": {"admin-cli"}, "username": {a.Username}, "password": {a.Password}}
	req, err := http.NewRequestWithContext(ctx, "POST", a.Base+"/realms/master/protocol/openid-connect/token", strings.NewReader(form.Encode()))
	if err != nil {
		return "", err
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	res, err := a.client().Do(req)
	if err != nil {
		return "", fmt.Errorf("admin sign-in: %w", err)
	}
	defer res.Body.Close()
	var out struct {
		AccessToken string `json:"access_token"`
		ExpiresIn   int    `json:"expires_in"`
	}
	if err := json.NewDecoder(res.Body).Decode(&out); err != nil || out.AccessToken == "" {
		return "", fmt.Errorf("admin sign-in: status %d", res.StatusCode)
	}
	a.tok = out.AccessToken
	a.exp = time.Now().Add(time.Duration(out.ExpiresIn) * time.Second / 2)
	return a.tok, nil
}

func (a *Admin) client() *http.Client {
	if a.HTTP != nil {
		return a.HTTP
	}
	return &http.Client{Timeout: 10 * time.Minute}
}

// Do sends body as JSON to path under /admin/realms and decodes the answer
// into out; a status of 300 or more is an error naming the request.
func (a *Admin) Do(ctx context.Context, method, path string, body, out any) (http.Header, error) {
	code, hdr, raw, err := a.Attempt(ctx, method, path, body)
	if err == nil && code >= 300 {
		err = fmt.Errorf("status %d: %.300s", code, raw)
	}
	if err == nil && out != nil && len(raw) > 0 {
		err = json.Unmarshal(raw, out)
	}
	if err != nil {
		return nil, fmt.Errorf("keycloak admin %s %s: %w", method, path, err)
	}
	return hdr, nil
}

// Attempt is Do without judging the status.
func (a *Admin) Attempt(ctx context.Context, method, path string, body any) (int, http.Header, []byte, error) {
	tok, err := a.token(ctx)
	if err != nil {
		return 0, nil, nil, err
	}
	var rd io.Reader
	if body != nil {
		raw, err := json.Marshal(body)
		if err != nil {
			return 0, nil, nil, err
		}
		rd = bytes.NewReader(raw)
	}
	req, err := http.NewRequestWithContext(ctx, method, a.Base+"/admin/realms"+path, rd)
	if err != nil {
		return 0, nil, nil, err
	}
	req.Header.Set("Authorization", "Bearer "+tok)
	req.Header.Set("Content-Type", "application/json")
	res, err := a.client().Do(req)
	if err != nil {
		return 0, nil, nil, err
	}
	defer res.Body.Close()
	raw, err := io.ReadAll(res.Body)
	return res.StatusCode, res.Header, raw, err
}

// Exists reports whether the realm is there, built whole from this Spec.
func Exists(ctx context.Context, a *Admin, s Spec) (bool, error) {
	code, _, raw, err := a.Attempt(ctx, "GET", "/"+url.PathEscape(s.Realm), nil)
	if err != nil {
		return false, fmt.Errorf("read realm %s: %w", s.Realm, err)
	}
	if code == http.StatusNotFound {
		return false, nil
	}
	if code != http.StatusOK {
		return false, fmt.Errorf("read realm %s: status %d", s.Realm, code)
	}
	var rep struct {
		Attributes map[string]string `json:"attributes"`
	}
	if err := json.Unmarshal(raw, &rep); err != nil {
		return false, fmt.Errorf("read realm %s: %w", s.Realm, err)
	}
	if rep.Attributes[fingerprintAttr] != s.Fingerprint() {
		return false, nil
	}
	var n int
	if _, err := a.Do(ctx, "GET", "/"+url.PathEscape(s.Realm)+"/users/count", nil, &n); err != nil {
		return false, err
	}
	return n == s.ExpectedUsers(), nil
}

// Delete removes the realm; a realm that is not there is no error.
func Delete(ctx context.Context, a *Admin, realm string) error {
	code, _, raw, err := a.Attempt(ctx, "DELETE", "/"+url.PathEscape(realm), nil)
	if err != nil {
		return fmt.Errorf("delete realm %s: %w", realm, err)
	}
	if code >= 300 && code != http.StatusNotFound {
		return fmt.Errorf("delete realm %s: status %d: %.200s", realm, code, raw)
	}
	return nil
}

// Ensure builds the realm unless Exists; it reports whether it built it.
// A realm of the same name with another fingerprint, or one whose build was
// interrupted (no fingerprint yet), is deleted and built again.
func Ensure(ctx context.Context, a *Admin, s Spec, log *slog.Logger) (bool, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	ok, err := Exists(ctx, a, s)
	if err != nil || ok {
		return false, err
	}
	start := time.Now()
	if err := Delete(ctx, a, s.Realm); err != nil {
		return false, err
	}
	if err := createRealm(ctx, a, s); err != nil {
		return false, err
	}
	chunk := s.Chunk
	if chunk <= 0 {
		chunk = 500
	}
	for from := 0; from < s.Users; from += chunk {
		to := min(from+chunk, s.Users)
		users := make([]map[string]any, 0, to-from)
		for i := from; i < to; i++ {
			users = append(users, userRep(s.User(i)))
		}
		if _, err := a.Do(ctx, "POST", "/"+url.PathEscape(s.Realm)+"/partialImport", map[string]any{"ifResourceExists": "FAIL", "users": users}, nil); err != nil {
			return false, fmt.Errorf("import users %d to %d: %w", from, to, err)
		}
		log.InfoContext(ctx, "scale realm: users imported", "realm", s.Realm, "users", to, "of", s.Users, "elapsed", time.Since(start).Round(time.Millisecond))
	}
	if err := addOrganizationMembers(ctx, a, s); err != nil {
		return false, err
	}
	// The fingerprint goes last: a realm without it was not finished.
	var rep map[string]any
	if _, err := a.Do(ctx, "GET", "/"+url.PathEscape(s.Realm), nil, &rep); err != nil {
		return false, err
	}
	attrs, _ := rep["attributes"].(map[string]any)
	if attrs == nil {
		attrs = map[string]any{}
	}
	attrs[fingerprintAttr] = s.Fingerprint()
	if _, err := a.Do(ctx, "PUT", "/"+url.PathEscape(s.Realm), map[string]any{"attributes": attrs}, nil); err != nil {
		return false, fmt.Errorf("mark realm %s finished: %w", s.Realm, err)
	}
	log.InfoContext(ctx, "scale realm built", "realm", s.Realm, "users", s.Users, "took", time.Since(start).Round(time.Millisecond))
	return true, nil
}

func userRep(u User) map[string]any {
	r := map[string]any{"username": u.Username, "enabled": u.Enabled, "firstName": u.FirstName, "lastName": u.LastName,
		"realmRoles": u.RealmRoles, "groups": u.Groups}
	if u.Email != "" {
		r["email"] = u.Email
		r["emailVerified"] = true
	}
	if u.ClientRoles != nil {
		r["clientRoles"] = u.ClientRoles
	}
	return r
}

func createRealm(ctx context.Context, a *Admin, s Spec) error {
	var roles []map[string]any
	for i := 0; i < s.RealmRoles; i++ {
		r := map[string]any{"name": s.RoleName(i), "description": "generated role " + fmt.Sprint(i)}
		if i%10 == 9 && s.Clients > 0 && s.ClientRoles > 0 {
			r["composite"] = true
			r["composites"] = map[string]any{"realm": []string{s.RoleName(i - 1), s.RoleName(i - 2)},
				"client": map[string][]string{s.ClientName(i % s.Clients): {fmt.Sprintf("c-role-%d", i%s.ClientRoles)}}}
		}
		roles = append(roles, r)
	}
	clientRoles := map[string]any{}
	clients := []map[string]any{{"clientId": s.ClientID, "secret": s.ClientSecret, "publicClient": false, "serviceAccountsEnabled": true,
		"standardFlowEnabled": false, "directAccessGrantsEnabled": false}}
	for c := 0; c < s.Clients; c++ {
		var rs []map[string]any
		for j := 0; j < s.ClientRoles; j++ {
			rs = append(rs, map[string]any{"name": fmt.Sprintf("c-role-%d", j)})
		}
		clientRoles[s.ClientName(c)] = rs
		clients = append(clients, map[string]any{"clientId": s.ClientName(c), "publicClient": false, "secret": "unused-" + s.ClientName(c),
			"standardFlowEnabled": false, "serviceAccountsEnabled": false})
	}
	// The group tree, each group holding a role now and then.
	byPath := map[string]map[string]any{}
	var top []map[string]any
	for n, p := range s.GroupPaths() {
		i := strings.LastIndex(p, "/")
		g := map[string]any{"name": p[i+1:], "subGroups": []map[string]any{}}
		if n%5 == 2 && s.RealmRoles > 1 {
			g["realmRoles"] = []string{s.RoleName(1 + n%(s.RealmRoles-1))}
		}
		if n%7 == 3 && s.Clients > 0 && s.ClientRoles > 0 {
			g["clientRoles"] = map[string][]string{s.ClientName(n % s.Clients): {fmt.Sprintf("c-role-%d", n%s.ClientRoles)}}
		}
		byPath[p] = g
		if parent := p[:i]; parent == "" {
			top = append(top, g)
		} else {
			byPath[parent]["subGroups"] = append(byPath[parent]["subGroups"].([]map[string]any), g)
		}
	}
	if s.EveryoneGroup != "" {
		top = append(top, map[string]any{"name": s.EveryoneGroup})
	}
	sa := map[string]any{"username": "service-account-" + strings.ToLower(s.ClientID), "enabled": true, "serviceAccountClientId": s.ClientID,
		"clientRoles": map[string]any{"realm-management": []string{"view-users", "query-users", "query-groups", "view-realm", "view-clients", "query-clients", "view-events", "manage-users", "manage-realm"}}}
	realm := map[string]any{"realm": s.Realm, "enabled": true, "organizationsEnabled": s.Organizations > 0,
		"roles": map[string]any{"realm": roles, "client": clientRoles}, "groups": top, "clients": clients, "users": []any{sa}}
	if _, err := a.Do(ctx, "POST", "", realm, nil); err != nil {
		return fmt.Errorf("create realm %s: %w", s.Realm, err)
	}
	// The default role contains one custom role, so composites reached
	// through the default role are exercised too.
	if s.RealmRoles > 1 {
		var def, extra map[string]any
		if _, err := a.Do(ctx, "GET", "/"+url.PathEscape(s.Realm)+"/roles/"+url.PathEscape(s.DefaultRole()), nil, &def); err != nil {
			return err
		}
		if _, err := a.Do(ctx, "GET", "/"+url.PathEscape(s.Realm)+"/roles/"+url.PathEscape(s.RoleName(s.RealmRoles-1)), nil, &extra); err != nil {
			return err
		}
		if _, err := a.Do(ctx, "POST", "/"+url.PathEscape(s.Realm)+"/roles-by-id/"+def["id"].(string)+"/composites", []any{extra}, nil); err != nil {
			return err
		}
	}
	for o := 0; o < s.Organizations; o++ {
		name := fmt.Sprintf("Organisation %02d — %s", o, groupNames[o%len(groupNames)])
		if _, err := a.Do(ctx, "POST", "/"+url.PathEscape(s.Realm)+"/organizations", map[string]any{"name": name, "alias": fmt.Sprintf("org-%02d", o),
			"enabled": true, "domains": []map[string]any{{"name": fmt.Sprintf("org-%02d.scale.test", o)}}}, nil); err != nil {
			return fmt.Errorf("create organization %d: %w", o, err)
		}
	}
	return nil
}

// addOrganizationMembers adds each user with an organization to it, four
// requests at a time (Keycloak has no bulk call for members).
func addOrganizationMembers(ctx context.Context, a *Admin, s Spec) error {
	if s.Organizations == 0 {
		return nil
	}
	var orgs []struct{ ID, Alias string }
	if _, err := a.Do(ctx, "GET", "/"+url.PathEscape(s.Realm)+"/organizations?max=1000", nil, &orgs); err != nil {
		return err
	}
	orgID := map[string]string{}
	for _, o := range orgs {
		orgID[o.Alias] = o.ID
	}
	// Usernames to ids, page by page (users are listed by username).
	ids := map[string]string{}
	for first := 0; ; first += 1000 {
		var page []struct{ ID, Username string }
		if _, err := a.Do(ctx, "GET", fmt.Sprintf("/%s/users?briefRepresentation=true&first=%d&max=1000", url.PathEscape(s.Realm), first), nil, &page); err != nil {
			return err
		}
		for _, u := range page {
			ids[u.Username] = u.ID
		}
		if len(page) < 1000 {
			break
		}
	}
	type job struct{ org, user string }
	jobs := make(chan job)
	errs := make(chan error, 4)
	var wg gosync.WaitGroup
	for w := 0; w < 4; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range jobs {
				if _, err := a.Do(ctx, "POST", "/"+url.PathEscape(s.Realm)+"/organizations/"+j.org+"/members", j.user, nil); err != nil {
					select {
					case errs <- err:
					default:
					}
				}
			}
		}()
	}
	var err error
	for i := 0; i < s.Users && err == nil; i++ {
		u := s.User(i)
		if u.Organization < 0 {
			continue
		}
		o, id := orgID[fmt.Sprintf("org-%02d", u.Organization)], ids[u.Username]
		if o == "" || id == "" {
			err = fmt.Errorf("organization member %s: organization or user missing after import", u.Username)
			break
		}
		select {
		case jobs <- job{o, id}:
		case err = <-errs:
		}
	}
	close(jobs)
	wg.Wait()
	if err == nil {
		select {
		case err = <-errs:
		default:
		}
	}
	if err != nil {
		return errors.Join(errors.New("add organization members"), err)
	}
	return nil
}
