package replica

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/ddstore/ddstore/chunker"
)

// Pack is a Store that appends chunks to large pack files, as Haystack and
// SeaweedFS volumes and restic packs do, instead of writing a file per chunk.
//
// Layout of its directory:
//
//	LOCK                      flock: one process at a time
//	packs/NNNNNNNNNN.pack     append-only pack files, numbered from 1
//	packs/NNNNNNNNNN.idx      the index of a sealed pack
//	COMPACTING                the pack a compaction is emptying, if any
//	quarantine/               corrupt records, one file each (<id>.<time>)
//	tmp/                      scratch (space checks, index files being written)
//
// Each record is a header (magic, kind, codec, chunk ID, raw size, data
// length, CRC32C of the data, CRC32C of the header) and the chunk's encoded
// bytes; see pack_format.go. New records go to the end of the active pack;
// when it would grow past PackOptions.PackSize it is sealed, its index file
// is written and a new pack is started.
//
// Group commit: Put appends its record and waits for an fdatasync that
// covers it. One goroutine syncs: it takes every record appended since its
// previous sync and covers them all with one fdatasync, while new records
// queue for the next one. There are no timers: a lone writer waits for one
// sync, and N concurrent writers share about one sync per round. Put is
// durable when it returns, as with Local, and a chunk becomes visible (Has,
// Get) only once it is durable.
//
// Disk full: the active pack keeps 256 KiB allocated past its end
// (fallocate, keeping its size). A chunk Put first allocates its record's
// bytes and that reserve, and fails with ErrNoSpace before writing anything
// when it cannot; tombstones use the reserve, so Deletes work on a full
// disk, and a pack left with nothing to copy is removed by one unlink, so
// garbage collection gives space back.
//
// Delete appends a tombstone and waits for it to be durable. Space is given
// back by compaction: a sealed pack whose live bytes fall below
// PackOptions.CompactBelow of its size has its live records copied to the
// active pack; once the copies are durable the index points at them and the
// old pack is removed. Compaction runs in the background (or on demand,
// Compact), one pack at a time, holding no lock while it copies: reads and
// writes go on. Its progress is safe at every step: the old pack is removed
// only after the copies are synced, and a COMPACTING file names the pack
// being emptied so that a compaction cut short by a crash is finished when
// the store is next opened (before anything else: until it is, the old
// pack's stale copies must not outlive their tombstones).
//
// On open every pack is replayed in order, from its index file when it has a
// valid one and otherwise by scanning it and checking every record's
// checksums. A torn tail (a crash mid-append: a record that fails its
// checksums with no intact record after it) is cut off and never served;
// a damaged record with intact ones after it is skipped. Get checks the
// record's checksums and verifies the chunk against its ID; a corrupt record
// is copied to quarantine/, a tombstone is written for it, and Get reports
// chunker.ErrCorrupt, as Local does (the scrubber then fetches a good copy).
//
// Memory: the index is a map from chunk ID to (pack, offset, length), 44
// bytes of key and value per chunk; with the maps' slack it takes about 100
// bytes per chunk, 96 MiB per million chunks (BenchmarkPackIndexMemory; see
// docs/BENCHMARKS.md). The active pack also keeps its records' index
// entries (48 bytes each) until it is sealed.
//
// A directory of the per-file layout (Local's fan-out directories 00-ff) is
// migrated on open: every chunk file is verified, appended to a pack, and
// removed only once the pack is durable; a corrupt file is moved to
// quarantine/. A crash during the migration leaves every chunk either in a
// file or in a durable pack (or both), and the next open carries on.
// Migration is one-way: Local does not read packs.
type Pack struct {
	dir        string
	packDir    string
	tmp        string
	quarantine string
	opts       PackOptions
	codecs     *chunker.Codecs
	log        *slog.Logger
	lockFile   *os.File

	shards [256]packShard

	// packMu guards packs and each pack's refs, dead and puts.
	packMu   sync.Mutex
	packs    map[uint32]*packFile
	putsDone sync.Cond // on packMu: a pack's puts dropped to 0

	// appendMu guards the active pack (its size and entries), dirty,
	// round, sealedQ and nextNum; records are written under it.
	appendMu sync.Mutex
	active   *packFile
	nextNum  uint32
	dirty    []*packFile // packs written since the current round began
	round    *syncRound  // the round a record appended now belongs to
	syncing  *syncRound  // the round being synced, if any
	sealedQ  []*packFile // sealed packs whose index is still to be written

	kickSync  chan struct{}
	kickMaint chan struct{}
	stopSync  chan struct{}
	syncDone  chan struct{}
	stopMaint context.CancelFunc
	maintDone chan struct{}

	// compactMu serialises compactions.
	compactMu sync.Mutex

	chunks atomic.Int64
	bytes  atomic.Int64
	stats  packCounters

	mu       sync.Mutex
	idle     sync.Cond
	closed   bool
	inflight int
}

