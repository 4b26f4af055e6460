package main

import (
	"context"
	"runtime"
	"runtime/debug"
	"testing"
	"time"
)

func TestGCPercent(t *testing.T) {
	const mib = 1 << 20
	for _, tc := range []struct {
		live, cache int64
		want        int
	}{
		{live: 40 * mib, cache: 0, want: 100},         // no cache: Go's default
		{live: 0, cache: 0, want: 100},                // nothing measured yet
		{live: 296 * mib, cache: 256 * mib, want: 13}, // full cache: grow by the 40 MiB outside it
		{live: 80 * mib, cache: 40 * mib, want: 50},   // half of what is live is cache
		{live: 260 * mib, cache: 256 * mib, want: 10}, // never below 10
		{live: 200 * mib, cache: 256 * mib, want: 10}, // cache counted by capacity, above live
		{live: 100 * mib, cache: 1, want: 99},         // a nearly empty cache
	} {
		if got := gcPercent(tc.live, tc.cache); got != tc.want {
			t.Errorf("gcPercent(%d MiB live, %d MiB cache) = %d, want %d", tc.live/mib, tc.cache/mib, got, tc.want)
		}
	}
}

// TestTuneGC: the tuner sets the GC percent from what it measures, and puts
// Go's default back when it stops.
func TestTuneGC(t *testing.T) {
	runtime.GC() // what is live is measured by a collection
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		tuneGC(ctx, func() int64 { return 1 << 40 }) // a cache larger than the heap
	}()
	deadline := time.Now().Add(10 * time.Second)
	for {
		time.Sleep(200 * time.Millisecond)
		p := debug.SetGCPercent(100)
		debug.SetGCPercent(p)
		if p == 10 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("GC percent is %d after 10 s, want 10", p)
		}
	}
	cancel()
	<-done
	if p := debug.SetGCPercent(100); p != 100 {
		t.Fatalf("GC percent left at %d, want 100", p)
	}
}
