package replica

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/ddstore/ddstore/chunker"
	"github.com/ddstore/ddstore/internal/testenv"
)

func openPack(t testing.TB, dir string, opts PackOptions) *Pack {
	t.Helper()
	p, err := OpenPack(context.Background(), dir, opts)
	if err != nil {
		t.Fatalf("OpenPack: %v", err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

// reopenPack closes p and opens its directory again.
func reopenPack(t testing.TB, p *Pack, opts PackOptions) *Pack {
	t.Helper()
	if err := p.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	return openPack(t, p.Dir(), opts)
}

// locOf returns where the index says id's record is.
func locOf(t testing.TB, p *Pack, id chunker.ID) packLoc {
	t.Helper()
	sh := p.shard(id)
	sh.mu.RLock()
	defer sh.mu.RUnlock()
	loc, ok := sh.index[id]
	if !ok {
		t.Fatalf("chunk %s is not in the index", id)
	}
	return loc
}

func packPath(p *Pack, num uint32) string { return filepath.Join(p.packDir, packName(num, ".pack")) }

// checkHolds checks that p holds exactly want, every chunk verified, and
// that Walk and Usage agree.
func checkHolds(t testing.TB, p *Pack, want map[chunker.ID]chunker.Encoded) {
	t.Helper()
	ctx := ctxFor(t)
	var sum int64
	n := 0
	if err := p.Walk(ctx, func(id chunker.ID, size int64) error {
		if _, ok := want[id]; !ok {
			t.Errorf("Walk reports %s, which should not be held", id)
		}
		n++
		sum += size
		return nil
	}); err != nil {
		t.Fatalf("Walk: %v", err)
	}
	if n != len(want) {
		t.Errorf("Walk reports %d chunks, want %d", n, len(want))
	}
	if u, err := p.Usage(ctx); err != nil || u != (Usage{Chunks: uint64(n), Bytes: uint64(sum)}) {
		t.Errorf("Usage = %+v, %v; Walk saw %d chunks, %d bytes", u, err, n, sum)
	}
	for id, c := range want {
		got, err := p.Get(ctx, id)
		if err != nil {
			t.Errorf("Get %s: %v", id, err)
			continue
		}
		sameChunk(t, got, c)
	}
}

func TestPackConformance(t *testing.T) {
	for _, tc := range []struct {
		name string
		opts PackOptions
	}{
		{"default", PackOptions{}},
		// Packs of 64 KiB: nearly every Put starts a new pack, and deletes
		// make sealed packs due for compaction while the suite runs.
		{"tiny packs", PackOptions{PackSize: 64 << 10}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := openPack(t, t.TempDir(), tc.opts)
			if p.Kind() != "pack" {
				t.Errorf("Kind = %q", p.Kind())
			}
			testStore(t, p)
			if err := p.Close(); err != nil {
				t.Fatalf("Close: %v", err)
			}
			testClosed(t, p)
		})
	}
}

func TestPackLock(t *testing.T) {
	dir := t.TempDir()
	p := openPack(t, dir, PackOptions{})
	for name, open := range map[string]func() (Store, error){
		"pack":  func() (Store, error) { return OpenPack(context.Background(), dir, PackOptions{}) },
		"local": func() (Store, error) { return OpenLocal(dir) },
	} {
		s, err := open()
		if !errors.Is(err, ErrLocked) {
			if s != nil {
				s.Close()
			}
			t.Fatalf("second open (%s): err = %v, want ErrLocked", name, err)
		}
		if !strings.Contains(err.Error(), dir) {
			t.Errorf("error %q does not name the directory", err)
		}
	}
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	openPack(t, dir, PackOptions{})
}

func TestPackPutRejectsBadSize(t *testing.T) {
	p := openPack(t, t.TempDir(), PackOptions{})
	ctx := ctxFor(t)
	for _, c := range []chunker.Encoded{
		{RawSize: -1},
		{RawSize: chunker.MaxRawSize + 1},
		{RawSize: 1, Data: make([]byte, packMaxData+1)},
	} {
		if _, err := p.Put(ctx, c); !errors.Is(err, chunker.ErrBadEncoded) {
			t.Errorf("Put raw size %d, %d bytes: err = %v, want chunker.ErrBadEncoded", c.RawSize, len(c.Data), err)
		}
	}
}

// TestPackReopen: after a reopen the store holds the same chunks, whether
// the packs are replayed from their index files, scanned because an index
// is missing, or scanned because an index is damaged or stale.
func TestPackReopen(t *testing.T) {
	for _, tc := range []struct {
		name   string
		damage func(t *testing.T, idx []string)
	}{
		{"indexes", func(*testing.T, []string) {}},
		{"indexes removed", func(t *testing.T, idx []string) {
			for _, f := range idx {
				if err := os.Remove(f); err != nil {
					t.Fatal(err)
				}
			}
		}},
		{"index flipped", func(t *testing.T, idx []string) { flipByte(30)(t, idx[0]) }},
		{"index truncated", func(t *testing.T, idx []string) { truncateTo(-3)(t, idx[len(idx)-1]) }},
		{"index of another pack", func(t *testing.T, idx []string) {
			b, err := os.ReadFile(idx[0])
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(idx[1], b, 0o644); err != nil {
				t.Fatal(err)
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := ctxFor(t)
			codecs := chunker.NewCodecs()
			opts := PackOptions{PackSize: 256 << 10, CompactBelow: -1}
			p := openPack(t, t.TempDir(), opts)
			want := map[chunker.ID]chunker.Encoded{}
			var all []chunker.Encoded
			for i := range 40 {
				var c chunker.Encoded
				if i%2 == 0 {
					c = encode(t, codecs, randomBytes(t, 20<<10+i), chunker.Raw)
				} else {
					c = encode(t, codecs, compressible(tc.name+string(rune('a'+i)), 60<<10), chunker.Zstd)
				}
				if _, err := p.Put(ctx, c); err != nil {
					t.Fatal(err)
				}
				want[c.ID] = c
				all = append(all, c)
			}
			for i := 0; i < len(all); i += 3 {
				if err := p.Delete(ctx, all[i].ID); err != nil {
					t.Fatal(err)
				}
				delete(want, all[i].ID)
			}
			// Deleted, then stored again: the later record wins.
			if _, err := p.Put(ctx, all[0]); err != nil {
				t.Fatal(err)
			}
			want[all[0].ID] = all[0]
			checkHolds(t, p, want)
			if err := p.Close(); err != nil {
				t.Fatal(err)
			}
			idx, _ := filepath.Glob(filepath.Join(p.packDir, "*.idx"))
			if len(idx) < 2 {
				t.Fatalf("%d index files, want several", len(idx))
			}
			tc.damage(t, idx)
			p = openPack(t, p.Dir(), opts)
			checkHolds(t, p, want)
			if s := p.Stats(); s.TornTails != 0 || s.SkippedBytes != 0 {
				t.Errorf("stats after a clean reopen: %+v", s)
			}
			// The store goes on: write, reopen, read.
			c := encode(t, codecs, randomBytes(t, 5000), chunker.Raw)
			if w, err := p.Put(ctx, c); err != nil || !w {
				t.Fatalf("Put after reopen = %v, %v", w, err)
			}
			want[c.ID] = c
			p = reopenPack(t, p, opts)
			checkHolds(t, p, want)
		})
	}
}

// TestPackTornTail damages the end of the active pack as a crash mid-append
// would (a partial record, or one whose bytes did not all reach the disk):
// the next open cuts the torn record off and serves every other chunk; the
// store then appends after the cut.
func TestPackTornTail(t *testing.T) {
	for _, tc := range []struct {
		name string
		// damage gets the pack's path, the last record's offset and length.
		damage func(t *testing.T, path string, off, n int64)
	}{
		{"cut mid-data", func(t *testing.T, path string, off, n int64) { truncateTo(off+n-100)(t, path) }},
		{"cut mid-header", func(t *testing.T, path string, off, n int64) { truncateTo(off+20)(t, path) }},
		{"cut after the magic", func(t *testing.T, path string, off, n int64) { truncateTo(off+4)(t, path) }},
		{"data flipped", func(t *testing.T, path string, off, n int64) { flipByte(off+n-1)(t, path) }},
		{"first data byte flipped", func(t *testing.T, path string, off, n int64) { flipByte(off+packHdrLen)(t, path) }},
		{"header ID flipped", func(t *testing.T, path string, off, n int64) { flipByte(off+9)(t, path) }},
		{"length flipped", func(t *testing.T, path string, off, n int64) { flipByte(off+46)(t, path) }},
		{"data zeroed", func(t *testing.T, path string, off, n int64) {
			writeAt(t, path, off+packHdrLen, make([]byte, n-packHdrLen))
		}},
		{"zeros appended", func(t *testing.T, path string, off, n int64) {
			flipByte(off+n-1)(t, path)
			writeAt(t, path, off+n, make([]byte, 8192))
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := ctxFor(t)
			codecs := chunker.NewCodecs()
			p := openPack(t, t.TempDir(), PackOptions{})
			want := map[chunker.ID]chunker.Encoded{}
			var last chunker.Encoded
			for i := range 10 {
				last = encode(t, codecs, randomBytes(t, 30<<10+i), chunker.Raw)
				if _, err := p.Put(ctx, last); err != nil {
					t.Fatal(err)
				}
				want[last.ID] = last
			}
			delete(want, last.ID)
			loc := locOf(t, p, last.ID)
			path := packPath(p, loc.pack)
			if err := p.Close(); err != nil {
				t.Fatal(err)
			}
			tc.damage(t, path, int64(loc.off), int64(loc.len))
			p = openPack(t, p.Dir(), PackOptions{})
			checkHolds(t, p, want)
			if ok, _ := p.Has(ctx, last.ID); ok {
				t.Error("the torn record is served")
			}
			s := p.Stats()
			if s.TornTails != 1 || s.TornBytes <= 0 {
				t.Errorf("stats: %d torn tails, %d bytes; want 1 and some", s.TornTails, s.TornBytes)
			}
			if fi, err := os.Stat(path); err != nil || fi.Size() != int64(loc.off) {
				t.Errorf("pack is %v bytes after the cut (%v), want %d", fi.Size(), err, loc.off)
			}
			// The store appends after the cut, and it survives a reopen.
			if w, err := p.Put(ctx, last); err != nil || !w {
				t.Fatalf("Put of the torn chunk = %v, %v", w, err)
			}
			want[last.ID] = last
			p = reopenPack(t, p, PackOptions{})
			checkHolds(t, p, want)
			if s := p.Stats(); s.TornTails != 0 {
				t.Errorf("%d torn tails at the second reopen", s.TornTails)
			}
		})
	}
}

// TestPackDamageInTheMiddle: a damaged record in a pack being scanned, with
// intact records after it, is skipped (not served); the records after it
// are kept.
func TestPackDamageInTheMiddle(t *testing.T) {
	ctx := ctxFor(t)
	codecs := chunker.NewCodecs()
	p := openPack(t, t.TempDir(), PackOptions{})
	want := map[chunker.ID]chunker.Encoded{}
	var cs []chunker.Encoded
	for i := range 8 {
		c := encode(t, codecs, randomBytes(t, 10<<10+i), chunker.Raw)
		if _, err := p.Put(ctx, c); err != nil {
			t.Fatal(err)
		}
		want[c.ID] = c
		cs = append(cs, c)
	}
	bad := cs[3]
	loc := locOf(t, p, bad.ID)
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	flipByte(int64(loc.off)+7)(t, packPath(p, loc.pack)) // inside the header
	delete(want, bad.ID)
	p = openPack(t, p.Dir(), PackOptions{})
	checkHolds(t, p, want)
	if s := p.Stats(); s.SkippedBytes != int64(loc.len) || s.TornTails != 0 {
		t.Errorf("stats: skipped %d bytes, %d torn tails; want %d and 0", s.SkippedBytes, s.TornTails, loc.len)
	}
}

// TestPackCorrupt damages records in a sealed pack (served from its index
// file): Get reports chunker.ErrCorrupt, copies the record to the
// quarantine and forgets the chunk, for good (a tombstone), until it is
// stored again.
func TestPackCorrupt(t *testing.T) {
	codecs := chunker.NewCodecs()
	for _, tc := range []struct {
		name   string
		codec  chunker.Codec
		damage func(t *testing.T, path string, off, n int64)
	}{
		{"FlipRawData", chunker.Raw, func(t *testing.T, p string, off, n int64) { flipByte(off+n-1)(t, p) }},
		{"FlipZstdData", chunker.Zstd, func(t *testing.T, p string, off, n int64) { flipByte(off+n-1)(t, p) }},
		{"FlipMagic", chunker.Raw, func(t *testing.T, p string, off, n int64) { flipByte(off)(t, p) }},
		{"FlipCodec", chunker.Raw, func(t *testing.T, p string, off, n int64) { flipByte(off+5)(t, p) }},
		{"FlipRawSize", chunker.Zstd, func(t *testing.T, p string, off, n int64) { flipByte(off+43)(t, p) }},
		// A record whose checksums hold but whose bytes are not the ID's
		// (e.g. a bug that wrote the wrong chunk): only verification sees it.
		{"WrongChunkConsistentRecord", chunker.Raw, func(t *testing.T, p string, off, n int64) {
			b := make([]byte, n)
			f, err := os.Open(p)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			if _, err := f.ReadAt(b, off); err != nil {
				t.Fatal(err)
			}
			h, err := parseRecord(b)
			if err != nil {
				t.Fatal(err)
			}
			data := b[packHdrLen:]
			data[0] ^= 0xff
			recordHeader(b[:packHdrLen], recChunk, h.codec, h.id, int(h.rawSize), data, 0)
			writeAt(t, p, off, b)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := ctxFor(t)
			opts := PackOptions{PackSize: 128 << 10, CompactBelow: -1}
			p := openPack(t, t.TempDir(), opts)
			var raw []byte
			if tc.codec == chunker.Zstd {
				raw = compressible(tc.name, 64<<10)
			} else {
				raw = randomBytes(t, 64<<10)
			}
			c := encode(t, codecs, raw, tc.codec)
			other := encode(t, codecs, randomBytes(t, 1000), chunker.Raw)
			filler := encode(t, codecs, randomBytes(t, 128<<10), chunker.Raw)
			for _, x := range []chunker.Encoded{c, other, filler} {
				if _, err := p.Put(ctx, x); err != nil {
					t.Fatal(err)
				}
			}
			loc := locOf(t, p, c.ID)
			p = reopenPack(t, p, opts) // c's pack is sealed, with an index
			if !p.packOf(loc.pack).indexed.Load() {
				t.Fatal("the damaged pack has no index file")
			}
			tc.damage(t, packPath(p, loc.pack), int64(loc.off), int64(loc.len))

			_, err := p.Get(ctx, c.ID)
			if !errors.Is(err, chunker.ErrCorrupt) {
				t.Fatalf("Get damaged chunk: err = %v, want chunker.ErrCorrupt", err)
			}
			if ok, err := p.Has(ctx, c.ID); err != nil || ok {
				t.Errorf("Has after quarantine = %v, %v; want false, nil", ok, err)
			}
			if _, err := p.Get(ctx, c.ID); !errors.Is(err, ErrNotFound) {
				t.Errorf("second Get: err = %v, want ErrNotFound", err)
			}
			h := c.ID.String()
			q, err := os.ReadDir(filepath.Join(p.Dir(), "quarantine"))
			if err != nil || len(q) != 1 || !strings.HasPrefix(q[0].Name(), h+".") {
				t.Errorf("quarantine holds %v (%v), want one file named %s.<time>", q, err, h)
			} else if b, _ := os.ReadFile(filepath.Join(p.Dir(), "quarantine", q[0].Name())); len(b) != int(loc.len) {
				t.Errorf("quarantined record has %d bytes, want %d", len(b), loc.len)
			}
			want := map[chunker.ID]chunker.Encoded{other.ID: other, filler.ID: filler}
			checkHolds(t, p, want)
			// Still gone after a reopen: the tombstone is durable.
			p = reopenPack(t, p, opts)
			checkHolds(t, p, want)
			if w, err := p.Put(ctx, c); err != nil || !w {
				t.Errorf("Put after quarantine = %v, %v; want true, nil", w, err)
			}
			want[c.ID] = c
			p = reopenPack(t, p, opts)
			checkHolds(t, p, want)
		})
	}
}

// TestPackGroupCommit: concurrent writers share syncs.
func TestPackGroupCommit(t *testing.T) {
	ctx := ctxFor(t)
	codecs := chunker.NewCodecs()
	p := openPack(t, t.TempDir(), PackOptions{})
	const writers, each = 16, 20
	cs := make([][]chunker.Encoded, writers)
	for w := range cs {
		for range each {
			cs[w] = append(cs[w], encode(t, codecs, randomBytes(t, 16<<10), chunker.Raw))
		}
	}
	before := p.Stats().Syncs
	var wg sync.WaitGroup
	errs := make(chan error, writers)
	for w := range writers {
		wg.Go(func() {
			for _, c := range cs[w] {
				if written, err := p.Put(ctx, c); err != nil || !written {
					errs <- errors.Join(err, errors.New("not written"))
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	syncs := p.Stats().Syncs - before
	t.Logf("%d puts from %d writers took %d syncs", writers*each, writers, syncs)
	if syncs >= writers*each/2 {
		t.Errorf("%d syncs for %d concurrent puts: they were not grouped", syncs, writers*each)
	}
}

// TestPackCompaction: deleting most chunks makes sealed packs due; they are
// compacted (in the background, and by Compact) while readers and writers
// go on, the space comes back, and every live chunk stays readable, before
// and after a reopen; deleted chunks stay deleted.
func TestPackCompaction(t *testing.T) {
	ctx := ctxFor(t)
	codecs := chunker.NewCodecs()
	opts := PackOptions{PackSize: 512 << 10}
	p := openPack(t, t.TempDir(), opts)
	want := map[chunker.ID]chunker.Encoded{}
	var all []chunker.Encoded
	for i := range 64 {
		c := encode(t, codecs, randomBytes(t, 32<<10+i), chunker.Raw)
		if _, err := p.Put(ctx, c); err != nil {
			t.Fatal(err)
		}
		want[c.ID] = c
		all = append(all, c)
	}
	before := p.Stats()
	var mu sync.Mutex // guards want while readers run
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for r := range 2 {
		wg.Go(func() {
			for i := r; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				mu.Lock()
				c := all[i%len(all)]
				_, live := want[c.ID]
				mu.Unlock()
				got, err := p.Get(ctx, c.ID)
				if live && err != nil && !errors.Is(err, ErrNotFound) {
					t.Errorf("Get during compaction: %v", err)
					return
				}
				if err == nil && !bytes.Equal(got.Data, c.Data) {
					t.Errorf("Get during compaction returned other bytes")
					return
				}
			}
		})
	}
	var extra []chunker.Encoded
	for i, c := range all {
		if i%4 == 0 {
			continue
		}
		mu.Lock()
		delete(want, c.ID)
		mu.Unlock()
		if err := p.Delete(ctx, c.ID); err != nil {
			t.Fatal(err)
		}
		if i%8 == 1 { // writers go on too
			x := encode(t, codecs, randomBytes(t, 16<<10), chunker.Raw)
			if _, err := p.Put(ctx, x); err != nil {
				t.Fatal(err)
			}
			extra = append(extra, x)
		}
	}
	if _, err := p.Compact(ctx); err != nil {
		t.Fatalf("Compact: %v", err)
	}
	close(stop)
	wg.Wait()
	for _, x := range extra {
		want[x.ID] = x
	}
	after := p.Stats()
	t.Logf("before: %+v", before)
	t.Logf("after:  %+v", after)
	if after.Compactions == 0 || after.FileBytes >= before.FileBytes {
		t.Errorf("%d compactions; files went from %d to %d bytes", after.Compactions, before.FileBytes, after.FileBytes)
	}
	// What compaction guarantees: no sealed pack is left below the
	// threshold.
	p.packMu.Lock()
	for _, pf := range p.packs {
		if frac := float64(pf.live.Load()) / float64(pf.size.Load()); pf.sealed.Load() && frac < 0.5 {
			t.Errorf("sealed pack %d is %.2f live after compaction", pf.num, frac)
		}
	}
	p.packMu.Unlock()
	if u, _ := p.Usage(ctx); int64(u.Bytes) != after.LiveBytes {
		t.Errorf("packs count %d live bytes, Usage %d", after.LiveBytes, u.Bytes)
	}
	if ents, _ := os.ReadDir(p.packDir); len(ents) > 2*after.Packs {
		t.Errorf("%d files in packs/ for %d packs", len(ents), after.Packs)
	}
	if _, err := os.Stat(filepath.Join(p.Dir(), packMarkerName)); err == nil {
		t.Error("the COMPACTING file is left behind")
	}
	checkHolds(t, p, want)
	p = reopenPack(t, p, opts)
	checkHolds(t, p, want)
}

// TestPackCompactionTombstones: a tombstone that hides a record in another
// pack outlives the compaction of its own pack, unless its chunk was stored
// again since.
func TestPackCompactionTombstones(t *testing.T) {
	ctx := ctxFor(t)
	codecs := chunker.NewCodecs()
	opts := PackOptions{PackSize: 256 << 10, CompactBelow: -1}
	p := openPack(t, t.TempDir(), opts)
	put := func(c chunker.Encoded) {
		t.Helper()
		if _, err := p.Put(ctx, c); err != nil {
			t.Fatal(err)
		}
	}
	// Pack 1: x, y and filler that stays live, so pack 1 is never due.
	x := encode(t, codecs, randomBytes(t, 10<<10), chunker.Raw)
	y := encode(t, codecs, randomBytes(t, 10<<10), chunker.Raw)
	keep := encode(t, codecs, randomBytes(t, 200<<10), chunker.Raw)
	put(x)
	put(y)
	put(keep)
	// Pack 2: tombstones of x and y, y stored again, and a big chunk
	// deleted at once, so pack 2 is due.
	gone := encode(t, codecs, randomBytes(t, 200<<10), chunker.Raw)
	put(gone)
	for _, id := range []chunker.ID{x.ID, y.ID} {
		if err := p.Delete(ctx, id); err != nil {
			t.Fatal(err)
		}
	}
	put(y)
	if err := p.Delete(ctx, gone.ID); err != nil {
		t.Fatal(err)
	}
	if locOf(t, p, keep.ID).pack != 1 || locOf(t, p, y.ID).pack != 2 {
		t.Fatalf("layout: keep in pack %d, y in pack %d; want 1 and 2", locOf(t, p, keep.ID).pack, locOf(t, p, y.ID).pack)
	}
	// Seal pack 2.
	put(encode(t, codecs, randomBytes(t, 250<<10), chunker.Raw))
	n, err := p.Compact(ctx)
	if err != nil || n != 1 {
		t.Fatalf("Compact = %d, %v; want 1 pack (pack 2)", n, err)
	}
	if p.packOf(2) != nil || p.packOf(1) == nil {
		t.Fatal("pack 2 not compacted, or pack 1 compacted")
	}
	p = reopenPack(t, p, opts)
	for _, c := range []chunker.Encoded{x, gone} {
		if ok, _ := p.Has(ctx, c.ID); ok {
			t.Errorf("deleted chunk %s came back after compaction and reopen", c.ID)
		}
	}
	if ok, _ := p.Has(ctx, y.ID); !ok {
		t.Error("a chunk stored again after its deletion is lost after compaction and reopen")
	}
	if _, err := p.Get(ctx, keep.ID); err != nil {
		t.Errorf("Get of a chunk of the pack left alone: %v", err)
	}
}

// TestPackMigrate: a directory of the per-file layout is moved into packs
// when a Pack opens it; a corrupt chunk file goes to the quarantine.
func TestPackMigrate(t *testing.T) {
	ctx := ctxFor(t)
	codecs := chunker.NewCodecs()
	dir := t.TempDir()
	l, err := OpenLocal(dir)
	if err != nil {
		t.Fatal(err)
	}
	want := map[chunker.ID]chunker.Encoded{}
	for i := range 30 {
		c := encode(t, codecs, randomBytes(t, 5000+i), chunker.Raw)
		if _, err := l.Put(ctx, c); err != nil {
			t.Fatal(err)
		}
		want[c.ID] = c
	}
	bad := encode(t, codecs, compressible("bad", 20000), chunker.Zstd)
	if _, err := l.Put(ctx, bad); err != nil {
		t.Fatal(err)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	h := bad.ID.String()
	flipByte(-1)(t, filepath.Join(dir, h[:2], h))
	stray := filepath.Join(dir, "ab", "not-a-chunk")
	if err := os.MkdirAll(filepath.Dir(stray), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(stray, []byte("junk"), 0o644); err != nil {
		t.Fatal(err)
	}

	p := openPack(t, dir, PackOptions{})
	if s := p.Stats(); s.Migrated != int64(len(want)) {
		t.Errorf("migrated %d chunks, want %d", s.Migrated, len(want))
	}
	checkHolds(t, p, want)
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		if len(e.Name()) == 2 && e.Name() != "ab" {
			t.Errorf("fan-out directory %s left behind", e.Name())
		}
	}
	if _, err := os.Stat(stray); err != nil {
		t.Errorf("a stray file was not left alone: %v", err)
	}
	if q, _ := os.ReadDir(filepath.Join(dir, "quarantine")); len(q) != 1 || !strings.HasPrefix(q[0].Name(), h+".") {
		t.Errorf("quarantine holds %v, want the corrupt chunk file", q)
	}
	p = reopenPack(t, p, PackOptions{})
	checkHolds(t, p, want)
	if s := p.Stats(); s.Migrated != 0 {
		t.Errorf("migrated %d chunks at the second open", s.Migrated)
	}
}

// TestPackDiskFull fills a real tmpfs under a pack store, as
// TestLocalDiskFull does: a Put that finds no room fails with ErrNoSpace and
// leaves nothing behind, CheckSpace says so, and both recover once space is
// freed.
func TestPackDiskFull(t *testing.T) {
	fs, err := testenv.MountTmpfs(filepath.Join(t.TempDir(), "disk"), 16<<20)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { fs.Unmount() })
	opts := PackOptions{PackSize: 4 << 20}
	p := openPack(t, filepath.Join(fs.Dir, "chunks"), opts)
	ctx := ctxFor(t)
	codecs := chunker.NewCodecs()
	if err := p.CheckSpace(ctx); err != nil {
		t.Fatalf("CheckSpace on an empty disk: %v", err)
	}
	first := randomChunk(t, codecs, 1<<20)
	if _, err := p.Put(ctx, first); err != nil {
		t.Fatal(err)
	}
	if _, err := fs.Fill("ballast"); err != nil {
		t.Fatal(err)
	}
	// The pack allocates allocStep ahead of its writes when it can: Puts
	// fill what it holds already, then fail.
	held := map[chunker.ID]chunker.Encoded{first.ID: first}
	var c chunker.Encoded
	for i := 0; ; i++ {
		c = randomChunk(t, codecs, 1<<20)
		_, err := p.Put(ctx, c)
		if errors.Is(err, ErrNoSpace) {
			break
		}
		if err != nil || i > allocStep>>20 {
			t.Fatalf("Put %d on a full disk: %v, want ErrNoSpace once the %d MiB allocated ahead are used", i+1, err, allocStep>>20)
		}
		held[c.ID] = c
	}
	if ok, _ := p.Has(ctx, c.ID); ok {
		t.Error("a failed Put left the chunk behind")
	}
	if err := p.CheckSpace(ctx); !errors.Is(err, ErrNoSpace) {
		t.Errorf("CheckSpace on a full disk: %v, want ErrNoSpace", err)
	}
	if u, _ := p.Usage(ctx); u.Chunks != uint64(len(held)) {
		t.Errorf("usage counts %d chunks after failed puts, want %d", u.Chunks, len(held))
	}
	if err := fs.Shrink("ballast", 0); err != nil {
		t.Fatal(err)
	}
	if err := p.CheckSpace(ctx); err != nil {
		t.Fatalf("CheckSpace after space was freed: %v", err)
	}
	if w, err := p.Put(ctx, c); err != nil || !w {
		t.Fatalf("Put after space was freed: written %v, %v", w, err)
	}
	held[c.ID] = c
	p = reopenPack(t, p, opts)
	checkHolds(t, p, held)
}

// TestPackCloseDuringCompaction: Close stops a background compaction in
// progress (or waits for a Compact call) and the store reopens whole.
func TestPackCloseDuringCompaction(t *testing.T) {
	ctx := ctxFor(t)
	codecs := chunker.NewCodecs()
	opts := PackOptions{PackSize: 64 << 10}
	for round := range 3 {
		p := openPack(t, t.TempDir(), opts)
		want := map[chunker.ID]chunker.Encoded{}
		var all []chunker.Encoded
		for i := range 120 {
			c := encode(t, codecs, randomBytes(t, 8<<10+i), chunker.Raw)
			if _, err := p.Put(ctx, c); err != nil {
				t.Fatal(err)
			}
			want[c.ID] = c
			all = append(all, c)
		}
		for i, c := range all {
			if i%5 != 0 {
				if err := p.Delete(ctx, c.ID); err != nil {
					t.Fatal(err)
				}
				delete(want, c.ID)
			}
		}
		done := make(chan error, 1)
		if round == 1 {
			go func() { _, err := p.Compact(ctx); done <- err }()
		} else {
			done <- nil
		}
		if err := p.Close(); err != nil {
			t.Fatalf("Close: %v", err)
		}
		if err := <-done; err != nil && !errors.Is(err, ErrClosed) {
			t.Errorf("Compact racing Close: %v", err)
		}
		p = openPack(t, p.Dir(), PackOptions{PackSize: 64 << 10, CompactBelow: -1})
		checkHolds(t, p, want)
	}
}

// TestPackDeleteBatch: one sync covers a batch's tombstones, and they are
// durable.
func TestPackDeleteBatch(t *testing.T) {
	ctx := ctxFor(t)
	codecs := chunker.NewCodecs()
	p := openPack(t, t.TempDir(), PackOptions{})
	want := map[chunker.ID]chunker.Encoded{}
	var ids []chunker.ID
	for i := range 50 {
		c := encode(t, codecs, randomBytes(t, 4<<10+i), chunker.Raw)
		if _, err := p.Put(ctx, c); err != nil {
			t.Fatal(err)
		}
		want[c.ID] = c
		if i%2 == 0 {
			ids = append(ids, c.ID)
			delete(want, c.ID)
		}
	}
	ids = append(ids, chunker.Sum([]byte("never stored")))
	before := p.Stats().Syncs
	n, err := p.DeleteBatch(ctx, ids)
	if err != nil || n != len(ids)-1 {
		t.Fatalf("DeleteBatch = %d, %v; want %d, nil", n, err, len(ids)-1)
	}
	if syncs := p.Stats().Syncs - before; syncs >= int64(n)/2 {
		t.Errorf("%d syncs for a batch of %d deletes", syncs, n)
	}
	checkHolds(t, p, want)
	p = reopenPack(t, p, PackOptions{})
	checkHolds(t, p, want)
}

// TestPackDiskFullGivesSpaceBack: on a full disk, deleting every chunk of
// some packs and compacting gives their space back (no copy, no COMPACTING
// file to write), and Puts work again.
func TestPackDiskFullGivesSpaceBack(t *testing.T) {
	fs, err := testenv.MountTmpfs(filepath.Join(t.TempDir(), "disk"), 16<<20)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { fs.Unmount() })
	opts := PackOptions{PackSize: 2 << 20, CompactBelow: -1}
	p := openPack(t, filepath.Join(fs.Dir, "chunks"), opts)
	ctx := ctxFor(t)
	codecs := chunker.NewCodecs()
	var cs []chunker.Encoded
	for range 6 { // one chunk per pack
		c := randomChunk(t, codecs, 1<<20)
		if _, err := p.Put(ctx, c); err != nil {
			t.Fatal(err)
		}
		cs = append(cs, c)
	}
	if _, err := fs.Fill("ballast"); err != nil {
		t.Fatal(err)
	}
	if _, err := p.Put(ctx, randomChunk(t, codecs, 1<<20)); !errors.Is(err, ErrNoSpace) {
		t.Fatalf("Put on a full disk: %v, want ErrNoSpace", err)
	}
	for _, c := range cs[:4] {
		if err := p.Delete(ctx, c.ID); err != nil {
			t.Fatalf("Delete on a full disk: %v", err)
		}
	}
	n, err := p.Compact(ctx)
	if err != nil || n != 4 {
		t.Fatalf("Compact on a full disk = %d, %v; want 4 packs removed", n, err)
	}
	if free, _ := fs.Free(); free < 4<<20 {
		t.Errorf("%d bytes free after compaction, want the 4 MiB of 4 packs", free)
	}
	c := randomChunk(t, codecs, 1<<20)
	if w, err := p.Put(ctx, c); err != nil || !w {
		t.Fatalf("Put after compaction: %v, %v", w, err)
	}
	// Full again, and reopened: a Delete still finds room in the reserve.
	if _, err := fs.Fill("ballast2"); err != nil {
		t.Fatal(err)
	}
	p = reopenPack(t, p, opts)
	if err := p.Delete(ctx, cs[4].ID); err != nil {
		t.Fatalf("Delete on a full disk after a reopen: %v", err)
	}
	p = reopenPack(t, p, opts)
	checkHolds(t, p, map[chunker.ID]chunker.Encoded{cs[5].ID: cs[5], c.ID: c})
}

// TestPackGetUnverified: GetUnverified skips the hash but not the record's
// checksums: damaged bytes are still reported corrupt and quarantined; only
// an intact record of the wrong bytes gets through (Get catches it).
func TestPackGetUnverified(t *testing.T) {
	ctx := ctxFor(t)
	codecs := chunker.NewCodecs()
	p := openPack(t, t.TempDir(), PackOptions{})
	var cs []chunker.Encoded
	for i := range 3 {
		c := encode(t, codecs, compressible(fmt.Sprint("unverified", i), 50<<10), chunker.Zstd)
		if _, err := p.Put(ctx, c); err != nil {
			t.Fatal(err)
		}
		cs = append(cs, c)
	}
	got, err := p.GetUnverified(ctx, cs[0].ID)
	if err != nil {
		t.Fatal(err)
	}
	sameChunk(t, got, cs[0])

	// cs[1]: a flipped data byte fails the CRC.
	loc := locOf(t, p, cs[1].ID)
	flipByte(int64(loc.off+loc.len-1))(t, packPath(p, loc.pack))
	if _, err := p.GetUnverified(ctx, cs[1].ID); !errors.Is(err, chunker.ErrCorrupt) {
		t.Errorf("GetUnverified of a damaged record: %v, want chunker.ErrCorrupt", err)
	}
	if ok, _ := p.Has(ctx, cs[1].ID); ok {
		t.Error("a damaged record was not quarantined")
	}

	// cs[2]: an intact record of other bytes: only Get's hash sees it.
	loc = locOf(t, p, cs[2].ID)
	path := packPath(p, loc.pack)
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	rec := b[loc.off : loc.off+loc.len]
	h, err := parseRecord(rec)
	if err != nil {
		t.Fatal(err)
	}
	data := append([]byte(nil), rec[packHdrLen:]...)
	data[len(data)/2] ^= 0xff
	recordHeader(rec[:packHdrLen], recChunk, h.codec, h.id, int(h.rawSize), data, 0)
	copy(rec[packHdrLen:], data)
	writeAt(t, path, int64(loc.off), rec)
	if got, err := p.GetUnverified(ctx, cs[2].ID); err != nil || bytes.Equal(got.Data, cs[2].Data) {
		t.Errorf("GetUnverified of an intact record of other bytes: %v (same bytes: %v)", err, err == nil)
	}
	if _, err := p.Get(ctx, cs[2].ID); !errors.Is(err, chunker.ErrCorrupt) {
		t.Errorf("Get of an intact record of other bytes: %v, want chunker.ErrCorrupt", err)
	}
}
