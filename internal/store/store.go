// Package store is keybridge's PostgreSQL storage: the only package that
// writes SQL. Request-path transactions run as the runtime role under RLS
// (see package rls); sync and the audit writer use the cross-tenant role.
package store

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/keybridge/keybridge/rls"
)

// Sentinel errors, checked with errors.Is.
var (
	ErrNotFound = errors.New("not found")
	ErrConflict = errors.New("conflict")
)

// Store holds the two pools the daemon uses.
type Store struct {
	app *pgxpool.Pool // keybridge_app: subject to RLS
	sys *pgxpool.Pool // keybridge_sync: cross-tenant writer
}

// Open connects both pools. It does not fail when PostgreSQL is down: pgx
// pools connect lazily, and readiness reports the outage.
func Open(ctx context.Context, appURL, syncURL string, maxConns int32) (*Store, error) {
	app, err := newPool(ctx, appURL, maxConns)
	if err != nil {
		return nil, fmt.Errorf("database.url: %w", err)
	}
	sys, err := newPool(ctx, syncURL, maxConns)
	if err != nil {
		app.Close()
		return nil, fmt.Errorf("database.sync_url: %w", err)
	}
	return &Store{app: app, sys: sys}, nil
}

func newPool(ctx context.Context, dsn string, maxConns int32) (*pgxpool.Pool, error) {
	cfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		return nil, fmt.Errorf("parse connection string: %w", err)
	}
	if maxConns > 0 {
		cfg.MaxConns = maxConns
	}
	return pgxpool.NewWithConfig(ctx, cfg)
}

// Close closes both pools.
func (s *Store) Close() {
	s.app.Close()
	s.sys.Close()
}

// Ping checks both roles can reach the database.
func (s *Store) Ping(ctx context.Context) error {
	if err := s.app.Ping(ctx); err != nil {
		return fmt.Errorf("ping as runtime role: %w", err)
	}
	if err := s.sys.Ping(ctx); err != nil {
		return fmt.Errorf("ping as sync role: %w", err)
	}
	return nil
}

// AppPool is the runtime pool, for the middleware which begins its own
// RLS-scoped transactions through package rls.
func (s *Store) AppPool() *pgxpool.Pool { return s.app }

// SysPool is the cross-tenant pool, for sync and the audit writer only.
func (s *Store) SysPool() *pgxpool.Pool { return s.sys }

// InTx runs fn as the runtime role under the RLS session carried by ctx.
func (s *Store) InTx(ctx context.Context, fn func(pgx.Tx) error) error {
	return rls.InTx(ctx, s.app, fn)
}

// InSystemTx runs fn as the cross-tenant sync role.
func (s *Store) InSystemTx(ctx context.Context, fn func(pgx.Tx) error) error {
	return pgx.BeginFunc(ctx, s.sys, fn)
}
