package replica

import (
	"bytes"
	"context"
	"crypto/rand"
	"testing"

	"github.com/ddstore/ddstore/chunker"
	"github.com/ddstore/ddstore/internal/testenv"
)

func randomChunk(t testing.TB, codecs *chunker.Codecs, n int) chunker.Encoded {
	t.Helper()
	b := make([]byte, n)
	rand.Read(b)
	return codecs.Encode(b)
}

// TestMemoryScanResistant: a sequential read of many chunks, each seen once,
// does not flush chunks that are read again and again.
func TestMemoryScanResistant(t *testing.T) {
	ctx := context.Background()
	codecs := chunker.NewCodecs()
	m := NewMemory(4 << 20) // 1 MiB FIFO, 3 MiB main
	hot := make([]chunker.Encoded, 8)
	for i := range hot {
		hot[i] = randomChunk(t, codecs, 256<<10)
	}
	// Make the hot set hot: seen, evicted from the FIFO, seen again.
	for range 2 {
		for _, c := range hot {
			if _, ok := m.Get(ctx, c.ID); !ok {
				m.Add(ctx, c)
			}
		}
	}
	for range 2 {
		for _, c := range hot {
			if _, ok := m.Get(ctx, c.ID); !ok {
				m.Add(ctx, c)
			}
		}
	}
	// A scan of 64 chunks seen once.
	for range 64 {
		c := randomChunk(t, codecs, 256<<10)
		if _, ok := m.Get(ctx, c.ID); !ok {
			m.Add(ctx, c)
		}
	}
	for i, c := range hot {
		if _, ok := m.Get(ctx, c.ID); !ok {
			t.Fatalf("hot chunk %d was flushed by a scan", i)
		}
	}
	st := m.Stats()
	if st.Bytes > 4<<20 || st.Evictions == 0 {
		t.Fatalf("stats %+v: over capacity or no evictions", st)
	}
	big := randomChunk(t, codecs, 2<<20)
	m.Add(ctx, big)
	if st := m.Stats(); st.Skipped != 1 {
		t.Fatalf("a chunk larger than the FIFO was not skipped: %+v", st)
	}
}

