package store

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
)

// Person is a row of the People screen: user, role badges, teams, status,
// last active, identity provider.
type Person struct {
	ID               string      `json:"id"`
	Username         string      `json:"username"`
	Email            string      `json:"email,omitempty"`
	DisplayName      string      `json:"name"`
	Status           string      `json:"status"`
	IdentityProvider string      `json:"identity_provider,omitempty"`
	LastActive       *time.Time  `json:"last_active,omitempty"`
	Tenants          []string    `json:"tenants"`
	Roles            []RoleBadge `json:"roles"`
	Teams            []TeamRef   `json:"teams"`
}

// RoleBadge is one role a person holds, and where it comes from.
type RoleBadge struct {
	AssignmentID string     `json:"assignment_id"`
	RoleID       string     `json:"role_id"`
	Name         string     `json:"name"`
	Kind         string     `json:"kind"`
	Source       string     `json:"source"` // keycloak, rule, local
	Tenant       string     `json:"tenant,omitempty"`
	ExpiresAt    *time.Time `json:"expires_at,omitempty"`
	Editable     bool       `json:"editable"` // only local assignments are
}

// TeamRef names a team.
type TeamRef struct {
	ID   string `json:"id"`
	Name string `json:"name"`
	Path string `json:"path"`
}

// PeopleFilter selects people: every set field must match.
type PeopleFilter struct {
	Role   string // role name held (active assignments only)
	Status string // active, inactive, invited, deleted
	Team   string // team id or path
	Search string // substring of username, email or name
	Sort   string // name (default) or last_active
	Page
}

// Statuses a person can have.
var Statuses = []string{"active", "inactive", "invited", "deleted"}

// ListPeople returns one page and the cursor of the next (empty at the end).
// Only the page's rows are held in memory, whatever the table's size.
func ListPeople(ctx context.Context, q Querier, f PeopleFilter) ([]Person, string, error) {
	sort := f.Sort
	if sort == "" {
		sort = "name"
	}
	if sort != "name" && sort != "last_active" {
		return nil, "", fmt.Errorf("sort %q: use name or last_active: %w", sort, ErrInvalid)
	}
	if f.Status != "" && !slices.Contains(Statuses, f.Status) {
		return nil, "", fmt.Errorf("status %q: use one of %s: %w", f.Status, strings.Join(Statuses, ", "), ErrInvalid)
	}
	cur, err := decodeCursor(f.Cursor, sort)
	if err != nil {
		return nil, "", err
	}
	var where []string
	var args []any
	arg := func(v any) string { args = append(args, v); return fmt.Sprintf("$%d", len(args)) }
	if f.Status != "" {
		where = append(where, "p.status = "+arg(f.Status))
	}
	if f.Role != "" {
		where = append(where, `EXISTS (SELECT 1 FROM role_assignments ra JOIN roles r ON r.id = ra.role_id
			WHERE ra.person_id = p.id AND r.name = `+arg(f.Role)+` AND (ra.expires_at IS NULL OR ra.expires_at > now()))`)
	}
	if f.Team != "" {
		where = append(where, `EXISTS (SELECT 1 FROM team_members tm JOIN teams t ON t.id = tm.team_id
			WHERE tm.person_id = p.id AND (t.id = `+arg(f.Team)+` OR t.path = `+arg(f.Team)+`))`)
	}
	if f.Search != "" {
		pat := "%" + likeEscape(f.Search) + "%"
		a := arg(pat)
		where = append(where, "(p.username ILIKE "+a+" OR p.email ILIKE "+a+" OR p.display_name ILIKE "+a+")")
	}
	order := "p.display_name, p.id"
	if sort == "last_active" {
		order = "p.last_active DESC NULLS LAST, p.id"
	}
	if cur != nil {
		switch {
		case sort == "name":
			where = append(where, "(p.display_name, p.id) > ("+arg(cur.Key)+", "+arg(cur.ID)+")")
		case cur.Null:
			where = append(where, "(p.last_active IS NULL AND p.id > "+arg(cur.ID)+")")
		default:
			k, err := time.Parse(time.RFC3339Nano, cur.Key)
			if err != nil {
				return nil, "", ErrBadCursor
			}
			ka, ia := arg(k), arg(cur.ID)
			where = append(where, "(p.last_active < "+ka+" OR (p.last_active = "+ka+" AND p.id > "+ia+") OR p.last_active IS NULL)")
		}
	}
	sql := `SELECT p.id, p.username, coalesce(p.email, ''), p.display_name, p.status, coalesce(p.identity_provider, ''), p.last_active,
		coalesce((SELECT array_agg(m.tenant_id ORDER BY m.tenant_id) FROM tenant_members m WHERE m.person_id = p.id), '{}')
		FROM people p`
	if len(where) > 0 {
		sql += " WHERE " + strings.Join(where, " AND ")
	}
	limit := f.limit()
	sql += " ORDER BY " + order + " LIMIT " + arg(limit+1)
	rows, err := q.Query(ctx, sql, args...)
	if err != nil {
		return nil, "", fmt.Errorf("list people: %w", err)
	}
	people, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (Person, error) {
		var p Person
		err := r.Scan(&p.ID, &p.Username, &p.Email, &p.DisplayName, &p.Status, &p.IdentityProvider, &p.LastActive, &p.Tenants)
		return p, err
	})
	if err != nil {
		return nil, "", fmt.Errorf("list people: %w", err)
	}
	next := ""
	if len(people) > limit {
		people = people[:limit]
		last := people[limit-1]
		c := cursor{Sort: sort, ID: last.ID, Key: last.DisplayName}
		if sort == "last_active" {
			if last.LastActive == nil {
				c.Null, c.Key = true, ""
			} else {
				c.Key = last.LastActive.UTC().Format(time.RFC3339Nano)
			}
		}
		next = encodeCursor(c)
	}
	if err := attachBadges(ctx, q, people); err != nil {
		return nil, "", err
	}
	return people, next, nil
}