var (
	_ Store        = (*Pack)(nil)
	_ SpaceChecker = (*Pack)(nil)
)

// PackOptions tunes a Pack. The zero value gives the defaults.
type PackOptions struct {
	// PackSize is the size past which the active pack is sealed and a new
	// one started (default 256 MiB, at most 1 GiB). A pack ends with the
	// record that would have crossed it, so it may exceed it by one chunk.
	PackSize int64
	// CompactBelow is the live fraction (live bytes / pack size) under which
	// a sealed pack is compacted (default 0.5). Negative: never compact in
	// the background; Compact still works.
	CompactBelow float64
	// Logger receives the store's log (default slog.Default()).
	Logger *slog.Logger
}

const (
	packDefaultSize = 256 << 20
	packLimitSize   = 1 << 30
	packDefaultLive = 0.5

	packDirName    = "packs"
	packMarkerName = "COMPACTING"
)

func (o PackOptions) withDefaults() PackOptions {
	if o.PackSize <= 0 {
		o.PackSize = packDefaultSize
	}
	o.PackSize = min(o.PackSize, packLimitSize)
	if o.CompactBelow == 0 {
		o.CompactBelow = packDefaultLive
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	return o
}

// packLoc is where a chunk's record lies: 12 bytes.
type packLoc struct {
	pack uint32
	off  uint32
	len  uint32
}

// packShard is one 256th of the index, by the ID's first byte.
type packShard struct {
	mu    sync.RWMutex
	index map[chunker.ID]packLoc
	// pending holds the IDs whose Put is writing a record; the channel is
	// closed when it is done.
	pending map[chunker.ID]chan struct{}
}

// packFile is one pack.
type packFile struct {
	num  uint32
	path string
	f    *os.File
	// size is the bytes the pack holds (appended so far, for the active
	// pack: guarded by appendMu).
	size atomic.Int64
	// live is the bytes of records the index points to.
	live atomic.Int64
	// sealed: no more records will be appended.
	sealed atomic.Bool
	// indexed: its index file is written.
	indexed atomic.Bool
	// broken: a write or sync failed on it; it is sealed and never gets an
	// index file (the next open scans it).
	broken atomic.Bool
	// allocEnd is how far its blocks are known allocated (fallocate);
	// noAlloc: its file system cannot preallocate. Guarded by appendMu.
	allocEnd int64
	noAlloc  bool
	// entries lists its records for its index file, until that is written
	// (guarded by appendMu while the pack is active).
	entries []packEntry

	refs int  // guarded by Pack.packMu
	dead bool // removed by compaction: close once refs drops to 0
	// puts counts Puts that appended a record here and have not yet
	// recorded it in the index (guarded by Pack.packMu). Compaction waits
	// for none before it decides which records are live.
	puts int
}

// syncRound is one group commit: every record appended while it is current
// is durable once done is closed and err is nil.
type syncRound struct {
	done chan struct{}
	err  error
}

func newRound() *syncRound { return &syncRound{done: make(chan struct{})} }

// packCounters are statistics since the store was opened.
type packCounters struct {
	syncs       atomic.Int64
	compactions atomic.Int64
	copiedBytes atomic.Int64
	tornTails   atomic.Int64
	tornBytes   atomic.Int64
	skipped     atomic.Int64
	migrated    atomic.Int64
}

// PackStats describes a Pack's files.
type PackStats struct {
	Packs     int   // pack files
	FileBytes int64 // their total size
	LiveBytes int64 // bytes of records the index points to
	Syncs     int64 // fdatasync calls by the group committer since open
	// Compactions and CopiedBytes count packs compacted and bytes copied
	// since open.
	Compactions int64
	CopiedBytes int64
	// TornTails and TornBytes count the torn tails cut off when the store
	// was opened; SkippedBytes the damaged bytes skipped between intact
	// records.
	TornTails    int64
	TornBytes    int64
	SkippedBytes int64
	// Migrated counts the chunk files of the per-file layout moved into
	// packs when the store was opened.
	Migrated int64
}

// OpenPack opens (creating it if needed) the pack store in dir. It takes an
// exclusive lock on dir/LOCK (ErrLocked while another Local or Pack holds
// it), replays the packs, cuts off a torn tail, finishes a compaction a
// crash interrupted and migrates the chunk files of the per-file layout
// found in dir.
func OpenPack(ctx context.Context, dir string, opts PackOptions) (*Pack, error) {
	opts = opts.withDefaults()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("replica: pack store: %w", err)
	}
	lf, err := os.OpenFile(filepath.Join(dir, localLockName), os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, fmt.Errorf("replica: pack store: %w", err)
	}
	if err := unix.Flock(int(lf.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		lf.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			return nil, fmt.Errorf("%w: %s is locked by another process or store (%s)", ErrLocked, dir, localLockName)
		}
		return nil, fmt.Errorf("replica: pack store: lock %s: %w", dir, err)
	}
	p := &Pack{
		dir:        dir,
		packDir:    filepath.Join(dir, packDirName),
		tmp:        filepath.Join(dir, localTmpName),
		quarantine: filepath.Join(dir, localQuarantineName),
		opts:       opts,
		codecs:     chunker.NewCodecs(),
		log:        opts.Logger.With("store", "pack", "dir", dir),
		lockFile:   lf,
		packs:      map[uint32]*packFile{},
		round:      newRound(),
		kickSync:   make(chan struct{}, 1),
		kickMaint:  make(chan struct{}, 1),
		stopSync:   make(chan struct{}),
		syncDone:   make(chan struct{}),
		maintDone:  make(chan struct{}),
	}
	p.idle.L = &p.mu
	p.putsDone.L = &p.packMu
	for i := range p.shards {
		p.shards[i].index = map[chunker.ID]packLoc{}
		p.shards[i].pending = map[chunker.ID]chan struct{}{}
	}
	go p.syncLoop()
	if err := p.open(ctx); err != nil {
		p.shutdown()
		return nil, err
	}
	mctx, cancel := context.WithCancel(context.Background())
	p.stopMaint = cancel
	go p.maintain(mctx)
	p.kick(p.kickMaint)
	return p, nil
}

