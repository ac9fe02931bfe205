package sync

import "time"

// NewDedup is a poller's memory of the events it applied, for tests that
// call PollOnce round after round as the poller does.
func NewDedup() *seen { return &seen{} }

// OnApplied has fn told of each admin event s applies, with its lag from
// Keycloak's event time to the committed rows.
func OnApplied(s *Service, fn func(e AdminEvent, lag time.Duration)) { s.onApplied = fn }
