package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"runtime/debug"
	"sync"
	"time"

	"github.com/keybridge/keybridge/config"
	"github.com/keybridge/keybridge/internal/api"
	"github.com/keybridge/keybridge/internal/metrics"
	"github.com/keybridge/keybridge/internal/store"
)

func defaultLog() config.Log { return config.Default().Log }

func runServe(ctx context.Context, args []string, _, stderr io.Writer) int {
	fs := newFlags("serve", stderr)
	path := configFlag(fs)
	if err := fs.Parse(args); err != nil {
		return 2
	}
	cfg, ok := loadConfig(*path, stderr)
	if !ok {
		return 2
	}
	log := newLogger(cfg.Log, os.Stderr)
	if err := serve(ctx, cfg, log); err != nil {
		log.ErrorContext(ctx, "keybridge stopped", "error", err)
		return 1
	}
	return 0
}

func serve(ctx context.Context, cfg *config.Config, log *slog.Logger) error {
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(cfg.Server.GCPercent)
	}
	m := metrics.New(version, revision)
	st, err := store.Open(ctx, cfg.Database.URL, cfg.Database.SyncURL, cfg.Database.MaxConns)
	if err != nil {
		return fmt.Errorf("open database: %w", err)
	}
	defer st.Close()
	d := &deps{cfg: cfg, log: log, metrics: m, store: st}

	srv := &api.Server{
		Log:            log,
		Metrics:        m,
		TrustedProxies: cfg.Server.TrustedProxies,
		Ready: []api.ReadyCheck{{Name: "database", Check: func(ctx context.Context) error {
			if err := st.Ping(ctx); err != nil {
				m.DatabaseUp.Set(0)
				return errors.New("database unreachable")
			}
			m.DatabaseUp.Set(1)
			return nil
		}}},
	}
	var features []feature
	for _, wire := range []func(context.Context, *deps) (feature, error){wireDecisions, wireSync, wireManagement} {
		f, err := wire(ctx, d)
		if err != nil {
			return err
		}
		features = append(features, f)
		srv.Modules = append(srv.Modules, f.modules...)
		srv.Ready = append(srv.Ready, f.ready...)
	}

	hs := newHTTPServer(ctx, cfg.Server, srv.Handler())
	ln, err := net.Listen("tcp", cfg.Server.Listen)
	if err != nil {
		return fmt.Errorf("server.listen %s: %w", cfg.Server.Listen, err)
	}
	log.InfoContext(ctx, "keybridge serving", "addr", ln.Addr().String(), "version", version, "realm", cfg.Keycloak.Realm)

	// Background loops stop on loopCtx, after the HTTP server has drained,
	// so requests in flight can still enqueue audit entries.
	loopCtx, stopLoops := context.WithCancel(context.WithoutCancel(ctx))
	defer stopLoops()
	var wg sync.WaitGroup
	for _, f := range features {
		for _, run := range f.background {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if err := run(loopCtx); err != nil && !errors.Is(err, context.Canceled) {
					log.ErrorContext(loopCtx, "background loop stopped", "error", err)
				}
			}()
		}
	}

	errc := make(chan error, 2)
	go func() { errc <- hs.Serve(ln) }()
	if cfg.Server.DebugListen != "" {
		dbg, err := startDebug(ctx, cfg.Server.DebugListen, errc)
		if err != nil {
			return err
		}
		defer dbg.Close()
		log.InfoContext(ctx, "profiler serving", "addr", cfg.Server.DebugListen)
	}
	var serveErr error
	select {
	case err := <-errc:
		serveErr = fmt.Errorf("http server: %w", err)
	case <-ctx.Done():
	}

	log.InfoContext(ctx, "shutting down", "timeout", cfg.Server.ShutdownTimeout.String())
	srv.ShutDown()
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cfg.Server.ShutdownTimeout)
	defer cancel()
	if err := hs.Shutdown(sctx); err != nil && !errors.Is(err, http.ErrServerClosed) {
		log.ErrorContext(sctx, "http shutdown", "error", err)
	}
	stopLoops()
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-sctx.Done():
		log.ErrorContext(sctx, "background loops did not drain in time")
	}
	for i := len(features) - 1; i >= 0; i-- {
		if features[i].close != nil {
			features[i].close()
		}
	}
	log.InfoContext(sctx, "stopped")
	return serveErr
}

// newHTTPServer is the API's server with the configured timeouts: a
// client that trickles its request, stops reading its answer or idles on a
// kept-alive connection does not hold it past them. A handler that answers
// at length on purpose (the audit export) moves its own write deadline.
func newHTTPServer(ctx context.Context, c config.Server, h http.Handler) *http.Server {
	return &http.Server{
		Handler:           h,
		ReadHeaderTimeout: c.ReadHeaderTimeout,
		ReadTimeout:       c.ReadTimeout,
		WriteTimeout:      c.WriteTimeout,
		IdleTimeout:       c.IdleTimeout,
		BaseContext:       func(net.Listener) context.Context { return context.WithoutCancel(ctx) },
	}
}

// startDebug serves Go's profiler on its own listener (validated as
// loopback), apart from the API so no route or middleware of the API can
// reach it. A failure to serve ends the daemon through errc.
func startDebug(ctx context.Context, addr string, errc chan<- error) (*http.Server, error) {
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("server.debug_listen %s: %w", addr, err)
	}
	hs := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second,
		BaseContext: func(net.Listener) context.Context { return context.WithoutCancel(ctx) }}
	go func() {
		if err := hs.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			errc <- fmt.Errorf("debug server: %w", err)
		}
	}()
	return hs, nil
}