// open replays the packs and finishes what a crash left undone.
func (p *Pack) open(ctx context.Context) error {
	if err := os.RemoveAll(p.tmp); err != nil {
		return fmt.Errorf("replica: pack store: clear %s: %w", p.tmp, err)
	}
	for _, d := range []string{p.tmp, p.quarantine, p.packDir} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return fmt.Errorf("replica: pack store: %w", err)
		}
	}
	if err := syncDir(p.dir); err != nil {
		return fmt.Errorf("replica: pack store: %w", err)
	}
	nums, err := p.listPacks()
	if err != nil {
		return err
	}
	for i, num := range nums {
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := p.replay(num, i == len(nums)-1); err != nil {
			return err
		}
	}
	if len(nums) > 0 {
		p.nextNum = nums[len(nums)-1] + 1
	} else {
		p.nextNum = 1
	}
	if err := p.finishCompaction(ctx); err != nil {
		return err
	}
	if err := p.migrate(ctx); err != nil {
		return err
	}
	return nil
}

// listPacks returns the numbers of the pack files, in order, and removes
// index files whose pack is gone.
func (p *Pack) listPacks() ([]uint32, error) {
	ents, err := os.ReadDir(p.packDir)
	if err != nil {
		return nil, fmt.Errorf("replica: pack store: %w", err)
	}
	var nums []uint32
	have := map[uint32]bool{}
	for _, e := range ents {
		if num, ok := parsePackName(e.Name(), ".pack"); ok && e.Type().IsRegular() {
			nums = append(nums, num)
			have[num] = true
		}
	}
	for _, e := range ents {
		if num, ok := parsePackName(e.Name(), ".idx"); ok && !have[num] {
			if err := os.Remove(filepath.Join(p.packDir, e.Name())); err != nil {
				return nil, fmt.Errorf("replica: pack store: %w", err)
			}
		}
	}
	slices.Sort(nums)
	return nums, nil
}

