package replica

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
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
// 5-byte header (codec, raw size), keyed by the chunk ID. A memcached that is
// down or slow costs a warning (logged once per outage) and a counter; reads
// go on from the store.
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

const memcacheHeader = 5

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
	if len(v) < memcacheHeader {
		m.count.misses.Add(1)
		return chunker.Encoded{}, false
	}
	e := chunker.Encoded{ID: id, Codec: chunker.Codec(v[0]), RawSize: int(binary.BigEndian.Uint32(v[1:5])), Data: v[memcacheHeader:]}
	m.count.hits.Add(1)
	m.count.served.Add(uint64(len(e.Data)))
	return e, true
}

// Add implements Tier. The store happens in the background, so that a slow
// memcached never slows a read; when the backlog is full the chunk is not
// cached.
func (m *Memcache) Add(_ context.Context, e chunker.Encoded) {
	// memcached counts the key and ~50 bytes of item header against the limit.
	if memcacheHeader+len(e.Data)+len(memcacheKey(e.ID))+64 > m.cfg.MaxItemSize {
		m.count.skipped.Add(1)
		return
	}
	if m.closed.Load() {
		return
	}
	size := int64(memcacheHeader + len(e.Data))
	if m.backlog.Add(size) > m.cfg.AddBacklog {
		m.backlog.Add(-size)
		return
	}
	v := make([]byte, memcacheHeader+len(e.Data))
	v[0] = byte(e.Codec)
	binary.BigEndian.PutUint32(v[1:5], uint32(e.RawSize))
	copy(v[memcacheHeader:], e.Data)
	m.wg.Go(func() {
		defer m.backlog.Add(-size)
		err := m.mc.Set(&memcache.Item{Key: memcacheKey(e.ID), Value: v})
		switch {
		case err == nil:
			m.ok()
			m.entries.Add(1)
		case strings.Contains(err.Error(), "too large"):
			m.count.skipped.Add(1)
		default:
			m.failed(err)
		}
	})
}

// Remove implements Tier.
func (m *Memcache) Remove(_ context.Context, id chunker.ID) {
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
