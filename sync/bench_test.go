package sync_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"testing"
	"time"

	"github.com/keybridge/keybridge/internal/testenv"
	"github.com/keybridge/keybridge/mapping"
	ksync "github.com/keybridge/keybridge/sync"
)

const (
	benchRealm  = "bench"
	benchUsers  = 10000
	benchGroups = 500
	benchRoles  = 50
)

// ensureBenchRealm creates realm "bench" (10,000 users, 500 nested groups,
// 50 roles) in one import, unless it is already there with those counts.
func ensureBenchRealm(b *testing.B, kc testenv.Keycloak) {
	b.Helper()
	a := newAdmin(b, kc)
	res, err := http.Get(kc.URL + "/realms/" + benchRealm)
	if err == nil {
		res.Body.Close()
	}
	if err == nil && res.StatusCode == 200 {
		req, _ := http.NewRequest("GET", kc.URL+"/admin/realms/"+benchRealm+"/users/count", nil)
		req.Header.Set("Authorization", "Bearer "+a.Bearer())
		if r, err := http.DefaultClient.Do(req); err == nil {
			var n int
			_ = json.NewDecoder(r.Body).Decode(&n)
			r.Body.Close()
			if n == benchUsers+1 {
				return
			}
		}
		req, _ = http.NewRequest("DELETE", kc.URL+"/admin/realms/"+benchRealm, nil)
		req.Header.Set("Authorization", "Bearer "+a.Bearer())
		if r, err := http.DefaultClient.Do(req); err == nil {
			r.Body.Close()
		}
	}
	var roles []map[string]any
	for i := 0; i < benchRoles; i++ {
		roles = append(roles, map[string]any{"name": fmt.Sprintf("role-%02d", i)})
	}
	// 500 groups: 20 tenants under /customers, each with 24 teams two levels deep.
	var groups []map[string]any
	var paths []string
	for t := 0; t < 20; t++ {
		var teams []map[string]any
		for g := 0; g < 8; g++ {
			var subs []map[string]any
			for s := 0; s < 2; s++ {
				subs = append(subs, map[string]any{"name": fmt.Sprintf("sub-%d", s), "realmRoles": []string{fmt.Sprintf("role-%02d", (t+g+s)%benchRoles)}})
				paths = append(paths, fmt.Sprintf("/customers/t%02d/team-%d/sub-%d", t, g, s))
			}
			teams = append(teams, map[string]any{"name": fmt.Sprintf("team-%d", g), "subGroups": subs})
			paths = append(paths, fmt.Sprintf("/customers/t%02d/team-%d", t, g))
		}
		groups = append(groups, map[string]any{"name": fmt.Sprintf("t%02d", t), "subGroups": teams})
		paths = append(paths, fmt.Sprintf("/customers/t%02d", t))
	}
	// 20 tenants x (1 + 8 + 16) = 500 groups with /customers itself ... 501.
	groups = []map[string]any{{"name": "customers", "subGroups": groups}}
	var users []map[string]any
	for i := 0; i < benchUsers; i++ {
		t := i % 20
		users = append(users, map[string]any{"username": fmt.Sprintf("user%05d", i), "enabled": true, "email": fmt.Sprintf("user%05d@bench.test", i),
			"firstName": "Bench", "lastName": fmt.Sprint(i), "realmRoles": []string{fmt.Sprintf("role-%02d", i%benchRoles)},
			"groups": []string{fmt.Sprintf("/customers/t%02d/team-%d/sub-%d", t, i%8, i%2)}})
	}
	users = append(users, map[string]any{"username": "service-account-keybridge", "enabled": true, "serviceAccountClientId": "keybridge",
		"clientRoles": map[string]any{"realm-management": []string{"view-users", "query-users", "query-groups", "view-realm", "view-clients", "query-clients", "view-events"}}})
	realm := map[string]any{"realm": benchRealm, "enabled": true, "roles": map[string]any{"realm": roles}, "groups": groups, "users": users,
		"clients": []map[string]any{{"clientId": "keybridge", "secret": kc.ClientSecret, "publicClient": false, "serviceAccountsEnabled": true, "standardFlowEnabled": false}}}
	body, _ := json.Marshal(realm)
	start := time.Now()
	req, _ := http.NewRequest("POST", kc.URL+"/admin/realms", bytes.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+a.Bearer())
	req.Header.Set("Content-Type", "application/json")
	client := &http.Client{Timeout: 20 * time.Minute}
	r, err := client.Do(req)
	if err != nil {
		b.Fatal(err)
	}
	r.Body.Close()
	if r.StatusCode != 201 {
		b.Fatalf("import bench realm: %d", r.StatusCode)
	}
	b.Logf("bench realm imported in %s (not part of any timing)", time.Since(start))
	_ = url.Values{}
	_ = paths
}

