package sync

import (
	"testing"
	"time"
)

func TestPollStateOwesAFullRunUntilOneSucceeds(t *testing.T) {
	var s seen
	now := time.Unix(1_700_000_000, 0)
	if s.fullDue(now) {
		t.Fatal("a full run is due before any event asked for one")
	}
	s.owe()
	if !s.fullDue(now) {
		t.Fatal("an owed full run is not due")
	}
	// Failures put the next attempt off, further each time, never past 5 minutes.
	var waits []time.Duration
	for range 12 {
		s.fullDone(now, false)
		if s.fullDue(now) {
			t.Fatal("a failed full run is tried again at once")
		}
		waits = append(waits, s.fullAfter.Sub(now))
	}
	if waits[0] < time.Second || waits[0] > 3*time.Second {
		t.Errorf("first wait %s, want about 2s", waits[0])
	}
	if last := waits[len(waits)-1]; last < time.Minute || last > 5*time.Minute {
		t.Errorf("wait after 12 failures %s, want between 1 and 5 minutes", last)
	}
	if !s.fullDue(now.Add(5 * time.Minute)) {
		t.Error("the owed run is not due after the longest wait")
	}
	s.fullDone(now, true)
	if s.fullDue(now.Add(time.Hour)) {
		t.Error("a full run is still owed after one succeeded")
	}
	s.owe()
	if !s.fullDue(now) {
		t.Error("after a success, the next owed run waits for an old backoff")
	}
}

func TestPollStateMarksOnlyWhatItIsGiven(t *testing.T) {
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
