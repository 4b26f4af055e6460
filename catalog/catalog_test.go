package catalog

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"testing"

	"github.com/hashicorp/raft"
	"google.golang.org/protobuf/proto"

	"github.com/ddstore/ddstore/chunker"
	pb "github.com/ddstore/ddstore/proto/ddstore/v1"
)

const day1 = int64(1_795_000_000_000_000_000) // 2026-11-18 UTC

// manifest builds a valid manifest whose chunks are named by the seeds.
func manifest(name string, seeds ...string) *pb.FileManifest {
	m := &pb.FileManifest{Name: name}
	var whole []byte
	for _, s := range seeds {
		id := chunker.Sum([]byte(s))
		m.Chunks = append(m.Chunks, &pb.ChunkRef{Id: id[:], Offset: m.Size, RawSize: 100, StoredSize: 60})
		m.Size += 100
		m.StoredSize += 60
		whole = append(whole, s...)
	}
	h := chunker.Sum(whole)
	m.Blake3 = h[:]
	return m
}

func put(m *pb.FileManifest, created int64, overwrite bool) *pb.Command {
	m = proto.CloneOf(m)
	m.CreatedUnixNano = created
	return &pb.Command{Op: &pb.Command_PutFile{PutFile: &pb.PutFile{Manifest: m, Overwrite: overwrite}}}
}

func del(name string) *pb.Command {
	return &pb.Command{Op: &pb.Command_DeleteFile{DeleteFile: &pb.DeleteFile{Name: name}}}
}

func TestValidateName(t *testing.T) {
	tests := []struct {
		name string
		ok   bool
	}{
		{"a.bin", true}, {"dir/sub/file 1.txt", true}, {"données/été.csv", true},
		{"", false}, {"/abs", false}, {"a//b", false}, {"a/", false}, {"../etc/passwd", false},
		{"a/./b", false}, {"x\x00y", false}, {"tab\there", false}, {"\xff", false},
		{string(bytes.Repeat([]byte("n"), MaxNameLen)), true}, {string(bytes.Repeat([]byte("n"), MaxNameLen+1)), false},
	}
	for _, tt := range tests {
		err := ValidateName(tt.name)
		if (err == nil) != tt.ok || (err != nil && !errors.Is(err, ErrInvalid)) {
			t.Errorf("ValidateName(%q) = %v, want ok=%v", tt.name, err, tt.ok)
		}
	}
}

func TestValidateManifest(t *testing.T) {
	good := manifest("f", "a", "b")
	tests := []struct {
		name   string
		change func(m *pb.FileManifest)
		want   string
	}{
		{"good", func(*pb.FileManifest) {}, ""},
		{"empty file", func(m *pb.FileManifest) { m.Chunks, m.Size, m.StoredSize = nil, 0, 0 }, ""},
		{"bad name", func(m *pb.FileManifest) { m.Name = "" }, "name"},
		{"bad date", func(m *pb.FileManifest) { m.Date = "2026-02-30" }, "date"},
		{"short hash", func(m *pb.FileManifest) { m.Blake3 = m.Blake3[:5] }, "hash"},
		{"size mismatch", func(m *pb.FileManifest) { m.Size++ }, "size"},
		{"gap", func(m *pb.FileManifest) { m.Chunks[1].Offset++ }, "tile"},
		{"short id", func(m *pb.FileManifest) { m.Chunks[0].Id = []byte{1} }, "ID"},
		{"zero raw", func(m *pb.FileManifest) { m.Chunks[0].RawSize = 0 }, "raw size"},
		{"huge raw", func(m *pb.FileManifest) { m.Chunks[0].RawSize = chunker.MaxRawSize + 1 }, "raw size"},
		{"stored > raw", func(m *pb.FileManifest) { m.Chunks[0].StoredSize = 101 }, "stored size"},
		{"stored total", func(m *pb.FileManifest) { m.StoredSize = 1 }, "stored_size"},
		{"empty metadata key", func(m *pb.FileManifest) { m.Metadata = map[string]string{"": "x"} }, "metadata"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := proto.CloneOf(good)
			tt.change(m)
			err := ValidateManifest(m)
			if tt.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if !errors.Is(err, ErrInvalid) || !bytes.Contains([]byte(err.Error()), []byte(tt.want)) {
				t.Fatalf("err = %v, want ErrInvalid mentioning %q", err, tt.want)
			}
		})
	}
}