// BenchmarkFullSync10k: a full sync of 10,000 users, 500 groups and 50 roles
// beside the time merely to page through the same objects with the same
// client (reference_plain_read), and a no-change re-sync.
func BenchmarkFullSync10k(b *testing.B) {
	kc := testenv.RequireKeycloak(b)
	ensureBenchRealm(b, kc)
	kc.Realm = benchRealm
	newSvc := func() (*ksync.Service, *fixture) {
		db := testenv.NewDatabase(b)
		f := &fixture{kc: kc, db: db}
		st, err := openStoreB(b, db)
		if err != nil {
			b.Fatal(err)
		}
		f.st = st
		svc := newService(&testing.T{}, st, kc, kc.URL)
		svc.MaxRemovalShare = 1
		svc.KC = ksync.NewKeycloak(ksync.KeycloakOptions{URL: kc.URL, Realm: benchRealm, ClientID: kc.ClientID, ClientSecret: kc.ClientSecret,
			Timeout: time.Minute, PageSize: 500, Retries: 2})
		engine, _ := mapping.New(mapping.Config{Preset: "fastn", Tenant: mapping.TenantSource{GroupPrefix: "/customers"},
			Rules: []mapping.Rule{{RealmRole: "role-01", GrantRole: "Owner"}, {Group: "/customers/*/team-1/**", GrantRole: "Developer"}}})
		svc.Engine = func() *mapping.Engine { return engine }
		return svc, f
	}
	// Warm Keycloak's caches once, untimed, so every sub-benchmark below
	// reads from the same warm server.
	warm := ksync.NewKeycloak(ksync.KeycloakOptions{URL: kc.URL, Realm: benchRealm, ClientID: kc.ClientID, ClientSecret: kc.ClientSecret, Timeout: time.Minute, PageSize: 500, Retries: 2})
	if _, err := warm.Snapshot(context.Background(), ksync.SnapshotOptions{}); err != nil {
		b.Fatal(err)
	}
	b.Run("full_sync", func(b *testing.B) {
		b.StopTimer()
		for i := 0; i < b.N; i++ {
			svc, _ := newSvc()
			b.StartTimer()
			res, err := svc.Run(context.Background(), ksync.RunOptions{Trigger: "cli"})
			b.StopTimer()
			if err != nil {
				b.Fatal(err)
			}
			b.ReportMetric(float64(res.Requests), "keycloak-requests")
			b.ReportMetric(float64(res.Objects["people"]), "people")
			for k, v := range res.Phases {
				b.ReportMetric(v.Seconds(), k+"-s")
			}
		}
	})
	b.Run("no_change_resync", func(b *testing.B) {
		svc, _ := newSvc()
		if _, err := svc.Run(context.Background(), ksync.RunOptions{Trigger: "cli"}); err != nil {
			b.Fatal(err)
		}
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			res, err := svc.Run(context.Background(), ksync.RunOptions{Trigger: "cli"})
			if err != nil || len(res.Changes) != 0 {
				b.Fatalf("re-sync: %v %v", err, res.Changes)
			}
		}
	})
	b.Run("reference_plain_read", func(b *testing.B) {
		kcl := ksync.NewKeycloak(ksync.KeycloakOptions{URL: kc.URL, Realm: benchRealm, ClientID: kc.ClientID, ClientSecret: kc.ClientSecret, Timeout: time.Minute, PageSize: 500, Retries: 2})
		for i := 0; i < b.N; i++ {
			before := kcl.Requests()
			if _, err := kcl.Snapshot(context.Background(), ksync.SnapshotOptions{}); err != nil {
				b.Fatal(err)
			}
			b.ReportMetric(float64(kcl.Requests()-before), "keycloak-requests")
		}
	})
}
