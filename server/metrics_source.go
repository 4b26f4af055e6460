package server

import (
	"context"
	"path/filepath"
	"sync"
	"time"

	"github.com/ddstore/ddstore/replica"
	"github.com/ddstore/ddstore/server/metrics"
	"github.com/hashicorp/raft"
	"golang.org/x/sys/unix"
)

// usageCache keeps the store's usage for the metrics: the local and pack
// stores keep counters and are read at every scrape; a GridFS store counts
// its chunks with a query over them all, so its answer is reused for a
// minute.
type usageCache struct {
	mu sync.Mutex
	at time.Time
	u  replica.Usage
}

func (c *usageCache) get(ctx context.Context, kind string, s replica.Store) (replica.Usage, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if kind == "gridfs" && !c.at.IsZero() && time.Since(c.at) < time.Minute {
		return c.u, true
	}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	u, err := s.Usage(ctx)
	if err != nil {
		return replica.Usage{}, false
	}
	c.u, c.at = u, time.Now()
	return u, true
}

// metricsSource gives the node's metrics its state at scrape time, read
// from the counters and fields the node keeps anyway.
type metricsSource struct{ n *Node }

// Snapshot implements metrics.Source.
func (m metricsSource) Snapshot(ctx context.Context) metrics.Snapshot {
	n := m.n
	var s metrics.Snapshot

	rs := n.raft.Status()
	s.Raft = metrics.Raft{
		State: rs.State, Term: rs.Term, Applied: rs.AppliedIndex, Commit: rs.CommitIndex, Last: rs.LastIndex,
		LeaderChanges: n.raft.LeaderChanges(),
	}
	if servers, err := n.raft.Servers(); err == nil {
		for _, srv := range servers {
			if srv.Suffrage == raft.Voter {
				s.Raft.Voters++
			}
		}
	}
	if n.raft.IsLeader() {
		s.Raft.LastContactKnown = true
	} else if t := n.raft.LastContact(); !t.IsZero() {
		s.Raft.LastContact, s.Raft.LastContactKnown = time.Since(t), true
	}

	sv := n.servingState()
	s.Health = metrics.Health{Quorum: sv.quorum, StoreOK: sv.storeOK, LogOK: sv.logOK, Ready: sv.why == "", NotReason: sv.why}

	s.Store.Kind = n.base.Kind()
	if u, ok := n.usage.get(ctx, n.cfg.Store, n.base); ok {
		s.Store.Chunks, s.Store.Bytes, s.Store.UsageKnown = u.Chunks, u.Bytes, true
	}
	if n.cfg.Store == "local" || n.cfg.Store == "pack" {
		var fs unix.Statfs_t
		if err := unix.Statfs(filepath.Join(n.cfg.DataDir, "chunks"), &fs); err == nil {
			s.Store.Free = fs.Bavail * uint64(fs.Bsize)
			s.Store.Capacity = fs.Blocks * uint64(fs.Bsize)
			s.Store.SpaceKnown = true
		}
	}

	if n.cached != nil {
		for _, t := range n.cached.TierStats() {
			s.Tiers = append(s.Tiers, metrics.Tier{
				Name: t.Tier, Hits: t.Hits, Misses: t.Misses, Evictions: t.Evictions, Errors: t.Errors,
				Corrupt: t.Corrupt, Skips: t.Skipped, ServedBytes: t.BytesServed, Entries: t.Entries, Bytes: t.Bytes,
			})
		}
	}

	h := &n.healed
	unix0 := func(ns int64) time.Time {
		if ns == 0 {
			return time.Time{}
		}
		return time.Unix(0, ns)
	}
	s.Heal = metrics.Heal{
		ScrubPasses: h.scrubPasses.Load(), RepairPasses: h.repairPasses.Load(), GCPasses: h.gcPasses.Load(),
		ScrubFailures: h.scrubFailed.Load(), RepairFailures: h.repairFailed.Load(), GCFailures: h.gcFailed.Load(),
		ScrubChecked: h.scrubbed.Load(), RepairChecked: h.repairChecked.Load(),
		BadCopies: h.scrubCorrupt.Load(), Repaired: h.repaired.Load(), GCDeleted: h.gcDeleted.Load(),
		UnderReplicated: h.underReplicated.Load(), Lost: h.lost.Load(),
		LastScrub: unix0(h.lastScrub.Load()), LastRepair: unix0(h.lastRepair.Load()), LastGC: unix0(h.lastGC.Load()),
	}

	for _, p := range n.peers.status() {
		s.Peers = append(s.Peers, metrics.Peer{
			Name: p.GetName(), Reachable: p.GetReachable(), FilterVersion: p.GetFilterVersion(),
			FilterAge: time.Duration(p.GetFilterAgeMs()) * time.Millisecond, FilterKnown: p.GetFilterAgeMs() >= 0,
			LastContact: time.Duration(p.GetLastContactMs()) * time.Millisecond, ContactKnown: p.GetLastContactMs() >= 0,
		})
	}
	f := n.peers.counters()
	s.Federation = metrics.Federation{
		Lookups: f.GetLookups(), ForwardedCalls: f.GetPeerCalls(), FilterSkips: f.GetFilterSkips(), ServedForwarded: f.GetServedForwarded(),
		StaleFilterChecks: n.peers.staleChecks.Load(),
	}
	return s
}
