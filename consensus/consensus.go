// Package consensus runs the Raft group that agrees on the catalog. It wraps
// hashicorp/raft with a durable write-ahead log (raft-wal), file snapshots and
// a TCP transport, and adds what the rest of ddstore needs from it: proposing
// commands on the leader, linearizable read indexes, membership changes and a
// clean shutdown. It knows nothing of chunks: only catalog commands pass
// through the log.
package consensus

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
)

// Errors a caller can test with errors.Is.
var (
	// ErrNotLeader: the call must be made on the leader.
	ErrNotLeader = errors.New("consensus: not the leader")
	// ErrNoLeader: the cluster has no leader right now.
	ErrNoLeader = errors.New("consensus: no leader")
	// ErrShutdown: the node is shut down.
	ErrShutdown = errors.New("consensus: node shut down")
)

// FSM is the state machine the log feeds. LastApplied is the index of the
// last command the FSM applied (or restored from a snapshot).
type FSM interface {
	raft.FSM
	LastApplied() uint64
}

// Config says how to run one Raft member.
type Config struct {
	ID        string // stable node ID
	RaftAddr  string // host:port the Raft transport binds and advertises
	Dir       string // holds the log (wal/) and snapshots (snapshots/)
	FSM       FSM
	Bootstrap bool // form a new one-node cluster if this node has no state yet
	Logger    *slog.Logger

	// Zero values take hashicorp/raft's defaults.
	HeartbeatTimeout   time.Duration
	ElectionTimeout    time.Duration
	LeaderLeaseTimeout time.Duration
	SnapshotThreshold  uint64
	SnapshotInterval   time.Duration
	// LogSegmentSize is the size of the Raft log's segment files, each
	// preallocated in full when the log moves on to it; 0: raft-wal's
	// default, 64 MiB.
	LogSegmentSize int

	// ServerTLS and DialTLS, when set, run the Raft port over mutual TLS:
	// ServerTLS decides which callers are accepted, DialTLS how this member
	// proves itself to the others and checks them. Without them Raft runs
	// over plain TCP, which accepts anyone who reaches the port.
	ServerTLS, DialTLS *tls.Config

	// TermOf, when set, lets the leader serve reads without a log entry:
	// a read round asks the other voters for their terms (each answering
	// with Node.Term) instead of writing a barrier. Without it every read
	// round is a barrier.
	TermOf TermOf
}

// Node is one running Raft member.
type Node struct {
	cfg       Config
	raft      *raft.Raft
	log       *walLog
	transport *raft.NetworkTransport
	reads     *readBatcher
	logger    *slog.Logger
	stop      chan struct{} // closed by Close: ends the log check
	checked   chan struct{} // closed when the log check has ended

	observer      *raft.Observer
	observed      chan struct{} // closed when the observer's loop has ended
	leaderChanges atomic.Uint64 // leader observations (a new leader, or none)
}

