package catalog

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"math"
	"math/rand/v2"
	"runtime/metrics"
	"strings"
	"testing"
	"testing/iotest"

	"github.com/bits-and-blooms/bloom/v3"
	"github.com/ddstore/ddstore/internal/blake3"
	"github.com/hashicorp/raft"
	"google.golang.org/protobuf/proto"

	"github.com/ddstore/ddstore/chunker"
	pb "github.com/ddstore/ddstore/proto/ddstore/v1"
)

// Fuzz targets for the decoders of untrusted input in this package: peer
// filters, Raft snapshots and manifests. scripts/fuzz.sh runs them; the
// inputs under testdata/fuzz run with every `go test`.

// bloomBytes is bloom's binary form of a filter: m, k, the bitset's length
// in bits, then its words.
func bloomBytes(m, k, length uint64, words ...uint64) []byte {
	b := binary.BigEndian.AppendUint64(nil, m)
	b = binary.BigEndian.AppendUint64(b, k)
	b = binary.BigEndian.AppendUint64(b, length)
	for _, w := range words {
		b = binary.BigEndian.AppendUint64(b, w)
	}
	return b
}

// filtersBytes frames three bloom encodings as Filters.MarshalBinary does.
func filtersBytes(version uint64, fpRate float64, filters ...[]byte) []byte {
	b := []byte(filtersMagic)
	b = binary.BigEndian.AppendUint64(b, version)
	b = binary.BigEndian.AppendUint64(b, math.Float64bits(fpRate))
	for _, f := range filters {
		b = binary.BigEndian.AppendUint32(b, uint32(len(f)))
		b = append(b, f...)
	}
	return b
}

