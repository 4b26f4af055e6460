package consensus

import (
	"context"
	"errors"
	"path/filepath"
	"testing"
	"time"

	"github.com/ddstore/ddstore/internal/testenv"
)

// TestLogDiskFull fills the disk under one follower's Raft log, a real
// tmpfs: the follower notices (LogFailure) and refuses to serve reads it
// cannot catch up for (WaitApplied fails at once) while the others go on
// committing; once space is freed it reopens its log, catches up and
// reports nothing wrong, without a restart.
func TestLogDiskFull(t *testing.T) {
	for _, tc := range []struct {
		name  string
		entry int   // bytes per entry; segments are 1 MiB
		slack int64 // bytes left free on the full disk
	}{
		// The append that seals a segment writes its index past the
		// segment's preallocated size: with no page free it fails
		// half-way, leaving an uncommitted index frame (raft-wal then
		// refuses every append with "segment is sealed").
		{"sealing append fails", 1 << 10, 0},
		// A batch may run past the segment's size (it is sealed after
		// the batch): the write itself fails half-way.
		{"append runs past the segment", 48 << 10, 0},
		// The seal succeeds, the next segment's preallocation does not:
		// raft-wal only logs that, and refuses every later append with
		// "segment is sealed".
		{"next segment cannot be allocated", 1 << 10, 256 << 10},
	} {
		t.Run(tc.name, func(t *testing.T) { testLogDiskFull(t, tc.entry, tc.slack) })
	}
}

func testLogDiskFull(t *testing.T, entry int, slack int64) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	dir := t.TempDir()
	fs, err := testenv.MountTmpfs(filepath.Join(dir, "full"), 8<<20)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { fs.Unmount() })
	ms := startMembers(t, 3, func(i int, c *Config) {
		if i == 2 {
			c.Dir = filepath.Join(fs.Dir, "raft")
		}
		c.LogSegmentSize = 1 << 20
	})
	if _, err := ms[0].node.WaitLeader(ctx); err != nil {
		t.Fatal(err)
	}
	for _, m := range ms[1:] {
		if err := ms[0].node.AddVoter(ctx, m.cfg.ID, m.cfg.RaftAddr); err != nil {
			t.Fatal(err)
		}
	}
	victim := ms[2]
	var want uint64
	apply := func(v uint64) {
		t.Helper()
		data := append(cmd(v), make([]byte, entry)...)
		if _, err := ms[0].node.Apply(ctx, data); err != nil {
			t.Fatalf("apply %d: %v", v, err)
		}
		want += v
	}
	apply(1)
	filled, err := fs.Fill("ballast")
	if err != nil {
		t.Fatal(err)
	}
	if err := fs.Shrink("ballast", filled-slack); err != nil {
		t.Fatal(err)
	}
	full := time.Now()
	// The follower's current segment is preallocated, so it takes entries
	// until the segment is full and the next cannot be allocated.
	for v := uint64(2); ; v++ {
		if err, _ := victim.node.LogFailure(); err != nil {
			t.Logf("failure noticed after %d more commits, %s: %v", v-2, time.Since(full).Round(time.Millisecond), err)
			if !errors.Is(err, ErrLogUnwritable) {
				t.Fatalf("LogFailure = %v, want ErrLogUnwritable", err)
			}
			break
		}
		if v > 5000 {
			t.Fatal("the follower's log never failed on a full disk")
		}
		apply(v)
	}
	// Whatever room is left (the slack, or what the follower frees by
	// reopening its log) is taken too: it cannot catch up now. The two
	// others still commit.
	if _, err := fs.Fill("ballast"); err != nil {
		t.Fatal(err)
	}
	for v := range uint64(40) {
		apply(1000 + v)
	}
	idx, err := ms[0].node.ReadIndex(ctx)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if err := victim.node.WaitApplied(ctx, idx); !errors.Is(err, ErrLogUnwritable) {
		t.Fatalf("WaitApplied on the full follower = %v, want ErrLogUnwritable at once", err)
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("WaitApplied took %s to fail", d)
	}

	// Space returns: no restart, the follower recovers and catches up.
	if err := fs.Shrink("ballast", 0); err != nil {
		t.Fatal(err)
	}
	freed := time.Now()
	for {
		err, _ := victim.node.LogFailure()
		if err == nil && victim.fsm.Sum() == want {
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("no recovery after space was freed: failure %v, sum %d of %d", err, victim.fsm.Sum(), want)
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Logf("recovered and caught up %s after space was freed (%d reopens)", time.Since(freed).Round(time.Millisecond), victim.node.log.reopens.Load())
	apply(5000)
	idx, err = ms[0].node.ReadIndex(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := victim.node.WaitApplied(ctx, idx); err != nil {
		t.Fatalf("WaitApplied after recovery: %v", err)
	}
	if got := victim.fsm.Sum(); got != want {
		t.Fatalf("follower sum %d, want %d", got, want)
	}

	// A restart reads back the same log.
	victim.node.Close()
	victim.open(t)
	for victim.fsm.Sum() != want && ctx.Err() == nil {
		time.Sleep(20 * time.Millisecond)
	}
	if got := victim.fsm.Sum(); got != want {
		t.Fatalf("follower sum %d after a restart, want %d", got, want)
	}
}
