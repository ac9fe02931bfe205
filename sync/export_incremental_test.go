package sync

// NewDedup is a poller's memory of the events it applied, for tests that
// call PollOnce round after round as the poller does.
func NewDedup() *seen { return &seen{} }
