package main

import (
	"context"
	"fmt"
	"io"
)

func runConfig(_ context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] != "validate" {
		fmt.Fprintln(stderr, "usage: keybridge config validate -c FILE")
		return 2
	}
	fs := newFlags("config validate", stderr)
	path := configFlag(fs)
	if err := fs.Parse(args[1:]); err != nil {
		return 2
	}
	if _, ok := loadConfig(*path, stderr); !ok {
		return 1
	}
	fmt.Fprintln(stdout, "config is valid")
	return 0
}
