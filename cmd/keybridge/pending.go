package main

import (
	"context"
	"fmt"
	"io"
)

// Commands whose capability has not been built yet say so and fail: they
// never pretend to have worked.
func notBuilt(name string) func(context.Context, []string, io.Writer, io.Writer) int {
	return func(_ context.Context, _ []string, _, stderr io.Writer) int {
		fmt.Fprintf(stderr, "keybridge %s: not built yet in this version\n", name)
		return 3
	}
}

var (
	runSync = notBuilt("sync")
)
