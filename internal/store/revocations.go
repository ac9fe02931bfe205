package store

import (
	"context"
	"fmt"
	"math"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// Revocation kinds (migration 00011).
const (
	// RevokedSession is a Keycloak session that ended: tokens whose sid
	// names it are refused.
	RevokedSession = "session"
	// RealmNotBefore, ClientNotBefore and UserNotBefore refuse tokens
	// issued before their time: every token, the tokens of one client
	// (azp), the tokens of one user (sub).
	RealmNotBefore  = "realm"
	ClientNotBefore = "client"
	UserNotBefore   = "user"
)

// Revocation is one row of the revocations table.
type Revocation struct {
	Kind string
	// ID is the session id, the clientId, the user id; "" for the realm.
	ID string
	// At is when the session ended, or the not-before time; zero for a
	// not-before Keycloak cleared.
	At  time.Time
	Seq int64
}

// maxRevocationID is the longest id the table takes (migration 00011).
const maxRevocationID = 255

// revocationLockKey serialises writers, so that seq order is commit order
// and a reader taking the rows after the last seq it holds misses none.
const revocationLockKey = int64(0x6b62_7265_766f_6b65) // "kbrevoke"

// LoadRevocations returns the rows after seq after, in seq order, leaving
// out those whose time is before since (they refuse no token that is
// still valid). Cleared not-befores are returned with a zero At.
func LoadRevocations(ctx context.Context, q Querier, after int64, since time.Time) ([]Revocation, error) {
	rows, err := q.Query(ctx, `SELECT kind, id, at, seq FROM revocations
		WHERE seq > $1 AND (at IS NULL OR at >= $2) ORDER BY seq`, after, since)
	if err != nil {
		return nil, fmt.Errorf("load revocations: %w", err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (Revocation, error) {
		var x Revocation
		var at *time.Time
		err := r.Scan(&x.Kind, &x.ID, &at, &x.Seq)
		if at != nil {
			x.At = *at
		}
		return x, err
	})
	if err != nil {
		return nil, fmt.Errorf("load revocations: %w", err)
	}
	return out, nil
}

// AnySeq is SaveRevocations' upTo that lets every row change.
const AnySeq = math.MaxInt64

// SaveRevocations writes rs in one transaction and reports how many rows
// it inserted or changed: a session already recorded keeps its first end;
// a not-before takes the new time (a zero At clears it), unless its row's
// seq is above upTo: written after the caller read the table, it is newer
// than what the caller knows and stays. Rows whose time is before prune
// are deleted. When anything changed, the commit notifies keybridge_changed
// with {"kind":"revocation"} so every replica reloads. An id over 255
// characters names no Keycloak session, client or user and is skipped.
func SaveRevocations(ctx context.Context, pool *pgxpool.Pool, rs []Revocation, prune time.Time, upTo int64) (int64, error) {
	// One row may change once per statement: of several for the same key,
	// a session keeps its first end and a not-before its last time.
	at := make(map[[2]string]int, len(rs))
	var uniq []Revocation
	for _, r := range rs {
		if len(r.ID) > maxRevocationID {
			continue
		}
		k := [2]string{r.Kind, r.ID}
		switch i, ok := at[k]; {
		case !ok:
			at[k] = len(uniq)
			uniq = append(uniq, r)
		case r.Kind != RevokedSession:
			uniq[i] = r
		}
	}
	rs = uniq
	kinds := make([]string, len(rs))
	ids := make([]string, len(rs))
	ats := make([]*time.Time, len(rs))
	for i, r := range rs {
		kinds[i], ids[i] = r.Kind, r.ID
		if !r.At.IsZero() {
			at := r.At
			ats[i] = &at
		}
	}
	var changed int64
	err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1)`, revocationLockKey); err != nil {
			return err
		}
		if len(rs) > 0 {
			tag, err := tx.Exec(ctx, `INSERT INTO revocations (kind, id, at)
				SELECT * FROM unnest($1::text[], $2::text[], $3::timestamptz[])
				ON CONFLICT (kind, id) DO UPDATE SET at = excluded.at, seq = nextval('revocations_seq_seq'), updated_at = now()
				WHERE revocations.kind <> 'session' AND revocations.at IS DISTINCT FROM excluded.at AND revocations.seq <= $4`,
				kinds, ids, ats, upTo)
			if err != nil {
				return err
			}
			changed = tag.RowsAffected()
		}
		if _, err := tx.Exec(ctx, `DELETE FROM revocations WHERE coalesce(at, updated_at) < $1`, prune); err != nil {
			return err
		}
		if changed > 0 {
			_, err := tx.Exec(ctx, `SELECT pg_notify('keybridge_changed', '{"kind":"revocation"}')`)
			return err
		}
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("save revocations: %w", err)
	}
	return changed, nil
}
