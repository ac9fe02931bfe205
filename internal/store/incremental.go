package store

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
)

// Reads and writes of the incremental apply: each Keycloak event is applied
// to the rows it names (sync/incremental.go), and full runs leave alone the
// rows such an apply wrote while they read Keycloak.

// maxPersonNotices is the most people a plan notifies one by one; beyond,
// one full reload costs replicas less than that many single ones.
const maxPersonNotices = 100

// personal reports a plan that changes people and their memberships and
// assignments only, so replicas can reload just those people.
func (p *SyncPlan) personal() bool {
	return len(p.Tenants)+len(p.Teams)+len(p.Roles)+len(p.AddComposites)+len(p.DelComposites)+len(p.PermissionChanges) == 0
}

// touchedPeople lists the people a plan writes or whose memberships or
// assignments it changes, once each.
func (p *SyncPlan) touchedPeople() []string {
	seen := map[string]bool{}
	var out []string
	add := func(id string) {
		if !seen[id] {
			seen[id] = true
			out = append(out, id)
		}
	}
	for _, x := range p.People {
		add(x.ID)
	}
	for _, rows := range [][]MemberRow{p.AddTenantMembers, p.DelTenantMembers, p.AddTeamMembers, p.DelTeamMembers} {
		for _, m := range rows {
			add(m.Person)
		}
	}
	for _, rows := range [][]AssignmentRow{p.AddAssignments, p.DelAssignments} {
		for _, a := range rows {
			add(a.Person)
		}
	}
	return out
}

// ApplyIncrementalPlan applies a plan computed for a few objects in the
// caller's transaction, like ApplySyncPlan, and stamps updated_at on every
// person and role whose memberships, assignments or composites it changed:
// a full run that read Keycloak before this apply leaves rows written after
// its start alone (WrittenSince), and these rows' own columns may not have
// changed.
func ApplyIncrementalPlan(ctx context.Context, tx pgx.Tx, p *SyncPlan) error {
	if err := ApplySyncPlan(ctx, tx, p); err != nil {
		return err
	}
	var roles []string
	for _, rows := range [][]CompositeRow{p.AddComposites, p.DelComposites} {
		for _, c := range rows {
			roles = append(roles, c.Parent)
		}
	}
	if _, err := tx.Exec(ctx, `UPDATE people SET updated_at = now() WHERE id = ANY($1)`, p.touchedPeople()); err != nil {
		return fmt.Errorf("stamp people: %w", err)
	}
	if _, err := tx.Exec(ctx, `UPDATE roles SET updated_at = now() WHERE tenant_id IS NULL AND kind || '|' || client_id || '|' || name = ANY($1)`, roles); err != nil {
		return fmt.Errorf("stamp roles: %w", err)
	}
	return nil
}

// Written lists, by kind, the rows written at or after a moment: people,
// teams and tenants by id, Keycloak roles by key.
type Written struct {
	People, Teams, Roles, Tenants []string
}

// WrittenSince lists the rows created or updated at or after since, by the
// database's clock.
func WrittenSince(ctx context.Context, q Querier, since time.Time) (Written, error) {
	var w Written
	for _, x := range []struct {
		into *[]string
		sql  string
	}{
		{&w.People, `SELECT id FROM people WHERE created_at >= $1 OR updated_at >= $1`},
		{&w.Teams, `SELECT id FROM teams WHERE created_at >= $1 OR updated_at >= $1`},
		{&w.Roles, `SELECT kind || '|' || client_id || '|' || name FROM roles WHERE kind = 'keycloak' AND (created_at >= $1 OR updated_at >= $1)`},
		{&w.Tenants, `SELECT id FROM tenants WHERE created_at >= $1 OR updated_at >= $1`},
	} {
		rows, err := q.Query(ctx, x.sql, since)
		if err != nil {
			return w, fmt.Errorf("rows written since the run began: %w", err)
		}
		if *x.into, err = pgx.CollectRows(rows, pgx.RowTo[string]); err != nil {
			return w, fmt.Errorf("rows written since the run began: %w", err)
		}
	}
	return w, nil
}

// CatalogRole is a Keycloak role as the store holds it, with the Keycloak
// ids of its composite children.
type CatalogRole struct {
	KeycloakID, ClientID, Name, Description string
	Composite                               bool
	Children                                []string
}

