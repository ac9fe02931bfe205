package store

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
)

// The sync-managed state, as rows. Empty strings stand for NULL.

// TenantRow is a tenant. KeycloakID is the id of the Keycloak object the
// tenant comes from (its organization, or its group under the group
// prefix), "" when none (attribute and claim sources); Status is active,
// disabled (issue 16: the organization disabled, the group marked) or
// deleted. OrgID (issue 16, a tenancy of organizations and customers,
// migration 00014) is a customer's organization, "" for an organization
// and for a customer of none.
type TenantRow struct{ ID, Name, Source, Status, KeycloakID, OrgID string }

// PersonRow is a person as sync writes it.
type PersonRow struct {
	ID, Username, Email, FirstName, LastName, DisplayName, Status, IdentityProvider string
	EmailVerified                                                                   bool
	Created                                                                         int64 // Keycloak createdTimestamp, ms
}

// TeamRow is a team.
type TeamRow struct{ ID, Tenant, Name, Path, ParentID, Status string }

// MemberRow is a membership of a person in a tenant or team.
type MemberRow struct{ Group, Person, Tenant string }

// SyncRole is a role sync owns: a Keycloak role, or a preset's system or
// pseudo role with its permissions.
type SyncRole struct {
	Kind, ClientID, Name, KeycloakID, Description, Status string
	Composite                                             bool
	Permissions                                           string // sorted, comma-joined (system and pseudo roles)
}

// Key identifies a role across runs.
func (r SyncRole) Key() string { return r.Kind + "|" + r.ClientID + "|" + r.Name }

// CompositeRow says a Keycloak role contains another (role keys).
type CompositeRow struct{ Parent, Child string }

// AssignmentRow is a sync-sourced assignment: source keycloak or rule.
type AssignmentRow struct{ Person, Role, Tenant, Source, Ref string }

// SyncState is everything sync manages.
type SyncState struct {
	Tenants       []TenantRow
	People        []PersonRow
	TenantMembers []MemberRow
	Teams         []TeamRow
	TeamMembers   []MemberRow
	Roles         []SyncRole
	Composites    []CompositeRow
	Assignments   []AssignmentRow
}

// LoadSyncState reads what sync manages, as the sync role.
func LoadSyncState(ctx context.Context, q Querier) (*SyncState, error) {
	return loadSync(ctx, q, nil)
}

// LoadSyncScope reads the part of what sync manages that an incremental
// apply owns: the rows of sc's people (their memberships and assignments),
// teams, Keycloak roles (their composites, and composites whose child is in
// sc.Children) and tenants. Empty lists read nothing of their kind.
func LoadSyncScope(ctx context.Context, q Querier, sc SyncScope) (*SyncState, error) {
	return loadSync(ctx, q, &sc)
}

// InvitedPeople reads the people still invited, as the state Desired
// consults (it keeps them invited until they act).
func InvitedPeople(ctx context.Context, q Querier) (*SyncState, error) {
	rows, err := q.Query(ctx, `SELECT id FROM people WHERE status = 'invited'`)
	if err != nil {
		return nil, fmt.Errorf("load invited people: %w", err)
	}
	ids, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, fmt.Errorf("load invited people: %w", err)
	}
	s := &SyncState{People: make([]PersonRow, len(ids))}
	for i, id := range ids {
		s.People[i] = PersonRow{ID: id, Status: "invited"}
	}
	return s, nil
}

// SyncScope names rows by key: people, teams and tenants by id, roles by
// SyncRole.Key.
type SyncScope struct {
	People, Teams, Roles, Tenants []string
	// Children are role keys whose composite rows, as the child, are read
	// too: a role gone from Keycloak leaves every role that contained it.
	Children []string
}

// strs holds each string once: a person's id, a role's key, a tenant are
// named by many rows, and a realm of 100,000 people has half a million.
type strs map[string]string

func (m strs) of(b []byte) string {
	if s, ok := m[string(b)]; ok {
		return s
	}
	s := string(b)
	m[s] = s
	return s
}

func (m strs) str(s string) string {
	if x, ok := m[s]; ok {
		return x
	}
	m[s] = s
	return s
}

