package metrics

import (
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Source gives the node's state at scrape time. Snapshot must be cheap
// (read counters and fields the node keeps anyway) and bounded by ctx.
type Source interface {
	Snapshot(ctx context.Context) Snapshot
}

// Snapshot is a node's state as the metrics show it.
type Snapshot struct {
	Raft       Raft
	Health     Health
	Store      Store
	Tiers      []Tier
	Heal       Heal
	Peers      []Peer
	Federation Federation
}

// Raft is the node's Raft state.
type Raft struct {
	State                       string // Follower, Candidate, Leader, Shutdown
	Term, Applied, Commit, Last uint64
	Voters                      int
	LeaderChanges               uint64 // leader observations since the node started
	LastContact                 time.Duration
	LastContactKnown, HasLeader bool
}

// Health is what the node's health service and /readyz say.
type Health struct {
	Quorum    bool // a leader was heard from within the election timeout (or this node leads)
	StoreOK   bool // the store answers and has room for a chunk
	LogOK     bool // the Raft log takes entries
	Ready     bool // all of them
	NotReason string
}

// Store is the node's chunk store.
type Store struct {
	Kind          string
	Chunks, Bytes uint64
	UsageKnown    bool
	// Free and Capacity are the file system's, for stores on local disk.
	Free, Capacity uint64
	SpaceKnown     bool
}

// Tier is one cache tier's counters.
type Tier struct {
	Name                                            string
	Hits, Misses, Evictions, Errors, Corrupt, Skips uint64
	ServedBytes, Entries, Bytes                     uint64
}

// Heal counts scrub, repair and garbage collection.
type Heal struct {
	ScrubPasses, RepairPasses, GCPasses       uint64
	ScrubFailures, RepairFailures, GCFailures uint64
	ScrubChecked, RepairChecked               uint64
	BadCopies, Repaired, GCDeleted            uint64
	UnderReplicated, Lost                     uint64 // from the last repair pass (leader)
	LastScrub, LastRepair, LastGC             time.Time
}

// Peer is one peer cluster as the node sees it.
type Peer struct {
	Name          string
	Reachable     bool
	FilterVersion uint64
	FilterAge     time.Duration
	FilterKnown   bool
	LastContact   time.Duration
	ContactKnown  bool
}

// Federation counts calls to and from peer clusters.
type Federation struct {
	Lookups, ForwardedCalls, FilterSkips, ServedForwarded uint64
	StaleFilterChecks                                     uint64
}

// desc makes a metric description in the ddstore namespace.
func desc(name, help string, labels ...string) *prometheus.Desc {
	return prometheus.NewDesc(Namespace+"_"+name, help, labels, nil)
}

// stateDescs are the descriptions of the metrics stateCollector makes.
type stateDescs struct {
	raftTerm, raftApplied, raftCommit, raftLast, raftLeader, raftState, raftVoters, raftLeaderChanges, raftLastContact     *prometheus.Desc
	quorum, storeOK, logOK, ready                                                                                          *prometheus.Desc
	storeChunks, storeBytes, storeFree, storeCapacity                                                                      *prometheus.Desc
	cacheHits, cacheMisses, cacheEvictions, cacheErrors, cacheCorrupt, cacheSkipped, cacheServed, cacheEntries, cacheBytes *prometheus.Desc
	healRuns, healFailures, healChecked, healBad, healRepaired, healDeleted, healUnder, healLost, healLast                 *prometheus.Desc
	peerReachable, peerFilterVersion, peerFilterAge, peerLastContact                                                       *prometheus.Desc
	fedLookups, fedForwarded, fedSkips, fedServed, fedStale                                                                *prometheus.Desc
}

func newStateDescs() *stateDescs {
	return &stateDescs{
		raftTerm:          desc("raft_term", "The node's current Raft term."),
		raftApplied:       desc("raft_applied_index", "Index of the last Raft log entry applied to the node's catalog."),
		raftCommit:        desc("raft_commit_index", "Index of the last Raft log entry known committed."),
		raftLast:          desc("raft_last_index", "Index of the last entry in the node's Raft log."),
		raftLeader:        desc("raft_is_leader", "1 if the node leads its cluster now, else 0."),
		raftState:         desc("raft_state", "1 for the node's current Raft state, 0 for the others.", "state"),
		raftVoters:        desc("raft_voters", "Voting members in the Raft configuration the node holds."),
		raftLeaderChanges: desc("raft_leader_changes_total", "Changes of leader (including to none) the node observed since it started."),
		raftLastContact:   desc("raft_last_contact_seconds", "Seconds since a follower last heard from its leader (0 on the leader; absent if never)."),

		quorum:  desc("quorum", "1 if the node has a leader it heard from within the election timeout (or leads with a quorum), else 0."),
		storeOK: desc("store_writable", "1 if the node's chunk store answers and has room for a largest chunk, else 0."),
		logOK:   desc("raft_log_writable", "1 if the node's Raft log takes entries, else 0."),
		ready:   desc("ready", "1 if the node can serve linearizable reads and accept writes (health SERVING, /readyz 200), else 0."),

		storeChunks:   desc("store_chunks", "Chunks held in the node's store.", "store"),
		storeBytes:    desc("store_bytes", "Bytes the chunks in the node's store take.", "store"),
		storeFree:     desc("store_free_bytes", "Bytes free for unprivileged users on the file system of the node's store (local and pack stores).", "store"),
		storeCapacity: desc("store_capacity_bytes", "Size in bytes of the file system of the node's store (local and pack stores).", "store"),

		cacheHits:      desc("cache_hits_total", "Chunk reads a cache tier answered.", "tier"),
		cacheMisses:    desc("cache_misses_total", "Chunk reads a cache tier could not answer.", "tier"),
		cacheEvictions: desc("cache_evictions_total", "Chunks a cache tier evicted to make room.", "tier"),
		cacheErrors:    desc("cache_errors_total", "Failed calls to a cache tier (the read went on without it).", "tier"),
		cacheCorrupt:   desc("cache_corrupt_total", "Cached chunks that failed verification and were dropped.", "tier"),
		cacheSkipped:   desc("cache_skipped_total", "Chunks too large for a cache tier, not cached.", "tier"),
		cacheServed:    desc("cache_served_bytes_total", "Bytes of chunks a cache tier served.", "tier"),
		cacheEntries:   desc("cache_entries", "Chunks held in a cache tier (for memcached: stored by this node).", "tier"),
		cacheBytes:     desc("cache_bytes", "Bytes of chunks held in a cache tier (in-process tier).", "tier"),

		healRuns:     desc("heal_runs_total", "Completed passes of scrub, repair and garbage collection on the node.", "kind"),
		healFailures: desc("heal_failures_total", "Passes of scrub, repair and garbage collection that failed.", "kind"),
		healChecked:  desc("heal_chunks_checked_total", "Chunks checked: re-hashed by scrub, counted copies of by repair.", "kind"),
		healBad:      desc("heal_bad_copies_total", "Corrupt copies scrub found in the node's store (each is removed and replaced)."),
		healRepaired: desc("heal_repaired_copies_total", "Copies written by scrub (replacing a corrupt one) and repair (restoring R copies)."),
		healDeleted:  desc("heal_deleted_copies_total", "Copies of unreferenced chunks garbage collection deleted (counted on the leader that ran it)."),
		healUnder:    desc("heal_under_replicated_chunks", "Chunks with fewer than R copies on live nodes at the last repair pass run here (leader)."),
		healLost:     desc("heal_lost_chunks", "Chunks on no live node at the last repair pass run here (leader)."),
		healLast:     desc("heal_last_run_timestamp_seconds", "Unix time the last pass of each kind completed here.", "kind"),

		peerReachable:     desc("peer_reachable", "1 if the last filter exchange with a peer cluster succeeded, else 0.", "peer"),
		peerFilterVersion: desc("peer_filter_version", "Catalog index of a peer cluster that the filters held here reflect (0: none yet).", "peer"),
		peerFilterAge:     desc("peer_filter_age_seconds", "Seconds since a peer cluster's filters were fetched or confirmed current.", "peer"),
		peerLastContact:   desc("peer_last_contact_seconds", "Seconds since the last successful exchange with a peer cluster.", "peer"),

		fedLookups:   desc("federation_lookups_total", "Local misses that consulted peer clusters."),
		fedForwarded: desc("federation_forwarded_calls_total", "Calls forwarded to peer clusters (lookups, lists, chunk reads)."),
		fedSkips:     desc("federation_filter_skips_total", "Peer clusters not asked because their Bloom filters ruled the name or chunk out."),
		fedServed:    desc("federation_served_forwarded_total", "Calls from peer clusters answered here."),
		fedStale:     desc("federation_stale_filter_checks_total", "Lookups whose peer filters ruled them out but might be stale (the peer told of a commit, or they were not refreshed in two refresh periods), so the filters were refreshed from the peer first."),
	}
}

// stateCollector turns a Snapshot into metrics at each scrape.
type stateCollector struct {
	src Source
	d   *stateDescs
}

// Describe implements prometheus.Collector; the collector is unchecked
// (it describes nothing), since which peers and tiers exist can change.
func (c *stateCollector) Describe(chan<- *prometheus.Desc) {}

// Collect implements prometheus.Collector.
func (c *stateCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	s := c.src.Snapshot(ctx)
	d := c.d
	gauge := func(dsc *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(dsc, prometheus.GaugeValue, v, labels...)
	}
	counter := func(dsc *prometheus.Desc, v uint64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(dsc, prometheus.CounterValue, float64(v), labels...)
	}
	b := func(v bool) float64 {
		if v {
			return 1
		}
		return 0
	}

	r := s.Raft
	gauge(d.raftTerm, float64(r.Term))
	gauge(d.raftApplied, float64(r.Applied))
	gauge(d.raftCommit, float64(r.Commit))
	gauge(d.raftLast, float64(r.Last))
	gauge(d.raftLeader, b(r.State == "Leader"))
	for _, st := range [...]string{"Follower", "Candidate", "Leader", "Shutdown"} {
		gauge(d.raftState, b(r.State == st), st)
	}
	gauge(d.raftVoters, float64(r.Voters))
	counter(d.raftLeaderChanges, r.LeaderChanges)
	if r.LastContactKnown {
		gauge(d.raftLastContact, r.LastContact.Seconds())
	}

	h := s.Health
	gauge(d.quorum, b(h.Quorum))
	gauge(d.storeOK, b(h.StoreOK))
	gauge(d.logOK, b(h.LogOK))
	gauge(d.ready, b(h.Ready))

	st := s.Store
	if st.UsageKnown {
		gauge(d.storeChunks, float64(st.Chunks), st.Kind)
		gauge(d.storeBytes, float64(st.Bytes), st.Kind)
	}
	if st.SpaceKnown {
		gauge(d.storeFree, float64(st.Free), st.Kind)
		gauge(d.storeCapacity, float64(st.Capacity), st.Kind)
	}

	for _, t := range s.Tiers {
		counter(d.cacheHits, t.Hits, t.Name)
		counter(d.cacheMisses, t.Misses, t.Name)
		counter(d.cacheEvictions, t.Evictions, t.Name)
		counter(d.cacheErrors, t.Errors, t.Name)
		counter(d.cacheCorrupt, t.Corrupt, t.Name)
		counter(d.cacheSkipped, t.Skips, t.Name)
		counter(d.cacheServed, t.ServedBytes, t.Name)
		gauge(d.cacheEntries, float64(t.Entries), t.Name)
		gauge(d.cacheBytes, float64(t.Bytes), t.Name)
	}

	hl := s.Heal
	for _, k := range []struct {
		kind           string
		runs, failures uint64
		last           time.Time
	}{
		{"scrub", hl.ScrubPasses, hl.ScrubFailures, hl.LastScrub},
		{"repair", hl.RepairPasses, hl.RepairFailures, hl.LastRepair},
		{"gc", hl.GCPasses, hl.GCFailures, hl.LastGC},
	} {
		counter(d.healRuns, k.runs, k.kind)
		counter(d.healFailures, k.failures, k.kind)
		if !k.last.IsZero() {
			gauge(d.healLast, float64(k.last.UnixNano())/1e9, k.kind)
		}
	}
	counter(d.healChecked, hl.ScrubChecked, "scrub")
	counter(d.healChecked, hl.RepairChecked, "repair")
	counter(d.healBad, hl.BadCopies)
	counter(d.healRepaired, hl.Repaired)
	counter(d.healDeleted, hl.GCDeleted)
	gauge(d.healUnder, float64(hl.UnderReplicated))
	gauge(d.healLost, float64(hl.Lost))

	for _, p := range s.Peers {
		gauge(d.peerReachable, b(p.Reachable), p.Name)
		gauge(d.peerFilterVersion, float64(p.FilterVersion), p.Name)
		if p.FilterKnown {
			gauge(d.peerFilterAge, p.FilterAge.Seconds(), p.Name)
		}
		if p.ContactKnown {
			gauge(d.peerLastContact, p.LastContact.Seconds(), p.Name)
		}
	}
	f := s.Federation
	counter(d.fedLookups, f.Lookups)
	counter(d.fedForwarded, f.ForwardedCalls)
	counter(d.fedSkips, f.FilterSkips)
	counter(d.fedServed, f.ServedForwarded)
	counter(d.fedStale, f.StaleFilterChecks)
}