func TestApply(t *testing.T) {
	s := NewState()
	a := manifest("a", "x", "y")
	b := manifest("b", "y", "z", "z")
	steps := []struct {
		name string
		cmd  *pb.Command
		err  error
	}{
		{"put a", put(a, day1, false), nil},
		{"retry of a is a no-op", put(a, day1+5, false), nil},
		{"put b", put(b, day1, false), nil},
		{"different a refused", put(manifest("a", "q"), day1, false), ErrExists},
		{"no creation time", put(manifest("c", "q"), 0, false), ErrInvalid},
		{"invalid manifest", put(manifest("/c", "q"), day1, false), ErrInvalid},
		{"delete missing", del("nope"), ErrNotFound},
		{"empty command", &pb.Command{}, ErrInvalid},
	}
	for _, st := range steps {
		before, _ := s.Snapshot()
		res := Apply(s, st.cmd)
		if !errors.Is(res.Err, st.err) || (st.err == nil && res.Err != nil) {
			t.Fatalf("%s: err = %v, want %v", st.name, res.Err, st.err)
		}
		if st.err != nil {
			if after, _ := s.Snapshot(); !bytes.Equal(before, after) {
				t.Fatalf("%s: a failed command changed the state", st.name)
			}
		}
	}
	m, ok := s.File("a")
	if !ok || m.GetDate() != "2026-11-18" || m.GetCreatedUnixNano() != day1 {
		t.Fatalf("stored a = %v", m)
	}
	y, z := chunker.Sum([]byte("y")), chunker.Sum([]byte("z"))
	if s.Refs(y) != 2 || s.Refs(z) != 1 || s.Chunks() != 3 {
		t.Fatalf("refs y=%d z=%d chunks=%d, want 2, 1, 3", s.Refs(y), s.Refs(z), s.Chunks())
	}
	if files, bytes := s.Totals(); files != 2 || bytes != 500 {
		t.Fatalf("totals %d files %d bytes", files, bytes)
	}
	// Overwrite a with new content: x goes, y stays for b.
	if res := Apply(s, put(manifest("a", "w"), day1, true)); res.Err != nil {
		t.Fatal(res.Err)
	}
	if s.Refs(chunker.Sum([]byte("x"))) != 0 || s.Refs(y) != 1 {
		t.Fatal("overwrite did not move references")
	}
	if res := Apply(s, del("b")); res.Err != nil || res.Manifest.GetName() != "b" {
		t.Fatalf("delete b: %+v", res)
	}
	if s.Refs(y) != 0 || s.Refs(z) != 0 || s.Chunks() != 1 {
		t.Fatal("delete left references behind")
	}
}

func TestList(t *testing.T) {
	s := NewState()
	names := []string{"logs/2026/a", "logs/2026/b", "logs/2027/a", "photos/x", "z"}
	for i, n := range names {
		m := manifest(n, n)
		m.Date = fmt.Sprintf("2026-01-%02d", i+1)
		if res := Apply(s, put(m, day1, false)); res.Err != nil {
			t.Fatal(res.Err)
		}
	}
	tests := []struct {
		name      string
		q         Query
		want      []string
		truncated bool
	}{
		{"all", Query{}, names, false},
		{"prefix", Query{Prefix: "logs/"}, names[:3], false},
		{"limit", Query{Prefix: "logs/", Limit: 2}, names[:2], true},
		{"page 2", Query{Prefix: "logs/", Limit: 2, StartAfter: "logs/2026/b"}, names[2:3], false},
		{"exact limit", Query{Limit: 5}, names, false},
		{"dates", Query{DateFrom: "2026-01-02", DateTo: "2026-01-04"}, names[1:4], false},
		{"no match", Query{Prefix: "nope"}, nil, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			files, trunc := s.List(tt.q)
			var got []string
			for _, f := range files {
				got = append(got, f.GetName())
			}
			if fmt.Sprint(got) != fmt.Sprint(tt.want) || trunc != tt.truncated {
				t.Fatalf("List = %v truncated=%v, want %v %v", got, trunc, tt.want, tt.truncated)
			}
		})
	}
}

