// Package rls opens PostgreSQL transactions under keybridge's Row-Level
// Security session variables. It is the one place where those variables are
// set, for keybridge itself and for Go services that import it: every
// variable is set with set_config(name, value, true), parameterized and
// transaction-local, before the first query of the transaction runs. A list
// (app.roles, app.tenant_ids) is a text[] literal, read with
// keybridge.current_roles() and keybridge.current_tenants().
//
// A caller wider than one tenant also switches the database role, again
// transaction-locally: an organization-level session (TenantIDs) to
// OrganizationRole, a platform session to PlatformRole. Each of those roles
// has policies of its own, so the tenant policy of the login role names the
// tenant alone and keeps the tenant index (docs/rls.md). Nothing outlives the
// transaction, so a transaction-pooling PgBouncer may hand the connection to
// another tenant next.
package rls

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"
)

// Session is the caller a transaction runs for.
type Session struct {
	// TenantID is app.tenant_id: rows of other tenants are invisible.
	TenantID string `json:"app.tenant_id"`
	// TenantIDs is app.tenant_ids, for an organization-level role: the
	// other tenants (an organization's customers) the request may read
	// beside TenantID, set as a text[] literal and read, with TenantID,
	// through keybridge.current_tenants(). When set, the transaction runs
	// as OrganizationRole.
	TenantIDs []string `json:"app.tenant_ids,omitempty"`
	// OrgID is app.org_id, in a tenancy of organizations and customers:
	// the organization the request acts in at the organization level (the
	// active tenant itself, or the active customer's organization for a
	// holder of an organization-level role), read with
	// keybridge.current_org() by the policies of organization-scoped
	// tables. Empty for a caller confined to one customer.
	OrgID string `json:"app.org_id,omitempty"`
	// UserID is app.user_id, the subject of the token.
	UserID string `json:"app.user_id"`
	// Role is app.role, the caller's highest role.
	Role string `json:"app.role"`
	// Roles is app.roles, every role, set as a PostgreSQL text[] literal
	// ({"Viewer","Reader"}) and read with keybridge.current_roles().
	Roles []string `json:"app.roles"`
	// Platform is app.platform='on': only for a global-bypass role such as
	// PlatformAdmin. The transaction runs as PlatformRole, whose policies
	// admit every tenant while app.platform is on.
	Platform bool `json:"app.platform,omitempty"`
}

// The database roles a transaction switches to for a caller wider than one
// tenant. The login role (keybridge_app for keybridge) must be able to
// SET ROLE to them without inheriting them (docs/rls.md). A service whose
// roles have other names sets these once, before its first transaction; an
// empty name switches nothing.
var (
	OrganizationRole = "keybridge_org"
	PlatformRole     = "keybridge_platform"
)

// DatabaseRole is the role the session's transactions switch to, or "" for
// one tenant: PlatformRole for a platform session, OrganizationRole for one
// with TenantIDs.
func (s Session) DatabaseRole() string {
	switch {
	case s.Platform:
		return PlatformRole
	case len(s.TenantIDs) > 0:
		return OrganizationRole
	}
	return ""
}

// Vars returns the session as the variables set_config receives.
func (s Session) Vars() map[string]string {
	v := map[string]string{
		"app.tenant_id":  s.TenantID,
		"app.user_id":    s.UserID,
		"app.role":       s.Role,
		"app.roles":      textArray(s.Roles),
		"app.platform":   "",
		"app.tenant_ids": textArray(s.TenantIDs),
		"app.org_id":     s.OrgID,
	}
	if s.Platform {
		v["app.platform"] = "on"
	}
	return v
}

// textArray writes a PostgreSQL text[] literal with every element quoted
// and '"' and '\' escaped: a comma, a brace, a quote or the word NULL in an
// element is read back as part of that element, never as structure.
func textArray(ss []string) string {
	var b strings.Builder
	b.WriteByte('{')
	for i, s := range ss {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteByte('"')
		for _, c := range []byte(s) {
			if c == '"' || c == '\\' {
				b.WriteByte('\\')
			}
			b.WriteByte(c)
		}
		b.WriteByte('"')
	}
	b.WriteByte('}')
	return b.String()
}

type ctxKey struct{}

// WithSession returns ctx carrying s.
func WithSession(ctx context.Context, s Session) context.Context {
	return context.WithValue(ctx, ctxKey{}, s)
}

// FromContext returns the session in ctx, if any.
func FromContext(ctx context.Context) (Session, bool) {
	s, ok := ctx.Value(ctxKey{}).(Session)
	return s, ok
}

// ErrNoSession is returned by Begin when ctx carries no session: a query
// without a caller must not run under the runtime role by accident.
var ErrNoSession = errors.New("rls: no session in context")

// Beginner is what Begin needs from a pool or connection.
type Beginner interface {
	BeginTx(ctx context.Context, opts pgx.TxOptions) (pgx.Tx, error)
}

// setSQL sets every variable, and the role when there is one to switch to,
// in one round trip. set_config(..., true) is SET LOCAL: it ends with the
// transaction.
const setSQL = `SELECT set_config('app.tenant_id', $1, true), set_config('app.user_id', $2, true),
	set_config('app.role', $3, true), set_config('app.roles', $4, true), set_config('app.platform', $5, true),
	set_config('app.tenant_ids', $6, true), set_config('app.org_id', $8, true),
	CASE WHEN $7::text <> '' THEN set_config('role', $7::text, true) END`

// Begin starts a transaction on db and sets the session variables of the
// session in ctx, switching to its DatabaseRole if it has one. An empty
// TenantID leaves app.tenant_id empty, under which the policies show no
// tenant-scoped row.
func Begin(ctx context.Context, db Beginner, opts pgx.TxOptions) (pgx.Tx, error) {
	s, ok := FromContext(ctx)
	if !ok {
		return nil, ErrNoSession
	}
	tx, err := db.BeginTx(ctx, opts)
	if err != nil {
		return nil, fmt.Errorf("rls: begin: %w", err)
	}
	v := s.Vars()
	if _, err := tx.Exec(ctx, setSQL, v["app.tenant_id"], v["app.user_id"], v["app.role"], v["app.roles"], v["app.platform"],
		v["app.tenant_ids"], s.DatabaseRole(), v["app.org_id"]); err != nil {
		_ = tx.Rollback(ctx)
		return nil, fmt.Errorf("rls: set session: %w", err)
	}
	return tx, nil
}

// InTx runs fn in a transaction begun by Begin, committing when fn returns
// nil and rolling back otherwise.
func InTx(ctx context.Context, db Beginner, fn func(pgx.Tx) error) error {
	tx, err := Begin(ctx, db, pgx.TxOptions{})
	if err != nil {
		return err
	}
	if err := fn(tx); err != nil {
		_ = tx.Rollback(ctx)
		return err
	}
	if err := tx.Commit(ctx); err != nil {
		return fmt.Errorf("rls: commit: %w", err)
	}
	return nil
}