// GetPerson returns one person, or ErrNotFound when RLS hides them.
func GetPerson(ctx context.Context, q Querier, id string) (Person, error) {
	var p Person
	err := q.QueryRow(ctx, `SELECT p.id, p.username, coalesce(p.email, ''), p.display_name, p.status, coalesce(p.identity_provider, ''), p.last_active,
		coalesce((SELECT array_agg(m.tenant_id ORDER BY m.tenant_id) FROM tenant_members m WHERE m.person_id = p.id), '{}')
		FROM people p WHERE p.id = $1`, id).
		Scan(&p.ID, &p.Username, &p.Email, &p.DisplayName, &p.Status, &p.IdentityProvider, &p.LastActive, &p.Tenants)
	if errors.Is(err, pgx.ErrNoRows) {
		return Person{}, ErrNotFound
	}
	if err != nil {
		return Person{}, fmt.Errorf("get person: %w", err)
	}
	ps := []Person{p}
	if err := attachBadges(ctx, q, ps); err != nil {
		return Person{}, err
	}
	return ps[0], nil
}

// attachBadges loads the page's role badges and teams in two queries.
func attachBadges(ctx context.Context, q Querier, people []Person) error {
	if len(people) == 0 {
		return nil
	}
	ids := make([]string, len(people))
	index := make(map[string]int, len(people))
	for i := range people {
		ids[i] = people[i].ID
		index[people[i].ID] = i
		people[i].Roles = []RoleBadge{}
		people[i].Teams = []TeamRef{}
	}
	rows, err := q.Query(ctx, `SELECT ra.person_id, ra.id::text, r.id::text, r.name, r.kind, ra.source, coalesce(ra.tenant_id, ''), ra.expires_at
		FROM role_assignments ra JOIN roles r ON r.id = ra.role_id
		WHERE ra.person_id = ANY($1) AND (ra.expires_at IS NULL OR ra.expires_at > now())
		ORDER BY r.name, ra.source`, ids)
	if err != nil {
		return fmt.Errorf("load role badges: %w", err)
	}
	for rows.Next() {
		var pid string
		var b RoleBadge
		if err := rows.Scan(&pid, &b.AssignmentID, &b.RoleID, &b.Name, &b.Kind, &b.Source, &b.Tenant, &b.ExpiresAt); err != nil {
			rows.Close()
			return fmt.Errorf("load role badges: %w", err)
		}
		b.Editable = b.Source == "local"
		people[index[pid]].Roles = append(people[index[pid]].Roles, b)
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("load role badges: %w", err)
	}
	rows, err = q.Query(ctx, `SELECT tm.person_id, t.id, t.name, t.path FROM team_members tm JOIN teams t ON t.id = tm.team_id
		WHERE tm.person_id = ANY($1) AND t.status = 'active' ORDER BY t.path`, ids)
	if err != nil {
		return fmt.Errorf("load teams: %w", err)
	}
	for rows.Next() {
		var pid string
		var tr TeamRef
		if err := rows.Scan(&pid, &tr.ID, &tr.Name, &tr.Path); err != nil {
			rows.Close()
			return fmt.Errorf("load teams: %w", err)
		}
		people[index[pid]].Teams = append(people[index[pid]].Teams, tr)
	}
	return rows.Err()
}

