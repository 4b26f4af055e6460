package nemesis

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"slices"
	"strings"
	"syscall"
	"time"
)

// FaultKind is a kind of fault the nemesis injects.
type FaultKind string

// The faults.
const (
	KillLeader   FaultKind = "kill-leader"   // SIGKILL the leader; restart it when healing
	KillFollower FaultKind = "kill-follower" // SIGKILL a follower; restart it
	CrashAll     FaultKind = "crash-all"     // SIGKILL every node; restart them all
	StopLeader   FaultKind = "stop-leader"   // SIGSTOP the leader; SIGCONT it
	StopFollower FaultKind = "stop-follower" // SIGSTOP a follower; SIGCONT it
	// Partitions (network namespaces only).
	IsolateLeader   FaultKind = "partition-leader"   // the leader alone, the two followers together
	IsolateFollower FaultKind = "partition-follower" // one follower alone (a minority)
	Bridge          FaultKind = "partition-bridge"   // the leader and a follower cut apart; the third node sees both
)

// ProcessFaults are the faults that need no network namespace.
func ProcessFaults() []FaultKind {
	return []FaultKind{KillLeader, KillFollower, CrashAll, StopLeader, StopFollower}
}

// PartitionFaults are the faults that need network namespaces.
func PartitionFaults() []FaultKind {
	return []FaultKind{IsolateLeader, IsolateFollower, Bridge}
}

// Fault is one injected fault. Times are nanoseconds since the run began.
type Fault struct {
	Kind   FaultKind
	Nodes  []int  // the nodes it hit (for a bridge: the two cut apart)
	Target string // "leader", "follower", "all", or "any" when no leader was known
	Start  int64  // injected
	Healed int64  // healed (0: still active)
	// LeaderBefore is the leader a node named just before healing (-1:
	// none answered).
	LeaderBefore int
	Err          string // injecting or healing failed
}

// nemesis runs the fault schedule against a cluster.
type nemesis struct {
	c     cluster
	kinds []FaultKind
	rng   *rand.Rand
	hist  *history
	log   *slog.Logger

	// Hold is how long a fault lasts, Quiet the pause after healing it:
	// each drawn uniformly from [min, max).
	holdMin, holdMax, quietMin, quietMax time.Duration

	faults []*Fault
}

func newNemesis(c cluster, kinds []FaultKind, seed uint64, hist *history, log *slog.Logger) *nemesis {
	var key [32]byte
	binary.LittleEndian.PutUint64(key[0:], seed)
	copy(key[8:], "ddstore-nemesis-fault-schedule!")
	return &nemesis{c: c, kinds: kinds, rng: rand.New(rand.NewChaCha8(key)), hist: hist, log: log,
		holdMin: 2 * time.Second, holdMax: 6 * time.Second, quietMin: 1500 * time.Millisecond, quietMax: 4 * time.Second}
}

func (n *nemesis) between(lo, hi time.Duration) time.Duration {
	return lo + time.Duration(n.rng.Int64N(int64(hi-lo)))
}

// run injects faults until ctx is done, healing each before the next; the
// fault active when ctx ends is healed before run returns.
func (n *nemesis) run(ctx context.Context) {
	sleep := func(d time.Duration) {
		select {
		case <-ctx.Done():
		case <-time.After(d):
		}
	}
	sleep(n.between(n.quietMin, n.quietMax))
	var cycle []FaultKind
	for ctx.Err() == nil {
		if len(cycle) == 0 {
			cycle = n.cycle()
		}
		kind := cycle[0]
		cycle = cycle[1:]
		hold, quiet := n.between(n.holdMin, n.holdMax), n.between(n.quietMin, n.quietMax)
		f := n.inject(ctx, kind)
		n.faults = append(n.faults, f)
		sleep(hold)
		f.LeaderBefore = leaderOf(context.WithoutCancel(ctx), n.c)
		n.heal(context.WithoutCancel(ctx), f)
		sleep(quiet)
	}
}

