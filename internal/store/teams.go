package store

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"
)

// Team is a Keycloak group as a team, with its member count.
type Team struct {
	ID       string  `json:"id"`
	Name     string  `json:"name"`
	Path     string  `json:"path"`
	ParentID string  `json:"parent_id,omitempty"`
	Tenant   string  `json:"tenant,omitempty"`
	Members  int     `json:"member_count"`
	Children []*Team `json:"children"`
}

// ListTeams returns the visible teams as a forest ordered by path.
func ListTeams(ctx context.Context, q Querier) ([]*Team, error) {
	rows, err := q.Query(ctx, `SELECT t.id, t.name, t.path, coalesce(t.parent_id, ''), coalesce(t.tenant_id, ''),
		(SELECT count(*) FROM team_members tm JOIN people p ON p.id = tm.person_id WHERE tm.team_id = t.id AND p.status <> 'deleted')
		FROM teams t WHERE t.status = 'active' ORDER BY t.path`)
	if err != nil {
		return nil, fmt.Errorf("list teams: %w", err)
	}
	all, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (*Team, error) {
		t := &Team{Children: []*Team{}}
		err := r.Scan(&t.ID, &t.Name, &t.Path, &t.ParentID, &t.Tenant, &t.Members)
		return t, err
	})
	if err != nil {
		return nil, fmt.Errorf("list teams: %w", err)
	}
	byID := make(map[string]*Team, len(all))
	for _, t := range all {
		byID[t.ID] = t
	}
	roots := []*Team{}
	for _, t := range all {
		// A parent hidden by RLS (another tenant's, or realm-wide) makes
		// the team a root of what this caller sees.
		if p, ok := byID[t.ParentID]; ok {
			p.Children = append(p.Children, t)
		} else {
			roots = append(roots, t)
		}
	}
	return roots, nil
}

// TeamMembers lists a team's members, one page at a time.
func TeamMembers(ctx context.Context, q Querier, teamID string, page Page) ([]Person, string, error) {
	var exists bool
	if err := q.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM teams WHERE id = $1)`, teamID).Scan(&exists); err != nil {
		return nil, "", fmt.Errorf("get team: %w", err)
	}
	if !exists {
		return nil, "", ErrNotFound
	}
	return ListPeople(ctx, q, PeopleFilter{Team: teamID, Page: page})
}