// randomCommands returns a reproducible mix of puts, overwrites, deletes and
// node changes over a small name space.
func randomCommands(seed uint64, n int) []*pb.Command {
	rng := rand.New(rand.NewPCG(seed, 1))
	cmds := make([]*pb.Command, n)
	for i := range cmds {
		name := fmt.Sprintf("f%d", rng.IntN(20))
		switch rng.IntN(6) {
		case 0, 1, 2:
			var seeds []string
			for range rng.IntN(4) {
				seeds = append(seeds, fmt.Sprint(rng.IntN(30)))
			}
			m := manifest(name, seeds...)
			if rng.IntN(3) == 0 { // a time range of up to ~40 days from 2018-04-13
				from := int64(1_523_577_600_000_000_000) + rng.Int64N(1e15)
				m.TimeFromUnixNano, m.TimeToUnixNano = proto.Int64(from), proto.Int64(from+rng.Int64N(4e15))
			}
			cmds[i] = put(m, day1+int64(i)*3_600_000_000_000, rng.IntN(2) == 0)
		case 3:
			cmds[i] = del(name)
		case 4:
			cmds[i] = &pb.Command{Op: &pb.Command_SetNode{SetNode: &pb.SetNode{Node: &pb.NodeInfo{
				Id: fmt.Sprintf("n%d", rng.IntN(3)), ApiAddr: fmt.Sprintf("127.0.0.1:%d", rng.IntN(100)),
			}}}}
		case 5:
			var ids, gone []chunker.ID
			for range rng.IntN(4) {
				ids = append(ids, chunker.Sum([]byte(fmt.Sprint(rng.IntN(30)))))
			}
			for range rng.IntN(2) {
				gone = append(gone, chunker.Sum([]byte(fmt.Sprint(rng.IntN(30)))))
			}
			cmds[i] = unreferenced(day1+int64(i), ids, gone)
		}
	}
	return cmds
}

// checkRefs recomputes the reference counts and totals from the files.
func checkRefs(t *testing.T, s *State) {
	t.Helper()
	want := map[chunker.ID]uint32{}
	var bytes uint64
	for _, m := range s.files {
		bytes += m.GetSize()
		for _, id := range distinctChunks(m) {
			want[id]++
		}
	}
	if len(want) != len(s.refs) || bytes != s.bytes || len(s.names) != len(s.files) {
		t.Fatalf("derived state out of step: %d refs want %d, %d bytes want %d", len(s.refs), len(want), s.bytes, bytes)
	}
	for id, n := range want {
		if s.refs[id] != n {
			t.Fatalf("chunk %s has %d refs, want %d", id, s.refs[id], n)
		}
	}
	for id := range s.unref {
		if s.refs[id] > 0 {
			t.Fatalf("chunk %s is referenced but its garbage-collection clock runs", id)
		}
	}
}

