// Package audit records every permission-gated action in the audit_log
// table: a separate stream with its own schema, never log lines.
package audit

import (
	"context"
	"time"
)

// Outcomes of an audited action, as the fastn seed's Audit Log shows them.
const (
	Success = "success"
	Failure = "failure"
	Denied  = "denied"
)

// Entry is one audit row.
type Entry struct {
	// ID makes a retried write idempotent; the writer fills it when empty.
	ID           string
	OccurredAt   time.Time
	TenantID     string // "" when the action has no tenant
	ActorID      string // "" for system
	ActorName    string // user name, or "system"
	Action       string // e.g. people.invite, check.workflows.deploy_prod, auth.login, credential.token_refresh
	ResourceType string
	ResourceID   string
	Outcome      string // Success, Failure or Denied
	RequestID    string
	Reason       string
	ClientAddr   string // the client's address (behind a trusted proxy, the proxy's client); stored in details as client_addr
	Details      map[string]any
	// Class says whether the action was attempted before authentication;
	// the writer aggregates unauthenticated entries and bounds their share
	// of the queue (see Writer).
	Class Class
	// Count is how many identical refusals the row stands for; 0 means 1.
	Count int

	details string // Details and ClientAddr as capped JSON, set by the writer
}

// Class tells authenticated actions from refusals before authentication.
type Class uint8

// Classes of entries. The zero value is Authenticated: an entry whose
// class was not set is never treated as noise.
const (
	Authenticated Class = iota
	Unauthenticated
)

// String is the class's metric label.
func (c Class) String() string {
	if c == Unauthenticated {
		return "unauthenticated"
	}
	return "authenticated"
}

// Recorder accepts entries. Record never blocks a decision: implementations
// queue and write asynchronously.
type Recorder interface {
	Record(ctx context.Context, e Entry)
}
