package consensus

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/hashicorp/raft"
)

// SnapshotMeta describes a snapshot of the FSM taken by TakeSnapshot.
type SnapshotMeta struct {
	Index   uint64 // Raft index the snapshot covers
	Term    uint64 // term of that index
	Size    int64  // bytes of the FSM's snapshot
	Version int    // hashicorp/raft's snapshot version
}

// TakeSnapshot has Raft snapshot the FSM now (as Snapshot does; Raft may
// then compact its log) and opens that snapshot for reading: the FSM's
// Persist output, of meta.Size bytes. The caller closes it. A snapshot that
// cannot start because a configuration change is being applied is retried
// until ctx ends.
func (n *Node) TakeSnapshot(ctx context.Context) (SnapshotMeta, io.ReadCloser, error) {
	backoff := 20 * time.Millisecond
	for {
		f := n.raft.Snapshot()
		err := f.Error()
		if err == nil {
			meta, rc, err := f.Open()
			if err != nil {
				return SnapshotMeta{}, nil, fmt.Errorf("consensus: open snapshot: %w", err)
			}
			return SnapshotMeta{Index: meta.Index, Term: meta.Term, Size: meta.Size, Version: int(meta.Version)}, rc, nil
		}
		if !strings.Contains(err.Error(), "configuration entry") {
			return SnapshotMeta{}, nil, mapErr(err)
		}
		select {
		case <-ctx.Done():
			return SnapshotMeta{}, nil, fmt.Errorf("consensus: snapshot: %w (%v)", ctx.Err(), err)
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 500*time.Millisecond)
	}
}

// restoreGap is how far past the log's last index RestoreIndex places a
// restored snapshot: entries appended between RestoreIndex and
// RestoreSnapshot (node records, heal marks) must not reach it.
const restoreGap = 1000

// RestoreIndex is the index a snapshot restored now by RestoreSnapshot
// will have: past every index this member's log holds, with room to spare.
// The FSM's snapshot must record it as its last applied index, so that
// the FSM's index and Raft's agree once it is installed.
func (n *Node) RestoreIndex() uint64 { return n.raft.LastIndex() + restoreGap }

// ErrRestoreIndex: the log moved past the index chosen for a restore
// before the restore ran; choose again (RestoreIndex) and retry.
var ErrRestoreIndex = errors.New("consensus: the log moved past the restore index")

// RestoreSnapshot replaces the FSM's state on every member with a snapshot
// (size bytes from r, in the FSM's Persist format) through hashicorp/raft's
// user snapshot restore: on the leader, the snapshot becomes the latest at
// index (from RestoreIndex), the FSM restores it, and the followers install
// it when they next replicate; RestoreSnapshot returns once a majority has
// an entry after it. The cluster keeps its own membership. The snapshot
// must already be known to restore without error: a leader whose FSM fails
// to restore it panics (hashicorp/raft's rule). Only for disaster recovery
// into a new cluster: writes in flight are aborted.
func (n *Node) RestoreSnapshot(ctx context.Context, index uint64, size int64, r io.Reader) error {
	if !n.IsLeader() {
		return ErrNotLeader
	}
	if index == 0 {
		return errors.New("consensus: restore at index 0")
	}
	if last := n.raft.LastIndex(); last >= index {
		return fmt.Errorf("%w: last index %d, restore index %d", ErrRestoreIndex, last, index)
	}
	meta := &raft.SnapshotMeta{Version: raft.SnapshotVersionMax, Index: index - 1, Term: n.Status().Term, Size: size}
	backoff := 20 * time.Millisecond
	for {
		err := n.raft.Restore(meta, r, timeoutOf(ctx, time.Minute))
		if err == nil {
			break
		}
		// Refused before reading r while a configuration change is
		// being applied: wait for it.
		if !strings.Contains(err.Error(), "configuration entry") {
			return mapErr(err)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("consensus: restore: %w (%v)", ctx.Err(), err)
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 500*time.Millisecond)
	}
	if got := n.raft.LastIndex(); got < index {
		return fmt.Errorf("consensus: restored at index %d, expected at least %d", got, index)
	}
	n.logger.Info("restored a snapshot", "index", index, "bytes", size)
	return nil
}