// KeycloakRoles lists the active Keycloak roles with their children.
func KeycloakRoles(ctx context.Context, q Querier) ([]CatalogRole, error) {
	rows, err := q.Query(ctx, `SELECT r.keycloak_id, r.client_id, r.name, r.description, r.composite,
		coalesce(array_agg(c.keycloak_id ORDER BY c.keycloak_id) FILTER (WHERE c.keycloak_id IS NOT NULL), '{}')
		FROM roles r LEFT JOIN role_composites rc ON rc.parent_id = r.id LEFT JOIN roles c ON c.id = rc.child_id AND c.status = 'active'
		WHERE r.kind = 'keycloak' AND r.status = 'active' AND r.tenant_id IS NULL AND r.keycloak_id IS NOT NULL
		GROUP BY r.id`)
	if err != nil {
		return nil, fmt.Errorf("load keycloak roles: %w", err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (CatalogRole, error) {
		var c CatalogRole
		err := r.Scan(&c.KeycloakID, &c.ClientID, &c.Name, &c.Description, &c.Composite, &c.Children)
		return c, err
	})
	if err != nil {
		return nil, fmt.Errorf("load keycloak roles: %w", err)
	}
	return out, nil
}

// RoleHolders lists the people holding any of the Keycloak roles (by
// Keycloak id) through Keycloak: directly, through a group or a composite.
func RoleHolders(ctx context.Context, q Querier, keycloakIDs []string) ([]string, error) {
	return textColumn(ctx, q, "role holders", `SELECT DISTINCT ra.person_id FROM role_assignments ra JOIN roles r ON r.id = ra.role_id
		WHERE ra.source = 'keycloak' AND r.kind = 'keycloak' AND r.keycloak_id = ANY($1)`, keycloakIDs)
}

// RoleParents lists the Keycloak ids of the active roles that contain any
// of the roles (by Keycloak id) as a composite child.
func RoleParents(ctx context.Context, q Querier, keycloakIDs []string) ([]string, error) {
	return textColumn(ctx, q, "role parents", `SELECT DISTINCT p.keycloak_id FROM role_composites rc JOIN roles p ON p.id = rc.parent_id
		JOIN roles c ON c.id = rc.child_id WHERE c.keycloak_id = ANY($1) AND p.status = 'active' AND p.keycloak_id IS NOT NULL`, keycloakIDs)
}

// TeamsByID returns the teams with these ids, by id.
func TeamsByID(ctx context.Context, q Querier, ids []string) (map[string]TeamRow, error) {
	return teamRows(ctx, q, `SELECT id, coalesce(tenant_id, ''), name, path, coalesce(parent_id, ''), status FROM teams WHERE id = ANY($1)`, ids)
}

// TeamSubtree returns the active team root and every active team under it.
func TeamSubtree(ctx context.Context, q Querier, root string) (map[string]TeamRow, error) {
	return teamRows(ctx, q, `WITH RECURSIVE sub AS (
		SELECT id FROM teams WHERE id = $1 AND status = 'active'
		UNION SELECT t.id FROM teams t JOIN sub ON t.parent_id = sub.id WHERE t.status = 'active')
		SELECT id, coalesce(tenant_id, ''), name, path, coalesce(parent_id, ''), status FROM teams WHERE id IN (SELECT id FROM sub)`, root)
}

func teamRows(ctx context.Context, q Querier, sql string, arg any) (map[string]TeamRow, error) {
	rows, err := q.Query(ctx, sql, arg)
	if err != nil {
		return nil, fmt.Errorf("load teams: %w", err)
	}
	list, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (TeamRow, error) {
		var t TeamRow
		err := r.Scan(&t.ID, &t.Tenant, &t.Name, &t.Path, &t.ParentID, &t.Status)
		return t, err
	})
	if err != nil {
		return nil, fmt.Errorf("load teams: %w", err)
	}
	out := make(map[string]TeamRow, len(list))
	for _, t := range list {
		out[t.ID] = t
	}
	return out, nil
}

