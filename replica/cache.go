package replica

import (
	"bytes"
	"container/list"
	"context"
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/ddstore/ddstore/chunker"
)

// Tier is one cache level in front of a Store: a best-effort map from chunk
// ID to encoded chunk. A tier never fails a read: a miss, a timeout or a
// broken server all look like a miss. Chunks are immutable, so nothing is
// ever invalidated on write.
type Tier interface {
	Name() string
	// Get returns the cached chunk, unverified.
	Get(ctx context.Context, id chunker.ID) (chunker.Encoded, bool)
	// Add caches c (the tier may decline).
	Add(ctx context.Context, c chunker.Encoded)
	// Remove drops the chunk, if cached.
	Remove(ctx context.Context, id chunker.ID)
	Stats() TierStats
}

// TierStats are a tier's counters.
type TierStats struct {
	Tier        string
	Hits        uint64
	Misses      uint64
	BytesServed uint64
	Entries     uint64
	Bytes       uint64
	Evictions   uint64
	Skipped     uint64 // chunks too large for the tier
	Errors      uint64 // failed calls (the read went on without the tier)
	Corrupt     uint64 // entries that failed verification and were dropped
}

// tierCounters are the counters every tier keeps.
type tierCounters struct {
	hits, misses, served, evictions, skipped, errors, corrupt atomic.Uint64
}

func (c *tierCounters) fill(s *TierStats) {
	s.Hits, s.Misses, s.BytesServed = c.hits.Load(), c.misses.Load(), c.served.Load()
	s.Evictions, s.Skipped, s.Errors = c.evictions.Load(), c.skipped.Load(), c.errors.Load()
}

// Cached is a Store with cache tiers in front of its reads. Every chunk read
// from a tier is verified against its ID like one read from the store; a
// corrupt entry is dropped and the chunk read from the next tier down.
type Cached struct {
	Store
	Tiers  []Tier
	Codecs *chunker.Codecs

	corrupt []atomic.Uint64 // per tier
}

// NewCached puts tiers (fastest first) in front of s.
func NewCached(s Store, codecs *chunker.Codecs, tiers ...Tier) *Cached {
	return &Cached{Store: s, Tiers: tiers, Codecs: codecs, corrupt: make([]atomic.Uint64, len(tiers))}
}

type scanKey struct{}

// Scan marks ctx as a large sequential read: Cached reads under it look only
// in the in-process tier and fill no tier. A file much larger than the
// tiers would push out everything they hold, gain nothing itself (a
// sequential read of more than an LRU's size never hits), and pay a
// memcached round trip and a copy into memcached for every chunk. Such a
// file's repeated reads are served by the store (the pack files sit in the
// page cache).
func Scan(ctx context.Context) context.Context { return context.WithValue(ctx, scanKey{}, true) }

func scanning(ctx context.Context) bool { v, _ := ctx.Value(scanKey{}).(bool); return v }

// remote reports whether t is a tier outside this process (memcached).
func remote(t Tier) bool { _, local := t.(*Memory); return !local }

// Get reads the chunk from the first tier that holds a good copy, else from
// the store, and fills the tiers above where it was found. Under Scan it
// asks only the in-process tier and fills none.
func (c *Cached) Get(ctx context.Context, id chunker.ID) (chunker.Encoded, error) {
	if scanning(ctx) {
		if e, _, ok := c.peek(ctx, id); ok {
			return e, nil
		}
		return c.Store.Get(ctx, id)
	}
	if e, i, ok := c.peek(ctx, id); ok {
		for _, up := range c.Tiers[:i] {
			up.Add(ctx, e)
		}
		return e, nil
	}
	e, err := c.Store.Get(ctx, id)
	if err != nil {
		return e, err
	}
	c.Keep(ctx, e)
	return e, nil
}