// TestDeterministic: two states fed the same commands, through the encoded
// form, end byte-identical, and a snapshot restores to the same bytes.
func TestDeterministic(t *testing.T) {
	a, b := NewState(), NewState()
	for _, cmd := range randomCommands(42, 2000) {
		data, err := EncodeCommand(cmd)
		if err != nil {
			t.Fatal(err)
		}
		dec, err := DecodeCommand(data)
		if err != nil {
			t.Fatal(err)
		}
		ra, rb := Apply(a, cmd), Apply(b, dec)
		if (ra.Err == nil) != (rb.Err == nil) || !proto.Equal(ra.Manifest, rb.Manifest) {
			t.Fatalf("results differ: %+v vs %+v", ra, rb)
		}
	}
	checkRefs(t, a)
	sa, _ := a.Snapshot()
	sb, _ := b.Snapshot()
	if !bytes.Equal(sa, sb) {
		t.Fatal("states differ after the same commands")
	}
	c, err := FromSnapshot(sa)
	if err != nil {
		t.Fatal(err)
	}
	checkRefs(t, c)
	if sc, _ := c.Snapshot(); !bytes.Equal(sa, sc) {
		t.Fatal("snapshot does not round-trip")
	}
}

type memSink struct {
	bytes.Buffer
	cancelled bool
}

func (s *memSink) ID() string    { return "mem" }
func (s *memSink) Cancel() error { s.cancelled = true; return nil }
func (s *memSink) Close() error  { return nil }

func TestFSMSnapshotRestore(t *testing.T) {
	f := NewFSM()
	for i, cmd := range randomCommands(7, 500) {
		data, _ := EncodeCommand(cmd)
		if _, ok := f.Apply(&raft.Log{Index: uint64(i + 1), Data: data}).(Result); !ok {
			t.Fatal("Apply did not return a Result")
		}
	}
	if res := f.Apply(&raft.Log{Index: 501, Data: []byte{9, 9}}).(Result); !errors.Is(res.Err, ErrInvalid) {
		t.Fatalf("garbage command: %v", res.Err)
	}
	snap, err := f.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	// Apply after the snapshot must not leak into it.
	data, _ := EncodeCommand(put(manifest("late", "l"), day1, false))
	f.Apply(&raft.Log{Index: 502, Data: data})
	var sink memSink
	if err := snap.Persist(&sink); err != nil {
		t.Fatal(err)
	}
	g := NewFSM()
	if err := g.Restore(io.NopCloser(bytes.NewReader(sink.Bytes()))); err != nil {
		t.Fatal(err)
	}
	if g.LastApplied() != 501 {
		t.Fatalf("restored applied index %d, want 501", g.LastApplied())
	}
	g.Read(func(s *State) {
		if _, ok := s.File("late"); ok {
			t.Fatal("snapshot holds a file applied after it was taken")
		}
		checkRefs(t, s)
	})
	var want, got []byte
	f.Apply(&raft.Log{Index: 503, Data: mustEncode(t, del("late"))})
	f.Read(func(s *State) { want, _ = s.Snapshot() })
	g.Read(func(s *State) { got, _ = s.Snapshot() })
	if !bytes.Equal(want, got) {
		t.Fatal("restored catalog differs")
	}
	t.Run("corrupt snapshot refused", func(t *testing.T) {
		bad := bytes.Clone(sink.Bytes())
		bad[len(bad)-3] ^= 1
		if err := NewFSM().Restore(io.NopCloser(bytes.NewReader(bad))); !errors.Is(err, ErrInvalid) {
			t.Fatalf("Restore(corrupt) = %v", err)
		}
		if err := NewFSM().Restore(io.NopCloser(bytes.NewReader(bad[:30]))); !errors.Is(err, ErrInvalid) {
			t.Fatalf("Restore(truncated) = %v", err)
		}
	})
}

func mustEncode(t *testing.T, cmd *pb.Command) []byte {
	t.Helper()
	b, err := EncodeCommand(cmd)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// FuzzApply feeds arbitrary bytes as log entries: Apply never panics, a
// failed command changes nothing, and the derived counts stay right.
func FuzzApply(f *testing.F) {
	for _, cmd := range randomCommands(3, 20) {
		b, _ := EncodeCommand(cmd)
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		s := NewState()
		for _, cmd := range randomCommands(5, 30) {
			Apply(s, cmd)
		}
		before, _ := s.Snapshot()
		cmd, err := DecodeCommand(data)
		if err != nil {
			return
		}
		if res := Apply(s, cmd); res.Err != nil {
			if after, _ := s.Snapshot(); !bytes.Equal(before, after) {
				t.Fatal("failed command changed the state")
			}
		}
		checkRefs(t, s)
		snap, _ := s.Snapshot()
		if _, err := FromSnapshot(snap); err != nil {
			t.Fatalf("state does not restore: %v", err)
		}
	})
}