// smallFilters encodes filters of a few bits, easy for the fuzzer to mutate.
func smallFilters(t testing.TB, m, k uint) []byte {
	f := &Filters{Version: 7, FPRate: 0.01, Dates: bloom.New(m, k), Chunks: bloom.New(m, k), Names: bloom.New(m, k)}
	f.Dates.AddString("2026-01-02")
	f.Names.AddString("a/b")
	id := chunker.Sum([]byte("x"))
	f.Chunks.Add(id[:])
	b, err := f.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// builtFilters encodes the filters of a catalog fed some commands.
func builtFilters(t testing.TB) []byte {
	f := NewFSM()
	for i, cmd := range randomCommands(11, 40) {
		data, _ := EncodeCommand(cmd)
		f.Apply(&raft.Log{Index: uint64(i + 1), Data: data})
	}
	b, err := f.Filters(0.05).MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// hostileFilters are encodings a faulty or hostile peer might send, each
// of which the decoder must refuse.
func hostileFilters(t testing.TB) map[string][]byte {
	good := bloomBytes(64, 3, 64, 0x5)
	valid := smallFilters(t, 100, 2)
	rng := rand.New(rand.NewPCG(1, 2))
	random := make([]byte, 300)
	for i := range random {
		random[i] = byte(rng.Uint32())
	}
	copy(random, filtersMagic)
	return map[string][]byte{
		"empty":              nil,
		"magic only":         []byte(filtersMagic),
		"wrong magic":        append([]byte("DDBF2"), valid[5:]...),
		"m=0":                filtersBytes(1, 0.01, good, bloomBytes(0, 3, 0), good),
		"k=0":                filtersBytes(1, 0.01, good, bloomBytes(64, 0, 64, 1), good),
		"k=2^31":             filtersBytes(1, 0.01, good, good, bloomBytes(64, 1<<31, 64, 1)),
		"bitset 2^40 bits":   filtersBytes(1, 0.01, bloomBytes(1<<40, 3, 1<<40, 1), good, good),
		"m 2^40, bitset 64":  filtersBytes(1, 0.01, bloomBytes(1<<40, 3, 64, 1), good, good),
		"bitset shorter":     filtersBytes(1, 0.01, bloomBytes(128, 3, 64, 1), good, good),
		"bitset longer":      filtersBytes(1, 0.01, bloomBytes(64, 3, 128, 1, 2), good, good),
		"missing words":      filtersBytes(1, 0.01, bloomBytes(128, 3, 128, 1), good, good),
		"extra words":        filtersBytes(1, 0.01, bloomBytes(64, 3, 64, 1, 2), good, good),
		"bits beyond m":      filtersBytes(1, 0.01, bloomBytes(60, 3, 60, 1<<62), good, good),
		"fp NaN":             filtersBytes(1, math.NaN(), good, good, good),
		"fp +Inf":            filtersBytes(1, math.Inf(1), good, good, good),
		"fp 0":               filtersBytes(1, 0, good, good, good),
		"fp 0.5":             filtersBytes(1, 0.5, good, good, good),
		"fp negative":        filtersBytes(1, -0.01, good, good, good),
		"two filters":        filtersBytes(1, 0.01, good, good),
		"four filters":       filtersBytes(1, 0.01, good, good, good, good),
		"trailing garbage":   append(bytes.Clone(valid), 0),
		"truncated":          valid[:len(valid)/2],
		"truncated header":   valid[:20],
		"frame beyond input": append(filtersBytes(1, 0.01, good, good), 0xff, 0xff, 0xff, 0xff),
		"random":             random,
	}
}

func TestUnmarshalFiltersRefusesHostile(t *testing.T) {
	for name, data := range hostileFilters(t) {
		t.Run(name, func(t *testing.T) {
			f, err := UnmarshalFilters(data)
			if !errors.Is(err, ErrInvalid) || f != nil {
				t.Fatalf("UnmarshalFilters = %v, %v; want an error wrapping ErrInvalid", f, err)
			}
		})
	}
	good := bloomBytes(64, 3, 64, 0x5)
	if _, err := UnmarshalFilters(filtersBytes(1, 0.01, good, good, good)); err != nil {
		t.Fatalf("a valid hand-made encoding was refused: %v", err)
	}
}

// TestFiltersZero: missing or zero filters answer "maybe" instead of
// panicking (bloom divides by m, which is 0 in a zero BloomFilter).
func TestFiltersZero(t *testing.T) {
	id := chunker.Sum([]byte("x"))
	for name, f := range map[string]*Filters{
		"nil":          nil,
		"empty":        {},
		"zero filters": {Dates: &bloom.BloomFilter{}, Chunks: &bloom.BloomFilter{}, Names: &bloom.BloomFilter{}},
	} {
		if !f.MayHaveName("a") || !f.MayHaveChunk(id) || !f.MayHaveDates("2026-01-01", "2026-01-03") {
			t.Errorf("%s filters answered \"certainly not\"", name)
		}
		if _, err := f.MarshalBinary(); err == nil {
			t.Errorf("%s filters encoded", name)
		}
	}
}

// allocated returns about the bytes fn allocates on the heap: other
// goroutines count too, and small objects are counted a span at a time, so
// it is an upper bound good for catching large allocations. It reads
// runtime/metrics, which does not stop the world as ReadMemStats does.
func allocated(fn func()) uint64 {
	sample := []metrics.Sample{{Name: "/gc/heap/allocs:bytes"}}
	metrics.Read(sample)
	before := sample[0].Value.Uint64()
	fn()
	metrics.Read(sample)
	return sample[0].Value.Uint64() - before
}

// FuzzUnmarshalFilters: decoding never panics and allocates in proportion
// to the input; a refusal wraps ErrInvalid; an accepted encoding is
// canonical (it re-encodes to the same bytes) and its filters answer.
func FuzzUnmarshalFilters(f *testing.F) {
	f.Add(smallFilters(f, 1, 1))
	f.Add(smallFilters(f, 64, 3))
	f.Add(smallFilters(f, 100, 7))
	f.Add(builtFilters(f))
	for _, data := range hostileFilters(f) {
		f.Add(data)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		var flt *Filters
		var err error
		if n := allocated(func() { flt, err = UnmarshalFilters(data) }); n > 4*uint64(len(data))+1<<20 {
			t.Fatalf("decoding %d bytes allocated %d", len(data), n)
		}
		if err != nil {
			if !errors.Is(err, ErrInvalid) || flt != nil {
				t.Fatalf("UnmarshalFilters = %v, %v; want nil and an error wrapping ErrInvalid", flt, err)
			}
			return
		}
		for _, bf := range []*bloom.BloomFilter{flt.Dates, flt.Chunks, flt.Names} {
			if bf.Cap() < 1 || bf.Cap() > MaxFilterBits || bf.K() < 1 || bf.K() > MaxFilterHashes || bf.BitSet().Len() != bf.Cap() {
				t.Fatalf("accepted a filter of m=%d k=%d over %d bits", bf.Cap(), bf.K(), bf.BitSet().Len())
			}
		}
		if !(flt.FPRate > 0 && flt.FPRate < MaxFPRate) {
			t.Fatalf("accepted false-positive rate %g", flt.FPRate)
		}
		again, err := flt.MarshalBinary()
		if err != nil {
			t.Fatalf("decoded filters do not encode: %v", err)
		}
		if !bytes.Equal(again, data) {
			t.Fatal("decoded filters re-encode to different bytes")
		}
		back, err := UnmarshalFilters(again)
		if err != nil || back.Version != flt.Version || back.FPRate != flt.FPRate ||
			!back.Dates.Equal(flt.Dates) || !back.Chunks.Equal(flt.Chunks) || !back.Names.Equal(flt.Names) {
			t.Fatalf("re-encoded filters decode differently: %v", err)
		}
		flt.MayHaveName("a/b")
		flt.MayHaveChunk(chunker.Sum([]byte("x")))
		flt.MayHaveDates("2026-01-01", "2026-01-31")
	})
}

// frameSnapshot wraps a payload as Persist does.
func frameSnapshot(applied uint64, payload []byte) []byte {
	b := append([]byte(nil), snapMagic[:]...)
	b = binary.BigEndian.AppendUint64(b, applied)
	b = binary.BigEndian.AppendUint64(b, uint64(len(payload)))
	sum := blake3.Sum256(payload)
	b = append(b, sum[:]...)
	return append(b, payload...)
}

// persisted returns a snapshot file of a catalog fed n random commands.
func persisted(t testing.TB, seed uint64, n int) []byte {
	f := NewFSM()
	for i, cmd := range randomCommands(seed, n) {
		data, _ := EncodeCommand(cmd)
		f.Apply(&raft.Log{Index: uint64(i + 1), Data: data})
	}
	if n > 0 {
		data, _ := EncodeCommand(collect(chunker.Sum([]byte("gone-1")), chunker.Sum([]byte("gone-2"))))
		f.Apply(&raft.Log{Index: uint64(n + 1), Data: data})
	}
	snap, err := f.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	var sink memSink
	if err := snap.Persist(&sink); err != nil {
		t.Fatal(err)
	}
	return sink.Bytes()
}

// hostileSnapshots are snapshot payloads that decode but break the
// catalog's rules.
func hostileSnapshots(t testing.TB) map[string]*pb.CatalogSnapshot {
	stored := func(name string, seeds ...string) *pb.FileManifest {
		m := manifest(name, seeds...)
		m.CreatedUnixNano, m.Date = day1, "2026-11-18"
		return m
	}
	node := &pb.NodeInfo{Id: "n1", ApiAddr: "127.0.0.1:1"}
	x := chunker.Sum([]byte("x"))
	bad := stored("b", "y")
	bad.Chunks[0].Id = []byte{1, 2}
	return map[string]*pb.CatalogSnapshot{
		"file twice":                {Files: []*pb.FileManifest{stored("a", "x"), stored("a", "x")}},
		"invalid manifest":          {Files: []*pb.FileManifest{bad}},
		"no creation time":          {Files: []*pb.FileManifest{manifest("a", "x")}},
		"no date":                   {Files: []*pb.FileManifest{func() *pb.FileManifest { m := stored("a", "x"); m.Date = ""; return m }()}},
		"node twice":                {Nodes: []*pb.NodeInfo{node, node}},
		"node without ID":           {Nodes: []*pb.NodeInfo{{ApiAddr: "127.0.0.1:1"}}},
		"node without address":      {Nodes: []*pb.NodeInfo{{Id: "n1"}}},
		"empty node":                {Nodes: []*pb.NodeInfo{{}}},
		"mark twice":                {Collecting: [][]byte{x[:], x[:]}},
		"short mark":                {Collecting: [][]byte{x[:5]}},
		"mark on referenced chunk":  {Files: []*pb.FileManifest{stored("a", "x")}, Collecting: [][]byte{x[:]}},
		"clock twice":               {Unreferenced: []*pb.UnreferencedChunk{{Id: x[:], SinceUnixNano: 1}, {Id: x[:], SinceUnixNano: 2}}},
		"clock without time":        {Unreferenced: []*pb.UnreferencedChunk{{Id: x[:]}}},
		"short clock ID":            {Unreferenced: []*pb.UnreferencedChunk{{Id: x[:7], SinceUnixNano: 1}}},
		"clock on referenced chunk": {Files: []*pb.FileManifest{stored("a", "x")}, Unreferenced: []*pb.UnreferencedChunk{{Id: x[:], SinceUnixNano: 1}}},
	}
}

func TestRestoreRefusesHostile(t *testing.T) {
	cases := map[string][]byte{}
	for name, snap := range hostileSnapshots(t) {
		payload, err := proto.Marshal(snap)
		if err != nil {
			t.Fatal(err)
		}
		cases[name] = frameSnapshot(1, payload)
	}
	valid := persisted(t, 3, 50)
	claim := bytes.Clone(valid)
	binary.BigEndian.PutUint64(claim[16:], 1<<40)
	cases["claims 2^40 bytes"] = claim
	binary.BigEndian.PutUint64(claim[16:], MaxSnapshotSize)
	cases["claims the limit, holds little"] = claim
	cases["trailing byte"] = append(bytes.Clone(valid), 0)
	cases["truncated"] = valid[:len(valid)-1]
	cases["not protobuf"] = frameSnapshot(1, []byte{0xff, 0xff, 0xff})
	for name, data := range cases {
		t.Run(name, func(t *testing.T) {
			f := NewFSM()
			if err := f.Restore(io.NopCloser(bytes.NewReader(valid))); err != nil {
				t.Fatal(err)
			}
			var before []byte
			f.Read(func(s *State) { before, _ = s.Snapshot() })
			applied := f.LastApplied()
			var err error
			if n := allocated(func() { err = f.Restore(io.NopCloser(bytes.NewReader(data))) }); n > 16*uint64(len(data))+4<<20 {
				t.Errorf("restoring %d bytes allocated %d", len(data), n)
			}
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("Restore = %v, want an error wrapping ErrInvalid", err)
			}
			var after []byte
			f.Read(func(s *State) { after, _ = s.Snapshot() })
			if !bytes.Equal(before, after) || f.LastApplied() != applied {
				t.Fatal("a failed restore changed the catalog")
			}
		})
	}
}