// TestCachedVerifies: a corrupted cache entry is dropped and the chunk read
// from the store; hits are counted per tier.
func TestCachedVerifies(t *testing.T) {
	ctx := context.Background()
	codecs := chunker.NewCodecs()
	store, err := OpenLocal(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	mem := NewMemory(16 << 20)
	c := NewCached(store, codecs, mem)
	defer c.Close()
	e := randomChunk(t, codecs, 100<<10)
	if _, err := c.Put(ctx, e); err != nil {
		t.Fatal(err)
	}
	for range 3 {
		got, err := c.Get(ctx, e.ID)
		if err != nil || got.ID != e.ID {
			t.Fatal(err)
		}
	}
	if st := c.TierStats()[0]; st.Hits != 2 || st.Misses != 1 {
		t.Fatalf("memory tier %+v, want 2 hits 1 miss", st)
	}
	// Corrupt the cached copy in place.
	cached, _ := mem.Get(ctx, e.ID)
	cached.Data[10] ^= 0xff
	got, err := c.Get(ctx, e.ID)
	if err != nil || codecs.Verify(got) != nil {
		t.Fatalf("read after cache corruption: %v", err)
	}
	if st := c.TierStats()[0]; st.Corrupt != 1 {
		t.Fatalf("corrupt entry not counted: %+v", st)
	}
}

// TestMemcacheTier runs against a real memcached with its default 1 MiB item
// limit: values round trip, chunks over the item limit are stored in pieces
// and read back whole, a piece evicted makes a miss (never a short chunk),
// Remove takes the pieces too, and a dead memcached turns into misses and an
// error count, never a failed read.
func TestMemcacheTier(t *testing.T) {
	ctx := context.Background()
	codecs := chunker.NewCodecs()
	srv, err := testenv.StartMemcached(64, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Stop()
	mc, err := NewMemcache(MemcacheConfig{Servers: []string{srv.Addr}})
	if err != nil {
		t.Fatal(err)
	}
	defer mc.Close()
	store, err := OpenLocal(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	c := NewCached(store, codecs, mc)

	small := randomChunk(t, codecs, 512<<10)
	large := randomChunk(t, codecs, 1<<20)   // over the 1 MiB item limit with overhead: 2 pieces
	largest := randomChunk(t, codecs, 4<<20) // the chunker's largest chunk: 5 pieces
	for _, e := range []chunker.Encoded{small, large, largest} {
		if _, err := c.Put(ctx, e); err != nil {
			t.Fatal(err)
		}
		if _, err := c.Get(ctx, e.ID); err != nil {
			t.Fatal(err)
		}
	}
	mc.wg.Wait() // background stores done
	for _, e := range []chunker.Encoded{small, large, largest} {
		got, ok := mc.Get(ctx, e.ID)
		if !ok {
			t.Fatalf("%d-byte chunk not in memcached", len(e.Data))
		}
		if got.Codec != e.Codec || got.RawSize != e.RawSize || !bytes.Equal(got.Data, e.Data) {
			t.Fatalf("%d-byte chunk came back different (%d bytes)", len(e.Data), len(got.Data))
		}
	}
	got, err := c.Get(ctx, largest.ID)
	if err != nil || got.ID != largest.ID {
		t.Fatal(err)
	}
	st := mc.Stats()
	if st.Hits < 4 || st.Skipped != 0 || st.Entries != 3+2+5 {
		t.Fatalf("memcached stats %+v: want ≥4 hits, 0 skipped, 10 items (3 heads, 7 pieces)", st)
	}

	// One piece evicted: a miss, not a short chunk.
	it, err := mc.mc.Get(memcacheKey(large.ID))
	if err != nil {
		t.Fatal(err)
	}
	h, ok := parseSplitHead(it.Value)
	if !ok || h.pieces != 2 {
		t.Fatalf("head of a 1 MiB chunk: %+v, %v", h, ok)
	}
	if err := mc.mc.Delete(pieceKey(large.ID, h.nonce, 1)); err != nil {
		t.Fatal(err)
	}
	if _, ok := mc.Get(ctx, large.ID); ok {
		t.Fatal("a chunk missing a piece was served")
	}
	// Remove takes head and pieces.
	mc.Remove(ctx, largest.ID)
	if st := mc.Stats(); st.Entries != 3 { // small; large's head and its piece left
		t.Fatalf("after Remove of the 5-piece chunk: %d items in memcached, want 3", st.Entries)
	}

	srv.Kill()
	for _, e := range []chunker.Encoded{small, large, largest} {
		if _, err := c.Get(ctx, e.ID); err != nil {
			t.Fatalf("read with memcached down: %v", err)
		}
	}
	if st := mc.Stats(); st.Errors == 0 {
		t.Fatalf("memcached outage not counted: %+v", st)
	}
}

// countingTier is a remote tier (not *Memory) that counts its calls.
type countingTier struct {
	gets, adds int
	m          map[chunker.ID]chunker.Encoded
}

func (c *countingTier) Name() string { return "counting" }
func (c *countingTier) Get(_ context.Context, id chunker.ID) (chunker.Encoded, bool) {
	c.gets++
	e, ok := c.m[id]
	return e, ok
}
func (c *countingTier) Add(_ context.Context, e chunker.Encoded) { c.adds++; c.m[e.ID] = e }
func (c *countingTier) Remove(_ context.Context, id chunker.ID)  { delete(c.m, id) }
func (c *countingTier) Stats() TierStats                         { return TierStats{Tier: c.Name()} }

// TestCachedScan: reads under Scan (a large file's download) come from the
// in-process tier or the store, never ask the remote tier, and fill no
// tier; the same reads without it fill both.
func TestCachedScan(t *testing.T) {
	ctx := context.Background()
	codecs := chunker.NewCodecs()
	store, err := OpenLocal(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	mem := NewMemory(16 << 20)
	far := &countingTier{m: map[chunker.ID]chunker.Encoded{}}
	c := NewCached(store, codecs, mem, far)
	defer c.Close()
	cold, hot := randomChunk(t, codecs, 100<<10), randomChunk(t, codecs, 100<<10)
	for _, e := range []chunker.Encoded{cold, hot} {
		if _, err := c.Put(ctx, e); err != nil {
			t.Fatal(err)
		}
	}
	mem.Add(ctx, hot)
	scan := Scan(ctx)
	for name, get := range map[string]func(context.Context, chunker.ID) (chunker.Encoded, error){
		"Get": c.Get, "GetUnverified": c.GetUnverified,
	} {
		for _, e := range []chunker.Encoded{cold, hot} {
			got, err := get(scan, e.ID)
			if err != nil || !bytes.Equal(got.Data, e.Data) {
				t.Fatalf("%s under Scan: %v", name, err)
			}
		}
		if _, ok := mem.Get(ctx, cold.ID); ok {
			t.Fatalf("%s under Scan put a chunk read from the store in the memory tier", name)
		}
		if far.gets != 0 || far.adds != 0 {
			t.Fatalf("%s under Scan: remote tier asked %d times, filled %d times; want 0", name, far.gets, far.adds)
		}
	}
	if st := mem.Stats(); st.Hits < 2 {
		t.Fatalf("the memory tier served %d reads under Scan, want 2 (the hot chunk, twice)", st.Hits)
	}
	// Without Scan the cold chunk fills both tiers.
	if _, err := c.GetUnverified(ctx, cold.ID); err != nil {
		t.Fatal(err)
	}
	if _, ok := mem.Get(ctx, cold.ID); !ok || far.adds != 1 {
		t.Fatalf("a read without Scan: in memory %v, remote fills %d; want both", ok, far.adds)
	}
}
