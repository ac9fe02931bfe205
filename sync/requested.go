package sync

import (
	"context"
	"errors"
	"time"

	"github.com/cenkalti/backoff/v5"
)

// RequestFull asks for a full run soon, for a change that events or webhooks
// reported but cannot apply on their own. Requests coalesce: while one run
// is pending or under way, further requests make exactly one more run after
// it, because a run already under way may have read the realm before the
// change. A run that fails is retried with backoff (2 s, growing to 5 min,
// for up to 15 min; the schedule covers anything later); one the deletion
// guard refuses is not retried, since only an operator can settle that.
// The run waits for another run in this process instead of giving up.
func (s *Service) RequestFull(ctx context.Context, trigger string) {
	s.reqMu.Lock()
	if s.reqTrigger == "" {
		s.reqTrigger = trigger
	}
	if s.reqDraining {
		s.reqMu.Unlock()
		return
	}
	s.reqDraining = true
	s.reqMu.Unlock()
	go s.drainRequests(ctx)
}

// takeRequest returns the pending trigger and clears it, or "" and stops
// the drain when nothing is pending.
func (s *Service) takeRequest(stop bool) string {
	s.reqMu.Lock()
	defer s.reqMu.Unlock()
	t := s.reqTrigger
	s.reqTrigger = ""
	if t == "" || stop {
		s.reqDraining = false
		s.reqTrigger = t // an unserved request stays for the next caller
		return ""
	}
	return t
}

func (s *Service) drainRequests(ctx context.Context) {
	run := s.runRequested
	if run == nil {
		run = s.Run
	}
	var wait *backoff.ExponentialBackOff
	var failingSince time.Time
	for {
		trigger := s.takeRequest(ctx.Err() != nil)
		if trigger == "" {
			return
		}
		_, err := run(ctx, RunOptions{Trigger: trigger, Wait: true})
		switch {
		case err == nil, errors.Is(err, ErrGuard), ctx.Err() != nil:
			wait = nil
			continue
		}
		if wait == nil {
			wait = backoff.NewExponentialBackOff()
			wait.InitialInterval = 2 * time.Second
			if s.reqRetry > 0 {
				wait.InitialInterval = s.reqRetry
			}
			wait.MaxInterval = 5 * time.Minute
			wait.Reset()
			failingSince = time.Now()
		}
		if time.Since(failingSince) > 15*time.Minute {
			if s.Log != nil {
				s.Log.WarnContext(ctx, "requested sync failed; leaving it to the schedule", "trigger", trigger, "error", err)
			}
			wait = nil
			continue
		}
		next := wait.NextBackOff()
		if s.Log != nil {
			s.Log.WarnContext(ctx, "requested sync failed; retrying", "trigger", trigger, "retry_in", next.String(), "error", err)
		}
		s.reqMu.Lock()
		if s.reqTrigger == "" {
			s.reqTrigger = trigger
		}
		s.reqMu.Unlock()
		select {
		case <-ctx.Done():
		case <-time.After(next):
		}
	}
}