// TestRestoreTrickle: a snapshot read a little at a time, through the
// growing buffer, restores the same catalog.
func TestRestoreTrickle(t *testing.T) {
	big, err := proto.Marshal(&pb.CatalogSnapshot{Nodes: []*pb.NodeInfo{{Id: "n1", ApiAddr: strings.Repeat("a", 3<<20+17)}}})
	if err != nil {
		t.Fatal(err)
	}
	for name, valid := range map[string][]byte{"small": persisted(t, 4, 200), "3 MiB": frameSnapshot(5, big)} {
		f, g := NewFSM(), NewFSM()
		if err := f.Restore(io.NopCloser(bytes.NewReader(valid))); err != nil {
			t.Fatal(name, err)
		}
		if err := g.Restore(io.NopCloser(iotest.HalfReader(bytes.NewReader(valid)))); err != nil {
			t.Fatal(name, err)
		}
		var a, b []byte
		f.Read(func(s *State) { a, _ = s.Snapshot() })
		g.Read(func(s *State) { b, _ = s.Snapshot() })
		if !bytes.Equal(a, b) || f.LastApplied() != g.LastApplied() {
			t.Fatalf("%s: a trickled snapshot restores differently", name)
		}
		if err := NewFSM().Restore(io.NopCloser(iotest.HalfReader(bytes.NewReader(valid[:len(valid)-1])))); !errors.Is(err, ErrInvalid) {
			t.Fatalf("%s: truncated: %v", name, err)
		}
	}
}