func collect(ids ...chunker.ID) *pb.Command {
	c := &pb.CollectChunks{}
	for _, id := range ids {
		c.Ids = append(c.Ids, bytes.Clone(id[:]))
	}
	return &pb.Command{Op: &pb.Command_CollectChunks{CollectChunks: c}}
}

func forget(ids ...chunker.ID) *pb.Command {
	c := &pb.ForgetChunks{}
	for _, id := range ids {
		c.Ids = append(c.Ids, bytes.Clone(id[:]))
	}
	return &pb.Command{Op: &pb.Command_ForgetChunks{ForgetChunks: c}}
}

// TestCollectChunks: only unreferenced chunks are marked; a file naming a
// marked chunk cannot be committed until the mark is gone; marks survive a
// snapshot.
func TestCollectChunks(t *testing.T) {
	s := NewState()
	x, y, z := chunker.Sum([]byte("x")), chunker.Sum([]byte("y")), chunker.Sum([]byte("z"))
	if res := Apply(s, put(manifest("a", "x", "y"), day1, false)); res.Err != nil {
		t.Fatal(res.Err)
	}
	res := Apply(s, collect(x, z))
	if res.Err != nil || len(res.IDs) != 1 || res.IDs[0] != z {
		t.Fatalf("collect x,z marked %v (%v), want only z", res.IDs, res.Err)
	}
	if res := Apply(s, put(manifest("b", "z"), day1, false)); !errors.Is(res.Err, ErrCollecting) {
		t.Fatalf("commit naming a collected chunk: %v", res.Err)
	}
	snap, _ := s.Snapshot()
	restored, err := FromSnapshot(snap)
	if err != nil || !restored.IsCollecting(z) || restored.IsCollecting(x) {
		t.Fatalf("marks did not survive a snapshot: %v", err)
	}
	Apply(s, forget(z))
	if res := Apply(s, put(manifest("b", "z"), day1, false)); res.Err != nil {
		t.Fatalf("commit after the mark is gone: %v", res.Err)
	}
	Apply(s, del("a"))
	if res := Apply(s, collect(x, y, z)); len(res.IDs) != 2 || len(s.Collecting()) != 2 {
		t.Fatalf("after deleting a: marked %v, want x and y", res.IDs)
	}
	if res := Apply(s, &pb.Command{Op: &pb.Command_CollectChunks{CollectChunks: &pb.CollectChunks{Ids: [][]byte{{1}}}}}); !errors.Is(res.Err, ErrInvalid) {
		t.Fatalf("malformed ID: %v", res.Err)
	}
}

// TestCommitAfterCollection: a commit whose check of its chunks came before
// a collection finished is refused with ErrCollectedSinceCheck, even though
// the marks are gone by then (the copies it found may have been deleted); a
// commit that saw the collection, or a command without the field, applies.
// The count survives a snapshot.
func TestCommitAfterCollection(t *testing.T) {
	s := NewState()
	x := chunker.Sum([]byte("x"))
	seen := s.Collections()
	Apply(s, collect(x))
	Apply(s, forget(x))
	if s.Collections() != seen+1 {
		t.Fatalf("collections %d after one sweep, want %d", s.Collections(), seen+1)
	}
	checked := func(m *pb.FileManifest, seen uint64) *pb.Command {
		cmd := put(m, day1, false)
		cmd.GetPutFile().CollectionsSeen = &seen
		return cmd
	}
	if res := Apply(s, checked(manifest("a", "x"), seen)); !errors.Is(res.Err, ErrCollectedSinceCheck) {
		t.Fatalf("commit checked before the collection finished: %v, want ErrCollectedSinceCheck", res.Err)
	}
	if _, ok := s.File("a"); ok {
		t.Fatal("the refused commit stored the file")
	}
	if res := Apply(s, checked(manifest("a", "x"), s.Collections())); res.Err != nil {
		t.Fatalf("commit checked after the collection: %v", res.Err)
	}
	if res := Apply(s, put(manifest("b", "x"), day1, false)); res.Err != nil {
		t.Fatalf("commit without collections_seen: %v", res.Err)
	}
	Apply(s, forget()) // names no chunk: not a collection
	snap, _ := s.Snapshot()
	restored, err := FromSnapshot(snap)
	if err != nil || restored.Collections() != seen+1 {
		t.Fatalf("restored collections %d (%v), want %d", restored.Collections(), err, seen+1)
	}
}