// MembersOfTeams returns the members of each of the teams, by team id.
func MembersOfTeams(ctx context.Context, q Querier, teams []string) (map[string][]string, error) {
	rows, err := q.Query(ctx, `SELECT team_id, person_id FROM team_members WHERE team_id = ANY($1)`, teams)
	if err != nil {
		return nil, fmt.Errorf("load team members: %w", err)
	}
	out := map[string][]string{}
	var team, person string
	_, err = pgx.ForEachRow(rows, []any{&team, &person}, func() error {
		out[team] = append(out[team], person)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("load team members: %w", err)
	}
	return out, nil
}

// TenantMemberIDs lists the members of a tenant.
func TenantMemberIDs(ctx context.Context, q Querier, tenant string) ([]string, error) {
	return textColumn(ctx, q, "tenant members", `SELECT person_id FROM tenant_members WHERE tenant_id = $1`, tenant)
}

// ActiveTenants lists the tenants from one source (organization, group,
// attribute, claim) that are not deleted: a disabled tenant still exists.
func ActiveTenants(ctx context.Context, q Querier, source string) ([]string, error) {
	return textColumn(ctx, q, "tenants", `SELECT id FROM tenants WHERE source = $1 AND status <> 'deleted'`, source)
}

// PeopleLinkedTo lists the people whose identity provider is alias.
func PeopleLinkedTo(ctx context.Context, q Querier, alias string) ([]string, error) {
	return textColumn(ctx, q, "people of an identity provider", `SELECT id FROM people WHERE identity_provider = $1`, alias)
}

// TenantsInUse returns which of the tenants an active team or a member
// still names, apart from the teams and people given (whose rows the caller
// is about to replace).
func TenantsInUse(ctx context.Context, q Querier, tenants, exceptTeams, exceptPeople []string) (map[string]bool, error) {
	used, err := textColumn(ctx, q, "tenants in use", `SELECT t FROM unnest($1::text[]) AS t
		WHERE EXISTS (SELECT 1 FROM teams WHERE tenant_id = t AND status = 'active' AND NOT id = ANY(coalesce($2, '{}'::text[])))
		OR EXISTS (SELECT 1 FROM tenant_members WHERE tenant_id = t AND NOT person_id = ANY(coalesce($3, '{}'::text[])))`, tenants, exceptTeams, exceptPeople)
	if err != nil {
		return nil, err
	}
	out := make(map[string]bool, len(used))
	for _, t := range used {
		out[t] = true
	}
	return out, nil
}

// LastFullRunRequests is the number of Keycloak requests of the latest
// successful full run that applied its plan, 0 when there is none.
func LastFullRunRequests(ctx context.Context, q Querier) (int64, error) {
	var n int64
	err := q.QueryRow(ctx, `SELECT keycloak_requests FROM sync_runs WHERE outcome = 'success' AND NOT dry_run ORDER BY id DESC LIMIT 1`).Scan(&n)
	if err == pgx.ErrNoRows {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("last full run: %w", err)
	}
	return n, nil
}

// RecordRunDrift writes a run's drift: by kind, the changes it applied
// that the events since the previous run had missed.
func RecordRunDrift(ctx context.Context, q Querier, id int64, drift map[string]int) error {
	d, err := json.Marshal(drift)
	if err != nil {
		return fmt.Errorf("record sync drift: %w", err)
	}
	if _, err := q.Exec(ctx, `UPDATE sync_runs SET drift = $2 WHERE id = $1`, id, d); err != nil {
		return fmt.Errorf("record sync drift: %w", err)
	}
	return nil
}

func textColumn(ctx context.Context, q Querier, what, sql string, args ...any) ([]string, error) {
	rows, err := q.Query(ctx, sql, args...)
	if err != nil {
		return nil, fmt.Errorf("load %s: %w", what, err)
	}
	out, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, fmt.Errorf("load %s: %w", what, err)
	}
	return out, nil
}

// AppliedEvents returns those of keys the event poller recorded as applied
// (RecordAppliedEvents).
func AppliedEvents(ctx context.Context, q Querier, keys []string) ([]string, error) {
	if len(keys) == 0 {
		return nil, nil
	}
	rows, err := q.Query(ctx, `SELECT key FROM sync_applied_events WHERE key = ANY($1)`, keys)
	if err != nil {
		return nil, fmt.Errorf("read applied events: %w", err)
	}
	out, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, fmt.Errorf("read applied events: %w", err)
	}
	return out, nil
}

// RecordAppliedEvents records events the poller applied, by key, so a
// leader that reads them again skips them.
func RecordAppliedEvents(ctx context.Context, q Querier, keys []string) error {
	if len(keys) == 0 {
		return nil
	}
	if _, err := q.Exec(ctx, `INSERT INTO sync_applied_events (key) SELECT * FROM unnest($1::text[]) ON CONFLICT DO NOTHING`, keys); err != nil {
		return fmt.Errorf("record applied events: %w", err)
	}
	return nil
}

// PruneAppliedEvents deletes the records of events applied longer ago than
// keep: no leader reads those events again.
func PruneAppliedEvents(ctx context.Context, q Querier, keep time.Duration) error {
	if _, err := q.Exec(ctx, `DELETE FROM sync_applied_events WHERE applied_at < now() - make_interval(secs => $1)`, keep.Seconds()); err != nil {
		return fmt.Errorf("prune applied events: %w", err)
	}
	return nil
}
