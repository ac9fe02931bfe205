package testenv

import (
	"testing"
	"time"
)

// Eventually polls cond every 50ms until it holds and returns how long that
// took; the test fails when it has not held within limit. Tests wait on what
// they assert, never on a fixed sleep, so a loaded machine makes them slower,
// not flaky.
func Eventually(t testing.TB, what string, limit time.Duration, cond func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	for {
		if cond() {
			return time.Since(start)
		}
		if time.Since(start) >= limit {
			t.Fatalf("%s: not seen within %s", what, limit)
			return 0
		}
		time.Sleep(50 * time.Millisecond)
	}
}
