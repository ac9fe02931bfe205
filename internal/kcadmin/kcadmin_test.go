package kcadmin_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/keybridge/keybridge/internal/kcadmin"
	"github.com/keybridge/keybridge/internal/testenv"
)

func suffix() string { return fmt.Sprint(time.Now().UnixNano() % 1000000) }

func newInvitee(t *testing.T, a *kcadmin.Admin, in kcadmin.Invitee) (string, error) {
	t.Helper()
	id, err := a.CreateUser(context.Background(), in)
	if id != "" {
		t.Cleanup(func() { _ = a.DeleteUser(context.Background(), id) })
	}
	return id, err
}

// In organization tenant mode an invitee joins the tenant's organization.
// Keycloak lets only manage-realm add organization members, which the demo
// service account lacks: without it the invitation fails and says so; with
// it (granted here for the test) the invitee is a member.
func TestCreateUserJoinsTheOrganization(t *testing.T) {
	kc := testenv.RequireKeycloak(t)
	master := testenv.NewAdmin(t, kc)
	s := suffix()
	_, h := master.Do("POST", "/organizations", map[string]any{"name": "Initech " + s, "alias": "initech-" + s,
		"domains": []any{map[string]any{"name": "initech-" + s + ".test"}}}, nil)
	org := h.Get("Location")[strings.LastIndex(h.Get("Location"), "/")+1:]
	t.Cleanup(func() { _, _, _, _ = master.Attempt("DELETE", "/organizations/"+org, nil) })
	a := kcadmin.New(kc.URL, kc.Realm, kc.ClientID, kc.ClientSecret, 10*time.Second)

	_, err := newInvitee(t, a, kcadmin.Invitee{Email: "pat-" + s + "@initech-" + s + ".test", Organization: org})
	if err == nil || !strings.Contains(err.Error(), "manage-realm") {
		t.Fatalf("without manage-realm: %v, want an error naming the role", err)
	}

	var sa []struct{ ID string }
	master.Do("GET", "/users?username=service-account-keybridge&exact=true", nil, &sa)
	var rm []struct{ ID string }
	master.Do("GET", "/clients?clientId=realm-management", nil, &rm)
	var role map[string]any
	master.Do("GET", "/clients/"+rm[0].ID+"/roles/manage-realm", nil, &role)
	mapping := "/users/" + sa[0].ID + "/role-mappings/clients/" + rm[0].ID
	master.Do("POST", mapping, []any{role}, nil)
	t.Cleanup(func() { _, _, _, _ = master.Attempt("DELETE", mapping, []any{role}) })
	a = kcadmin.New(kc.URL, kc.Realm, kc.ClientID, kc.ClientSecret, 10*time.Second) // a token with the new role

	id, err := newInvitee(t, a, kcadmin.Invitee{Email: "kim-" + s + "@initech-" + s + ".test", Organization: org})
	if err != nil {
		t.Fatal(err)
	}
	var members []struct{ ID string }
	master.Do("GET", "/organizations/"+org+"/members", nil, &members)
	if len(members) != 1 || members[0].ID != id {
		t.Errorf("organization members %v, want the invitee %s", members, id)
	}
}

// In attribute tenant mode an invitee carries the tenant attribute; when the
// realm's user profile drops it (as the demo realm's does for undeclared
// attributes), the invitation fails instead of creating a tenant-less user.
func TestCreateUserReportsADroppedAttribute(t *testing.T) {
	kc := testenv.RequireKeycloak(t)
	a := kcadmin.New(kc.URL, kc.Realm, kc.ClientID, kc.ClientSecret, 10*time.Second)
	_, err := newInvitee(t, a, kcadmin.Invitee{Email: "lee-" + suffix() + "@acme.test", Attributes: map[string][]string{"undeclared_tenant": {"acme"}}})
	if !errors.Is(err, kcadmin.ErrAttributeDropped) {
		t.Fatalf("%v, want ErrAttributeDropped", err)
	}
}

// A token Keycloak stops taking (401) is dropped, so the next call logs in
// again instead of failing until the cached token's expiry.
func TestA401DropsTheCachedToken(t *testing.T) {
	var logins atomic.Int64
	kc := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case strings.HasSuffix(r.URL.Path, "/protocol/openid-connect/token"):
			n := logins.Add(1)
			w.Header().Set("Content-Type", "application/json")
			fmt.Fprintf(w, `{"access_token":"t%d","expires_in":300,"token_type":"Bearer"}`, n)
		case r.Header.Get("Authorization") == "Bearer t1":
			w.WriteHeader(http.StatusUnauthorized) // Keycloak restarted, say
		case r.Method == http.MethodGet:
			w.Header().Set("Content-Type", "application/json")
			_, _ = w.Write([]byte(`{"id":"u1","username":"u","enabled":true}`))
		default:
			w.WriteHeader(http.StatusNoContent)
		}
	}))
	defer kc.Close()
	a := kcadmin.New(kc.URL, "r", "keybridge", "s", 5*time.Second)
	if err := a.SetEnabled(context.Background(), "u1", false); err == nil {
		t.Fatal("the first call succeeded with a refused token")
	}
	if err := a.SetEnabled(context.Background(), "u1", false); err != nil {
		t.Fatalf("the call after a 401 still fails: %v", err)
	}
	if n := logins.Load(); n != 2 {
		t.Errorf("%d logins, want 2", n)
	}
}
