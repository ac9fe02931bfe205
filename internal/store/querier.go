package store

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// Querier is what the management queries run on: the RLS-scoped pgx.Tx the
// middleware hands a handler, or an owner transaction in the operator CLI.
// Whatever it is, the tenant boundary is PostgreSQL's to enforce.
type Querier interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// Page bounds a list: Limit rows after Cursor (opaque, from the previous page).
type Page struct {
	Limit  int
	Cursor string
}

const (
	defaultLimit = 50
	maxLimit     = 500
)

func (p Page) limit() int {
	switch {
	case p.Limit <= 0:
		return defaultLimit
	case p.Limit > maxLimit:
		return maxLimit
	}
	return p.Limit
}

// ErrBadCursor means a cursor was not one this server issued.
var ErrBadCursor = fmt.Errorf("invalid cursor: %w", ErrInvalid)

// ErrInvalid marks a request that is wrong in itself.
var ErrInvalid = fmt.Errorf("invalid request")

// cursor is the keyset position after the last row of a page.
type cursor struct {
	Sort string `json:"s"`
	Key  string `json:"k"`           // sort value of the last row
	Null bool   `json:"n,omitempty"` // the sort value was NULL
	ID   string `json:"i"`           // tie-breaker
}

func encodeCursor(c cursor) string {
	b, _ := json.Marshal(c)
	return base64.RawURLEncoding.EncodeToString(b)
}

func decodeCursor(s, sort string) (*cursor, error) {
	if s == "" {
		return nil, nil
	}
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil {
		return nil, ErrBadCursor
	}
	var c cursor
	if err := json.Unmarshal(b, &c); err != nil || c.Sort != sort || c.ID == "" {
		return nil, ErrBadCursor
	}
	return &c, nil
}
