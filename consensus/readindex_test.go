package consensus

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// terms answers a leader's read rounds from the members of a test cluster,
// as the server does over its internal API: a closed member does not
// answer, and ahead makes every member claim a newer term than its own.
type terms struct {
	mu    sync.Mutex
	nodes map[string]*Node
	ahead atomic.Bool
	asked atomic.Int64
}

func (ts *terms) set(id string, n *Node) {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	ts.nodes[id] = n
}

func (ts *terms) termOf(_ context.Context, id string) (uint64, error) {
	ts.asked.Add(1)
	ts.mu.Lock()
	n := ts.nodes[id]
	ts.mu.Unlock()
	if n == nil {
		return 0, errors.New("member closed")
	}
	t := n.Term()
	if ts.ahead.Load() {
		t++
	}
	return t, nil
}

// TestReadIndexNeedsMajority: after the first read of a term (a barrier),
// a read round asks the other voters for their terms instead of writing to
// the log, and its index covers every write applied before it. A voter that
// claims a newer term sends the round back to a barrier, and a leader cut
// off from its majority gives no read index.
func TestReadIndexNeedsMajority(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	ts := &terms{nodes: map[string]*Node{}}
	ms := startMembers(t, 3, func(_ int, c *Config) { c.TermOf = ts.termOf })
	for _, m := range ms {
		ts.set(m.cfg.ID, m.node)
	}
	leader := ms[0].node
	if _, err := leader.WaitLeader(ctx); err != nil {
		t.Fatal(err)
	}
	for _, m := range ms[1:] {
		if err := leader.AddVoter(ctx, m.cfg.ID, m.cfg.RaftAddr); err != nil {
			t.Fatal(err)
		}
	}
	logged := func() uint64 { return leader.raft.LastIndex() }
	for i := range uint64(5) {
		if _, err := leader.Apply(ctx, cmd(i)); err != nil {
			t.Fatal(err)
		}
		for range 3 {
			before, asked := logged(), ts.asked.Load()
			idx, err := leader.ReadIndex(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if applied := ms[0].fsm.LastApplied(); idx < applied {
				t.Fatalf("read index %d is behind the applied write %d", idx, applied)
			}
			waitApplied(t, ctx, ms, idx)
			if i > 0 {
				if logged() != before {
					t.Fatalf("a read in a verified term wrote to the log: last index %d -> %d", before, logged())
				}
				if ts.asked.Load() == asked {
					t.Fatal("a read in a verified term asked no voter for its term")
				}
			}
		}
	}

	// Voters that claim a newer term: the round cannot trust the commit
	// index and writes a barrier instead.
	ts.ahead.Store(true)
	before := logged()
	if _, err := leader.ReadIndex(ctx); err != nil {
		t.Fatal(err)
	}
	if logged() == before {
		t.Fatal("a read whose voters claimed a newer term wrote no barrier")
	}
	ts.ahead.Store(false)
	// The log now ends with that barrier, which no FSM sees: the next read
	// index is the last command's, and every member reaches it.
	idx, err := leader.ReadIndex(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if applied := ms[0].fsm.LastApplied(); idx != applied {
		t.Fatalf("read index after a barrier = %d; want the last command's, %d", idx, applied)
	}
	waitApplied(t, ctx, ms, idx)

	// Both followers stop: no voter answers, and no read index is given.
	for _, m := range ms[1:] {
		ts.set(m.cfg.ID, nil)
		m.node.Close()
		m.node = nil
	}
	rctx, rcancel := context.WithTimeout(ctx, 5*time.Second)
	defer rcancel()
	if idx, err := leader.ReadIndex(rctx); err == nil {
		t.Fatalf("ReadIndex without a majority = %d; want an error", idx)
	}
}

// waitApplied fails the test unless every member's FSM reaches index soon:
// a read index must be one that readers can wait for.
func waitApplied(t *testing.T, ctx context.Context, ms []*member, index uint64) {
	t.Helper()
	for _, m := range ms {
		wctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		err := m.node.WaitApplied(wctx, index)
		cancel()
		if err != nil {
			t.Fatalf("%s: %v", m.cfg.ID, err)
		}
	}
}
