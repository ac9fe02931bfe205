package store

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
)

// AuditRow is a row of the Audit Log screen.
type AuditRow struct {
	ID           int64     `json:"id"`
	Timestamp    time.Time `json:"timestamp"`
	Tenant       string    `json:"tenant,omitempty"`
	UserID       string    `json:"user_id,omitempty"`
	User         string    `json:"user"` // name, or "system"
	Action       string    `json:"action"`
	ResourceType string    `json:"resource_type"`
	ResourceID   string    `json:"resource_id"`
	Outcome      string    `json:"outcome"`
	RequestID    string    `json:"request_id,omitempty"`
	Reason       string    `json:"reason,omitempty"`
	ClientAddr   string    `json:"client_addr,omitempty"` // the client's address, where the entry recorded one
	Count        int64     `json:"count"`                 // identical refusals the row stands for (1 but for aggregated refusals before authentication)
}

// AuditFilter selects audit rows; every set field must match.
type AuditFilter struct {
	User         string // actor id or name
	Action       string // exact, or a prefix ending in * (people.*)
	ResourceType string
	Outcome      string
	From, To     time.Time // From inclusive, To exclusive
	Page
}

// Outcomes of audit rows.
var Outcomes = []string{"success", "failure", "denied"}

func (f AuditFilter) where() (string, []any, error) {
	var where []string
	var args []any
	arg := func(v any) string { args = append(args, v); return fmt.Sprintf("$%d", len(args)) }
	if f.User != "" {
		a := arg(f.User)
		where = append(where, "(actor_id = "+a+" OR actor_name = "+a+")")
	}
	if f.Action != "" {
		if p, ok := strings.CutSuffix(f.Action, "*"); ok {
			where = append(where, "action LIKE "+arg(likeEscape(p)+"%"))
		} else {
			where = append(where, "action = "+arg(f.Action))
		}
	}
	if f.ResourceType != "" {
		where = append(where, "resource_type = "+arg(f.ResourceType))
	}
	if f.Outcome != "" {
		if !slices.Contains(Outcomes, f.Outcome) {
			return "", nil, fmt.Errorf("outcome %q: use success, failure or denied: %w", f.Outcome, ErrInvalid)
		}
		where = append(where, "outcome = "+arg(f.Outcome))
	}
	if !f.From.IsZero() {
		where = append(where, "occurred_at >= "+arg(f.From))
	}
	if !f.To.IsZero() {
		where = append(where, "occurred_at < "+arg(f.To))
	}
	if !f.From.IsZero() && !f.To.IsZero() && !f.To.After(f.From) {
		return "", nil, fmt.Errorf("to must be after from: %w", ErrInvalid)
	}
	if len(where) == 0 {
		return "", args, nil
	}
	return " WHERE " + strings.Join(where, " AND "), args, nil
}

const auditSelect = `SELECT id, occurred_at, coalesce(tenant_id, ''), actor_id, actor_name, action, resource_type, resource_id, outcome, request_id, reason,
	coalesce(details->>'client_addr', ''), count FROM audit_log`

func scanAudit(r pgx.CollectableRow) (AuditRow, error) {
	var a AuditRow
	err := r.Scan(&a.ID, &a.Timestamp, &a.Tenant, &a.UserID, &a.User, &a.Action, &a.ResourceType, &a.ResourceID, &a.Outcome, &a.RequestID, &a.Reason,
		&a.ClientAddr, &a.Count)
	return a, err
}

// ListAudit returns one page, newest first, and the next cursor.
func ListAudit(ctx context.Context, q Querier, f AuditFilter) ([]AuditRow, string, error) {
	where, args, err := f.where()
	if err != nil {
		return nil, "", err
	}
	cur, err := decodeCursor(f.Cursor, "audit")
	if err != nil {
		return nil, "", err
	}
	if cur != nil {
		id, err := strconv.ParseInt(cur.ID, 10, 64)
		if err != nil {
			return nil, "", ErrBadCursor
		}
		ts, err := time.Parse(time.RFC3339Nano, cur.Key)
		if err != nil {
			return nil, "", ErrBadCursor
		}
		args = append(args, ts, id)
		cond := fmt.Sprintf("(occurred_at, id) < ($%d, $%d)", len(args)-1, len(args))
		if where == "" {
			where = " WHERE " + cond
		} else {
			where += " AND " + cond
		}
	}
	limit := f.limit()
	args = append(args, limit+1)
	rows, err := q.Query(ctx, auditSelect+where+fmt.Sprintf(" ORDER BY occurred_at DESC, id DESC LIMIT $%d", len(args)), args...)
	if err != nil {
		return nil, "", fmt.Errorf("list audit: %w", err)
	}
	out, err := pgx.CollectRows(rows, scanAudit)
	if err != nil {
		return nil, "", fmt.Errorf("list audit: %w", err)
	}
	next := ""
	if len(out) > limit {
		out = out[:limit]
		last := out[limit-1]
		next = encodeCursor(cursor{Sort: "audit", Key: last.Timestamp.UTC().Format(time.RFC3339Nano), ID: strconv.FormatInt(last.ID, 10)})
	}
	return out, next, nil
}

// StreamAudit calls fn for every matching row, newest first, without holding
// the result in memory: exports of any size run in constant memory.
func StreamAudit(ctx context.Context, q Querier, f AuditFilter, fn func(AuditRow) error) error {
	where, args, err := f.where()
	if err != nil {
		return err
	}
	rows, err := q.Query(ctx, auditSelect+where+" ORDER BY occurred_at DESC, id DESC", args...)
	if err != nil {
		return fmt.Errorf("export audit: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		a, err := scanAudit(rows)
		if err != nil {
			return fmt.Errorf("export audit: %w", err)
		}
		if err := fn(a); err != nil {
			return err
		}
	}
	return rows.Err()
}

// CountAudit counts the rows a filter selects.
func CountAudit(ctx context.Context, q Querier, f AuditFilter) (int64, error) {
	where, args, err := f.where()
	if err != nil {
		return 0, err
	}
	var n int64
	err = q.QueryRow(ctx, "SELECT count(*) FROM audit_log"+where, args...).Scan(&n)
	return n, err
}