// rawText reads a row of text columns (none NULL) through m.
func rawText(r pgx.Rows, m strs, into ...*string) error {
	vals := r.RawValues()
	if len(vals) != len(into) {
		return fmt.Errorf("%d columns, want %d", len(vals), len(into))
	}
	for i, v := range vals {
		*into[i] = m.of(v)
	}
	return nil
}

func loadSync(ctx context.Context, q Querier, sc *SyncScope) (*SyncState, error) {
	s := &SyncState{}
	in := strs{}
	type load struct {
		name string
		sql  string
		scan func(pgx.Rows) error
		// where filters the rows to sc, with args; the sql ends in a WHERE.
		where string
		args  func(*SyncScope) []any
	}
	people := func(sc *SyncScope) []any { return []any{sc.People} }
	const roleKey = `kind || '|' || client_id || '|' || name`
	loads := []load{
		{"tenants", `SELECT id, name, source, status, coalesce(keycloak_id, ''), coalesce(org_id, '') FROM tenants WHERE true`, func(r pgx.Rows) error {
			var t TenantRow
			err := r.Scan(&t.ID, &t.Name, &t.Source, &t.Status, &t.KeycloakID, &t.OrgID) // issue 16: keycloak_id, org_id
			s.Tenants = append(s.Tenants, t)
			return err
		}, `id = ANY($1)`, func(sc *SyncScope) []any { return []any{sc.Tenants} }},
		{"people", `SELECT id, username, coalesce(email, ''), coalesce(first_name, ''), coalesce(last_name, ''), display_name, status,
			coalesce(identity_provider, ''), email_verified, coalesce((extract(epoch FROM keycloak_created) * 1000)::bigint, 0) FROM people WHERE true`, func(r pgx.Rows) error {
			var p PersonRow
			err := r.Scan(&p.ID, &p.Username, &p.Email, &p.FirstName, &p.LastName, &p.DisplayName, &p.Status, &p.IdentityProvider, &p.EmailVerified, &p.Created)
			p.ID, p.Status = in.str(p.ID), in.str(p.Status)
			s.People = append(s.People, p)
			return err
		}, `id = ANY($1)`, people},
		{"tenant_members", `SELECT tenant_id, person_id, tenant_id FROM tenant_members WHERE true`, func(r pgx.Rows) error {
			var m MemberRow
			err := rawText(r, in, &m.Group, &m.Person, &m.Tenant)
			s.TenantMembers = append(s.TenantMembers, m)
			return err
		}, `person_id = ANY($1)`, people},
		{"teams", `SELECT id, coalesce(tenant_id, ''), name, path, coalesce(parent_id, ''), status FROM teams WHERE true`, func(r pgx.Rows) error {
			var t TeamRow
			err := r.Scan(&t.ID, &t.Tenant, &t.Name, &t.Path, &t.ParentID, &t.Status)
			s.Teams = append(s.Teams, t)
			return err
		}, `id = ANY($1)`, func(sc *SyncScope) []any { return []any{sc.Teams} }},
		{"team_members", `SELECT team_id, person_id, coalesce(tenant_id, '') FROM team_members WHERE true`, func(r pgx.Rows) error {
			var m MemberRow
			err := rawText(r, in, &m.Group, &m.Person, &m.Tenant)
			s.TeamMembers = append(s.TeamMembers, m)
			return err
		}, `person_id = ANY($1)`, people},
		{"roles", `SELECT kind, client_id, name, coalesce(keycloak_id, ''), description, status, composite,
			coalesce((SELECT string_agg(permission, ',' ORDER BY permission) FROM role_permissions rp WHERE rp.role_id = r.id), '')
			FROM roles r WHERE kind IN ('keycloak', 'system', 'pseudo')`, func(r pgx.Rows) error {
			var x SyncRole
			err := r.Scan(&x.Kind, &x.ClientID, &x.Name, &x.KeycloakID, &x.Description, &x.Status, &x.Composite, &x.Permissions)
			s.Roles = append(s.Roles, x)
			return err
		}, roleKey + ` = ANY($1)`, func(sc *SyncScope) []any { return []any{sc.Roles} }},
		{"role_composites", `SELECT p.kind || '|' || p.client_id || '|' || p.name, c.kind || '|' || c.client_id || '|' || c.name
			FROM role_composites rc JOIN roles p ON p.id = rc.parent_id JOIN roles c ON c.id = rc.child_id WHERE true`, func(r pgx.Rows) error {
			var x CompositeRow
			err := rawText(r, in, &x.Parent, &x.Child)
			s.Composites = append(s.Composites, x)
			return err
		}, `(p.kind || '|' || p.client_id || '|' || p.name = ANY($1) OR c.kind || '|' || c.client_id || '|' || c.name = ANY($2))`,
			func(sc *SyncScope) []any { return []any{sc.Roles, sc.Children} }},
		{"role_assignments", `SELECT ra.person_id, r.kind || '|' || r.client_id || '|' || r.name, coalesce(ra.tenant_id, ''), ra.source, ra.rule_ref
			FROM role_assignments ra JOIN roles r ON r.id = ra.role_id WHERE ra.source IN ('keycloak', 'rule')`, func(r pgx.Rows) error {
			var x AssignmentRow
			err := rawText(r, in, &x.Person, &x.Role, &x.Tenant, &x.Source, &x.Ref)
			s.Assignments = append(s.Assignments, x)
			return err
		}, `ra.person_id = ANY($1)`, people},
	}
	for _, l := range loads {
		sql, args := l.sql, []any(nil)
		if sc != nil {
			sql, args = sql+" AND "+l.where, l.args(sc)
		}
		rows, err := q.Query(ctx, sql, args...)
		if err != nil {
			return nil, fmt.Errorf("load %s: %w", l.name, err)
		}
		for rows.Next() {
			if err := l.scan(rows); err != nil {
				rows.Close()
				return nil, fmt.Errorf("load %s: %w", l.name, err)
			}
		}
		if err := rows.Err(); err != nil {
			return nil, fmt.Errorf("load %s: %w", l.name, err)
		}
	}
	return s, nil
}