// TestOverwriteReplaces: an overwrite naming the version it replaces applies
// only while the file is still that version; a retried or same-content
// commit succeeds; one without a version replaces whatever is there.
func TestOverwriteReplaces(t *testing.T) {
	s := NewState()
	if res := Apply(s, put(manifest("f", "v0"), day1, false)); res.Err != nil {
		t.Fatal(res.Err)
	}
	v0, _ := s.File("f")
	replaces := func(m *pb.FileManifest, created int64, v *pb.FileVersion) *pb.Command {
		cmd := put(m, created, true)
		cmd.GetPutFile().Replaces = v
		return cmd
	}
	a, b := manifest("f", "a"), manifest("f", "b")
	if res := Apply(s, replaces(a, day1+1, VersionOf(v0))); res.Err != nil {
		t.Fatalf("first overwrite of v0: %v", res.Err)
	}
	if res := Apply(s, replaces(b, day1+2, VersionOf(v0))); !errors.Is(res.Err, ErrChanged) {
		t.Fatalf("second overwrite of v0, after another replaced it: %v, want ErrChanged", res.Err)
	}
	if m, _ := s.File("f"); !bytes.Equal(m.GetBlake3(), a.GetBlake3()) {
		t.Fatal("the refused overwrite changed the file")
	}
	if res := Apply(s, replaces(a, day1+3, VersionOf(v0))); res.Err != nil || res.Manifest.GetCreatedUnixNano() != day1+1 {
		t.Fatalf("retried overwrite of the same content: %v, %v; want the stored file", res.Manifest, res.Err)
	}
	if res := Apply(s, replaces(b, day1+4, VersionOf(nil))); !errors.Is(res.Err, ErrChanged) {
		t.Fatalf("overwrite expecting no file, with one there: %v, want ErrChanged", res.Err)
	}
	if res := Apply(s, replaces(manifest("g", "g"), day1+5, VersionOf(nil))); res.Err != nil {
		t.Fatalf("overwrite expecting no file, with none there: %v", res.Err)
	}
	if res := Apply(s, put(b, day1+6, true)); res.Err != nil {
		t.Fatalf("overwrite without a version: %v", res.Err)
	}
}

