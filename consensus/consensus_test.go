package consensus

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/ddstore/ddstore/internal/freeport"
)

// sumFSM adds up the uint64 commands it applies.
type sumFSM struct {
	mu      sync.Mutex
	sum     uint64
	applied atomic.Uint64
}

func (f *sumFSM) Apply(l *raft.Log) any {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.sum += binary.BigEndian.Uint64(l.Data)
	f.applied.Store(l.Index)
	return f.sum
}

func (f *sumFSM) Sum() uint64 { f.mu.Lock(); defer f.mu.Unlock(); return f.sum }

func (f *sumFSM) LastApplied() uint64 { return f.applied.Load() }

func (f *sumFSM) Snapshot() (raft.FSMSnapshot, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return snap{binary.BigEndian.AppendUint64(binary.BigEndian.AppendUint64(nil, f.sum), f.applied.Load())}, nil
}

func (f *sumFSM) Restore(rc io.ReadCloser) error {
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil || len(b) != 16 {
		return fmt.Errorf("bad snapshot: %v", err)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.sum = binary.BigEndian.Uint64(b)
	f.applied.Store(binary.BigEndian.Uint64(b[8:]))
	return nil
}

type snap struct{ b []byte }

func (s snap) Persist(sink raft.SnapshotSink) error {
	if _, err := sink.Write(s.b); err != nil {
		sink.Cancel()
		return err
	}
	return sink.Close()
}
func (snap) Release() {}

func freeAddr(t *testing.T) string {
	t.Helper()
	addr, err := freeport.Addr()
	if err != nil {
		t.Fatal(err)
	}
	return addr
}

func cmd(v uint64) []byte { return binary.BigEndian.AppendUint64(nil, v) }

type member struct {
	cfg  Config
	fsm  *sumFSM
	node *Node
}

func (m *member) open(t *testing.T) {
	t.Helper()
	m.fsm = &sumFSM{}
	m.cfg.FSM = m.fsm
	n, err := Open(m.cfg)
	if err != nil {
		t.Fatal(err)
	}
	m.node = n
}

// startMembers opens n members on loopback, with fast elections and member
// 0 bootstrapping; tune, if given, adjusts each one's config before it
// opens. The members still open are closed when the test ends.
func startMembers(t *testing.T, n int, tune func(i int, c *Config)) []*member {
	t.Helper()
	dir := t.TempDir()
	ms := make([]*member, n)
	for i := range ms {
		cfg := Config{
			ID: fmt.Sprintf("n%d", i+1), RaftAddr: freeAddr(t), Dir: filepath.Join(dir, fmt.Sprint(i)),
			Bootstrap:        i == 0,
			HeartbeatTimeout: 300 * time.Millisecond, ElectionTimeout: 300 * time.Millisecond, LeaderLeaseTimeout: 200 * time.Millisecond,
		}
		if tune != nil {
			tune(i, &cfg)
		}
		ms[i] = &member{cfg: cfg}
		ms[i].open(t)
	}
	t.Cleanup(func() {
		for _, m := range ms {
			if m.node != nil {
				closeWithin(t, m.node, 30*time.Second)
			}
		}
	})
	return ms
}

// closeWithin closes n, and fails the test with every goroutine's stack if
// that takes longer than d (a Close stuck in Raft's shutdown would
// otherwise hang the test binary until its timeout, telling nothing).
func closeWithin(t *testing.T, n *Node, d time.Duration) {
	t.Helper()
	done := make(chan struct{})
	go func() {
		n.Close()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(d):
		buf := make([]byte, 1<<20)
		buf = buf[:runtime.Stack(buf, true)]
		t.Errorf("closing %s took more than %s; goroutines:\n%s", n.ID(), d, buf)
	}
}

// TestCluster: three members on loopback bootstrap, replicate, serve
// linearizable read indexes on followers, elect a new leader when the leader
// stops, and restore from snapshot plus log after a full restart.
func TestCluster(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	ms := startMembers(t, 3, func(_ int, c *Config) {
		c.SnapshotThreshold, c.SnapshotInterval = 50, 200*time.Millisecond
	})
	if _, err := ms[0].node.WaitLeader(ctx); err != nil {
		t.Fatal(err)
	}
	for _, m := range ms[1:] {
		if err := ms[0].node.AddVoter(ctx, m.cfg.ID, m.cfg.RaftAddr); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := ms[1].node.Apply(ctx, cmd(1)); !errors.Is(err, ErrNotLeader) {
		t.Fatalf("Apply on a follower = %v, want ErrNotLeader", err)
	}
	var want uint64
	for i := range uint64(200) {
		if _, err := ms[0].node.Apply(ctx, cmd(i)); err != nil {
			t.Fatal(err)
		}
		want += i
	}
	// A follower that waits for the leader's read index sees every write.
	idx, err := ms[0].node.ReadIndex(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range ms[1:] {
		if err := m.node.WaitApplied(ctx, idx); err != nil {
			t.Fatal(err)
		}
		if got := m.fsm.Sum(); got != want {
			t.Fatalf("%s sum %d after read index %d, want %d", m.cfg.ID, got, idx, want)
		}
	}
	if _, err := ms[1].node.ReadIndex(ctx); !errors.Is(err, ErrNotLeader) {
		t.Fatalf("ReadIndex on a follower = %v, want ErrNotLeader", err)
	}

	// The leader stops; one of the others takes over and keeps the log.
	ms[0].node.Close()
	ms[0].node = nil
	var leader *member
	for leader == nil {
		for _, m := range ms[1:] {
			if m.node.IsLeader() {
				leader = m
			}
		}
		if ctx.Err() != nil {
			t.Fatal("no new leader")
		}
		time.Sleep(50 * time.Millisecond)
	}
	if _, err := leader.node.Apply(ctx, cmd(1000)); err != nil {
		t.Fatal(err)
	}
	want += 1000
	if err := leader.node.Snapshot(); err != nil {
		t.Fatal(err)
	}

	// Full restart: everyone recovers the same sum from snapshot + log.
	for _, m := range ms {
		if m.node != nil {
			m.node.Close()
		}
	}
	for _, m := range ms {
		m.cfg.Bootstrap = false
		m.open(t)
	}
	if _, err := ms[2].node.WaitLeader(ctx); err != nil {
		t.Fatal(err)
	}
	for _, m := range ms {
		for m.fsm.Sum() != want && ctx.Err() == nil {
			time.Sleep(20 * time.Millisecond)
		}
		if got := m.fsm.Sum(); got != want {
			t.Fatalf("%s sum %d after restart, want %d", m.cfg.ID, got, want)
		}
	}
	st := ms[0].node.Status()
	if st.Term == 0 || st.AppliedIndex == 0 {
		t.Fatalf("status %+v", st)
	}
}

// TestRaftLogsInSlog: hclog's lines become slog records at their own level,
// with module and fields as attributes, one timestamp.
func TestRaftLogsInSlog(t *testing.T) {
	for _, tc := range []struct {
		line  string
		level slog.Level
		msg   string
		attrs string
	}{
		{`{"@level":"warn","@message":"heartbeat timeout reached, starting election","@module":"raft","@timestamp":"2026-11-29T18:00:00.000000Z","last-leader-addr":"127.0.0.1:7401"}`,
			slog.LevelWarn, "heartbeat timeout reached, starting election", "component=raft last-leader-addr=127.0.0.1:7401"},
		{`{"@level":"info","@message":"entering follower state","@module":"raft","follower":{},"leader-id":""}`, slog.LevelInfo, "entering follower state", "component=raft follower=map[] leader-id="},
		{`{"@level":"debug","@message":"x","@module":"raft.transport"}`, slog.LevelDebug, "x", "component=raft.transport"},
		{`{"@level":"error","@message":"failed to appendEntries"}`, slog.LevelError, "failed to appendEntries", "component=raft"},
		{`not json`, slog.LevelWarn, "not json", "component=raft"},
	} {
		level, msg, attrs := hclogRecord([]byte(tc.line))
		var parts []string
		for _, a := range attrs {
			parts = append(parts, a.String())
		}
		if level != tc.level || msg != tc.msg || strings.Join(parts, " ") != tc.attrs {
			t.Errorf("%s: got %v %q %q", tc.line, level, msg, strings.Join(parts, " "))
		}
	}
}
