// Package directory keeps an in-memory view of what sync knows about people
// (status, stored role assignments) and tenants' custom roles, so a decision
// never waits on PostgreSQL. It reloads on NOTIFY keybridge_changed and
// periodically; while PostgreSQL is down it serves the last view.
package directory

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/keybridge/keybridge/mapping"
)

// Channel is the NOTIFY channel sync and management signal changes on.
const Channel = "keybridge_changed"

// Payload kinds on Channel ({"kind": ..., "id": ...}). A person's change
// reloads that person; any kind not named here reloads the whole view.
const (
	KindPerson = "person" // one person's status and assignments, by id
	KindRoles  = "roles"  // custom roles (a deleted one takes its assignments along)
	KindFull   = "full"   // a sync applied a plan
	// kindRevocation is package revocation's (revocation.Kind): ended
	// sessions and not-befores, nothing the view holds. Reloading for it
	// would drop every cached grant on every logout.
	kindRevocation = "revocation"
)

// querier reads the view: the pool, or the listener's own connection, so
// that a reload never waits for a pool connection behind the very traffic
// (syncs, webhooks, audit writes) whose changes it makes visible.
type querier interface {
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// Person is what a decision needs to know about a subject.
type Person struct {
	Status      string
	Assignments []mapping.Assignment
	// Tenants are the subject's synced memberships (tenant_members, as
	// people.tenant_ids keeps them, sorted): they place a request whose
	// token names no tenant (mapping.Placement).
	Tenants []string
}

// Revoked reports a subject whose tokens must be refused.
func (p Person) Revoked() bool { return p.Status == "inactive" || p.Status == "deleted" }

type view struct {
	people map[string]Person
	engine *mapping.Engine
	// disabled are the tenants disabled in Keycloak (tenants.status
	// 'disabled', issue 16): keybridge acts in none of them.
	disabled map[string]bool
}

// Directory is the view. Lookups are lock-free.
type Directory struct {
	Pool     *pgxpool.Pool // the sync role's pool: the view spans tenants; Run's listener connects with its settings, outside it
	Base     *mapping.Engine
	Log      *slog.Logger
	Interval time.Duration // full reload period

	cur     atomic.Pointer[view]
	version atomic.Uint64
	mu      sync.Mutex // serialises reloads
	loaded  atomic.Bool
}

// Lookup returns what is known of a subject.
func (d *Directory) Lookup(subject string) (Person, bool) {
	v := d.cur.Load()
	if v == nil {
		return Person{}, false
	}
	p, ok := v.people[subject]
	return p, ok
}

// TenantDisabled reports a tenant that is disabled (its organization
// disabled in Keycloak, or its group marked), as sync or tenant
// administration last wrote it.
func (d *Directory) TenantDisabled(tenant string) bool {
	v := d.cur.Load()
	return v != nil && len(v.disabled) > 0 && v.disabled[tenant]
}

// Engine is the base engine with the tenants' custom roles.
func (d *Directory) Engine() *mapping.Engine {
	if v := d.cur.Load(); v != nil && v.engine != nil {
		return v.engine
	}
	return d.Base
}

// Version changes whenever the view does; caches of grants key on it.
func (d *Directory) Version() uint64 { return d.version.Load() }

// Loaded reports whether a first load succeeded.
func (d *Directory) Loaded() bool { return d.loaded.Load() }

// Load reads the whole view.
func (d *Directory) Load(ctx context.Context) error { return d.load(ctx, d.Pool) }

func (d *Directory) load(ctx context.Context, q querier) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	people := map[string]Person{}
	rows, err := q.Query(ctx, `SELECT id, status, tenant_ids FROM people`)
	if err != nil {
		return fmt.Errorf("load people: %w", err)
	}
	for rows.Next() {
		var id, status string
		var tenants []string
		if err := rows.Scan(&id, &status, &tenants); err != nil {
			rows.Close()
			return fmt.Errorf("load people: %w", err)
		}
		people[id] = Person{Status: status, Tenants: tenants}
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("load people: %w", err)
	}
	if err := loadAssignments(ctx, q, people, ""); err != nil {
		return err
	}
	engine, err := d.loadEngine(ctx, q)
	if err != nil {
		return err
	}
	disabled, err := loadDisabledTenants(ctx, q)
	if err != nil {
		return err
	}
	d.cur.Store(&view{people: people, engine: engine, disabled: disabled})
	d.version.Add(1)
	d.loaded.Store(true)
	return nil
}

// reloadPerson refreshes one subject.
func (d *Directory) reloadPerson(ctx context.Context, q querier, id string) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	old := d.cur.Load()
	if old == nil {
		return errors.New("directory not loaded")
	}
	people := make(map[string]Person, len(old.people)+1)
	for k, v := range old.people {
		people[k] = v
	}
	var status string
	var tenants []string
	err := q.QueryRow(ctx, `SELECT status, tenant_ids FROM people WHERE id = $1`, id).Scan(&status, &tenants)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		delete(people, id)
	case err != nil:
		return fmt.Errorf("reload person: %w", err)
	default:
		people[id] = Person{Status: status, Tenants: tenants}
		if err := loadAssignments(ctx, q, people, id); err != nil {
			return err
		}
	}
	d.cur.Store(&view{people: people, engine: old.engine, disabled: old.disabled})
	d.version.Add(1)
	return nil
}

func loadDisabledTenants(ctx context.Context, q querier) (map[string]bool, error) {
	rows, err := q.Query(ctx, `SELECT id FROM tenants WHERE status = 'disabled'`)
	if err != nil {
		return nil, fmt.Errorf("load disabled tenants: %w", err)
	}
	ids, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, fmt.Errorf("load disabled tenants: %w", err)
	}
	out := make(map[string]bool, len(ids))
	for _, id := range ids {
		out[id] = true
	}
	return out, nil
}

