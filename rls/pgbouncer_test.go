package rls_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/keybridge/keybridge/internal/testenv"
	"github.com/keybridge/keybridge/rls"
)

// observed is what one transaction saw of its session.
type observed struct {
	TenantID, UserID, Roles, TenantIDs, Platform, User string
	Backend                                            int32
	Tenants                                            []string
}

const observeSQL = `SELECT coalesce(current_setting('app.tenant_id', true), ''), coalesce(current_setting('app.user_id', true), ''),
	coalesce(current_setting('app.roles', true), ''), coalesce(current_setting('app.tenant_ids', true), ''),
	coalesce(current_setting('app.platform', true), ''), current_user::text, pg_backend_pid(),
	coalesce((SELECT array_agg(DISTINCT tenant_id ORDER BY tenant_id) FROM items), '{}')`

func observe(ctx context.Context, q interface {
	QueryRow(context.Context, string, ...any) pgx.Row
}) (observed, error) {
	var o observed
	err := q.QueryRow(ctx, observeSQL).Scan(&o.TenantID, &o.UserID, &o.Roles, &o.TenantIDs, &o.Platform, &o.User, &o.Backend, &o.Tenants)
	return o, err
}

// caller is one kind of request and what it must see, and nothing else.
type caller struct {
	name string
	sess *rls.Session // nil: a plain transaction, without rls
	want observed
}

var pooledCallers = []caller{
	{"acme", &rls.Session{TenantID: "acme", UserID: "u-acme", Roles: []string{"Acme Role"}},
		observed{TenantID: "acme", UserID: "u-acme", Roles: `{"Acme Role"}`, TenantIDs: "{}", User: "keybridge_app", Tenants: []string{"acme"}}},
	{"globex", &rls.Session{TenantID: "globex", UserID: "u-globex", Roles: []string{"Globex Role"}},
		observed{TenantID: "globex", UserID: "u-globex", Roles: `{"Globex Role"}`, TenantIDs: "{}", User: "keybridge_app", Tenants: []string{"globex"}}},
	{"organization", &rls.Session{TenantID: "acme", TenantIDs: []string{"globex"}, UserID: "u-org"},
		observed{TenantID: "acme", UserID: "u-org", Roles: "{}", TenantIDs: `{"globex"}`, User: "keybridge_org", Tenants: []string{"acme", "globex"}}},
	{"platform", &rls.Session{UserID: "u-platform", Platform: true},
		observed{UserID: "u-platform", Roles: "{}", TenantIDs: "{}", Platform: "on", User: "keybridge_platform", Tenants: []string{"acme", "globex"}}},
	// Between rls transactions, a connection carries nothing of them.
	{"plain", nil, observed{User: "keybridge_app", Tenants: []string{}}},
}

// sameSession compares all but the backend.
func sameSession(a, b observed) bool {
	a.Backend, b.Backend = 0, 0
	return fmt.Sprint(a) == fmt.Sprint(b)
}

// Behind PgBouncer in transaction pooling mode, 8 clients share 2 server
// connections: two tenants (acme three clients, globex two), an
// organization-level and a platform caller interleave rls transactions, and
// a plain transaction between them checks that nothing stays behind. Every
// request sees exactly its own variables, role and rows. The backends that
// served them show the pool really mixed the tenants.
func TestBehindPgBouncerTransactionPooling(t *testing.T) {
	db := testenv.NewDatabase(t)
	testenv.TemplateTable(t, db)
	ctx := context.Background()

	t.Run("control: a session-level setting leaks through this pooler", func(t *testing.T) {
		// Without is_local, a value outlives the transaction on the server
		// connection and the next client gets it: what the rls package
		// never does, and what this harness would see.
		b := testenv.StartPgBouncer(t, db, 2)
		pool, err := pgxpool.New(ctx, b.AppURL)
		if err != nil {
			t.Fatal(err)
		}
		defer pool.Close()
		// Two transactions at once hold both server connections.
		var txs []pgx.Tx
		for range 2 {
			tx, err := pool.Begin(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := tx.Exec(ctx, `SELECT set_config('app.tenant_id', 'acme', false)`); err != nil {
				t.Fatal(err)
			}
			txs = append(txs, tx)
		}
		for _, tx := range txs {
			if err := tx.Commit(ctx); err != nil {
				t.Fatal(err)
			}
		}
		o, err := observe(ctx, pool)
		if err != nil {
			t.Fatal(err)
		}
		if o.TenantID != "acme" {
			t.Errorf("a later client saw app.tenant_id %q: the control did not leak, so this pooler proves nothing", o.TenantID)
		}
	})

	b := testenv.StartPgBouncer(t, db, 2)
	cfg, err := pgxpool.ParseConfig(b.AppURL)
	if err != nil {
		t.Fatal(err)
	}
	cfg.MaxConns = 8
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()

	clients := []caller{pooledCallers[0], pooledCallers[1], pooledCallers[0], pooledCallers[1], pooledCallers[0],
		pooledCallers[2], pooledCallers[3], pooledCallers[4]}
	const target = 4000
	deadline, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	var done, bad atomic.Int64
	var mu sync.Mutex
	backends := map[string]map[int32]bool{}
	var wg sync.WaitGroup
	for _, c := range clients {
		wg.Go(func() {
			for done.Load() < target && deadline.Err() == nil {
				var o observed
				var err error
				if c.sess == nil {
					o, err = observe(deadline, pool)
				} else {
					err = rls.InTx(rls.WithSession(deadline, *c.sess), pool, func(tx pgx.Tx) error {
						o, err = observe(deadline, tx)
						return err
					})
				}
				if errors.Is(err, context.DeadlineExceeded) || deadline.Err() != nil {
					return
				}
				done.Add(1)
				if err != nil || !sameSession(o, c.want) {
					if bad.Add(1) <= 5 {
						t.Errorf("%s saw %+v (%v), want %+v", c.name, o, err, c.want)
					}
					continue
				}
				mu.Lock()
				if backends[c.name] == nil {
					backends[c.name] = map[int32]bool{}
				}
				backends[c.name][o.Backend] = true
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	t.Logf("%d requests through pgbouncer, %d wrong", done.Load(), bad.Load())
	if done.Load() < 1000 {
		t.Errorf("only %d requests in the time allowed", done.Load())
	}
	all := map[int32]bool{}
	shared := false
	for pid := range backends["acme"] {
		shared = shared || backends["globex"][pid]
	}
	for _, m := range backends {
		for pid := range m {
			all[pid] = true
		}
	}
	if !shared || len(all) > 2 {
		t.Errorf("acme and globex shared a server connection: %v; %d server connections in all (want at most 2)", shared, len(all))
	}
	if got := slices.Sorted(func(yield func(string) bool) {
		for k := range backends {
			if !yield(k) {
				return
			}
		}
	}); len(got) != len(pooledCallers) {
		t.Errorf("callers with a correct answer: %q", got)
	}
}
