package consensus

import (
	"context"
	"testing"
	"time"
)

// TestReadIndexNeedsMajority: after the first read of a term (a barrier),
// reads confirm leadership with a heartbeat round instead of a log entry;
// a leader cut off from its majority soon gives no read index, and the
// index a read gets covers every write applied before it.
func TestReadIndexNeedsMajority(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	ms := startMembers(t, 3, nil)
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
		// The first read of the term runs a barrier; the next ones write
		// nothing to the log and still cover the write just applied.
		for range 3 {
			before := logged()
			idx, err := leader.ReadIndex(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if applied := ms[0].fsm.LastApplied(); idx < applied {
				t.Fatalf("read index %d is behind the applied write %d", idx, applied)
			}
			if i > 0 && logged() != before {
				t.Fatalf("a read in a verified term wrote to the log: last index %d -> %d", before, logged())
			}
		}
	}

	// Both followers stop: the leader cannot show it still leads. A
	// heartbeat answered just before they stopped may still count for one
	// round (hashicorp/raft's VerifyLeader counts the answer to a heartbeat
	// in flight), so within the leader's lease every read must fail.
	for _, m := range ms[1:] {
		m.node.Close()
		m.node = nil
	}
	stopped := time.Now()
	for {
		rctx, rcancel := context.WithTimeout(ctx, 10*time.Second)
		idx, err := leader.ReadIndex(rctx)
		rcancel()
		if err != nil {
			t.Logf("without a majority, %s after the followers stopped: %v", time.Since(stopped).Round(time.Millisecond), err)
			break
		}
		if time.Since(stopped) > 3*time.Second {
			t.Fatalf("ReadIndex without a majority = %d, %s after the followers stopped; want an error", idx, time.Since(stopped).Round(time.Millisecond))
		}
		time.Sleep(20 * time.Millisecond)
	}
}
