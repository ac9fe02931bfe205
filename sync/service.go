package sync

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"runtime/debug"
	"strings"
	gosync "sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/robfig/cron/v3"

	"github.com/keybridge/keybridge/internal/audit"
	"github.com/keybridge/keybridge/internal/metrics"
	"github.com/keybridge/keybridge/internal/store"
	"github.com/keybridge/keybridge/mapping"
)

// Service runs syncs: on demand, on a schedule while leader, and from events.
type Service struct {
	KC              *Keycloak
	Store           *store.Store
	Engine          func() *mapping.Engine
	Metrics         *metrics.Metrics
	Log             *slog.Logger
	Audit           audit.Recorder
	Mode            string  // full | additive
	MaxRemovalShare float64 // guard
	Timeout         time.Duration
	Schedule        string
	Jitter          time.Duration
	OnStartup       bool
	EventsEnabled   bool
	EventsInterval  time.Duration
	EventsOverlap   time.Duration
	LeaderRetry     time.Duration // how often a follower tries to become leader
	Now             func() time.Time

	// RevocationKeep is how long an ended session or a not-before can still
	// refuse a valid token (auth.max_token_lifetime + auth.leeway; 24h30s
	// when zero): older ones are pruned (sessions.go).
	RevocationKeep time.Duration

	mu       gosync.Mutex // one run at a time in this process
	leader   bool
	leaderMu gosync.Mutex
	firstOK  chan struct{}
	once     gosync.Once
	progress progressSlot // the full run under way (Progress)
	access   accessState  // issue 16: the service account's access, as last probed (permissions.go)

	// Full runs asked for by events and webhooks (RequestFull).
	reqMu        gosync.Mutex
	reqTrigger   string                                             // pending request, "" when none
	reqDraining  bool                                               // a goroutine is serving requests
	runRequested func(context.Context, RunOptions) (*Result, error) // tests; Run when nil
	reqRetry     time.Duration                                      // tests; first retry wait, 2s when 0

	// onApplied, when set (tests), is told of each admin event applied,
	// with its lag from Keycloak's event time to the committed rows.
	onApplied func(AdminEvent, time.Duration)
}

// RunOptions describe one run.
type RunOptions struct {
	Trigger string // startup, schedule, api, cli, event, webhook
	DryRun  bool
	Force   bool
	Mode    string // overrides Service.Mode when set
	Wait    bool   // wait for a run under way in this process instead of ErrBusy
}

// Result is a finished run.
type Result struct {
	RunID    int64          `json:"run_id"`
	Outcome  string         `json:"outcome"` // success, failure, guard_abort (a dry run is a success with dry_run set on its record)
	Error    string         `json:"error,omitempty"`
	Objects  map[string]int `json:"objects"`
	Changes  Changes        `json:"changes"`
	Requests int64          `json:"keycloak_requests"`
	Duration time.Duration  `json:"duration_ns"`
	// Phases times snapshot, plan and apply.
	Phases map[string]time.Duration `json:"phases_ns"`
	// Drift counts, by kind, what a scheduled run applied that the events
	// had missed; nil for other runs.
	Drift map[string]int `json:"drift,omitempty"`
	Plan  *Plan          `json:"-"`
}

// ErrGuard is a plan refused by the deletion guard.
var ErrGuard = errors.New("deletion guard")

// ErrBusy means another run is in progress in this process.
var ErrBusy = errors.New("a sync is already running")

func (s *Service) now() time.Time {
	if s.Now != nil {
		return s.Now()
	}
	return time.Now()
}

func (s *Service) clients() []string {
	seen := map[string]bool{}
	var out []string
	for _, r := range s.Engine().Config().Rules {
		if r.ClientRole == "" {
			continue
		}
		c, _, _ := strings.Cut(r.ClientRole, ":")
		if !seen[c] {
			seen[c] = true
			out = append(out, c)
		}
	}
	return out
}

// maxConfirm bounds the per-user reads that confirm a snapshot's absences.
const maxConfirm = 100