// GetUnverified is Get without checking what the in-process tier and the
// store return against the ID (see UnverifiedGetter): the in-process tier
// holds what this node stored or read; memcached, shared and remote, is
// still checked. A store that cannot skip the check is read with Get.
func (c *Cached) GetUnverified(ctx context.Context, id chunker.ID) (chunker.Encoded, error) {
	scan := scanning(ctx)
	for i, t := range c.Tiers {
		if scan && remote(t) {
			continue
		}
		e, ok := t.Get(ctx, id)
		if !ok {
			continue
		}
		if e.ID != id || remote(t) && c.Codecs.Verify(e) != nil {
			c.corrupt[i].Add(1)
			t.Remove(ctx, id)
			continue
		}
		if !scan {
			for _, up := range c.Tiers[:i] {
				up.Add(ctx, e)
			}
		}
		return e, nil
	}
	var (
		e   chunker.Encoded
		err error
	)
	if u, ok := c.Store.(UnverifiedGetter); ok {
		e, err = u.GetUnverified(ctx, id)
	} else {
		e, err = c.Store.Get(ctx, id)
	}
	if err != nil || scan {
		return e, err
	}
	c.Keep(ctx, e)
	return e, nil
}

// Peek returns the chunk from the first tier that holds a good copy,
// without reading the store.
func (c *Cached) Peek(ctx context.Context, id chunker.ID) (chunker.Encoded, bool) {
	e, _, ok := c.peek(ctx, id)
	return e, ok
}

// peek returns the chunk from the first tier that holds a good copy, and
// that tier's index; corrupt entries met on the way are dropped.
func (c *Cached) peek(ctx context.Context, id chunker.ID) (chunker.Encoded, int, bool) {
	scan := scanning(ctx)
	for i, t := range c.Tiers {
		if scan && remote(t) {
			continue
		}
		e, ok := t.Get(ctx, id)
		if !ok {
			continue
		}
		if e.ID != id || c.Codecs.Verify(e) != nil {
			c.corrupt[i].Add(1)
			t.Remove(ctx, id)
			continue
		}
		return e, i, true
	}
	return chunker.Encoded{}, 0, false
}

// Keep caches a verified chunk in every tier without storing it: a chunk
// of another cluster passing through.
func (c *Cached) Keep(ctx context.Context, e chunker.Encoded) {
	for _, t := range c.Tiers {
		t.Add(ctx, e)
	}
}

// Delete removes the chunk from the store and every tier.
func (c *Cached) Delete(ctx context.Context, id chunker.ID) error {
	for _, t := range c.Tiers {
		t.Remove(ctx, id)
	}
	return c.Store.Delete(ctx, id)
}

// DeleteBatch deletes ids from every tier and from the store, in one batch
// when the store can (see BatchDeleter).
func (c *Cached) DeleteBatch(ctx context.Context, ids []chunker.ID) (int, error) {
	for _, id := range ids {
		for _, t := range c.Tiers {
			t.Remove(ctx, id)
		}
	}
	return DeleteAll(ctx, c.Store, ids)
}

// Close closes the tiers that hold resources, then the store.
func (c *Cached) Close() error {
	for _, t := range c.Tiers {
		if cl, ok := t.(interface{ Close() error }); ok {
			cl.Close()
		}
	}
	return c.Store.Close()
}

// TierStats returns each tier's counters.
func (c *Cached) TierStats() []TierStats {
	out := make([]TierStats, len(c.Tiers))
	for i, t := range c.Tiers {
		out[i] = t.Stats()
		out[i].Corrupt = c.corrupt[i].Load()
	}
	return out
}

// Memory is the in-process tier: a size-bounded cache in the manner of 2Q
// and S3-FIFO. New chunks enter a small FIFO (a quarter of the space); a
// chunk read again while in it, or asked for again after it left (its ID is
// remembered in a ghost list), moves to the main LRU. One sequential read of
// a huge file therefore passes through the FIFO without flushing the hot set.
type Memory struct {
	mu       sync.Mutex
	capacity int64
	inCap    int64 // bytes for the FIFO (a quarter)
	inBytes  int64
	mainByte int64
	in       *list.List // of *memEntry, newest at front
	main     *list.List // of *memEntry, most recent at front
	ghost    *list.List // of chunker.ID, newest at front
	ghostMax int
	items    map[chunker.ID]*list.Element
	ghosts   map[chunker.ID]*list.Element
	count    tierCounters
}

type memEntry struct {
	e    chunker.Encoded
	main bool
	hit  bool // read again while in the FIFO
}

