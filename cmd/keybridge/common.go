package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"

	"github.com/keybridge/keybridge/config"
)

// newFlags returns a FlagSet that reports errors instead of exiting.
func newFlags(name string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet("keybridge "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	return fs
}

// configFlag registers -c/--config, defaulting to $KEYBRIDGE_CONFIG.
func configFlag(fs *flag.FlagSet) *string {
	p := fs.String("c", os.Getenv("KEYBRIDGE_CONFIG"), "config file (YAML); environment overrides apply")
	fs.StringVar(p, "config", *p, "same as -c")
	return p
}

// loadConfig loads and validates, printing every problem.
func loadConfig(path string, stderr io.Writer) (*config.Config, bool) {
	cfg, err := config.Load(path)
	if err != nil {
		var p config.Problems
		if errors.As(err, &p) {
			fmt.Fprintf(stderr, "config: %d problem(s):\n", len(p))
			for _, e := range p {
				fmt.Fprintf(stderr, "  - %v\n", e)
			}
		} else {
			fmt.Fprintf(stderr, "config: %v\n", err)
		}
		return nil, false
	}
	return cfg, true
}

func newLogger(cfg config.Log, w io.Writer) *slog.Logger {
	var level slog.Level
	_ = level.UnmarshalText([]byte(cfg.Level))
	opts := &slog.HandlerOptions{Level: level}
	if cfg.Format == "text" {
		return slog.New(slog.NewTextHandler(w, opts))
	}
	return slog.New(slog.NewJSONHandler(w, opts))
}