// consistentSnapshot reads the realm and checks that everyone it lacks is
// really gone. Offset paging over users that change during the read can
// skip one (a user deleted before the offset shifts the rest back), who
// would then be taken for deleted and lose every assignment. Each absent
// active person is read on its own; if Keycloak still has one, the realm is
// read again, up to three times, and then the run fails, applying nothing.
func (s *Service) consistentSnapshot(ctx context.Context) (*Snapshot, error) {
	e := s.Engine()
	attrs := []string{}
	for _, in := range e.AttributeInputs() {
		attrs = append(attrs, in.Attribute)
	}
	opts := SnapshotOptions{Clients: s.clients(), Organizations: e.Config().Tenant.Organization, Attributes: attrs, Progress: s.observe}
	for attempt := 1; ; attempt++ {
		snap, err := s.KC.Snapshot(ctx, opts)
		if err != nil {
			return nil, err
		}
		present, err := s.absentButPresent(ctx, snap)
		if err != nil || present == "" {
			return snap, err
		}
		if attempt == 3 {
			return nil, fmt.Errorf("the realm changed while it was read three times (user %s was listed as gone but exists); nothing applied", present)
		}
		if s.Log != nil {
			s.Log.InfoContext(ctx, "realm changed during the read; reading it again", "user", present, "attempt", attempt)
		}
	}
}

// absentButPresent returns an active person the snapshot lacks whom
// Keycloak still has, or "".
func (s *Service) absentButPresent(ctx context.Context, snap *Snapshot) (string, error) {
	rows, err := s.Store.SysPool().Query(ctx, `SELECT id FROM people WHERE status <> 'deleted'`)
	if err != nil {
		return "", err
	}
	active, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return "", err
	}
	listed := make(map[string]bool, len(snap.Users))
	for _, u := range snap.Users {
		listed[u.ID] = true
	}
	var absent []string
	for _, id := range active {
		if !listed[id] {
			absent = append(absent, id)
		}
	}
	// Many absences are the deletion guard's to judge; the few it would let
	// through are the ones to confirm.
	if len(absent) > maxConfirm || float64(len(absent)) > s.MaxRemovalShare*float64(len(active)) {
		return "", nil
	}
	for _, id := range absent {
		_, err := s.KC.User(ctx, id)
		switch {
		case err == nil:
			return id, nil
		case !errors.Is(err, ErrNotFound):
			return "", fmt.Errorf("confirm that user %s is gone: %w", id, err)
		}
	}
	return "", nil
}

// FirstSync is closed after the first successful full run in this process.
func (s *Service) FirstSync() <-chan struct{} {
	s.once.Do(func() { s.firstOK = make(chan struct{}) })
	return s.firstOK
}