// cycle is the next round of faults: every kind once, in an order drawn
// from the seed, partitions first (so that a short schedule has them).
func (n *nemesis) cycle() []FaultKind {
	var parts, procs []FaultKind
	for _, k := range n.kinds {
		if slices.Contains(PartitionFaults(), k) {
			parts = append(parts, k)
		} else {
			procs = append(procs, k)
		}
	}
	n.rng.Shuffle(len(parts), func(i, j int) { parts[i], parts[j] = parts[j], parts[i] })
	n.rng.Shuffle(len(procs), func(i, j int) { procs[i], procs[j] = procs[j], procs[i] })
	return append(parts, procs...)
}

// pick chooses the fault's nodes: the leader as the cluster names it now
// (if none answers, any node), and a follower drawn from the others.
func (n *nemesis) pick(ctx context.Context) (leader, follower int, target string) {
	leader = leaderOf(ctx, n.c)
	target = "leader"
	if leader < 0 {
		leader, target = n.rng.IntN(3), "any"
	}
	others := slices.DeleteFunc([]int{0, 1, 2}, func(i int) bool { return i == leader })
	return leader, others[n.rng.IntN(len(others))], target
}

func (n *nemesis) inject(ctx context.Context, kind FaultKind) *Fault {
	f := &Fault{Kind: kind}
	leader, follower, target := n.pick(ctx)
	var err error
	switch kind {
	case KillLeader, StopLeader, IsolateLeader:
		f.Nodes, f.Target = []int{leader}, target
	case KillFollower, StopFollower, IsolateFollower:
		f.Nodes, f.Target = []int{follower}, "follower"
		if target != "leader" {
			f.Target = "any"
		}
	case CrashAll:
		f.Nodes, f.Target = []int{0, 1, 2}, "all"
	case Bridge:
		f.Nodes, f.Target = []int{leader, follower}, target
	}
	f.Start = n.hist.now()
	switch kind {
	case KillLeader, KillFollower, CrashAll:
		for _, i := range f.Nodes {
			err = errors.Join(err, n.c.Kill(i))
		}
	case StopLeader, StopFollower:
		err = n.c.Signal(f.Nodes[0], syscall.SIGSTOP)
	case IsolateLeader, IsolateFollower:
		for j := range 3 {
			if j != f.Nodes[0] {
				err = errors.Join(err, n.c.Cut(f.Nodes[0], j))
			}
		}
	case Bridge:
		err = n.c.Cut(f.Nodes[0], f.Nodes[1])
	}
	if err != nil {
		f.Err = err.Error()
	}
	n.log.Info("fault", "kind", kind, "nodes", nodeNames(f.Nodes), "target", f.Target, "at", time.Duration(f.Start).Round(time.Millisecond), "err", err)
	return f
}

func (n *nemesis) heal(ctx context.Context, f *Fault) {
	var err error
	switch f.Kind {
	case KillLeader, KillFollower, CrashAll:
		for _, i := range f.Nodes {
			err = errors.Join(err, n.c.Start(ctx, i))
		}
	case StopLeader, StopFollower:
		err = n.c.Signal(f.Nodes[0], syscall.SIGCONT)
	case IsolateLeader, IsolateFollower, Bridge:
		err = n.c.HealNetwork()
	}
	f.Healed = n.hist.now()
	if err != nil {
		f.Err = strings.TrimPrefix(f.Err+"; heal: "+err.Error(), "; ")
	}
	n.log.Info("healed", "kind", f.Kind, "nodes", nodeNames(f.Nodes), "after", time.Duration(f.Healed-f.Start).Round(time.Millisecond),
		"leader_before_healing", leaderName(f.LeaderBefore), "err", err)
}

func leaderName(i int) string {
	if i < 0 {
		return "none"
	}
	return nodeID(i)
}

func nodeNames(is []int) string {
	s := ""
	for k, i := range is {
		if k > 0 {
			s += ","
		}
		s += nodeID(i)
	}
	return s
}

// String describes a fault for the report.
func (f *Fault) String() string {
	s := fmt.Sprintf("%s %s (%s) at %.1fs for %.1fs, leader before healing %s", f.Kind, nodeNames(f.Nodes), f.Target, float64(f.Start)/1e9, float64(f.Healed-f.Start)/1e9, leaderName(f.LeaderBefore))
	if f.Err != "" {
		s += ": " + f.Err
	}
	return s
}