// FuzzSnapshotRestore restores arbitrary snapshots into a catalog that
// holds files: framed=true feeds data as the snapshot file, framed=false
// as the payload under a valid header (the fuzzer cannot forge a BLAKE3
// sum). Restore never panics; a refusal wraps ErrInvalid and leaves the
// catalog as it was; an accepted snapshot gives a catalog whose counts add
// up, whose every file is valid, and whose snapshot restores to itself.
func FuzzSnapshotRestore(f *testing.F) {
	for _, n := range []int{0, 5, 60} {
		file := persisted(f, uint64(n), n)
		f.Add(file, true)
		f.Add(file[snapHeaderLen:], false)
	}
	for _, snap := range hostileSnapshots(f) {
		payload, _ := proto.Marshal(snap)
		f.Add(payload, false)
	}
	valid := persisted(f, 1, 10)
	claim := bytes.Clone(valid)
	binary.BigEndian.PutUint64(claim[16:], 1<<40)
	f.Add(claim, true)
	f.Add(valid[:len(valid)-1], true)
	f.Add(append(bytes.Clone(valid), 0), true)
	f.Add([]byte("random bytes, not a snapshot at all"), true)

	base := persisted(f, 9, 30)
	f.Fuzz(func(t *testing.T, data []byte, framed bool) {
		file := data
		if !framed {
			file = frameSnapshot(1234, data)
		}
		fsm := NewFSM()
		if err := fsm.Restore(io.NopCloser(bytes.NewReader(base))); err != nil {
			t.Fatal(err)
		}
		var before []byte
		fsm.Read(func(s *State) { before, _ = s.Snapshot() })
		applied, filesVersion := fsm.LastApplied(), fsm.FilesVersion()
		err := fsm.Restore(io.NopCloser(bytes.NewReader(file)))
		if !framed {
			if _, direct := FromSnapshot(data); (direct == nil) != (err == nil) {
				t.Fatalf("Restore says %v, FromSnapshot %v", err, direct)
			}
		}
		if err != nil {
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("Restore = %v, want an error wrapping ErrInvalid", err)
			}
			var after []byte
			fsm.Read(func(s *State) { after, _ = s.Snapshot() })
			if !bytes.Equal(before, after) || fsm.LastApplied() != applied || fsm.FilesVersion() != filesVersion {
				t.Fatal("a failed restore changed the catalog")
			}
			return
		}
		fsm.Read(func(s *State) {
			checkRefs(t, s)
			for _, m := range s.files {
				if err := ValidateManifest(m); err != nil {
					t.Fatalf("restored an invalid manifest: %v", err)
				}
			}
			for id := range s.collecting {
				if s.refs[id] != 0 {
					t.Fatalf("restored a mark on referenced chunk %s", id)
				}
			}
			snap, err := s.Snapshot()
			if err != nil {
				t.Fatal(err)
			}
			again, err := FromSnapshot(snap)
			if err != nil {
				t.Fatalf("restored catalog does not restore: %v", err)
			}
			if snap2, _ := again.Snapshot(); !bytes.Equal(snap, snap2) {
				t.Fatal("restored catalog's snapshot does not round-trip")
			}
		})
		fsm.Filters(0.01).MayHaveName("f1") // filters build over what was restored
	})
}

