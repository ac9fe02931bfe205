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
	Details      map[string]any
}

// Recorder accepts entries. Record never blocks a decision: implementations
// queue and write asynchronously.
type Recorder interface {
	Record(ctx context.Context, e Entry)
}
