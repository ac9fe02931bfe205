package directory

import (
	"context"
	"fmt"

	"github.com/keybridge/keybridge/mapping"
)

// loadTenantTree reads the organization -> customers tree sync stored
// (tenants.org_id, migration 00014): the active organizations, and each
// customer not deleted whose organization is one of them (a disabled one
// too, so that acting there is refused as disabled). A customer naming
// anything else (no such organization, a deleted one, another customer)
// belongs to none, so no organization-level role reaches it. Under a flat
// tenancy the engine ignores the tree.
func loadTenantTree(ctx context.Context, q querier) (*mapping.TenantTree, error) {
	rows, err := q.Query(ctx, `SELECT t.id, coalesce(c.id, '') FROM tenants t
		LEFT JOIN tenants c ON c.org_id = t.id AND c.status <> 'deleted' AND c.source = 'group'
		WHERE t.source = 'organization' AND t.status = 'active'`)
	if err != nil {
		return nil, fmt.Errorf("load tenant tree: %w", err)
	}
	defer rows.Close()
	var orgs []string
	customers := map[string]string{}
	for rows.Next() {
		var org, customer string
		if err := rows.Scan(&org, &customer); err != nil {
			return nil, fmt.Errorf("load tenant tree: %w", err)
		}
		orgs = append(orgs, org) // once per customer: NewTenantTree takes each once
		if customer != "" {
			customers[customer] = org
		}
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("load tenant tree: %w", err)
	}
	return mapping.NewTenantTree(orgs, customers), nil
}
