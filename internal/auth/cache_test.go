package auth

import (
	"context"
	"fmt"
	"testing"
	"time"
)

// countingVerifier accepts every token it knows, expiring at exp with the
// given leeway, and counts the verifications it was asked for.
type countingVerifier struct {
	exp    map[string]time.Time
	leeway time.Duration
	now    *time.Time
	calls  map[string]int
}

func (v *countingVerifier) Verify(_ context.Context, raw string) (*Token, error) {
	v.calls[raw]++
	exp, ok := v.exp[raw]
	if !ok {
		return nil, refuse(Signature, "unknown")
	}
	if v.now.After(exp.Add(v.leeway)) {
		return nil, refuse(Expired, "expired")
	}
	return &Token{Subject: raw, Expiry: exp, Until: exp.Add(v.leeway)}, nil
}

func TestCachedAgreesWithTheVerifierOnExpiry(t *testing.T) {
	now := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	exp := now.Add(time.Minute)
	v := &countingVerifier{exp: map[string]time.Time{"tok": exp}, leeway: 5 * time.Second, now: &now, calls: map[string]int{}}
	c := &Cached{Next: v, Size: 10, Now: func() time.Time { return now }}
	ctx := context.Background()

	for _, at := range []time.Time{now, exp.Add(-time.Second), exp.Add(2 * time.Second), exp.Add(5 * time.Second)} {
		now = at
		if _, err := c.Verify(ctx, "tok"); err != nil {
			t.Fatalf("at exp %+d s: %v (the verifier itself accepts it until exp+leeway)", int(at.Sub(exp).Seconds()), err)
		}
	}
	for i := 0; i < 3; i++ {
		now = exp.Add(5*time.Second + time.Nanosecond + time.Duration(i)*time.Hour)
		if _, err := c.Verify(ctx, "tok"); ReasonOf(err) != Expired {
			t.Fatalf("after exp+leeway: %v, want expired", err)
		}
	}
	if v.calls["tok"] != 1 {
		t.Errorf("token verified %d times, want once: an expired cached token must be refused from the cache", v.calls["tok"])
	}
}

func TestCachedDoesNotKeepRefusals(t *testing.T) {
	now := time.Now()
	v := &countingVerifier{exp: map[string]time.Time{}, now: &now, calls: map[string]int{}}
	c := &Cached{Next: v, Size: 10, Now: func() time.Time { return now }}
	for i := 0; i < 3; i++ {
		if _, err := c.Verify(context.Background(), "forged"); ReasonOf(err) != Signature {
			t.Fatalf("forged token: %v", err)
		}
	}
	if v.calls["forged"] != 3 || len(c.entries) != 0 {
		t.Errorf("forged token verified %d times, %d entries cached; want 3 and 0", v.calls["forged"], len(c.entries))
	}
}

func TestCachedEvictsExpiredEntriesFirst(t *testing.T) {
	now := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	v := &countingVerifier{exp: map[string]time.Time{}, now: &now, calls: map[string]int{}}
	c := &Cached{Next: v, Size: 10, Now: func() time.Time { return now }}
	ctx := context.Background()
	for i := 0; i < 10; i++ {
		tok := fmt.Sprint("t", i)
		v.exp[tok] = now.Add(time.Duration(1+i%2) * time.Hour) // even tokens expire after 1 h, odd after 2 h
		if _, err := c.Verify(ctx, tok); err != nil {
			t.Fatal(err)
		}
	}
	now = now.Add(90 * time.Minute)
	v.exp["new"] = now.Add(time.Hour)
	if _, err := c.Verify(ctx, "new"); err != nil {
		t.Fatal(err)
	}
	if len(c.entries) != 6 {
		t.Errorf("%d entries after eviction, want the 5 live ones and the new one", len(c.entries))
	}
	for i := 1; i < 10; i += 2 {
		if _, err := c.Verify(ctx, fmt.Sprint("t", i)); err != nil || v.calls[fmt.Sprint("t", i)] != 1 {
			t.Errorf("live token t%d was evicted (verified %d times, %v)", i, v.calls[fmt.Sprint("t", i)], err)
		}
	}
}
