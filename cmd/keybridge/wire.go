package main

import (
	"context"
	"log/slog"

	"github.com/keybridge/keybridge/config"
	"github.com/keybridge/keybridge/internal/api"
	"github.com/keybridge/keybridge/internal/audit"
	"github.com/keybridge/keybridge/internal/metrics"
	"github.com/keybridge/keybridge/internal/store"
	"github.com/keybridge/keybridge/mapping"
	"github.com/keybridge/keybridge/middleware"
)

// deps are what every feature is wired from.
type deps struct {
	cfg     *config.Config
	log     *slog.Logger
	metrics *metrics.Metrics
	store   *store.Store
	// audit is set by wireDecisions (the asynchronous writer) for the
	// features wired after it.
	audit audit.Recorder
	// engine and gate are set by wireDecisions: the current mapping engine
	// (custom roles included) and the five-step middleware.
	engine func() *mapping.Engine
	gate   *middleware.Middleware
}

// feature is one wired capability: its routes, readiness checks and the
// background loops serve runs until shutdown (each returns when ctx ends).
type feature struct {
	modules    []api.Module
	ready      []api.ReadyCheck
	background []func(ctx context.Context) error
	// close runs after the HTTP server has stopped and loops have drained.
	close func()
}
