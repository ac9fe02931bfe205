package sync

import (
	"context"
	"maps"
	gosync "sync"
	"time"

	"github.com/keybridge/keybridge/internal/store"
)

// Phases of a full run after the snapshot.
const (
	PhasePlan  = "plan"
	PhaseApply = "apply"
)

// progressEvery is how many Keycloak requests pass between two progress
// reports of a running full sync: a log line, and the running run's record
// (keycloak_requests, objects) brought up to date for GET /v1/sync/runs.
// The keybridge_sync_progress_objects gauge follows every request.
const progressEvery = 250

// Progress is how far the full run under way has got.
type Progress struct {
	RunID   int64     `json:"run_id"`
	Started time.Time `json:"started_at"`
	// Phase is the part of the run under way: a snapshot phase (PhaseUsers
	// and the rest), then PhasePlan and PhaseApply.
	Phase string `json:"phase"`
	// Objects is what the run has read in Phase so far.
	Objects int `json:"objects"`
	// Read counts what the run has read so far, by phase.
	Read     map[string]int `json:"read"`
	Requests int64          `json:"keycloak_requests"`
}

// progressSlot holds the tracker of the run under way, if any.
type progressSlot struct {
	mu gosync.Mutex
	t  *tracker
}

type tracker struct {
	s      *Service
	ctx    context.Context
	before int64 // Keycloak requests when the run began

	mu       gosync.Mutex
	p        Progress
	reported int64 // requests at the last report
}

// Progress returns the progress of the full run under way in this
// process; false when none is.
func (s *Service) Progress() (Progress, bool) {
	s.progress.mu.Lock()
	t := s.progress.t
	s.progress.mu.Unlock()
	if t == nil {
		return Progress{}, false
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	p := t.p
	p.Read = maps.Clone(t.p.Read)
	p.Requests = s.KC.Requests() - t.before
	return p, true
}

// startProgress begins tracking run id; the returned func ends it.
func (s *Service) startProgress(ctx context.Context, id int64, started time.Time) func() {
	t := &tracker{s: s, ctx: ctx, before: s.KC.Requests(), p: Progress{RunID: id, Started: started, Read: map[string]int{}}}
	if s.Metrics != nil {
		s.Metrics.SyncProgress.Reset()
	}
	s.progress.mu.Lock()
	s.progress.t = t
	s.progress.mu.Unlock()
	return func() {
		s.progress.mu.Lock()
		if s.progress.t == t {
			s.progress.t = nil
		}
		s.progress.mu.Unlock()
	}
}

// observe is SnapshotOptions.Progress for the run under way: phase read
// objects more with one request.
func (s *Service) observe(phase string, objects int) {
	s.progress.mu.Lock()
	t := s.progress.t
	s.progress.mu.Unlock()
	if t != nil {
		t.add(phase, objects)
	}
}

// setPhase moves the run under way to a phase that reads nothing from
// Keycloak (plan, apply).
func (s *Service) setPhase(phase string) {
	s.observe(phase, 0)
}

func (t *tracker) add(phase string, objects int) {
	requests := t.s.KC.Requests() - t.before
	t.mu.Lock()
	if t.p.Phase != phase {
		t.p.Phase, t.p.Objects = phase, 0
	}
	t.p.Objects += objects
	t.p.Read[phase] += objects
	n := t.p.Read[phase]
	due := requests-t.reported >= progressEvery
	var read map[string]int
	if due {
		t.reported = requests
		read = maps.Clone(t.p.Read)
	}
	p := t.p
	t.mu.Unlock()
	s := t.s
	if s.Metrics != nil && objects > 0 {
		s.Metrics.SyncProgress.WithLabelValues(phase).Set(float64(n))
	}
	if !due {
		return
	}
	if s.Log != nil {
		s.Log.InfoContext(t.ctx, "sync progress", "run_id", p.RunID, "phase", p.Phase, "objects", p.Objects, "read", read,
			"keycloak_requests", requests, "elapsed_ms", s.now().Sub(p.Started).Milliseconds())
	}
	if s.Store != nil {
		if err := store.RecordRunProgress(t.ctx, s.Store.SysPool(), p.RunID, requests, read); err != nil && s.Log != nil {
			s.Log.DebugContext(t.ctx, "record sync progress", "run_id", p.RunID, "error", err)
		}
	}
}
