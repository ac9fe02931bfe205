package ratelimit_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/keybridge/keybridge/internal/ratelimit"
)

// A caller with endless addresses cannot grow the table past MaxKeys: new
// keys beyond it share one overflow bucket (and are limited by it), and
// keys whose bucket has refilled make room again.
func TestKeysAreBounded(t *testing.T) {
	l := &ratelimit.Limiter{Rate: 100, Burst: 2, MaxKeys: 50}
	refused := 0
	for i := range 10000 {
		if ok, _ := l.Allow(fmt.Sprint("2001:db8::", i)); !ok {
			refused++
		}
	}
	if n := l.Len(); n > 50 {
		t.Errorf("%d keys held, want at most 50", n)
	}
	if refused == 0 {
		t.Error("10,000 new keys beyond MaxKeys were all allowed: the overflow bucket does not limit")
	}
	time.Sleep(50 * time.Millisecond) // every bucket refills (2 tokens at 100/s)
	if ok, _ := l.Allow("192.0.2.1"); !ok {
		t.Error("a new key was refused once the old buckets had refilled")
	}
	if ok, _ := l.Allow("192.0.2.1"); !ok {
		t.Error("the new key has no bucket of its own")
	}
}

// Keys of their own keep their own burst while the table has room.
func TestEachKeyHasItsBucket(t *testing.T) {
	l := &ratelimit.Limiter{Rate: 0.001, Burst: 3, MaxKeys: 10}
	for _, k := range []string{"a", "b"} {
		for i := range 4 {
			ok, wait := l.Allow(k)
			if ok != (i < 3) || (!ok && wait <= 0) {
				t.Fatalf("key %s request %d: allowed %v, wait %v", k, i, ok, wait)
			}
		}
	}
}

// Addresses of one IPv6 /64 share a bucket; IPv4 addresses (mapped or
// not) each have theirs.
func TestAddressKey(t *testing.T) {
	for in, want := range map[string]string{
		"192.0.2.1":                  "192.0.2.1",
		"::ffff:192.0.2.1":           "192.0.2.1",
		"2001:db8:1:2:aaaa::1":       "2001:db8:1:2::/64",
		"2001:db8:1:2:ffff:ffff:0:9": "2001:db8:1:2::/64",
		"fe80::1%eth0":               "fe80::/64",
		"not-an-address":             "not-an-address",
	} {
		if got := ratelimit.AddressKey(in); got != want {
			t.Errorf("AddressKey(%q) = %q, want %q", in, got, want)
		}
	}
	l := ratelimit.ByAddress{L: &ratelimit.Limiter{Rate: 0.001, Burst: 1}}
	if ok, _ := l.Allow("2001:db8::1"); !ok {
		t.Fatal("first request refused")
	}
	if ok, _ := l.Allow("2001:db8::2"); ok {
		t.Error("another address of the same /64 drew a fresh bucket")
	}
}