// Open starts a Raft member from cfg.Dir, restoring its log and latest
// snapshot. With cfg.Bootstrap and no existing state it forms a new cluster of
// one; otherwise it waits to be contacted by a leader.
func Open(cfg Config) (*Node, error) {
	if cfg.ID == "" || cfg.RaftAddr == "" || cfg.Dir == "" || cfg.FSM == nil {
		return nil, errors.New("consensus: ID, RaftAddr, Dir and FSM are required")
	}
	logger := cfg.Logger
	if logger == nil {
		logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	hlevel := hclog.Info
	if logger.Enabled(context.Background(), slog.LevelDebug) {
		hlevel = hclog.Debug
	}
	hlog := hclog.New(&hclog.LoggerOptions{
		Name:       "raft",
		Level:      hlevel,
		JSONFormat: true,
		Output:     slogWriter{logger},
	})

	rc := raft.DefaultConfig()
	rc.LocalID = raft.ServerID(cfg.ID)
	rc.Logger = hlog
	// Concurrent proposals (commits of small files) queue for the leader's
	// loop, which appends up to MaxAppendEntries of them with one log write
	// and one fsync.
	rc.BatchApplyCh = true
	if cfg.HeartbeatTimeout > 0 {
		rc.HeartbeatTimeout = cfg.HeartbeatTimeout
	}
	if cfg.ElectionTimeout > 0 {
		rc.ElectionTimeout = cfg.ElectionTimeout
	}
	if cfg.LeaderLeaseTimeout > 0 {
		rc.LeaderLeaseTimeout = cfg.LeaderLeaseTimeout
	}
	if cfg.SnapshotThreshold > 0 {
		rc.SnapshotThreshold = cfg.SnapshotThreshold
	}
	if cfg.SnapshotInterval > 0 {
		rc.SnapshotInterval = cfg.SnapshotInterval
	}

	walDir := filepath.Join(cfg.Dir, "wal")
	if err := os.MkdirAll(walDir, 0o755); err != nil {
		return nil, fmt.Errorf("consensus: %w", err)
	}
	// The log is reopened in place after a failed write (see walLog).
	logStore, err := openWALLog(cfg.ID, walDir, cfg.LogSegmentSize, hlog.Named("wal"), logger)
	if err != nil {
		return nil, fmt.Errorf("consensus: %w", err)
	}
	snaps, err := raft.NewFileSnapshotStoreWithLogger(cfg.Dir, 2, hlog.Named("snapshots"))
	if err != nil {
		logStore.close()
		return nil, fmt.Errorf("consensus: snapshot store: %w", err)
	}
	transport, err := newTransport(cfg, hlog)
	if err != nil {
		logStore.close()
		return nil, err
	}
	n := &Node{cfg: cfg, log: logStore, transport: transport, logger: logger, stop: make(chan struct{}), checked: make(chan struct{})}

	if cfg.Bootstrap {
		has, err := raft.HasExistingState(logStore, logStore, snaps)
		if err != nil {
			n.closeStores()
			return nil, fmt.Errorf("consensus: %w", err)
		}
		if !has {
			conf := raft.Configuration{Servers: []raft.Server{{
				Suffrage: raft.Voter, ID: rc.LocalID, Address: transport.LocalAddr(),
			}}}
			if err := raft.BootstrapCluster(rc, logStore, logStore, snaps, transport, conf); err != nil {
				n.closeStores()
				return nil, fmt.Errorf("consensus: bootstrap: %w", err)
			}
			logger.Info("bootstrapped a new cluster", "id", cfg.ID, "raft_addr", cfg.RaftAddr)
		}
	}
	r, err := raft.NewRaft(rc, cfg.FSM, logStore, logStore, snaps, transport)
	if err != nil {
		n.closeStores()
		return nil, fmt.Errorf("consensus: start raft: %w", err)
	}
	n.raft = r
	n.reads = newReadBatcher(r, rc.LocalID, cfg.FSM, logStore, cfg.TermOf, rc.HeartbeatTimeout)
	obs := make(chan raft.Observation, 16)
	n.observer = raft.NewObserver(obs, false, func(o *raft.Observation) bool {
		_, ok := o.Data.(raft.LeaderObservation)
		return ok
	})
	r.RegisterObserver(n.observer)
	n.observed = make(chan struct{})
	go n.countLeaderChanges(obs)
	go n.checkLog()
	return n, nil
}

// countLeaderChanges counts the leader observations raft sends until Close.
// Raft drops an observation when the channel is full; a burst of elections
// may then count short, which the metric's help admits by saying "observed".
func (n *Node) countLeaderChanges(obs <-chan raft.Observation) {
	defer close(n.observed)
	for {
		select {
		case <-n.stop:
			return
		case <-obs:
			n.leaderChanges.Add(1)
		}
	}
}

// LeaderChanges is how many changes of leader (to another node or to none)
// this member has observed since it started.
func (n *Node) LeaderChanges() uint64 { return n.leaderChanges.Load() }

// LastContact is when this member last heard from a leader (zero if never;
// a leader does not update it).
func (n *Node) LastContact() time.Time { return n.raft.LastContact() }

// HasQuorum reports whether this member can take part in the cluster's
// decisions now: it leads (a leader that reaches no majority for the leader
// lease steps down), or it follows a leader it heard from within the last
// within. When it cannot, why says so in one line.
func (n *Node) HasQuorum(within time.Duration) (ok bool, why string) {
	switch st := n.raft.State(); st {
	case raft.Leader:
		return true, ""
	case raft.Follower:
		id, _ := n.Leader()
		if id == "" {
			return false, "no leader known"
		}
		last := n.raft.LastContact()
		if last.IsZero() {
			return false, "leader " + id + " never heard from"
		}
		if d := time.Since(last); d > within {
			return false, fmt.Sprintf("no contact with leader %s for %s (more than %s)", id, d.Round(time.Millisecond), within)
		}
		return true, ""
	default:
		return false, "raft state " + st.String() + ", no leader"
	}
}

// checkLog reopens and rechecks a failed log every logCheckEvery, so that
// the node recovers when space returns even if no write comes to tell it.
func (n *Node) checkLog() {
	defer close(n.checked)
	t := time.NewTicker(logCheckEvery)
	defer t.Stop()
	for {
		select {
		case <-n.stop:
			return
		case <-t.C:
			n.log.check()
		}
	}
}

// LogFailure returns why this member's Raft log cannot be written now (an
// error wrapping ErrLogUnwritable) and since when; nil while it can. The
// member recovers by itself: the log is reopened and checked every second,
// and the next write that succeeds clears the failure.
func (n *Node) LogFailure() (error, time.Time) { return n.log.Failure() }

// newTransport opens the Raft port: mutual TLS when cfg has TLS configs,
// plain TCP otherwise.
func newTransport(cfg Config, hlog hclog.Logger) (*raft.NetworkTransport, error) {
	if (cfg.ServerTLS == nil) != (cfg.DialTLS == nil) {
		return nil, ErrTLSConfig
	}
	if cfg.ServerTLS != nil {
		layer, err := newTLSStreamLayer(cfg.RaftAddr, cfg.ServerTLS, cfg.DialTLS)
		if err != nil {
			return nil, fmt.Errorf("consensus: listen for raft on %s: %w", cfg.RaftAddr, err)
		}
		return raft.NewNetworkTransportWithLogger(layer, 3, 10*time.Second, hlog.Named("transport")), nil
	}
	addr, err := net.ResolveTCPAddr("tcp", cfg.RaftAddr)
	if err != nil {
		return nil, fmt.Errorf("consensus: raft address %q: %w", cfg.RaftAddr, err)
	}
	transport, err := raft.NewTCPTransportWithLogger(cfg.RaftAddr, addr, 3, 10*time.Second, hlog.Named("transport"))
	if err != nil {
		return nil, fmt.Errorf("consensus: listen for raft on %s: %w", cfg.RaftAddr, err)
	}
	return transport, nil
}

func (n *Node) closeStores() {
	n.transport.Close()
	n.log.close()
}

// Close shuts Raft down and closes its log and transport. A leader does not
// hand over leadership first; the others elect a new one.
func (n *Node) Close() error {
	n.reads.close()
	n.raft.DeregisterObserver(n.observer)
	close(n.stop)
	<-n.checked
	<-n.observed
	err := n.raft.Shutdown().Error()
	if cerr := n.transport.Close(); err == nil {
		err = cerr
	}
	if cerr := n.log.close(); err == nil {
		err = cerr
	}
	return err
}

// ID is this node's Raft server ID.
func (n *Node) ID() string { return n.cfg.ID }

// IsLeader reports whether this node is the leader now.
func (n *Node) IsLeader() bool { return n.raft.State() == raft.Leader }

// Leader returns the current leader's ID and Raft address, empty if none is
// known.
func (n *Node) Leader() (id, raftAddr string) {
	addr, sid := n.raft.LeaderWithID()
	return string(sid), string(addr)
}

// LeaderCh tells when this node gains (true) or loses (false) leadership.
func (n *Node) LeaderCh() <-chan bool { return n.raft.LeaderCh() }

// Apply appends cmd to the log on the leader and waits until the FSM has
// applied it, returning the FSM's response.
func (n *Node) Apply(ctx context.Context, cmd []byte) (any, error) {
	if !n.IsLeader() {
		return nil, ErrNotLeader
	}
	f := n.raft.Apply(cmd, timeoutOf(ctx, 30*time.Second))
	if err := f.Error(); err != nil {
		return nil, mapErr(err)
	}
	return f.Response(), nil
}

// ReadIndex returns an index such that a node whose FSM has applied it has
// seen every command committed before ReadIndex was called. Only the leader
// answers: it confirms its leadership with a majority first, coalescing
// concurrent calls into one round (see readBatcher).
func (n *Node) ReadIndex(ctx context.Context) (uint64, error) {
	if !n.IsLeader() {
		return 0, ErrNotLeader
	}
	return n.reads.readIndex(ctx)
}

// Term returns this member's current Raft term: what a leader's read round
// asks the other voters (see Config.TermOf).
func (n *Node) Term() uint64 { return n.raft.CurrentTerm() }

// WaitApplied waits until the local FSM has applied index. While this
// member's log cannot be written it cannot catch up, so it fails at once
// with an error wrapping ErrLogUnwritable (ask another member).
func (n *Node) WaitApplied(ctx context.Context, index uint64) error {
	if n.cfg.FSM.LastApplied() >= index {
		return nil
	}
	t := time.NewTicker(time.Millisecond)
	defer t.Stop()
	for n.cfg.FSM.LastApplied() < index {
		if n.raft.State() == raft.Shutdown {
			return ErrShutdown
		}
		if err, _ := n.log.Failure(); err != nil {
			return fmt.Errorf("consensus: cannot catch up to index %d (applied %d): %w", index, n.cfg.FSM.LastApplied(), err)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("consensus: waiting for index %d (applied %d): %w", index, n.cfg.FSM.LastApplied(), ctx.Err())
		case <-t.C:
		}
	}
	return nil
}

// WaitLeader waits until the cluster has a leader and returns its ID.
func (n *Node) WaitLeader(ctx context.Context) (string, error) {
	t := time.NewTicker(20 * time.Millisecond)
	defer t.Stop()
	for {
		if id, _ := n.Leader(); id != "" {
			return id, nil
		}
		select {
		case <-ctx.Done():
			return "", fmt.Errorf("%w: %w", ErrNoLeader, ctx.Err())
		case <-t.C:
		}
	}
}

// AddVoter adds a member (on the leader). Adding a member already present
// with the same address is a no-op.
func (n *Node) AddVoter(ctx context.Context, id, raftAddr string) error {
	if !n.IsLeader() {
		return ErrNotLeader
	}
	servers, err := n.Servers()
	if err != nil {
		return err
	}
	for _, s := range servers {
		if string(s.ID) == id && string(s.Address) == raftAddr && s.Suffrage == raft.Voter {
			return nil
		}
	}
	f := n.raft.AddVoter(raft.ServerID(id), raft.ServerAddress(raftAddr), 0, timeoutOf(ctx, 30*time.Second))
	return mapErr(f.Error())
}

// RemoveServer removes a member (on the leader). Removing an unknown member
// is a no-op.
func (n *Node) RemoveServer(ctx context.Context, id string) error {
	if !n.IsLeader() {
		return ErrNotLeader
	}
	f := n.raft.RemoveServer(raft.ServerID(id), 0, timeoutOf(ctx, 30*time.Second))
	return mapErr(f.Error())
}

// TransferLeadership asks another member to take over (on the leader).
func (n *Node) TransferLeadership() error {
	return mapErr(n.raft.LeadershipTransfer().Error())
}

// Servers returns the current membership.
func (n *Node) Servers() ([]raft.Server, error) {
	f := n.raft.GetConfiguration()
	if err := f.Error(); err != nil {
		return nil, mapErr(err)
	}
	return f.Configuration().Servers, nil
}

// Status is a snapshot of this member's Raft state.
type Status struct {
	State        string
	Term         uint64
	AppliedIndex uint64
	CommitIndex  uint64
	LastIndex    uint64
}

// Status reports this member's Raft state.
func (n *Node) Status() Status {
	var term uint64
	fmt.Sscan(n.raft.Stats()["term"], &term)
	return Status{
		State:        n.raft.State().String(),
		Term:         term,
		AppliedIndex: n.raft.AppliedIndex(),
		CommitIndex:  n.raft.CommitIndex(),
		LastIndex:    n.raft.LastIndex(),
	}
}

// Snapshot takes a snapshot now (tests and operators use it; Raft also
// snapshots on its own).
func (n *Node) Snapshot() error { return mapErr(n.raft.Snapshot().Error()) }

func mapErr(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, raft.ErrNotLeader), errors.Is(err, raft.ErrLeadershipLost), errors.Is(err, raft.ErrLeadershipTransferInProgress):
		return fmt.Errorf("%w: %w", ErrNotLeader, err)
	case errors.Is(err, raft.ErrRaftShutdown):
		return fmt.Errorf("%w: %w", ErrShutdown, err)
	}
	return fmt.Errorf("consensus: %w", err)
}