// SyncPlan is what an apply writes: upserts (creates and updates, and
// deactivations as status changes) and removals of derived rows.
type SyncPlan struct {
	Tenants           []TenantRow
	People            []PersonRow
	Teams             []TeamRow
	Roles             []SyncRole
	AddTenantMembers  []MemberRow
	DelTenantMembers  []MemberRow
	AddTeamMembers    []MemberRow
	DelTeamMembers    []MemberRow
	AddComposites     []CompositeRow
	DelComposites     []CompositeRow
	AddAssignments    []AssignmentRow
	DelAssignments    []AssignmentRow
	PermissionChanges []SyncRole // system/pseudo roles whose permission set changed
}

// Empty reports a plan that writes nothing.
func (p *SyncPlan) Empty() bool {
	return len(p.Tenants)+len(p.People)+len(p.Teams)+len(p.Roles)+len(p.AddTenantMembers)+len(p.DelTenantMembers)+
		len(p.AddTeamMembers)+len(p.DelTeamMembers)+len(p.AddComposites)+len(p.DelComposites)+
		len(p.AddAssignments)+len(p.DelAssignments)+len(p.PermissionChanges) == 0
}

func col[T any, V any](rows []T, f func(T) V) []V {
	out := make([]V, len(rows))
	for i, r := range rows {
		out[i] = f(r)
	}
	return out
}

// applyChunk is the most rows one statement of an apply writes: a
// statement's parameters are held in memory at once, so a large plan is
// written in parts, all in the caller's one transaction.
const applyChunk = 10000

// chunks calls fn for consecutive parts of rows of at most applyChunk.
func chunks[T any](rows []T, fn func([]T) error) error {
	for len(rows) > 0 {
		n := min(len(rows), applyChunk)
		if err := fn(rows[:n]); err != nil {
			return err
		}
		rows = rows[n:]
	}
	return nil
}