// TestRetriedCommitAppliesOnce: a commit is applied at most once per
// request id. A retry of a put whose answer was lost, arriving after the
// file was deleted (or replaced), answers success and changes nothing: it
// must not bring the file back. The ids survive a snapshot, oldest
// forgotten first beyond maxApplied.
func TestRetriedCommitAppliesOnce(t *testing.T) {
	withID := func(cmd *pb.Command, id string) *pb.Command {
		cmd.GetPutFile().RequestId = []byte(id)
		return cmd
	}
	s := NewState()
	a := manifest("f", "a")
	first := Apply(s, withID(put(a, day1, false), "req-1"))
	if first.Err != nil {
		t.Fatal(first.Err)
	}
	if res := Apply(s, del("f")); res.Err != nil {
		t.Fatal(res.Err)
	}
	before, _ := s.Snapshot()
	res := Apply(s, withID(put(a, day1+7, false), "req-1"))
	if res.Err != nil || res.Manifest.GetCreatedUnixNano() != day1 {
		t.Fatalf("retry after a delete: %v, %v; want success naming the first attempt's version", res.Manifest, res.Err)
	}
	if _, ok := s.File("f"); ok {
		t.Fatal("the retried put brought a deleted file back")
	}
	if after, _ := s.Snapshot(); !bytes.Equal(before, after) {
		t.Fatal("the retried put changed the state")
	}
	// An overwrite retried after another overwrite replaced its version.
	b, c := manifest("g", "b"), manifest("g", "c")
	if res := Apply(s, withID(put(b, day1+1, true), "req-2")); res.Err != nil {
		t.Fatal(res.Err)
	}
	if res := Apply(s, withID(put(c, day1+2, true), "req-3")); res.Err != nil {
		t.Fatal(res.Err)
	}
	if res := Apply(s, withID(put(b, day1+3, true), "req-2")); res.Err != nil {
		t.Fatal(res.Err)
	}
	if m, _ := s.File("g"); !bytes.Equal(m.GetBlake3(), c.GetBlake3()) {
		t.Fatal("the retried overwrite replaced the later one")
	}
	// The same retry still holding its file gets the stored manifest.
	if res := Apply(s, withID(put(c, day1+4, true), "req-3")); res.Err != nil || res.Manifest.GetCreatedUnixNano() != day1+2 {
		t.Fatalf("retry of the current version: %v, %v", res.Manifest, res.Err)
	}
	// Without a request id a put applies as before: the file comes back.
	if res := Apply(s, put(a, day1+8, false)); res.Err != nil {
		t.Fatal(res.Err)
	}
	if res := Apply(s, withID(put(manifest("h", "h"), day1, false), string(bytes.Repeat([]byte("x"), maxRequestID+1)))); !errors.Is(res.Err, ErrInvalid) {
		t.Fatalf("an oversized request id: %v, want ErrInvalid", res.Err)
	}

	snap, err := s.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	r, err := FromSnapshot(snap)
	if err != nil {
		t.Fatal(err)
	}
	if again, _ := r.Snapshot(); !bytes.Equal(again, snap) {
		t.Fatal("the restored state differs")
	}
	if res := Apply(r, del("f")); res.Err != nil {
		t.Fatal(res.Err)
	}
	if Apply(r, withID(put(a, day1+9, false), "req-1")); len(r.names) != 1 {
		t.Fatal("after a restore, the retried put brought a deleted file back")
	}

	// The oldest ids are forgotten beyond maxApplied.
	for i := range maxApplied {
		r.remember(fmt.Sprint("filler-", i), VersionOf(a))
	}
	if _, ok := r.applied["req-1"]; ok || len(r.applied) != maxApplied || len(r.order) != maxApplied {
		t.Fatalf("%d ids remembered (%d in order), req-1 kept: %v", len(r.applied), len(r.order), ok)
	}
}

func unreferenced(since int64, ids, gone []chunker.ID) *pb.Command {
	m := &pb.MarkUnreferenced{SinceUnixNano: since}
	for _, id := range ids {
		m.Ids = append(m.Ids, bytes.Clone(id[:]))
	}
	for _, id := range gone {
		m.Forget = append(m.Forget, bytes.Clone(id[:]))
	}
	return &pb.Command{Op: &pb.Command_MarkUnreferenced{MarkUnreferenced: m}}
}

