package testenv

import (
	"context"
	"slices"
	"sync"

	"github.com/keybridge/keybridge/internal/audit"
)

// AuditLog is an audit.Recorder that keeps entries in memory for tests.
type AuditLog struct {
	mu      sync.Mutex
	entries []audit.Entry
}

// Record implements audit.Recorder.
func (l *AuditLog) Record(_ context.Context, e audit.Entry) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.entries = append(l.entries, e)
}

// Entries returns a copy of what was recorded, in order.
func (l *AuditLog) Entries() []audit.Entry {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.entries)
}

// Count counts the entries of an action with an outcome.
func (l *AuditLog) Count(action, outcome string) int {
	n := 0
	for _, e := range l.Entries() {
		if e.Action == action && e.Outcome == outcome {
			n++
		}
	}
	return n
}