func packName(num uint32, ext string) string { return fmt.Sprintf("%010d%s", num, ext) }

func parsePackName(name, ext string) (uint32, bool) {
	s, ok := strings.CutSuffix(name, ext)
	if !ok || len(s) != 10 {
		return 0, false
	}
	n, err := strconv.ParseUint(s, 10, 32)
	if err != nil || n == 0 || packName(uint32(n), ext) != name {
		return 0, false
	}
	return uint32(n), true
}

// replay opens pack num and applies its records to the index, from its
// index file if valid, else by scanning it (cutting a torn tail). The last
// pack becomes the active one unless it is sealed (it has an index file).
func (p *Pack) replay(num uint32, last bool) error {
	path := filepath.Join(p.packDir, packName(num, ".pack"))
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return fmt.Errorf("replica: pack store: %w", err)
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return fmt.Errorf("replica: pack store: %w", err)
	}
	pf := &packFile{num: num, path: path, f: f}
	size := fi.Size()
	p.packs[num] = pf
	idxPath := filepath.Join(p.packDir, packName(num, ".idx"))
	var entries []packEntry
	if b, err := os.ReadFile(idxPath); err == nil {
		entries, err = decodeIndex(b, num, size)
		if err != nil {
			p.log.Warn("ignoring a pack index; scanning the pack", "pack", path, "err", err)
			entries = nil
			if err := os.Remove(idxPath); err != nil {
				return fmt.Errorf("replica: pack store: %w", err)
			}
		} else {
			pf.indexed.Store(true)
		}
	} else if !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("replica: pack store: %w", err)
	}
	if !pf.indexed.Load() {
		res, err := scanPack(f, size)
		if err != nil {
			return fmt.Errorf("replica: pack store: scan %s: %w", path, err)
		}
		if res.skipped > 0 {
			p.stats.skipped.Add(res.skipped)
			p.log.Error("pack holds damaged records between intact ones; skipped", "pack", path, "bytes", res.skipped)
		}
		if res.end < size {
			// A crash mid-append: nothing past the last intact record was
			// acknowledged. Cut it off so that appends start clean.
			if err := f.Truncate(res.end); err != nil {
				return fmt.Errorf("replica: pack store: cut the torn tail of %s: %w", path, err)
			}
			if err := fdatasync(f); err != nil {
				return fmt.Errorf("replica: pack store: sync %s: %w", path, err)
			}
			p.stats.tornTails.Add(1)
			p.stats.tornBytes.Add(size - res.end)
			p.log.Warn("cut a torn tail off a pack", "pack", path, "at", res.end, "bytes", size-res.end)
			size = res.end
		}
		entries = res.entries
	}
	pf.size.Store(size)
	for _, e := range entries {
		p.apply(pf, e)
	}
	switch {
	case last && !pf.indexed.Load():
		pf.entries = entries
		p.active = pf
	case !pf.indexed.Load():
		pf.entries = entries
		pf.sealed.Store(true)
		p.sealedQ = append(p.sealedQ, pf)
	default:
		pf.sealed.Store(true)
	}
	return nil
}