// ApplySyncPlan writes a plan in the caller's transaction with bulk
// statements of up to applyChunk rows per kind, then notifies every
// replica on commit.
func ApplySyncPlan(ctx context.Context, tx pgx.Tx, p *SyncPlan) error {
	exec := func(what, sql string, args ...any) error {
		if _, err := tx.Exec(ctx, sql, args...); err != nil {
			return fmt.Errorf("apply %s: %w", what, err)
		}
		return nil
	}
	if len(p.Tenants) > 0 {
		// keycloak_id (issue 16): the organization or group the tenant
		// comes from, which invitations and tenant administration act on.
		if err := exec("tenants", `INSERT INTO tenants (id, name, source, status, keycloak_id, org_id)
			SELECT id, n, s, st, nullif(k, ''), nullif(o, '') FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[]) AS x(id, n, s, st, k, o)
			ON CONFLICT (id) DO UPDATE SET name = excluded.name, source = excluded.source, status = excluded.status,
			keycloak_id = excluded.keycloak_id, org_id = excluded.org_id, updated_at = now()`,
			col(p.Tenants, func(t TenantRow) string { return t.ID }), col(p.Tenants, func(t TenantRow) string { return t.Name }),
			col(p.Tenants, func(t TenantRow) string { return t.Source }), col(p.Tenants, func(t TenantRow) string { return t.Status }),
			col(p.Tenants, func(t TenantRow) string { return t.KeycloakID }), col(p.Tenants, func(t TenantRow) string { return t.OrgID })); err != nil {
			return err
		}
	}
	if err := chunks(p.People, func(rows []PersonRow) error {
		created := col(rows, func(x PersonRow) *time.Time {
			if x.Created == 0 {
				return nil
			}
			t := time.UnixMilli(x.Created)
			return &t
		})
		return exec("people", `INSERT INTO people (id, username, email, first_name, last_name, display_name, status, identity_provider, email_verified, keycloak_created, deleted_at)
			SELECT id, u, nullif(e, ''), nullif(f, ''), nullif(l, ''), d, s, nullif(i, ''), v, c, CASE WHEN s = 'deleted' THEN now() END
			FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[], $8::text[], $9::bool[], $10::timestamptz[])
			AS x(id, u, e, f, l, d, s, i, v, c)
			ON CONFLICT (id) DO UPDATE SET username = excluded.username, email = excluded.email, first_name = excluded.first_name,
			last_name = excluded.last_name, display_name = excluded.display_name, status = excluded.status,
			identity_provider = excluded.identity_provider, email_verified = excluded.email_verified,
			keycloak_created = excluded.keycloak_created,
			deleted_at = CASE WHEN excluded.status = 'deleted' THEN coalesce(people.deleted_at, now()) END, updated_at = now()`,
			col(rows, func(x PersonRow) string { return x.ID }), col(rows, func(x PersonRow) string { return x.Username }),
			col(rows, func(x PersonRow) string { return x.Email }), col(rows, func(x PersonRow) string { return x.FirstName }),
			col(rows, func(x PersonRow) string { return x.LastName }), col(rows, func(x PersonRow) string { return x.DisplayName }),
			col(rows, func(x PersonRow) string { return x.Status }), col(rows, func(x PersonRow) string { return x.IdentityProvider }),
			col(rows, func(x PersonRow) bool { return x.EmailVerified }), created)
	}); err != nil {
		return err
	}
	if len(p.Teams) > 0 {
		if err := exec("teams", `INSERT INTO teams (id, tenant_id, name, path, parent_id, status)
			SELECT id, nullif(t, ''), n, p, nullif(pa, ''), s FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[]) AS x(id, t, n, p, pa, s)
			ON CONFLICT (id) DO UPDATE SET tenant_id = excluded.tenant_id, name = excluded.name, path = excluded.path,
			parent_id = excluded.parent_id, status = excluded.status, updated_at = now()`,
			col(p.Teams, func(x TeamRow) string { return x.ID }), col(p.Teams, func(x TeamRow) string { return x.Tenant }),
			col(p.Teams, func(x TeamRow) string { return x.Name }), col(p.Teams, func(x TeamRow) string { return x.Path }),
			col(p.Teams, func(x TeamRow) string { return x.ParentID }), col(p.Teams, func(x TeamRow) string { return x.Status })); err != nil {
			return err
		}
	}
	if len(p.Roles) > 0 {
		if err := exec("roles", `INSERT INTO roles (kind, client_id, name, keycloak_id, description, status, composite)
			SELECT k, c, n, nullif(i, ''), d, s, comp FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::bool[]) AS x(k, c, n, i, d, s, comp)
			ON CONFLICT (kind, coalesce(tenant_id, ''), client_id, name) DO UPDATE SET keycloak_id = excluded.keycloak_id,
			description = excluded.description, status = excluded.status, composite = excluded.composite, updated_at = now()`,
			col(p.Roles, func(x SyncRole) string { return x.Kind }), col(p.Roles, func(x SyncRole) string { return x.ClientID }),
			col(p.Roles, func(x SyncRole) string { return x.Name }), col(p.Roles, func(x SyncRole) string { return x.KeycloakID }),
			col(p.Roles, func(x SyncRole) string { return x.Description }), col(p.Roles, func(x SyncRole) string { return x.Status }),
			col(p.Roles, func(x SyncRole) bool { return x.Composite })); err != nil {
			return err
		}
	}
	if len(p.PermissionChanges) > 0 {
		keys := col(p.PermissionChanges, func(x SyncRole) string { return x.Key() })
		perms := col(p.PermissionChanges, func(x SyncRole) string { return x.Permissions })
		if err := exec("role permissions", `DELETE FROM role_permissions rp USING roles r
			WHERE rp.role_id = r.id AND r.kind || '|' || r.client_id || '|' || r.name = ANY($1)`, keys); err != nil {
			return err
		}
		if err := exec("role permissions", `INSERT INTO role_permissions (role_id, permission)
			SELECT r.id, p FROM unnest($1::text[], $2::text[]) AS x(k, ps) JOIN roles r ON r.kind || '|' || r.client_id || '|' || r.name = x.k AND r.tenant_id IS NULL
			CROSS JOIN LATERAL unnest(string_to_array(nullif(x.ps, ''), ',')) AS p`, keys, perms); err != nil {
			return err
		}
	}
	members := func(table, groupCol string, rows []MemberRow, add bool) error {
		g, pe, t := col(rows, func(m MemberRow) string { return m.Group }), col(rows, func(m MemberRow) string { return m.Person }), col(rows, func(m MemberRow) string { return m.Tenant })
		if !add {
			return exec(table, `DELETE FROM `+table+` x USING unnest($1::text[], $2::text[]) AS d(g, p) WHERE x.`+groupCol+` = d.g AND x.person_id = d.p`, g, pe)
		}
		if table == "tenant_members" {
			return exec(table, `INSERT INTO tenant_members (tenant_id, person_id) SELECT * FROM unnest($1::text[], $2::text[]) ON CONFLICT DO NOTHING`, g, pe)
		}
		return exec(table, `INSERT INTO team_members (team_id, person_id, tenant_id) SELECT g, p, nullif(t, '') FROM unnest($1::text[], $2::text[], $3::text[]) AS x(g, p, t)
			ON CONFLICT (team_id, person_id) DO UPDATE SET tenant_id = excluded.tenant_id`, g, pe, t)
	}
	for _, m := range []struct {
		table, col string
		rows       []MemberRow
		add        bool
	}{
		{"tenant_members", "tenant_id", p.DelTenantMembers, false}, {"tenant_members", "tenant_id", p.AddTenantMembers, true},
		{"team_members", "team_id", p.DelTeamMembers, false}, {"team_members", "team_id", p.AddTeamMembers, true},
	} {
		if err := chunks(m.rows, func(rows []MemberRow) error { return members(m.table, m.col, rows, m.add) }); err != nil {
			return err
		}
	}
	const roleByKey = `r.kind || '|' || r.client_id || '|' || r.name`
	if len(p.DelComposites) > 0 {
		if err := exec("role composites", `DELETE FROM role_composites rc USING roles p, roles c, unnest($1::text[], $2::text[]) AS d(pk, ck)
			WHERE rc.parent_id = p.id AND rc.child_id = c.id AND p.kind || '|' || p.client_id || '|' || p.name = d.pk
			AND c.kind || '|' || c.client_id || '|' || c.name = d.ck`,
			col(p.DelComposites, func(x CompositeRow) string { return x.Parent }), col(p.DelComposites, func(x CompositeRow) string { return x.Child })); err != nil {
			return err
		}
	}
	if len(p.AddComposites) > 0 {
		if err := exec("role composites", `INSERT INTO role_composites (parent_id, child_id)
			SELECT p.id, c.id FROM unnest($1::text[], $2::text[]) AS d(pk, ck)
			JOIN roles p ON p.kind || '|' || p.client_id || '|' || p.name = d.pk AND p.tenant_id IS NULL
			JOIN roles c ON c.kind || '|' || c.client_id || '|' || c.name = d.ck AND c.tenant_id IS NULL ON CONFLICT DO NOTHING`,
			col(p.AddComposites, func(x CompositeRow) string { return x.Parent }), col(p.AddComposites, func(x CompositeRow) string { return x.Child })); err != nil {
			return err
		}
	}
	asg := func(rows []AssignmentRow) []any {
		return []any{col(rows, func(a AssignmentRow) string { return a.Person }), col(rows, func(a AssignmentRow) string { return a.Role }),
			col(rows, func(a AssignmentRow) string { return a.Tenant }), col(rows, func(a AssignmentRow) string { return a.Source }),
			col(rows, func(a AssignmentRow) string { return a.Ref })}
	}
	if err := chunks(p.DelAssignments, func(rows []AssignmentRow) error {
		return exec("assignments", `DELETE FROM role_assignments ra USING roles r, unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[]) AS d(p, k, t, s, ref)
			WHERE ra.role_id = r.id AND ra.person_id = d.p AND `+roleByKey+` = d.k AND coalesce(ra.tenant_id, '') = d.t
			AND ra.source = d.s AND ra.rule_ref = d.ref`, asg(rows)...)
	}); err != nil {
		return err
	}
	if err := chunks(p.AddAssignments, func(rows []AssignmentRow) error {
		return exec("assignments", `INSERT INTO role_assignments (person_id, role_id, tenant_id, source, rule_ref)
			SELECT d.p, r.id, nullif(d.t, ''), d.s, d.ref FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[]) AS d(p, k, t, s, ref)
			JOIN roles r ON `+roleByKey+` = d.k AND r.tenant_id IS NULL ON CONFLICT DO NOTHING`, asg(rows)...)
	}); err != nil {
		return err
	}
	if people := p.touchedPeople(); p.personal() && len(people) <= maxPersonNotices {
		// Only a few people changed: each replica reloads just them.
		return exec("notify", `SELECT pg_notify('keybridge_changed', json_build_object('kind', 'person', 'id', id)::text) FROM unnest($1::text[]) AS id`, people)
	}
	return exec("notify", `SELECT pg_notify('keybridge_changed', '{"kind":"full"}')`)
}