// NewMemory returns an in-process tier holding at most capacity bytes of
// chunk data.
func NewMemory(capacity int64) *Memory {
	return &Memory{
		capacity: capacity, inCap: capacity / 4,
		in: list.New(), main: list.New(), ghost: list.New(),
		ghostMax: int(max(64, capacity/(256<<10))), // about as many IDs as chunks fit, at 256 KiB each
		items:    map[chunker.ID]*list.Element{}, ghosts: map[chunker.ID]*list.Element{},
	}
}

// Name implements Tier.
func (m *Memory) Name() string { return "memory" }

// Get implements Tier.
func (m *Memory) Get(_ context.Context, id chunker.ID) (chunker.Encoded, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	el, ok := m.items[id]
	if !ok {
		m.count.misses.Add(1)
		return chunker.Encoded{}, false
	}
	ent := el.Value.(*memEntry)
	if ent.main {
		m.main.MoveToFront(el)
	} else {
		ent.hit = true
	}
	m.count.hits.Add(1)
	m.count.served.Add(uint64(len(ent.e.Data)))
	return ent.e, true
}

// Add implements Tier. The tier counts the memory a chunk holds, not just
// its length: a chunk whose buffer has much more room than data (a read or
// decode buffer) is copied to one of its own size first, so that a cache of
// N bytes holds N bytes.
func (m *Memory) Add(_ context.Context, e chunker.Encoded) {
	if cap(e.Data) > len(e.Data)+len(e.Data)/16 {
		e.Data = bytes.Clone(e.Data)
	}
	size := int64(cap(e.Data))
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, ok := m.items[e.ID]; ok {
		return
	}
	if size > m.inCap || size > m.capacity-m.inCap {
		m.count.skipped.Add(1)
		return
	}
	if g, ok := m.ghosts[e.ID]; ok { // seen before: it is hot
		m.ghost.Remove(g)
		delete(m.ghosts, e.ID)
		m.items[e.ID] = m.main.PushFront(&memEntry{e: e, main: true})
		m.mainByte += size
	} else {
		m.items[e.ID] = m.in.PushFront(&memEntry{e: e})
		m.inBytes += size
	}
	m.evict()
}

// evict trims the FIFO to its share (remembering what left in the ghost
// list) and the LRU to the rest.
func (m *Memory) evict() {
	for m.inBytes > m.inCap {
		el := m.in.Back()
		ent := el.Value.(*memEntry)
		m.in.Remove(el)
		m.inBytes -= int64(cap(ent.e.Data))
		if ent.hit { // read again while in the FIFO: it is hot
			ent.main = true
			m.items[ent.e.ID] = m.main.PushFront(ent)
			m.mainByte += int64(cap(ent.e.Data))
			continue
		}
		delete(m.items, ent.e.ID)
		m.count.evictions.Add(1)
		m.ghosts[ent.e.ID] = m.ghost.PushFront(ent.e.ID)
		for m.ghost.Len() > m.ghostMax {
			g := m.ghost.Back()
			m.ghost.Remove(g)
			delete(m.ghosts, g.Value.(chunker.ID))
		}
	}
	for m.mainByte > m.capacity-m.inCap {
		el := m.main.Back()
		ent := el.Value.(*memEntry)
		m.main.Remove(el)
		delete(m.items, ent.e.ID)
		m.mainByte -= int64(cap(ent.e.Data))
		m.count.evictions.Add(1)
	}
}

// Remove implements Tier.
func (m *Memory) Remove(_ context.Context, id chunker.ID) {
	m.mu.Lock()
	defer m.mu.Unlock()
	el, ok := m.items[id]
	if !ok {
		return
	}
	ent := el.Value.(*memEntry)
	delete(m.items, id)
	if ent.main {
		m.main.Remove(el)
		m.mainByte -= int64(cap(ent.e.Data))
	} else {
		m.in.Remove(el)
		m.inBytes -= int64(cap(ent.e.Data))
	}
}

// Stats implements Tier.
func (m *Memory) Stats() TierStats {
	s := TierStats{Tier: m.Name()}
	m.count.fill(&s)
	m.mu.Lock()
	s.Entries, s.Bytes = uint64(len(m.items)), uint64(m.inBytes+m.mainByte)
	m.mu.Unlock()
	return s
}

func (m *Memory) String() string { return fmt.Sprintf("memory tier (%d bytes)", m.capacity) }