// hostileManifests are protobuf-decodable manifests that break the rules.
func hostileManifests() map[string]*pb.FileManifest {
	mk := func(change func(m *pb.FileManifest)) *pb.FileManifest {
		m := manifest("dir/f", "a", "b")
		change(m)
		return m
	}
	return map[string]*pb.FileManifest{
		"no chunks, size": mk(func(m *pb.FileManifest) { m.Chunks = nil }),
		"empty chunk":     mk(func(m *pb.FileManifest) { m.Chunks = append(m.Chunks, &pb.ChunkRef{}) }),
		"huge size":       mk(func(m *pb.FileManifest) { m.Size = math.MaxUint64 }),
		"offset near 2^64": mk(func(m *pb.FileManifest) {
			m.Chunks = []*pb.ChunkRef{{Id: m.Chunks[0].Id, Offset: math.MaxUint64 - 10, RawSize: 100, StoredSize: 1}}
		}),
		"long ID":         mk(func(m *pb.FileManifest) { m.Chunks[0].Id = make([]byte, 33) }),
		"no hash":         mk(func(m *pb.FileManifest) { m.Blake3 = nil }),
		"stored > raw":    mk(func(m *pb.FileManifest) { m.Chunks[0].StoredSize = 101 }),
		"stored mismatch": mk(func(m *pb.FileManifest) { m.StoredSize = math.MaxUint64 }),
		"bad UTF-8 name":  mk(func(m *pb.FileManifest) { m.Name = "\xff" }),
		"bad metadata":    mk(func(m *pb.FileManifest) { m.Metadata = map[string]string{"": "x"} }),
		"huge metadata":   mk(func(m *pb.FileManifest) { m.Metadata = map[string]string{"k": strings.Repeat("v", MaxMetadataBytes)} }),
	}
}