func timeoutOf(ctx context.Context, def time.Duration) time.Duration {
	if d, ok := ctx.Deadline(); ok {
		if t := time.Until(d); t > 0 {
			return t
		}
		return time.Millisecond
	}
	return def
}

// slogWriter turns hclog's lines (JSON) into slog records at their own
// level, with hclog's module and fields as attributes, so that Raft's lines
// read like every other line of the node and go wherever its log goes.
type slogWriter struct{ l *slog.Logger }

func (w slogWriter) Write(p []byte) (int, error) {
	for _, line := range bytes.Split(p, []byte("\n")) {
		if len(bytes.TrimSpace(line)) > 0 {
			level, msg, attrs := hclogRecord(line)
			w.l.LogAttrs(context.Background(), level, msg, attrs...)
		}
	}
	return len(p), nil
}

// hclogRecord decodes one hclog JSON line into a level, message and
// attributes; a line that is not JSON is logged whole, at WARN.
func hclogRecord(line []byte) (slog.Level, string, []slog.Attr) {
	var m map[string]any
	if err := json.Unmarshal(line, &m); err != nil {
		return slog.LevelWarn, string(line), []slog.Attr{slog.String("component", "raft")}
	}
	level := slog.LevelInfo
	switch m["@level"] {
	case "trace", "debug":
		level = slog.LevelDebug
	case "warn":
		level = slog.LevelWarn
	case "error":
		level = slog.LevelError
	}
	msg, _ := m["@message"].(string)
	component := "raft"
	if mod, ok := m["@module"].(string); ok && mod != "" {
		component = mod
	}
	attrs := []slog.Attr{slog.String("component", component)}
	keys := make([]string, 0, len(m))
	for k := range m {
		if !strings.HasPrefix(k, "@") {
			keys = append(keys, k)
		}
	}
	slices.Sort(keys)
	for _, k := range keys {
		attrs = append(attrs, slog.Any(k, m[k]))
	}
	return level, msg, attrs
}