// apply replays one record: the last record of an ID wins.
func (p *Pack) apply(pf *packFile, e packEntry) {
	sh := p.shard(e.id)
	old, had := sh.index[e.id]
	if had {
		p.packs[old.pack].live.Add(-int64(old.len))
		p.chunks.Add(-1)
		p.bytes.Add(-int64(old.len))
	}
	switch e.kind {
	case recChunk:
		sh.index[e.id] = packLoc{pack: pf.num, off: e.off, len: e.len}
		pf.live.Add(int64(e.len))
		p.chunks.Add(1)
		p.bytes.Add(int64(e.len))
	case recTomb:
		delete(sh.index, e.id)
	}
}

func (p *Pack) shard(id chunker.ID) *packShard { return &p.shards[id[0]] }

// enter registers a call in progress; it fails once the store is closed.
func (p *Pack) enter(ctx context.Context) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return ErrClosed
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	p.inflight++
	return nil
}

func (p *Pack) leave() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.inflight--
	if p.inflight == 0 && p.closed {
		p.idle.Broadcast()
	}
}

func (p *Pack) isClosed() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.closed
}

// Kind returns "pack".
func (p *Pack) Kind() string { return "pack" }

// Dir returns the store's directory.
func (p *Pack) Dir() string { return p.dir }

// Has reports whether the store holds the chunk (durably).
func (p *Pack) Has(ctx context.Context, id chunker.ID) (bool, error) {
	if err := p.enter(ctx); err != nil {
		return false, err
	}
	defer p.leave()
	sh := p.shard(id)
	sh.mu.RLock()
	_, ok := sh.index[id]
	sh.mu.RUnlock()
	return ok, nil
}

// Put appends c to the active pack and returns once a sync covers it,
// unless the store holds c.ID already. Concurrent Puts of one ID write it
// once; the others wait for that write and report written=false.
func (p *Pack) Put(ctx context.Context, c chunker.Encoded) (bool, error) {
	if err := p.enter(ctx); err != nil {
		return false, err
	}
	defer p.leave()
	if c.RawSize < 0 || c.RawSize > chunker.MaxRawSize || len(c.Data) > packMaxData {
		return false, fmt.Errorf("%w: chunk %s: raw size %d, %d stored bytes", chunker.ErrBadEncoded, c.ID, c.RawSize, len(c.Data))
	}
	sh := p.shard(c.ID)
	var mine chan struct{}
	for mine == nil {
		sh.mu.Lock()
		if _, ok := sh.index[c.ID]; ok {
			sh.mu.Unlock()
			return false, nil
		}
		if ch, ok := sh.pending[c.ID]; ok {
			sh.mu.Unlock()
			select {
			case <-ch:
				continue
			case <-ctx.Done():
				return false, ctx.Err()
			}
		}
		mine = make(chan struct{})
		sh.pending[c.ID] = mine
		sh.mu.Unlock()
	}
	loc, pf, r, err := p.appendChunk(c)
	if err == nil {
		// The record is written: wait for the sync that covers it, even if
		// ctx ends meanwhile, so that what the index says matches the disk.
		<-r.done
		err = r.err
	}
	sh.mu.Lock()
	delete(sh.pending, c.ID)
	if err == nil {
		sh.index[c.ID] = loc
		pf.live.Add(int64(loc.len))
		p.chunks.Add(1)
		p.bytes.Add(int64(loc.len))
	}
	sh.mu.Unlock()
	close(mine)
	if pf != nil {
		p.endPut(pf)
	}
	if err != nil {
		return false, err
	}
	return true, nil
}

// packOf returns pack num, or nil if it was removed meanwhile.
func (p *Pack) packOf(num uint32) *packFile {
	p.packMu.Lock()
	defer p.packMu.Unlock()
	return p.packs[num]
}

// Get reads the chunk's record and verifies it. A record that fails its
// checksums or verification is quarantined and reported with
// chunker.ErrCorrupt.
func (p *Pack) Get(ctx context.Context, id chunker.ID) (chunker.Encoded, error) {
	return p.get(ctx, id, true)
}