// SyncRun is a row of sync_runs.
type SyncRun struct {
	ID               int64           `json:"id"`
	Trigger          string          `json:"trigger"`
	Mode             string          `json:"mode"`
	DryRun           bool            `json:"dry_run"`
	Forced           bool            `json:"forced"`
	StartedAt        time.Time       `json:"started_at"`
	FinishedAt       *time.Time      `json:"finished_at,omitempty"`
	Outcome          string          `json:"outcome"`
	Error            string          `json:"error,omitempty"`
	KeycloakRequests int             `json:"keycloak_requests"`
	Objects          json.RawMessage `json:"objects"`
	Changes          json.RawMessage `json:"changes"`
	// Drift counts, by kind, what a scheduled run had to apply that events
	// had missed; absent for other runs (see RecordRunDrift).
	Drift json.RawMessage `json:"drift,omitempty"`
}

// StartRun records a run as running and returns its id and the database's
// clock at that moment.
func StartRun(ctx context.Context, q Querier, trigger, mode string, dryRun, forced bool, at time.Time) (id int64, dbNow time.Time, err error) {
	err = q.QueryRow(ctx, `INSERT INTO sync_runs (trigger, mode, dry_run, forced, started_at, outcome) VALUES ($1, $2, $3, $4, $5, 'running') RETURNING id, now()`,
		trigger, mode, dryRun, forced, at).Scan(&id, &dbNow)
	if err != nil {
		return 0, time.Time{}, fmt.Errorf("record sync run: %w", err)
	}
	return id, dbNow, nil
}

