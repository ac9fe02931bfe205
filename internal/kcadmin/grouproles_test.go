package kcadmin_test

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/keybridge/keybridge/internal/kcadmin"
	"github.com/keybridge/keybridge/internal/testenv"
)

// A group's roles, as an invitation's grant ceiling needs them: the demo
// realm's /customers/acme/engineering maps fastn-developer, which its
// subgroup backend gives its members too; support maps nothing.
func TestGroupRolesIncludeTheParentGroups(t *testing.T) {
	kc := testenv.RequireKeycloak(t)
	master := testenv.NewAdmin(t, kc)
	a := kcadmin.New(kc.URL, kc.Realm, kc.ClientID, kc.ClientSecret, 10*time.Second)
	for path, want := range map[string][]string{
		"/customers/acme/engineering/backend": {"fastn-developer"},
		"/customers/acme/support":             nil,
	} {
		var g struct{ ID string }
		master.Do("GET", "/group-by-path"+path, nil, &g)
		realm, client, err := a.GroupRoles(context.Background(), g.ID, []string{"portal"})
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		if !slices.Equal(realm, want) || len(client) != 0 {
			t.Errorf("%s: realm %v client %v, want realm %v", path, realm, client, want)
		}
	}
}