// GetUnverified returns the chunk without checking it against its ID (no
// decompression, no hash), for a node serving a client that verifies every
// chunk itself. The record's CRC32C checksums are still checked (a small
// fraction of a hash's cost): a damaged record is quarantined and reported
// with chunker.ErrCorrupt as by Get.
func (p *Pack) GetUnverified(ctx context.Context, id chunker.ID) (chunker.Encoded, error) {
	return p.get(ctx, id, false)
}

func (p *Pack) get(ctx context.Context, id chunker.ID, verify bool) (chunker.Encoded, error) {
	if err := p.enter(ctx); err != nil {
		return chunker.Encoded{}, err
	}
	defer p.leave()
	sh := p.shard(id)
	sh.mu.RLock()
	loc, ok := sh.index[id]
	var pf *packFile
	if ok {
		pf = p.acquire(loc.pack)
	}
	sh.mu.RUnlock()
	if !ok {
		return chunker.Encoded{}, fmt.Errorf("%w: %s", ErrNotFound, id)
	}
	defer p.release(pf)
	buf := make([]byte, loc.len)
	c, corrupt, err := readRecord(pf.f, buf, loc, id)
	if err != nil {
		return chunker.Encoded{}, fmt.Errorf("replica: pack store: read %s at %d: %w", pf.path, loc.off, err)
	}
	if corrupt == nil && verify {
		corrupt = p.codecs.Verify(c)
	}
	if corrupt != nil {
		p.quarantineRecord(id, loc, buf, corrupt)
		return chunker.Encoded{}, fmt.Errorf("%w: pack store: %s at %d: %w", chunker.ErrCorrupt, pf.path, loc.off, corrupt)
	}
	return c, nil
}

// readRecord reads the chunk record at loc into buf (loc.len bytes) and
// checks it is an intact record of id. A record that is not is reported in
// corrupt; err is an I/O error.
func readRecord(f *os.File, buf []byte, loc packLoc, id chunker.ID) (c chunker.Encoded, corrupt, err error) {
	if _, err := f.ReadAt(buf, int64(loc.off)); err != nil {
		if err = readErr(err); errors.Is(err, errBadRecord) {
			return c, err, nil
		}
		return c, nil, err
	}
	h, err := parseRecord(buf)
	if err != nil {
		return c, err, nil
	}
	if h.kind != recChunk || h.id != id {
		return c, fmt.Errorf("%w: record of %s (kind %d) where %s was expected", errBadRecord, h.id, h.kind, id), nil
	}
	return chunker.Encoded{ID: id, RawSize: int(h.rawSize), Codec: h.codec, Data: buf[packHdrLen:]}, nil, nil
}

// acquire returns pack num with a reference held. The caller holds the
// read lock of a shard whose index points into the pack, so it exists.
func (p *Pack) acquire(num uint32) *packFile {
	p.packMu.Lock()
	defer p.packMu.Unlock()
	pf := p.packs[num]
	pf.refs++
	return pf
}

func (p *Pack) release(pf *packFile) {
	p.packMu.Lock()
	defer p.packMu.Unlock()
	pf.refs--
	if pf.dead && pf.refs == 0 {
		pf.f.Close()
	}
}

// quarantineRecord takes a corrupt record out of the index (unless the
// chunk moved meanwhile), writes a tombstone for it and copies its bytes to
// dir/quarantine.
func (p *Pack) quarantineRecord(id chunker.ID, loc packLoc, buf []byte, why error) {
	sh := p.shard(id)
	sh.mu.Lock()
	if cur, ok := sh.index[id]; !ok || cur != loc {
		sh.mu.Unlock()
		return
	}
	_, r, err := p.appendTombstone(id, loc.pack)
	if err != nil {
		sh.mu.Unlock()
		p.log.Error("cannot quarantine corrupt chunk", "id", id, "err", err, "corruption", why)
		return
	}
	delete(sh.index, id)
	sh.mu.Unlock()
	p.dropLive(loc)
	dst := filepath.Join(p.quarantine, id.String()+"."+strconv.FormatInt(time.Now().UnixNano(), 10))
	if err := writeFileSync(dst, buf); err != nil {
		p.log.Error("cannot copy a corrupt record to quarantine", "id", id, "err", err)
	}
	// The tombstone need not be durable before Get returns: if it is lost,
	// the next open finds the record again and Get quarantines it again.
	go func() {
		if <-r.done; r.err != nil {
			p.log.Warn("sync of a quarantine tombstone", "id", id, "err", r.err)
		}
	}()
	p.log.Warn("quarantined corrupt chunk", "id", id, "pack", loc.pack, "offset", loc.off, "to", dst, "corruption", why)
}