// FinishRun records a run's end.
func FinishRun(ctx context.Context, q Querier, id int64, outcome, errText string, requests int64, objects, changes any, at time.Time) error {
	o, _ := json.Marshal(objects)
	c, _ := json.Marshal(changes)
	_, err := q.Exec(ctx, `UPDATE sync_runs SET outcome = $2, error = $3, keycloak_requests = $4, objects = $5, changes = $6, finished_at = $7 WHERE id = $1`,
		id, outcome, errText, requests, o, c, at)
	if err != nil {
		return fmt.Errorf("finish sync run: %w", err)
	}
	return nil
}

// RecordRunProgress writes a running run's Keycloak requests and objects
// read so far (by phase), so GET /v1/sync/runs shows how far it has got;
// FinishRun later replaces both with the run's totals. A finished run is
// left alone.
func RecordRunProgress(ctx context.Context, q Querier, id int64, requests int64, objects any) error {
	o, err := json.Marshal(objects)
	if err != nil {
		return fmt.Errorf("record sync run progress: %w", err)
	}
	if _, err := q.Exec(ctx, `UPDATE sync_runs SET keycloak_requests = $2, objects = $3 WHERE id = $1 AND outcome = 'running'`, id, requests, o); err != nil {
		return fmt.Errorf("record sync run progress: %w", err)
	}
	return nil
}

