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

// Person is what a decision needs to know about a subject.
type Person struct {
	Status      string
	Assignments []mapping.Assignment
}

// Revoked reports a subject whose tokens must be refused.
func (p Person) Revoked() bool { return p.Status == "inactive" || p.Status == "deleted" }

type view struct {
	people map[string]Person
	engine *mapping.Engine
}

// Directory is the view. Lookups are lock-free.
type Directory struct {
	Pool     *pgxpool.Pool // the sync role's pool: the view spans tenants
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
func (d *Directory) Load(ctx context.Context) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	people := map[string]Person{}
	rows, err := d.Pool.Query(ctx, `SELECT id, status FROM people`)
	if err != nil {
		return fmt.Errorf("load people: %w", err)
	}
	for rows.Next() {
		var id, status string
		if err := rows.Scan(&id, &status); err != nil {
			rows.Close()
			return fmt.Errorf("load people: %w", err)
		}
		people[id] = Person{Status: status}
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("load people: %w", err)
	}
	if err := loadAssignments(ctx, d.Pool, people, ""); err != nil {
		return err
	}
	engine, err := d.loadEngine(ctx)
	if err != nil {
		return err
	}
	d.cur.Store(&view{people: people, engine: engine})
	d.version.Add(1)
	d.loaded.Store(true)
	return nil
}

// reloadPerson refreshes one subject.
func (d *Directory) reloadPerson(ctx context.Context, id string) error {
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
	err := d.Pool.QueryRow(ctx, `SELECT status FROM people WHERE id = $1`, id).Scan(&status)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		delete(people, id)
	case err != nil:
		return fmt.Errorf("reload person: %w", err)
	default:
		people[id] = Person{Status: status}
		if err := loadAssignments(ctx, d.Pool, people, id); err != nil {
			return err
		}
	}
	d.cur.Store(&view{people: people, engine: old.engine})
	d.version.Add(1)
	return nil
}

func loadAssignments(ctx context.Context, pool *pgxpool.Pool, people map[string]Person, only string) error {
	rows, err := pool.Query(ctx, `SELECT ra.person_id, coalesce(r.name, ''), coalesce(ra.permission, ''), coalesce(ra.tenant_id, ''),
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

func (d *Directory) loadEngine(ctx context.Context) (*mapping.Engine, error) {
	rows, err := d.Pool.Query(ctx, `SELECT r.name, r.tenant_id, coalesce(r.based_on, ''), r.description,
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
	return e, nil
}

// Run listens for changes until ctx ends, reconnecting with backoff, and
// reloads the whole view every Interval to catch anything missed.
func (d *Directory) Run(ctx context.Context) error {
	interval := d.Interval
	if interval <= 0 {
		interval = time.Minute
	}
	backoff := 100 * time.Millisecond
	for ctx.Err() == nil {
		err := d.listen(ctx, interval)
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if d.Log != nil {
			d.Log.WarnContext(ctx, "directory listener lost; serving the last view", "error", err, "retry_in", backoff.String())
		}
		select {
		case <-ctx.Done():
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, 10*time.Second)
	}
	return ctx.Err()
}

func (d *Directory) listen(ctx context.Context, interval time.Duration) error {
	conn, err := d.Pool.Acquire(ctx)
	if err != nil {
		return err
	}
	defer conn.Release()
	if _, err := conn.Exec(ctx, "LISTEN "+Channel); err != nil {
		return err
	}
	// Whatever happened while we were not listening.
	if err := d.Load(ctx); err != nil {
		return err
	}
	next := time.Now().Add(interval)
	for {
		wctx, cancel := context.WithDeadline(ctx, next)
		n, err := conn.Conn().WaitForNotification(wctx)
		cancel()
		switch {
		case err == nil:
			d.apply(ctx, n.Payload)
		case ctx.Err() != nil:
			return ctx.Err()
		case errors.Is(err, context.DeadlineExceeded):
			if err := d.Load(ctx); err != nil {
				return err
			}
			next = time.Now().Add(interval)
		default:
			return err
		}
	}
}

func (d *Directory) apply(ctx context.Context, payload string) {
	var msg struct {
		Kind string `json:"kind"`
		ID   string `json:"id"`
	}
	_ = json.Unmarshal([]byte(payload), &msg)
	var err error
	if msg.Kind == "person" && msg.ID != "" {
		err = d.reloadPerson(ctx, msg.ID)
	} else {
		err = d.Load(ctx)
	}
	if err != nil && d.Log != nil {
		d.Log.WarnContext(ctx, "directory reload failed", "error", err, "kind", msg.Kind)
	}
}