// dropLive accounts for a record the index no longer points to.
func (p *Pack) dropLive(loc packLoc) {
	p.chunks.Add(-1)
	p.bytes.Add(-int64(loc.len))
	pf := p.packOf(loc.pack)
	if pf == nil {
		return // compacted meanwhile
	}
	if pf.live.Add(-int64(loc.len)) < int64(p.opts.CompactBelow*float64(pf.size.Load())) && pf.sealed.Load() {
		p.kick(p.kickMaint)
	}
}

// Delete writes a tombstone for the chunk and returns once it is durable.
func (p *Pack) Delete(ctx context.Context, id chunker.ID) error {
	_, err := p.DeleteBatch(ctx, []chunker.ID{id})
	return err
}

// DeleteBatch deletes the chunks, writing their tombstones one after the
// other and waiting for one sync that covers them all, and returns how many
// it held. Missing chunks are skipped. On an error the chunks before the
// failing one are deleted, though perhaps not durably.
func (p *Pack) DeleteBatch(ctx context.Context, ids []chunker.ID) (int, error) {
	if err := p.enter(ctx); err != nil {
		return 0, err
	}
	defer p.leave()
	var rounds []*syncRound // distinct, in order
	n := 0
	for _, id := range ids {
		r, err := p.tombstone(ctx, id)
		if err != nil {
			return n, err
		}
		if r != nil {
			n++
			if len(rounds) == 0 || rounds[len(rounds)-1] != r {
				rounds = append(rounds, r)
			}
		}
	}
	for _, r := range rounds {
		if <-r.done; r.err != nil {
			return n, r.err
		}
	}
	return n, nil
}

// tombstone appends a tombstone for id and takes it out of the index,
// returning the round that makes it durable (nil if id is not held).
func (p *Pack) tombstone(ctx context.Context, id chunker.ID) (*syncRound, error) {
	sh := p.shard(id)
	for {
		sh.mu.Lock()
		if ch, ok := sh.pending[id]; ok {
			sh.mu.Unlock()
			select {
			case <-ch:
				continue
			case <-ctx.Done():
				return nil, ctx.Err()
			}
		}
		loc, ok := sh.index[id]
		if !ok {
			sh.mu.Unlock()
			return nil, nil
		}
		// The tombstone is appended under the shard lock so that it lands
		// before any later Put of the same ID.
		_, r, err := p.appendTombstone(id, loc.pack)
		if err != nil {
			sh.mu.Unlock()
			return nil, err
		}
		delete(sh.index, id)
		sh.mu.Unlock()
		p.dropLive(loc)
		return r, nil
	}
}

// Walk calls fn for every chunk held, with its record's size, one index
// shard at a time. It stops early with ErrClosed if the store is closed
// meanwhile. Close waits for a Walk in progress, so fn must not call Close.
func (p *Pack) Walk(ctx context.Context, fn func(id chunker.ID, storedSize int64) error) error {
	if err := p.enter(ctx); err != nil {
		return err
	}
	defer p.leave()
	type item struct {
		id   chunker.ID
		size int64
	}
	var items []item
	for i := range p.shards {
		sh := &p.shards[i]
		items = items[:0]
		sh.mu.RLock()
		for id, loc := range sh.index {
			items = append(items, item{id, int64(loc.len)})
		}
		sh.mu.RUnlock()
		for _, it := range items {
			if err := ctx.Err(); err != nil {
				return err
			}
			if p.isClosed() {
				return ErrClosed
			}
			if err := fn(it.id, it.size); err != nil {
				return err
			}
		}
	}
	return nil
}