// SetPersonStatus records a status change already written back to Keycloak.
// Leaving inactive clears who disabled the person (the people_record_disabler
// trigger); to deactivate, DisablePerson records who did it.
func SetPersonStatus(ctx context.Context, q Querier, id, status string) error {
	if !slices.Contains(Statuses, status) {
		return fmt.Errorf("status %q: %w", status, ErrInvalid)
	}
	tag, err := q.Exec(ctx, `UPDATE people SET status = $2, updated_at = now() WHERE id = $1`, id, status)
	if err != nil {
		return fmt.Errorf("set status: %w", err)
	}
	if tag.RowsAffected() == 0 {
		return ErrNotFound
	}
	return nil
}

// Authorities that disable people (people.disabled_authority, migration
// 00008): who may re-enable a person depends on which one disabled them.
const (
	DisabledByKeycloak = "keycloak" // in Keycloak, outside keybridge: a platform caller re-enables
	DisabledByPlatform = "platform" // a platform caller: a platform caller re-enables
	DisabledByTenant   = "tenant"   // a tenant caller: a platform caller or one of the same tenant re-enables
)

// Disabler is who disabled a person, and why.
type Disabler struct {
	By        string // the caller's subject, or "keycloak"
	Authority string // DisabledByKeycloak, DisabledByPlatform or DisabledByTenant
	Tenant    string // for DisabledByTenant: the tenant the caller acted in
	Reason    string
	At        *time.Time
}

// GetDisabler reads who disabled a person: the zero Disabler when they are
// not inactive. The runtime role may not read disabled_by and
// disabled_tenant (another tenant's name, for a person in several): read
// it as the sync role, after finding the person through RLS.
func GetDisabler(ctx context.Context, q Querier, id string) (Disabler, error) {
	var d Disabler
	err := q.QueryRow(ctx, `SELECT coalesce(disabled_by, ''), coalesce(disabled_authority, ''), coalesce(disabled_tenant, ''), disabled_reason, disabled_at
		FROM people WHERE id = $1`, id).Scan(&d.By, &d.Authority, &d.Tenant, &d.Reason, &d.At)
	if errors.Is(err, pgx.ErrNoRows) {
		return Disabler{}, ErrNotFound
	}
	if err != nil {
		return Disabler{}, fmt.Errorf("get disabler: %w", err)
	}
	return d, nil
}

// DisablePerson records a deactivation already written back to Keycloak, and
// who made it. A person already inactive keeps the disabler on record unless
// the new one has more authority (a platform caller over a tenant caller):
// otherwise a tenant caller could take a platform caller's or Keycloak's
// deactivation over by deactivating again, and then re-enable the person.
func DisablePerson(ctx context.Context, q Querier, id string, by Disabler) error {
	switch by.Authority {
	case DisabledByPlatform, DisabledByTenant, DisabledByKeycloak:
	default:
		return fmt.Errorf("disabled_authority %q: %w", by.Authority, ErrInvalid)
	}
	// The runtime role may not read who disabled someone (disabled_by,
	// disabled_tenant), so the record is replaced or kept whole.
	tag, err := q.Exec(ctx, `UPDATE people SET status = 'inactive', updated_at = now(),
		disabled_by = $2, disabled_authority = $3, disabled_tenant = nullif($4, ''), disabled_reason = $5, disabled_at = now()
		WHERE id = $1 AND (status <> 'inactive' OR disabled_authority IS NULL OR ($3 = 'platform' AND disabled_authority = 'tenant'))`,
		id, by.By, by.Authority, by.Tenant, by.Reason)
	if err != nil {
		return fmt.Errorf("disable person: %w", err)
	}
	if tag.RowsAffected() == 1 {
		return nil
	}
	var found bool
	if err := q.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM people WHERE id = $1)`, id).Scan(&found); err != nil {
		return fmt.Errorf("disable person: %w", err)
	}
	if !found {
		return ErrNotFound
	}
	return nil
}

func likeEscape(s string) string {
	return strings.NewReplacer(`\`, `\\`, `%`, `\%`, `_`, `\_`).Replace(s)
}