func loadAssignments(ctx context.Context, q querier, people map[string]Person, only string) error {
	rows, err := q.Query(ctx, `SELECT ra.person_id, coalesce(r.name, ''), coalesce(ra.permission, ''), coalesce(ra.tenant_id, ''),
		ra.source, ra.expires_at, ra.id::text
		FROM role_assignments ra LEFT JOIN roles r ON r.id = ra.role_id
		WHERE (r.id IS NULL OR r.kind IN ('system', 'custom')) AND (ra.expires_at IS NULL OR ra.expires_at > now())
		AND ($1 = '' OR ra.person_id = $1)`, only)
	if err != nil {
		return fmt.Errorf("load assignments: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var pid string
		var a mapping.Assignment
		var exp *time.Time
		if err := rows.Scan(&pid, &a.Role, &a.Permission, &a.Tenant, &a.Source, &exp, &a.Ref); err != nil {
			return fmt.Errorf("load assignments: %w", err)
		}
		if exp != nil {
			a.ExpiresAt = *exp
		}
		a.Ref = a.Source + " assignment " + a.Ref
		p := people[pid]
		p.Assignments = append(p.Assignments, a)
		people[pid] = p
	}
	return rows.Err()
}

func (d *Directory) loadEngine(ctx context.Context, q querier) (*mapping.Engine, error) {
	rows, err := q.Query(ctx, `SELECT r.name, r.tenant_id, coalesce(r.based_on, ''), r.description,
		coalesce((SELECT array_agg(permission) FROM role_permissions WHERE role_id = r.id), '{}')
		FROM roles r WHERE r.kind = 'custom' AND r.status = 'active'`)
	if err != nil {
		return nil, fmt.Errorf("load custom roles: %w", err)
	}
	roles, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (mapping.Role, error) {
		var x mapping.Role
		err := r.Scan(&x.Name, &x.Tenant, &x.BasedOn, &x.Description, &x.Permissions)
		x.Kind = "custom"
		return x, err
	})
	if err != nil {
		return nil, fmt.Errorf("load custom roles: %w", err)
	}
	e, err := d.Base.WithCustomRoles(roles)
	if err != nil && d.Log != nil {
		// A role naming a permission the catalog no longer has is skipped,
		// not fatal: the others keep working.
		d.Log.WarnContext(ctx, "custom roles skipped", "error", err)
	}
	tree, err := loadTenantTree(ctx, q) // issue 16 (tenanttree.go)
	if err != nil {
		return nil, err
	}
	return e.WithTenantTree(tree), nil
}

// Run listens for changes until ctx ends, reconnecting with backoff, and
// reloads the whole view every Interval to catch anything missed. A reload
// that fails is not left to the periodic one: the listener reconnects and
// reloads everything. The backoff doubles only while reconnecting fails,
// so a listener lost after it was up is back within the first backoff.
func (d *Directory) Run(ctx context.Context) error {
	interval := d.Interval
	if interval <= 0 {
		interval = time.Minute
	}
	const firstBackoff, maxBackoff = 100 * time.Millisecond, 10 * time.Second
	backoff := firstBackoff
	for ctx.Err() == nil {
		up, err := d.listen(ctx, interval)
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if up {
			backoff = firstBackoff
		}
		if d.Log != nil {
			d.Log.WarnContext(ctx, "directory listener lost or reload failed; serving the last view", "error", err, "retry_in", backoff.String())
		}
		select {
		case <-ctx.Done():
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, maxBackoff)
	}
	return ctx.Err()
}

// listen opens a connection of its own: it listens on Channel, loads the
// view and applies each notification, reading through that connection. Not
// a pooled one: a pool busy with syncs, webhooks and audit writes never
// delays a reload, and after PostgreSQL restarts the listener is not handed
// the pool's dead connections one backoff at a time. It reports whether it
// got as far as listening with a loaded view.
func (d *Directory) listen(ctx context.Context, interval time.Duration) (bool, error) {
	conn, err := pgx.ConnectConfig(ctx, d.Pool.Config().ConnConfig)
	if err != nil {
		return false, fmt.Errorf("connect: %w", err)
	}
	defer func() {
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Second)
		defer cancel()
		_ = conn.Close(cctx)
	}()
	if _, err := conn.Exec(ctx, "LISTEN "+Channel); err != nil {
		return false, fmt.Errorf("listen: %w", err)
	}
	// Whatever happened while we were not listening.
	if err := d.load(ctx, conn); err != nil {
		return false, err
	}
	next := time.Now().Add(interval)
	for {
		wctx, cancel := context.WithDeadline(ctx, next)
		n, err := conn.WaitForNotification(wctx)
		cancel()
		switch {
		case err == nil:
			if err := d.apply(ctx, conn, n.Payload); err != nil {
				return true, err
			}
		case ctx.Err() != nil:
			return true, ctx.Err()
		case errors.Is(err, context.DeadlineExceeded):
			if err := d.load(ctx, conn); err != nil {
				return true, err
			}
			next = time.Now().Add(interval)
		default:
			return true, fmt.Errorf("wait for notification: %w", err)
		}
	}
}

func (d *Directory) apply(ctx context.Context, q querier, payload string) error {
	var msg struct {
		Kind string `json:"kind"`
		ID   string `json:"id"`
	}
	_ = json.Unmarshal([]byte(payload), &msg)
	var err error
	switch {
	case msg.Kind == KindPerson && msg.ID != "":
		err = d.reloadPerson(ctx, q, msg.ID)
	case msg.Kind == kindRevocation:
		return nil
	default:
		err = d.load(ctx, q)
	}
	if err != nil {
		return fmt.Errorf("reload for %q: %w", msg.Kind, err)
	}
	return nil
}
