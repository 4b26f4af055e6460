package main

import (
	"context"
	"runtime/debug"
	"runtime/metrics"
	"time"

	"github.com/ddstore/ddstore/replica"
)

// tuneGC keeps a node's heap headroom in proportion to its working set, not
// to its in-process cache. With GOGC=100 the heap may grow to twice what is
// live, and the cache is live: a full 256 MiB cache let the heap, and the
// node's RSS, grow by up to 256 MiB more (to the soft limit), 1.25x the
// cache above the node's base. The cache's chunks are long-lived and hold no
// pointers, so collecting more often costs little: each second the GC
// percent is set so that the heap may grow by what is live outside the
// cache, as a node without a cache does. It returns when ctx ends.
func tuneGC(ctx context.Context, cached func() int64) {
	sample := []metrics.Sample{{Name: "/gc/heap/live:bytes"}}
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	set := 100
	defer func() { debug.SetGCPercent(100) }()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		metrics.Read(sample)
		if sample[0].Value.Kind() != metrics.KindUint64 {
			return // not measured by this Go: leave GOGC as it is
		}
		if p := gcPercent(int64(sample[0].Value.Uint64()), cached()); p != set {
			debug.SetGCPercent(p)
			set = p
		}
	}
}

// gcPercent is the GC percent that lets a heap with live bytes, of which
// cache are the cache's, grow by live-cache: 100 without a cache, never
// below 10.
func gcPercent(live, cache int64) int {
	if live <= 0 || cache <= 0 {
		return 100
	}
	return int(min(100, max(10, 100*max(live-cache, 0)/live)))
}

// memoryTierBytes returns a function that reports the bytes held by the
// in-process tiers of c.
func memoryTierBytes(c *replica.Cached) func() int64 {
	return func() int64 {
		var n int64
		for _, t := range c.Tiers {
			if m, ok := t.(*replica.Memory); ok {
				n += int64(m.Stats().Bytes)
			}
		}
		return n
	}
}
