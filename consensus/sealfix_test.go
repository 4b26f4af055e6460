package consensus

import (
	"fmt"
	"strings"
	"testing"

	"github.com/hashicorp/raft"
	wal "github.com/hashicorp/raft-wal"
	"github.com/hashicorp/raft-wal/metadb"
)

// TestReopenAfterTailTruncation: after Raft clears a suffix of the log (as
// a follower does when a new leader's log disagrees with it) and appends
// again, the log opens again with every entry readable. raft-wal v0.4.0
// alone refuses to open it ("sealed segment has no index block"), which
// made hashicorp/raft panic at every start of such a node (found by the
// nemesis harness: a follower killed after "clearing log suffix").
func TestReopenAfterTailTruncation(t *testing.T) {
	dir := t.TempDir()
	open := func(fix bool) (*wal.WAL, *metadb.BoltMetaDB, error) {
		meta := &metadb.BoltMetaDB{}
		var w *wal.WAL
		var err error
		if fix {
			w, err = wal.Open(dir, wal.WithMetaStore(meta), wal.WithSegmentFiler(newSealFixFiler(dir)))
		} else {
			w, err = wal.Open(dir, wal.WithMetaStore(meta))
		}
		if err != nil {
			meta.Close()
		}
		return w, meta, err
	}
	entry := func(i, term uint64) *raft.Log {
		return &raft.Log{Index: i, Term: term, Type: raft.LogCommand, Data: []byte(fmt.Sprintf("entry %d of term %d", i, term))}
	}
	w, meta, err := open(true)
	if err != nil {
		t.Fatal(err)
	}
	var logs []*raft.Log
	for i := uint64(1); i <= 10; i++ {
		logs = append(logs, entry(i, 1))
	}
	if err := w.StoreLogs(logs); err != nil {
		t.Fatal(err)
	}
	if err := w.DeleteRange(8, 10); err != nil { // clearing log suffix
		t.Fatal(err)
	}
	if err := w.StoreLogs([]*raft.Log{entry(8, 2), entry(9, 2)}); err != nil {
		t.Fatal(err)
	}
	w.Close()
	meta.Close()

	// raft-wal alone opens it but cannot read the truncated segment.
	w, meta, err = open(false)
	if err != nil {
		t.Fatal(err)
	}
	var l raft.Log
	err = w.GetLog(1, &l)
	w.Close()
	meta.Close()
	if err == nil || !strings.Contains(err.Error(), "no index block") {
		t.Fatalf("raft-wal alone read entry 1 (err %v): the workaround may be obsolete", err)
	}
	w, meta, err = open(true)
	if err != nil {
		t.Fatalf("reopen: %v", err)
	}
	defer meta.Close()
	defer w.Close()
	for i := uint64(1); i <= 9; i++ {
		var got raft.Log
		if err := w.GetLog(i, &got); err != nil {
			t.Fatalf("entry %d: %v", i, err)
		}
		term := uint64(1)
		if i >= 8 {
			term = 2
		}
		if want := entry(i, term); got.Term != want.Term || string(got.Data) != string(want.Data) {
			t.Fatalf("entry %d: term %d %q, want term %d %q", i, got.Term, got.Data, want.Term, want.Data)
		}
	}
	if last, _ := w.LastIndex(); last != 9 {
		t.Fatalf("last index %d, want 9", last)
	}
}