// ListRuns returns the latest runs.
func ListRuns(ctx context.Context, q Querier, limit int) ([]SyncRun, error) {
	rows, err := q.Query(ctx, `SELECT id, trigger, mode, dry_run, forced, started_at, finished_at, outcome, error, keycloak_requests, objects, changes, drift
		FROM sync_runs ORDER BY id DESC LIMIT $1`, limit)
	if err != nil {
		return nil, fmt.Errorf("list sync runs: %w", err)
	}
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) (SyncRun, error) {
		var s SyncRun
		err := r.Scan(&s.ID, &s.Trigger, &s.Mode, &s.DryRun, &s.Forced, &s.StartedAt, &s.FinishedAt, &s.Outcome, &s.Error, &s.KeycloakRequests, &s.Objects, &s.Changes, &s.Drift)
		return s, err
	})
}

// GetState reads a sync_state value ("" when unset).
func GetState(ctx context.Context, q Querier, key string) (string, error) {
	var v string
	err := q.QueryRow(ctx, `SELECT value FROM sync_state WHERE key = $1`, key).Scan(&v)
	if err == pgx.ErrNoRows {
		return "", nil
	}
	return v, err
}

// SetState writes a sync_state value.
func SetState(ctx context.Context, q Querier, key, value string) error {
	_, err := q.Exec(ctx, `INSERT INTO sync_state (key, value) VALUES ($1, $2) ON CONFLICT (key) DO UPDATE SET value = excluded.value, updated_at = now()`, key, value)
	return err
}

// RecordDelivery records a webhook delivery; false when its uid was seen.
func RecordDelivery(ctx context.Context, q Querier, uid, eventID, typ, outcome string) (bool, error) {
	tag, err := q.Exec(ctx, `INSERT INTO webhook_deliveries (uid, event_id, type, outcome) VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING`, uid, eventID, typ, outcome)
	if err != nil {
		return false, fmt.Errorf("record delivery: %w", err)
	}
	return tag.RowsAffected() == 1, nil
}

// TouchLastActive moves a person's last-active time forward.
func TouchLastActive(ctx context.Context, q Querier, person string, at time.Time) error {
	_, err := q.Exec(ctx, `UPDATE people SET last_active = $2 WHERE id = $1 AND (last_active IS NULL OR last_active < $2)`, person, at)
	return err
}