// Usage returns the chunk count and the bytes of their records.
func (p *Pack) Usage(ctx context.Context) (Usage, error) {
	if err := p.enter(ctx); err != nil {
		return Usage{}, err
	}
	defer p.leave()
	return Usage{Chunks: uint64(max(p.chunks.Load(), 0)), Bytes: uint64(max(p.bytes.Load(), 0))}, nil
}

// Stats describes the store's pack files.
func (p *Pack) Stats() PackStats {
	s := PackStats{
		Syncs:        p.stats.syncs.Load(),
		Compactions:  p.stats.compactions.Load(),
		CopiedBytes:  p.stats.copiedBytes.Load(),
		TornTails:    p.stats.tornTails.Load(),
		TornBytes:    p.stats.tornBytes.Load(),
		SkippedBytes: p.stats.skipped.Load(),
		Migrated:     p.stats.migrated.Load(),
	}
	p.packMu.Lock()
	defer p.packMu.Unlock()
	for _, pf := range p.packs {
		s.Packs++
		s.FileBytes += pf.size.Load()
		s.LiveBytes += pf.live.Load()
	}
	return s
}

// CheckSpace reports whether the store has room for one more of the
// largest records, as Local.CheckSpace does (fallocate, statfs where
// unsupported). The error wraps ErrNoSpace when there is none.
func (p *Pack) CheckSpace(ctx context.Context) error {
	if err := p.enter(ctx); err != nil {
		return err
	}
	defer p.leave()
	f, err := os.CreateTemp(p.tmp, "space-check.*")
	if err != nil {
		return noSpace(fmt.Errorf("replica: pack store: check space: %w", err))
	}
	defer func() {
		f.Close()
		os.Remove(f.Name())
	}()
	err = unix.Fallocate(int(f.Fd()), 0, 0, packMaxRecord)
	if errors.Is(err, unix.EOPNOTSUPP) || errors.Is(err, unix.ENOSYS) {
		var st unix.Statfs_t
		if err = unix.Statfs(p.dir, &st); err == nil && int64(st.Bavail)*int64(st.Bsize) < packMaxRecord {
			err = unix.ENOSPC
		}
	}
	if err != nil {
		return noSpace(fmt.Errorf("replica: pack store: no room for a %d-byte record in %s: %w", packMaxRecord, p.dir, err))
	}
	return nil
}

// Close waits for calls in progress, stops compaction (a compaction cut
// short is finished at the next open), syncs what was appended, writes the
// index files still due and releases the directory lock. Every later call,
// Close included, returns ErrClosed.
func (p *Pack) Close() error {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return ErrClosed
	}
	p.closed = true
	p.mu.Unlock()
	p.stopMaint()
	<-p.maintDone
	p.mu.Lock()
	for p.inflight > 0 {
		p.idle.Wait()
	}
	p.mu.Unlock()
	err := p.barrier()
	if err == nil {
		if ierr := p.writeIndexes(); ierr != nil {
			// Every chunk is on disk (the barrier); an index only saves
			// the next open a scan of its pack, and a full disk may have
			// no room for it.
			p.log.Warn("cannot write a pack index; the pack will be scanned when the store is opened", "err", ierr)
		}
	}
	if serr := p.shutdown(); err == nil {
		err = serr
	}
	return err
}

// shutdown stops the syncer, closes the packs and releases the lock.
func (p *Pack) shutdown() error {
	close(p.stopSync)
	<-p.syncDone
	p.packMu.Lock()
	for _, pf := range p.packs {
		pf.f.Close()
	}
	p.packMu.Unlock()
	err := unix.Flock(int(p.lockFile.Fd()), unix.LOCK_UN)
	if cerr := p.lockFile.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("replica: pack store: release lock: %w", err)
	}
	return nil
}

// kick wakes the goroutine reading ch without blocking.
func (p *Pack) kick(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

// writeFileSync writes a new file durably (data and directory entry).
func writeFileSync(path string, b []byte) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return err
	}
	if _, err := f.Write(b); err != nil {
		f.Close()
		return err
	}
	if err := fdatasync(f); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return syncDir(filepath.Dir(path))
}
