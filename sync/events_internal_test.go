package sync

import (
	"context"
	"errors"
	"fmt"
	gosync "sync"
	"testing"
	"time"
)

// fakeRuns stands in for Run: it records each call and answers from results
// in order (nil once they run out); a run can be held until released.
type fakeRuns struct {
	mu      gosync.Mutex
	calls   []RunOptions
	results []error
	hold    chan struct{}
}

func (f *fakeRuns) run(ctx context.Context, o RunOptions) (*Result, error) {
	f.mu.Lock()
	f.calls = append(f.calls, o)
	var err error
	if len(f.results) > 0 {
		err, f.results = f.results[0], f.results[1:]
	}
	hold := f.hold
	f.mu.Unlock()
	if hold != nil {
		<-hold
	}
	return nil, err
}

func (f *fakeRuns) count() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.calls)
}

func (s *Service) drained() bool {
	s.reqMu.Lock()
	defer s.reqMu.Unlock()
	return !s.reqDraining
}

func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); !cond(); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within 5s", what)
		}
	}
}

func TestRequestFullCoalescesIntoOneRunAfterTheOneUnderWay(t *testing.T) {
	f := &fakeRuns{hold: make(chan struct{})}
	s := &Service{runRequested: f.run}
	s.RequestFull(t.Context(), "event")
	waitUntil(t, "the first run", func() bool { return f.count() == 1 })
	for range 5 { // changes reported while that run is reading the realm
		s.RequestFull(t.Context(), "webhook")
	}
	close(f.hold)
	waitUntil(t, "the drain to finish", s.drained)
	if f.count() != 2 {
		t.Fatalf("%d runs for 6 requests, 5 of them during the first run; want 2", f.count())
	}
	if f.calls[0].Trigger != "event" || f.calls[1].Trigger != "webhook" || !f.calls[0].Wait || !f.calls[1].Wait {
		t.Fatalf("runs: %+v", f.calls)
	}
}

func TestRequestFullRetriesAFailedRunButNotAGuardAbort(t *testing.T) {
	down := errors.New("keycloak: connection refused")
	f := &fakeRuns{results: []error{down, down, nil}}
	s := &Service{runRequested: f.run, reqRetry: 10 * time.Millisecond}
	s.RequestFull(t.Context(), "event")
	waitUntil(t, "the drain to finish", s.drained)
	if f.count() != 3 {
		t.Fatalf("%d runs, want 3: two failures, then a success", f.count())
	}

	g := &fakeRuns{results: []error{ErrGuard}}
	s = &Service{runRequested: g.run, reqRetry: 10 * time.Millisecond}
	s.RequestFull(t.Context(), "event")
	waitUntil(t, "the drain to finish", s.drained)
	time.Sleep(50 * time.Millisecond)
	if g.count() != 1 {
		t.Fatalf("%d runs after a guard abort, want 1: only an operator can settle it", g.count())
	}
}

func TestRequestFullKeepsARequestItCouldNotServe(t *testing.T) {
	f := &fakeRuns{}
	s := &Service{runRequested: f.run}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	s.RequestFull(ctx, "event") // the leader stepped down before it could run
	waitUntil(t, "the drain to stop", s.drained)
	if f.count() != 0 {
		t.Fatalf("%d runs on a cancelled context", f.count())
	}
	s.RequestFull(t.Context(), "webhook")
	waitUntil(t, "the drain to finish", s.drained)
	if f.count() != 1 || f.calls[0].Trigger != "event" {
		t.Fatalf("runs: %+v, want the kept request served once", f.calls)
	}
}

func TestSeenMarksOnlyWhatItIsGiven(t *testing.T) {
	var s seen
	now := time.Now()
	if s.has("u:1") {
		t.Fatal("an empty state has an event")
	}
	s.mark(now, "u:1", "a:2")
	if !s.has("u:1") || !s.has("a:2") || s.has("u:3") {
		t.Fatalf("marks: %v", s.ids)
	}
}

// Ids older than the window the poller can re-read are forgotten, so the
// set stays the size of that window, not of an hour of traffic.
func TestSeenForgetsPastItsWindow(t *testing.T) {
	s := seen{keep: time.Minute}
	t0 := time.Now()
	for i := range 1500 {
		s.mark(t0, fmt.Sprint("u:", i))
	}
	s.mark(t0.Add(2*time.Minute), "u:new")
	if s.has("u:0") || !s.has("u:new") || len(s.ids) != 1 {
		t.Fatalf("after the window: %d ids kept, has old %v", len(s.ids), s.has("u:0"))
	}
}