// TestMarkUnreferenced: the garbage-collection clock starts once per chunk
// that no file refers to, keeps its first time, stops when a file refers
// to the chunk, when it is forgotten and when it is collected, and survives
// a snapshot; a snapshot without clocks (written before they were kept)
// restores with none.
func TestMarkUnreferenced(t *testing.T) {
	s := NewState()
	x, y, z := chunker.Sum([]byte("x")), chunker.Sum([]byte("y")), chunker.Sum([]byte("z"))
	since := func(id chunker.ID) int64 { t, _ := s.UnreferencedSince(id); return t }
	steps := []struct {
		name    string
		cmd     *pb.Command
		started []chunker.ID
		err     error
		want    map[chunker.ID]int64 // the clocks after the step
	}{
		{"file a holds x and y", put(manifest("a", "x", "y"), day1, false), nil, nil, map[chunker.ID]int64{}},
		{"x is referenced, z starts", unreferenced(10, []chunker.ID{x, z}, nil), []chunker.ID{z}, nil, map[chunker.ID]int64{z: 10}},
		{"z keeps its first time", unreferenced(20, []chunker.ID{z}, nil), nil, nil, map[chunker.ID]int64{z: 10}},
		{"no time stamped", unreferenced(0, []chunker.ID{x}, nil), nil, ErrInvalid, map[chunker.ID]int64{z: 10}},
		{"malformed ID", &pb.Command{Op: &pb.Command_MarkUnreferenced{MarkUnreferenced: &pb.MarkUnreferenced{SinceUnixNano: 5, Ids: [][]byte{{1}}}}}, nil, ErrInvalid, map[chunker.ID]int64{z: 10}},
		{"a removed: no clock yet", del("a"), nil, nil, map[chunker.ID]int64{z: 10}},
		{"x and y start", unreferenced(30, []chunker.ID{x, y}, nil), []chunker.ID{x, y}, nil, map[chunker.ID]int64{x: 30, y: 30, z: 10}},
		{"a file refers to x again", put(manifest("b", "x"), day1, false), nil, nil, map[chunker.ID]int64{y: 30, z: 10}},
		{"y is held by no store any more", unreferenced(40, nil, []chunker.ID{y}), nil, nil, map[chunker.ID]int64{z: 10}},
		{"z is marked for collection", collect(z), nil, nil, map[chunker.ID]int64{z: 10}},
		{"z is collected", forget(z), nil, nil, map[chunker.ID]int64{}},
		{"y starts again", unreferenced(50, []chunker.ID{y}, nil), []chunker.ID{y}, nil, map[chunker.ID]int64{y: 50}},
	}
	for _, st := range steps {
		before, _ := s.Snapshot()
		res := Apply(s, st.cmd)
		if !errors.Is(res.Err, st.err) || (st.err == nil && res.Err != nil) {
			t.Fatalf("%s: err %v, want %v", st.name, res.Err, st.err)
		}
		if res.Err != nil {
			if after, _ := s.Snapshot(); !bytes.Equal(before, after) {
				t.Fatalf("%s: a failed command changed the catalog", st.name)
			}
		}
		if _, ok := st.cmd.GetOp().(*pb.Command_MarkUnreferenced); ok && res.Err == nil && fmt.Sprint(res.IDs) != fmt.Sprint(st.started) {
			t.Errorf("%s: started %v, want %v", st.name, res.IDs, st.started)
		}
		if len(s.unref) != len(st.want) {
			t.Fatalf("%s: %d clocks run, want %d", st.name, len(s.unref), len(st.want))
		}
		for id, want := range st.want {
			if got := since(id); got != want {
				t.Fatalf("%s: chunk %s unreferenced since %d, want %d", st.name, id, got, want)
			}
		}
		checkRefs(t, s)
	}
	data, _ := s.Snapshot()
	restored, err := FromSnapshot(data)
	if err != nil {
		t.Fatal(err)
	}
	if got, ok := restored.UnreferencedSince(y); !ok || got != 50 {
		t.Fatalf("restored clock of y: %d %v, want 50", got, ok)
	}
	old := s.snapshot()
	old.Unreferenced = nil
	b, _ := proto.Marshal(old)
	restored, err = FromSnapshot(b)
	if err != nil {
		t.Fatalf("a snapshot without clocks: %v", err)
	}
	if _, ok := restored.UnreferencedSince(y); ok {
		t.Fatal("a snapshot without clocks restored one")
	}
}
