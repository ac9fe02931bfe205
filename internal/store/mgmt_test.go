package store_test

import (
	"context"
	"fmt"
	"sort"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/keybridge/keybridge/internal/store"
	"github.com/keybridge/keybridge/internal/testenv"
	"github.com/keybridge/keybridge/rls"
)

// seedPeople writes n people into tenant acme and m into globex, with a
// role, a team and a last-active time each; half of acme is a Developer.
func seedPeople(t testing.TB, st *store.Store, n, m int) {
	t.Helper()
	ctx := context.Background()
	err := st.InSystemTx(ctx, func(tx pgx.Tx) error {
		stmts := []string{
			`INSERT INTO tenants (id, name, source) VALUES ('acme', 'Acme', 'group'), ('globex', 'Globex', 'group')`,
			`INSERT INTO teams (id, tenant_id, name, path) VALUES ('t-eng', 'acme', 'eng', '/customers/acme/eng'), ('t-ops', 'globex', 'ops', '/customers/globex/ops')`,
			`INSERT INTO roles (name, kind) VALUES ('Developer', 'system'), ('Viewer', 'system')`,
			fmt.Sprintf(`INSERT INTO people (id, username, email, display_name, status, last_active)
				SELECT 'a' || lpad(i::text, 6, '0'), 'user' || i, 'user' || i || '@acme.test', 'Acme User ' || lpad(i::text, 6, '0'),
				CASE WHEN i %% 10 = 0 THEN 'inactive' ELSE 'active' END,
				CASE WHEN i %% 7 = 0 THEN NULL ELSE now() - (i || ' minutes')::interval END
				FROM generate_series(1, %d) i`, n),
			fmt.Sprintf(`INSERT INTO people (id, username, display_name, status) SELECT 'g' || i, 'guser' || i, 'Globex ' || i, 'active' FROM generate_series(1, %d) i`, m),
			`INSERT INTO tenant_members SELECT CASE WHEN id LIKE 'a%' THEN 'acme' ELSE 'globex' END, id FROM people`,
			`INSERT INTO team_members SELECT CASE WHEN id LIKE 'a%' THEN 't-eng' ELSE 't-ops' END, id, CASE WHEN id LIKE 'a%' THEN 'acme' ELSE 'globex' END FROM people`,
			`INSERT INTO role_assignments (person_id, role_id, tenant_id, source)
				SELECT p.id, r.id, m.tenant_id, 'keycloak' FROM people p JOIN tenant_members m ON m.person_id = p.id
				JOIN roles r ON r.name = CASE WHEN right(p.id, 1) IN ('0','2','4','6','8') THEN 'Developer' ELSE 'Viewer' END`,
		}
		for _, q := range stmts {
			if _, err := tx.Exec(ctx, q); err != nil {
				return fmt.Errorf("%s: %w", q[:40], err)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatalf("seed people: %v", err)
	}
}

func openStore(t testing.TB) (*store.Store, testenv.Database) {
	t.Helper()
	db := testenv.NewDatabase(t)
	st, err := store.Open(context.Background(), db.AppURL, db.SyncURL, 4)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(st.Close)
	return st, db
}

func TestListPeoplePaginatesInsideTheTenant(t *testing.T) {
	st, _ := openStore(t)
	seedPeople(t, st, 230, 40)
	ctx := rls.WithSession(context.Background(), rls.Session{TenantID: "acme", UserID: "a000001"})

	walk := func(f store.PeopleFilter) []store.Person {
		t.Helper()
		var all []store.Person
		f.Limit = 50
		for pages := 0; ; pages++ {
			if pages > 100 {
				t.Fatal("pagination does not end")
			}
			var page []store.Person
			var next string
			err := st.InTx(ctx, func(tx pgx.Tx) error {
				var err error
				page, next, err = store.ListPeople(ctx, tx, f)
				return err
			})
			if err != nil {
				t.Fatal(err)
			}
			all = append(all, page...)
			if next == "" {
				return all
			}
			f.Cursor = next
		}
	}
	tests := []struct {
		name   string
		filter store.PeopleFilter
		want   int
	}{
		{"everyone in acme, none of globex", store.PeopleFilter{}, 230},
		{"by status", store.PeopleFilter{Status: "inactive"}, 23},
		{"by role", store.PeopleFilter{Role: "Developer"}, 115},
		{"by team path", store.PeopleFilter{Team: "/customers/acme/eng"}, 230},
		{"another tenant's team shows nobody", store.PeopleFilter{Team: "t-ops"}, 0},
		{"free-text search", store.PeopleFilter{Search: "user 00012"}, 10},
		{"sorted by last active", store.PeopleFilter{Sort: "last_active"}, 230},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := walk(tt.filter)
			if len(got) != tt.want {
				t.Fatalf("got %d people, want %d", len(got), tt.want)
			}
			seen := map[string]bool{}
			for i, p := range got {
				if seen[p.ID] {
					t.Fatalf("%s returned twice", p.ID)
				}
				seen[p.ID] = true
				if len(p.Tenants) != 1 || p.Tenants[0] != "acme" {
					t.Fatalf("%s of tenant %v leaked into acme's list", p.ID, p.Tenants)
				}
				if len(p.Roles) != 1 || len(p.Teams) != 1 {
					t.Fatalf("%s badges: roles %v teams %v", p.ID, p.Roles, p.Teams)
				}
				if i > 0 && tt.filter.Sort == "" && got[i-1].DisplayName > p.DisplayName {
					t.Fatalf("not sorted by name at %d", i)
				}
				if i > 0 && tt.filter.Sort == "last_active" && p.LastActive != nil && (got[i-1].LastActive == nil || got[i-1].LastActive.Before(*p.LastActive)) {
					t.Fatalf("not sorted by last active at %d", i)
				}
			}
		})
	}
	t.Run("a forged cursor is refused", func(t *testing.T) {
		err := st.InTx(ctx, func(tx pgx.Tx) error {
			_, _, err := store.ListPeople(ctx, tx, store.PeopleFilter{Page: store.Page{Cursor: "bm90LWEtY3Vyc29y"}})
			return err
		})
		if err == nil {
			t.Fatal("forged cursor accepted")
		}
	})
	t.Run("another tenant's person is not found", func(t *testing.T) {
		err := st.InTx(ctx, func(tx pgx.Tx) error {
			_, err := store.GetPerson(ctx, tx, "g1")
			return err
		})
		if err != store.ErrNotFound {
			t.Fatalf("got %v, want ErrNotFound", err)
		}
	})
}

func TestAuditFiltersSelectExactlyTheMatchingRows(t *testing.T) {
	st, db := openStore(t)
	ctx := context.Background()
	base := time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)
	err := st.InSystemTx(ctx, func(tx pgx.Tx) error {
		_, err := tx.Exec(ctx, `INSERT INTO audit_log (occurred_at, tenant_id, actor_id, actor_name, action, resource_type, resource_id, outcome, entry_id)
			SELECT $1::timestamptz + (i || ' minutes')::interval, CASE WHEN i % 3 = 0 THEN 'globex' ELSE 'acme' END,
			'u' || (i % 5), 'user' || (i % 5), (ARRAY['people.invite','people.assign','roles.create','check.workflows.read'])[i % 4 + 1],
			CASE WHEN i % 2 = 0 THEN 'person' ELSE 'role' END, 'r' || i, (ARRAY['success','failure','denied'])[i % 3 + 1], gen_random_uuid()
			FROM generate_series(1, 2000) i`, base)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	owner, err := pgx.Connect(ctx, db.OwnerURL)
	if err != nil {
		t.Fatal(err)
	}
	defer owner.Close(ctx)
	actx := rls.WithSession(ctx, rls.Session{TenantID: "acme"})
	tests := []struct {
		name  string
		f     store.AuditFilter
		where string
	}{
		{"period", store.AuditFilter{From: base.Add(100 * time.Minute), To: base.Add(700 * time.Minute)},
			`occurred_at >= '2026-03-01T01:40:00Z' AND occurred_at < '2026-03-01T11:40:00Z'`},
		{"user and outcome", store.AuditFilter{User: "user2", Outcome: "denied"}, `actor_name = 'user2' AND outcome = 'denied'`},
		{"action prefix and type", store.AuditFilter{Action: "people.*", ResourceType: "person"}, `action LIKE 'people.%' AND resource_type = 'person'`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var want int
			if err := owner.QueryRow(ctx, `SELECT count(*) FROM audit_log WHERE tenant_id = 'acme' AND `+tt.where).Scan(&want); err != nil {
				t.Fatal(err)
			}
			var got []store.AuditRow
			err := st.InTx(actx, func(tx pgx.Tx) error {
				return store.StreamAudit(actx, tx, tt.f, func(a store.AuditRow) error { got = append(got, a); return nil })
			})
			if err != nil {
				t.Fatal(err)
			}
			if want == 0 || len(got) != want {
				t.Fatalf("export returned %d rows, SQL counts %d", len(got), want)
			}
			// The paged walk returns the same rows in the same order.
			var paged []store.AuditRow
			f := tt.f
			f.Limit = 97
			for {
				var page []store.AuditRow
				var next string
				err := st.InTx(actx, func(tx pgx.Tx) error {
					var err error
					page, next, err = store.ListAudit(actx, tx, f)
					return err
				})
				if err != nil {
					t.Fatal(err)
				}
				paged = append(paged, page...)
				if next == "" {
					break
				}
				f.Cursor = next
			}
			if len(paged) != want {
				t.Fatalf("paged walk returned %d rows, want %d", len(paged), want)
			}
			ids := make([]int64, len(paged))
			for i := range paged {
				ids[i] = paged[i].ID
				if paged[i].ID != got[i].ID || paged[i].Tenant != "acme" {
					t.Fatalf("row %d differs between export and pages, or is not acme's", i)
				}
			}
			if !sort.SliceIsSorted(paged, func(i, j int) bool { return paged[i].Timestamp.After(paged[j].Timestamp) }) {
				t.Fatal("not newest first")
			}
		})
	}
}