// Run performs one full reconcile: snapshot, plan, guard, apply in one
// transaction. A failure at any step applies nothing.
func (s *Service) Run(ctx context.Context, o RunOptions) (*Result, error) {
	if o.Wait {
		s.mu.Lock()
	} else if !s.mu.TryLock() {
		return nil, ErrBusy
	}
	defer s.mu.Unlock()
	mode := s.Mode
	if o.Mode != "" {
		mode = o.Mode
	}
	if s.Timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, s.Timeout)
		defer cancel()
	}
	// A full run holds the realm in memory for a while: meanwhile the
	// collector works to Go's default target whatever server.gc_percent
	// says, so a large realm costs about twice its live heap, not five
	// times; the memory goes back to the system when the run ends.
	defer holdGC(fullRunGCPercent)()
	start := s.now()
	res := &Result{Objects: map[string]int{}, Changes: Changes{}}
	sys := s.Store.SysPool()
	// dbStart is the database's clock, which stamps the rows the run
	// compares against (created_at, updated_at); the app's may differ.
	runID, dbStart, err := store.StartRun(ctx, sys, o.Trigger, mode, o.DryRun, o.Force, start)
	if err != nil {
		// No run record without the database; the metric still shows it.
		if s.Metrics != nil {
			s.Metrics.SyncRuns.WithLabelValues(o.Trigger, "failure").Inc()
		}
		return nil, fmt.Errorf("record the run: %w", err)
	}
	res.RunID = runID
	defer s.startProgress(ctx, runID, start)()
	finish := func(outcome string, runErr error) (*Result, error) {
		res.Outcome = outcome
		res.Duration = s.now().Sub(start)
		if runErr != nil {
			res.Error = runErr.Error()
		}
		if err := store.FinishRun(context.WithoutCancel(ctx), sys, runID, outcome, res.Error, res.Requests, res.Objects, res.Changes, s.now()); err != nil && s.Log != nil {
			s.Log.ErrorContext(ctx, "record sync run", "error", err)
		}
		if s.Metrics != nil {
			s.Metrics.SyncRuns.WithLabelValues(o.Trigger, outcome).Inc()
			s.Metrics.SyncDuration.WithLabelValues(o.Trigger).Observe(res.Duration.Seconds())
		}
		if s.Log != nil {
			s.Log.InfoContext(ctx, "sync finished", "run_id", runID, "trigger", o.Trigger, "outcome", outcome, "duration_ms", res.Duration.Milliseconds(),
				"keycloak_requests", res.Requests, "changes", res.Changes, "phases", res.Phases, "error", res.Error)
		}
		return res, runErr
	}

	before := s.KC.Requests()
	// A mapping that reads attributes users can edit is refused before
	// anything is read or applied.
	if err := s.CheckAttributeSources(ctx); err != nil {
		res.Requests = s.KC.Requests() - before
		return finish("failure", err)
	}
	// Issue 16 (permissions.go): a role the tenant source needs and the
	// service account lacks fails the run naming the role, before the read.
	if err := s.checkAccess(ctx, false); errors.Is(err, ErrMissingAccess) {
		res.Requests = s.KC.Requests() - before
		return finish("failure", err)
	}
	snap, err := s.consistentSnapshot(ctx)
	res.Requests = s.KC.Requests() - before
	if err != nil {
		return finish("failure", fmt.Errorf("read keycloak: %w", err))
	}
	if err := checkTenantTree(snap, s.Engine().Config().Tenant); err != nil { // issue 16 (tenanttree.go)
		return finish("failure", err)
	}
	res.Objects = map[string]int{"people": len(snap.Users), "teams": len(snap.Groups), "roles": len(snap.Roles), "organizations": len(snap.Orgs)}
	if s.Metrics != nil {
		for k, v := range res.Objects {
			s.Metrics.SyncObjects.WithLabelValues(k).Set(float64(v))
		}
	}

	res.Phases = map[string]time.Duration{"snapshot": s.now().Sub(start)}
	// All the run needs of the snapshot once it is planned: the users'
	// not-befores (catchUpRevocations).
	notBefores := &Snapshot{}
	for _, u := range snap.Users {
		if u.NotBefore > 0 {
			notBefores.Users = append(notBefores.Users, User{ID: u.ID, NotBefore: u.NotBefore})
		}
	}
	var outcome string
	s.setPhase(PhasePlan)
	err = pgx.BeginFunc(ctx, sys, func(tx pgx.Tx) error {
		t0 := s.now()
		// Serialise applies across replicas and runs: the plan is computed
		// against the state this transaction will change.
		if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1)`, applyLockKey); err != nil {
			return err
		}
		// The desired rows first, from the snapshot and the people invited
		// (all Desired reads of the store), then the snapshot goes: the
		// store's rows are read beside the desired ones, not beside both.
		invited, err := store.InvitedPeople(ctx, tx)
		if err != nil {
			return err
		}
		want := Desired(snap, s.Engine(), invited, s.now())
		snap = nil
		cur, err := store.LoadSyncState(ctx, tx)
		if err != nil {
			return err
		}
		// Rows written after the snapshot began (an invitation racing this
		// run; a person, team, role or tenant an event or a webhook just
		// applied) are newer than the snapshot; they are left for the next
		// run instead of being taken for removed or written back to what the
		// snapshot read.
		fresh, err := store.WrittenSince(ctx, tx, dbStart)
		if err != nil {
			return err
		}
		// The plan takes the rows (planRows consumes them).
		plan := planRows(cur, want, mode == "additive", fresh, true)
		cur, want = nil, nil
		res.Phases["plan"] = s.now().Sub(t0)
		s.setPhase(PhaseApply)
		t0 = s.now()
		defer func() { res.Phases["apply"] = s.now().Sub(t0) }()
		res.Plan, res.Changes = plan, plan.Changes
		if kind, share := plan.guardTrips(s.MaxRemovalShare); kind != "" && !o.Force {
			outcome = "guard_abort"
			// A dry run previews the verdict; only a real run is an abort
			// an operator is paged for.
			if s.Metrics != nil && !o.DryRun {
				s.Metrics.SyncGuardAborts.WithLabelValues(kind).Inc()
			}
			return fmt.Errorf("%w: the plan deactivates %d of %d %s (%.0f%% > %.0f%%); run with force to apply it",
				ErrGuard, plan.Removed[kind], plan.Active[kind], kind, share*100, s.MaxRemovalShare*100)
		}
		if o.DryRun {
			outcome = "success"
			return errDryRun
		}
		if plan.Empty() {
			outcome = "success"
			return nil
		}
		if err := store.ApplySyncPlan(ctx, tx, &plan.SyncPlan); err != nil {
			return err
		}
		outcome = "success"
		return nil
	})
	if err == nil && o.Trigger == "schedule" && s.EventsEnabled && !o.DryRun {
		s.recordDrift(ctx, res)
	}
	switch {
	case errors.Is(err, errDryRun):
		return finish("success", nil)
	case errors.Is(err, ErrGuard):
		return finish("guard_abort", err)
	case err != nil:
		return finish("failure", fmt.Errorf("apply: %w", err))
	}
	// Issue 14 hook (sessions.go): not-befores whose events were missed.
	s.catchUpRevocations(ctx, notBefores)
	if s.Metrics != nil {
		for kind, ops := range res.Changes {
			for op, n := range ops {
				s.Metrics.SyncChanges.WithLabelValues(kind, op).Add(float64(n))
			}
		}
		s.Metrics.SyncLastSuccess.Set(float64(s.now().Unix()))
	}
	s.once.Do(func() { s.firstOK = make(chan struct{}) })
	select {
	case <-s.firstOK:
	default:
		close(s.firstOK)
	}
	return finish(outcome, nil)
}

var errDryRun = errors.New("dry run: rolled back")

// fullRunGCPercent is the collector's target during a full run.
const fullRunGCPercent = 100

// holdGC lowers the collector's target to pct, unless it is lower already
// or the collector is off, until the returned function restores it and
// hands the memory freed back to the system.
func holdGC(pct int) func() {
	old := debug.SetGCPercent(pct)
	if old >= 0 && old <= pct || old < 0 {
		debug.SetGCPercent(old)
		return func() {}
	}
	return func() {
		debug.SetGCPercent(old)
		debug.FreeOSMemory()
	}
}

// recordDrift counts, in the metric and the run record, what a scheduled
// run applied: with the event poller on, every such change is one the
// events since the previous run had missed.
func (s *Service) recordDrift(ctx context.Context, res *Result) {
	res.Drift = map[string]int{}
	if res.Plan != nil {
		res.Drift = res.Plan.drift()
	}
	if s.Metrics != nil {
		for kind, n := range res.Drift {
			s.Metrics.SyncDrift.WithLabelValues(kind).Add(float64(n))
		}
	}
	if err := store.RecordRunDrift(context.WithoutCancel(ctx), s.Store.SysPool(), res.RunID, res.Drift); err != nil && s.Log != nil {
		s.Log.ErrorContext(ctx, "record sync drift", "error", err)
	}
	if total := sum(res.Drift); total > 0 && s.Log != nil {
		s.Log.InfoContext(ctx, "scheduled sync applied changes the events had missed", "run_id", res.RunID, "drift", res.Drift)
	}
}

func sum(m map[string]int) int {
	n := 0
	for _, v := range m {
		n += v
	}
	return n
}

const (
	applyLockKey  = int64(0x6b62_6170_706c_79) // "kbapply"
	leaderLockKey = int64(0x6b62_6c65_6164)    // "kblead"
)

// guardTrips names the first kind whose removal share exceeds max.
func (p *Plan) guardTrips(max float64) (string, float64) {
	for _, kind := range []string{"people", "teams", "roles"} {
		active := p.Active[kind]
		removed := p.Removed[kind]
		if removed == 0 {
			continue
		}
		share := float64(removed) / float64(max1(active))
		if share > max {
			return kind, share
		}
	}
	return "", 0
}

func max1(n int) int {
	if n < 1 {
		return 1
	}
	return n
}

// Loop runs until ctx ends: it competes for leadership and, while leader,
// runs the schedule and the event poller. Followers retry the lock.
func (s *Service) Loop(ctx context.Context) error {
	retry := s.LeaderRetry
	if retry <= 0 {
		retry = 5 * time.Second
	}
	for ctx.Err() == nil {
		held, err := s.lead(ctx)
		if err != nil && ctx.Err() == nil && s.Log != nil {
			s.Log.WarnContext(ctx, "sync leadership lost or not acquired", "error", err)
		}
		if held {
			continue // lost leadership: try again at once
		}
		select {
		case <-ctx.Done():
		case <-time.After(retry):
		}
	}
	return ctx.Err()
}

// IsLeader reports leadership.
func (s *Service) IsLeader() bool {
	s.leaderMu.Lock()
	defer s.leaderMu.Unlock()
	return s.leader
}

func (s *Service) setLeader(v bool) {
	s.leaderMu.Lock()
	changed := s.leader != v
	s.leader = v
	s.leaderMu.Unlock()
	if s.Metrics != nil {
		if v {
			s.Metrics.Leader.Set(1)
		} else {
			s.Metrics.Leader.Set(0)
		}
		if changed {
			s.Metrics.LeaderTransitions.Inc()
		}
	}
}

// lead holds the advisory lock on a dedicated connection for as long as it
// can; when the process dies the connection closes and PostgreSQL releases
// the lock, so another replica takes over.
func (s *Service) lead(ctx context.Context) (bool, error) {
	conn, err := s.Store.SysPool().Acquire(ctx)
	if err != nil {
		return false, err
	}
	defer conn.Release()
	var got bool
	if err := conn.QueryRow(ctx, `SELECT pg_try_advisory_lock($1)`, leaderLockKey).Scan(&got); err != nil {
		return false, err
	}
	if !got {
		return false, nil
	}
	lctx, cancel := context.WithCancel(ctx)
	defer cancel()
	s.setLeader(true)
	defer s.setLeader(false)
	defer func() {
		// Unlock explicitly on a clean exit; the pooled connection lives on.
		_, _ = conn.Exec(context.WithoutCancel(ctx), `SELECT pg_advisory_unlock($1)`, leaderLockKey)
	}()
	if s.Log != nil {
		s.Log.InfoContext(ctx, "sync leader")
	}

	var wg gosync.WaitGroup
	c := cron.New(cron.WithParser(cron.NewParser(cron.SecondOptional|cron.Minute|cron.Hour|cron.Dom|cron.Month|cron.Dow|cron.Descriptor)),
		cron.WithChain(cron.SkipIfStillRunning(cron.DiscardLogger)))
	if _, err := c.AddFunc(s.Schedule, func() {
		if s.Jitter > 0 {
			select {
			case <-lctx.Done():
				return
			case <-time.After(rand.N(s.Jitter)):
			}
		}
		if _, err := s.Run(lctx, RunOptions{Trigger: "schedule"}); err != nil && s.Log != nil && !errors.Is(err, ErrBusy) {
			s.Log.WarnContext(lctx, "scheduled sync failed", "error", err)
		}
	}); err != nil {
		return true, fmt.Errorf("sync.schedule: %w", err)
	}
	c.Start()
	defer func() { <-c.Stop().Done() }()
	if s.OnStartup {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := s.Run(lctx, RunOptions{Trigger: "startup"}); err != nil && s.Log != nil {
				s.Log.WarnContext(lctx, "startup sync failed", "error", err)
			}
		}()
	}
	if s.EventsEnabled {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s.pollEvents(lctx)
		}()
	}
	defer wg.Wait()
	defer cancel()
	// Watch the lock's connection: if it dies, leadership is gone.
	tick := time.NewTicker(2 * time.Second)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return true, ctx.Err()
		case <-tick.C:
			if err := conn.Ping(ctx); err != nil {
				return true, fmt.Errorf("leader connection: %w", err)
			}
		}
	}
}
