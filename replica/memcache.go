package replica

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/bradfitz/gomemcache/memcache"

	"github.com/ddstore/ddstore/chunker"
)

// MemcacheConfig sets up the memcached tier.
type MemcacheConfig struct {
	Servers []string // host:port of each memcached
	// MaxItemSize is the largest value memcached accepts (its -I setting,
	// 1 MiB by default, which includes the item's overhead); larger chunks
	// are skipped and counted. 0: 1 MiB.
	MaxItemSize int
	Timeout     time.Duration // per call; 0: 2s (gomemcache's 500ms is too short for MiB values)
	MaxIdle     int           // idle connections per server; 0: 32 (gomemcache's 2 is too few for parallel reads)
	// AddBacklog bounds the bytes waiting to be stored into memcached in
	// the background; past it a chunk is simply not cached. 0: 32 MiB.
	AddBacklog int64
	Logger     *slog.Logger
}

// Memcache is the memcached tier. Values are the encoded chunk bytes with a
// 5-byte header (codec, raw size), keyed by the chunk ID. A chunk too large
// for one memcached item (its -I limit, 1 MiB by default, and content-defined
// chunks run to 4 MiB) is split: its pieces are stored under keys of their
// own, named with a random nonce, and the chunk's key holds a small head
// naming them (see splitHead); a read that misses any piece is a miss. A
// memcached that is down or slow costs a warning (logged once per outage) and
// a counter; reads go on from the store.
type Memcache struct {
	cfg     MemcacheConfig
	mc      *memcache.Client
	log     *slog.Logger
	count   tierCounters
	down    atomic.Bool  // an outage has been logged
	backlog atomic.Int64 // bytes queued for background stores
	wg      sync.WaitGroup
	closed  atomic.Bool
	entries atomic.Uint64 // stored by us (memcached's own count is in Stats)
}

const (
	memcacheHeader = 5
	// splitMarker is the first byte of a split chunk's head; codecs are
	// small numbers, so it never starts a whole value.
	splitMarker = 0xff
	// splitHeadLen: marker, codec, raw size, data length, pieces, nonce.
	splitHeadLen = 1 + 1 + 4 + 4 + 2 + 8
	// itemOverhead is what memcached counts against -I besides the value:
	// the key and ~50 bytes of item header, rounded up.
	itemOverhead = 64
	// maxPieces bounds a split chunk (4 MiB chunks need 5 pieces at 1 MiB).
	maxPieces = 64
)