func TestValidateManifestHostile(t *testing.T) {
	cases := hostileManifests()
	cases["nil chunk"] = func() *pb.FileManifest {
		m := manifest("f", "a")
		m.Chunks = append(m.Chunks, nil)
		return m
	}()
	cases["nil"] = nil
	for name, m := range cases {
		if err := ValidateManifest(m); !errors.Is(err, ErrInvalid) {
			t.Errorf("%s: ValidateManifest = %v, want an error wrapping ErrInvalid", name, err)
		}
	}
}

// FuzzValidateManifest validates arbitrary protobuf-decodable manifests:
// never a panic, a refusal wraps ErrInvalid, and an accepted manifest
// adds up (checked here independently) and is one the catalog stores and
// restores.
func FuzzValidateManifest(f *testing.F) {
	add := func(m *pb.FileManifest) {
		// Some hostile manifests (invalid UTF-8) do not encode, nor would
		// they decode.
		if b, err := (proto.MarshalOptions{Deterministic: true}).Marshal(m); err == nil {
			f.Add(b)
		}
	}
	add(manifest("a"))
	add(manifest("dir/f", "a", "b", "c"))
	m := manifest("données/été.csv", "x")
	m.Date, m.Metadata = "2026-02-28", map[string]string{"owner": "me", "k": ""}
	add(m)
	for _, m := range hostileManifests() {
		add(m)
	}
	f.Add([]byte("\x0a\x01a\x12\x00\xff"))
	f.Fuzz(func(t *testing.T, data []byte) {
		m := &pb.FileManifest{}
		if proto.Unmarshal(data, m) != nil {
			return
		}
		if err := ValidateManifest(m); err != nil {
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("ValidateManifest = %v, want an error wrapping ErrInvalid", err)
			}
			return
		}
		if ValidateName(m.GetName()) != nil || len(m.GetBlake3()) != chunker.IDSize {
			t.Fatal("accepted a bad name or hash")
		}
		var offset, stored uint64
		for _, c := range m.GetChunks() {
			if len(c.GetId()) != chunker.IDSize || c.GetOffset() != offset ||
				c.GetRawSize() < 1 || c.GetRawSize() > chunker.MaxRawSize || c.GetStoredSize() < 1 || c.GetStoredSize() > c.GetRawSize() {
				t.Fatalf("accepted chunk %v", c)
			}
			if offset+uint64(c.GetRawSize()) < offset {
				t.Fatal("accepted chunks beyond 2^64 bytes")
			}
			offset += uint64(c.GetRawSize())
			stored += uint64(c.GetStoredSize())
		}
		if offset != m.GetSize() || stored != m.GetStoredSize() {
			t.Fatalf("chunks sum to %d (%d stored), manifest says %d (%d)", offset, stored, m.GetSize(), m.GetStoredSize())
		}
		s := NewState()
		if res := Apply(s, put(m, day1, false)); res.Err != nil {
			t.Fatalf("a valid manifest is not stored: %v", res.Err)
		}
		snap, _ := s.Snapshot()
		if _, err := FromSnapshot(snap); err != nil {
			t.Fatalf("a stored valid manifest does not restore: %v", err)
		}
	})
}