// NewMemcache returns a memcached tier. It does not contact the servers.
func NewMemcache(cfg MemcacheConfig) (*Memcache, error) {
	if len(cfg.Servers) == 0 {
		return nil, errors.New("replica: memcache tier needs at least one server")
	}
	if cfg.MaxItemSize <= 0 {
		cfg.MaxItemSize = 1 << 20
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 2 * time.Second
	}
	if cfg.MaxIdle <= 0 {
		cfg.MaxIdle = 32
	}
	if cfg.AddBacklog <= 0 {
		cfg.AddBacklog = 32 << 20
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	mc := memcache.New(cfg.Servers...)
	mc.Timeout = cfg.Timeout
	mc.MaxIdleConns = cfg.MaxIdle
	return &Memcache{cfg: cfg, mc: mc, log: cfg.Logger}, nil
}

func memcacheKey(id chunker.ID) string { return "ddc:" + id.String() }

// Name implements Tier.
func (m *Memcache) Name() string { return "memcached" }

// Get implements Tier.
func (m *Memcache) Get(_ context.Context, id chunker.ID) (chunker.Encoded, bool) {
	it, err := m.mc.Get(memcacheKey(id))
	switch {
	case errors.Is(err, memcache.ErrCacheMiss):
		m.ok()
		m.count.misses.Add(1)
		return chunker.Encoded{}, false
	case err != nil:
		m.failed(err)
		m.count.misses.Add(1)
		return chunker.Encoded{}, false
	}
	m.ok()
	v := it.Value
	var e chunker.Encoded
	if len(v) > 0 && v[0] == splitMarker {
		var ok bool
		if e, ok = m.getSplit(id, v); !ok {
			m.count.misses.Add(1)
			return chunker.Encoded{}, false
		}
	} else {
		if len(v) < memcacheHeader {
			m.count.misses.Add(1)
			return chunker.Encoded{}, false
		}
		e = chunker.Encoded{ID: id, Codec: chunker.Codec(v[0]), RawSize: int(binary.BigEndian.Uint32(v[1:5])), Data: v[memcacheHeader:]}
	}
	m.count.hits.Add(1)
	m.count.served.Add(uint64(len(e.Data)))
	return e, true
}

// splitHead is the head of a chunk stored in pieces.
type splitHead struct {
	codec   chunker.Codec
	rawSize uint32
	length  uint32 // of the encoded data, all pieces together
	pieces  uint16
	nonce   uint64
}

func (h splitHead) marshal() []byte {
	b := make([]byte, splitHeadLen)
	b[0], b[1] = splitMarker, byte(h.codec)
	binary.BigEndian.PutUint32(b[2:], h.rawSize)
	binary.BigEndian.PutUint32(b[6:], h.length)
	binary.BigEndian.PutUint16(b[10:], h.pieces)
	binary.BigEndian.PutUint64(b[12:], h.nonce)
	return b
}

func parseSplitHead(b []byte) (splitHead, bool) {
	if len(b) != splitHeadLen || b[0] != splitMarker {
		return splitHead{}, false
	}
	h := splitHead{codec: chunker.Codec(b[1]), rawSize: binary.BigEndian.Uint32(b[2:]),
		length: binary.BigEndian.Uint32(b[6:]), pieces: binary.BigEndian.Uint16(b[10:]), nonce: binary.BigEndian.Uint64(b[12:])}
	if h.pieces == 0 || h.pieces > maxPieces {
		return splitHead{}, false
	}
	return h, true
}

func pieceKey(id chunker.ID, nonce uint64, i int) string {
	return fmt.Sprintf("ddc:%s:%016x:%d", id, nonce, i)
}

func (h splitHead) keys(id chunker.ID) []string {
	keys := make([]string, h.pieces)
	for i := range keys {
		keys[i] = pieceKey(id, h.nonce, i)
	}
	return keys
}

// getSplit reads the pieces a head names, in one round trip per server. A
// piece evicted, or pieces that do not add up to the head's length, make a
// miss.
func (m *Memcache) getSplit(id chunker.ID, head []byte) (chunker.Encoded, bool) {
	h, ok := parseSplitHead(head)
	if !ok {
		return chunker.Encoded{}, false
	}
	keys := h.keys(id)
	items, err := m.mc.GetMulti(keys)
	if err != nil {
		m.failed(err)
		return chunker.Encoded{}, false
	}
	data := make([]byte, 0, h.length)
	for _, k := range keys {
		it := items[k]
		if it == nil || len(data)+len(it.Value) > int(h.length) {
			return chunker.Encoded{}, false
		}
		data = append(data, it.Value...)
	}
	if len(data) != int(h.length) {
		return chunker.Encoded{}, false
	}
	return chunker.Encoded{ID: id, Codec: h.codec, RawSize: int(h.rawSize), Data: data}, true
}

// Add implements Tier. The store happens in the background, so that a slow
// memcached never slows a read; when the backlog is full the chunk is not
// cached. A chunk larger than one item is stored in pieces, the head last,
// so that a head is only ever seen once its pieces are in.
func (m *Memcache) Add(_ context.Context, e chunker.Encoded) {
	if m.closed.Load() {
		return
	}
	whole := memcacheHeader+len(e.Data)+len(memcacheKey(e.ID))+itemOverhead <= m.cfg.MaxItemSize
	piece := m.cfg.MaxItemSize - len(pieceKey(e.ID, 0, maxPieces)) - itemOverhead
	pieces := 1
	if !whole {
		if piece <= 0 {
			m.count.skipped.Add(1)
			return
		}
		pieces = (len(e.Data) + piece - 1) / piece
		if pieces > maxPieces {
			m.count.skipped.Add(1)
			return
		}
	}
	size := int64(memcacheHeader + len(e.Data))
	if m.backlog.Add(size) > m.cfg.AddBacklog {
		m.backlog.Add(-size)
		return
	}
	if whole {
		v := make([]byte, memcacheHeader+len(e.Data))
		v[0] = byte(e.Codec)
		binary.BigEndian.PutUint32(v[1:5], uint32(e.RawSize))
		copy(v[memcacheHeader:], e.Data)
		m.wg.Go(func() {
			defer m.backlog.Add(-size)
			m.stored(m.mc.Set(&memcache.Item{Key: memcacheKey(e.ID), Value: v}))
		})
		return
	}
	data := append([]byte(nil), e.Data...) // the caller may reuse its buffer
	h := splitHead{codec: e.Codec, rawSize: uint32(e.RawSize), length: uint32(len(data)), pieces: uint16(pieces), nonce: rand.Uint64()}
	m.wg.Go(func() {
		defer m.backlog.Add(-size)
		for i, k := range h.keys(e.ID) {
			end := min((i+1)*piece, len(data))
			if err := m.mc.Set(&memcache.Item{Key: k, Value: data[i*piece : end]}); err != nil {
				m.stored(err)
				return
			}
		}
		m.stored(m.mc.Set(&memcache.Item{Key: memcacheKey(e.ID), Value: h.marshal()}))
	})
}

// stored counts the outcome of storing one chunk.
func (m *Memcache) stored(err error) {
	switch {
	case err == nil:
		m.ok()
		m.entries.Add(1)
	case strings.Contains(err.Error(), "too large"):
		m.count.skipped.Add(1)
	default:
		m.failed(err)
	}
}

// Remove implements Tier. A split chunk's pieces go with its head.
func (m *Memcache) Remove(_ context.Context, id chunker.ID) {
	if it, err := m.mc.Get(memcacheKey(id)); err == nil {
		if h, ok := parseSplitHead(it.Value); ok {
			for _, k := range h.keys(id) {
				m.mc.Delete(k)
			}
		}
	}
	if err := m.mc.Delete(memcacheKey(id)); err != nil && !errors.Is(err, memcache.ErrCacheMiss) {
		m.failed(err)
	}
}

func (m *Memcache) failed(err error) {
	m.count.errors.Add(1)
	if !m.down.Swap(true) {
		m.log.Warn("memcached unavailable; reading from the store until it is back", "servers", m.cfg.Servers, "err", err)
	}
}

func (m *Memcache) ok() {
	if m.down.Load() && m.down.Swap(false) {
		m.log.Info("memcached is back", "servers", m.cfg.Servers)
	}
}

// Stats implements Tier. Entries, bytes and evictions come from memcached's
// own counters (summed over servers) when it answers.
func (m *Memcache) Stats() TierStats {
	s := TierStats{Tier: m.Name()}
	m.count.fill(&s)
	for _, srv := range m.cfg.Servers {
		st, err := serverStats(srv, m.cfg.Timeout)
		if err != nil {
			continue
		}
		s.Entries += st["curr_items"]
		s.Bytes += st["bytes"]
		s.Evictions += st["evictions"]
	}
	return s
}

// Close waits for background stores and closes the connections.
func (m *Memcache) Close() error {
	m.closed.Store(true)
	m.wg.Wait()
	return m.mc.Close()
}

// serverStats reads a memcached's "stats" counters.
func serverStats(addr string, timeout time.Duration) (map[string]uint64, error) {
	conn, err := net.DialTimeout("tcp", addr, timeout)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(timeout))
	if _, err := conn.Write([]byte("stats\r\n")); err != nil {
		return nil, err
	}
	out := map[string]uint64{}
	sc := bufio.NewScanner(conn)
	for sc.Scan() {
		line := sc.Text()
		if line == "END" {
			return out, nil
		}
		f := strings.Fields(line)
		if len(f) == 3 && f[0] == "STAT" {
			if v, err := strconv.ParseUint(f[2], 10, 64); err == nil {
				out[f[1]] = v
			}
		}
	}
	return nil, fmt.Errorf("memcached %s: stats ended early: %v", addr, sc.Err())
}
