package consensus

import (
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
	wal "github.com/hashicorp/raft-wal"
	"github.com/hashicorp/raft-wal/metadb"
	"golang.org/x/sys/unix"
)

// ErrLogUnwritable: this member's Raft log cannot be written (its disk is
// full, say), so it cannot take new entries or catch up with the leader
// until it can again. It reopens the log by itself once writes may work.
var ErrLogUnwritable = errors.New("consensus: raft log cannot be written")

// reopenEvery bounds how often a failed log is reopened on the write path;
// the background check (logCheckEvery) reopens it too.
const (
	reopenEvery   = 200 * time.Millisecond
	logCheckEvery = time.Second
)

// defaultSegmentSize is raft-wal's own default segment size.
const defaultSegmentSize = 64 << 20

// walLog is the Raft log store and stable store: raft-wal, reopened in place
// after a failed write.
//
// raft-wal v0.4.0 cannot recover from a failed write by itself. A write
// that fails half-way (ENOSPC in WriteAt) leaves its tail writer's
// in-memory index ahead of the file, so every later append is refused as
// non-monotonic. Worse, segments are preallocated (64 MiB by default) when
// the log rotates to a new one, in a background goroutine: when that
// fallocate fails, the error is only logged, the full segment stays the
// tail, and every later append fails with "segment is sealed", for as long
// as the process lives. Reopening the WAL from disk recovers both: it
// recovers the tail from its last commit frame (creating an empty tail if
// the failed rotation left only its metadata). So after any failed write
// the WAL is closed and opened again before the next write. Its metadata
// DB, which is also the stable store (term, vote), stays open throughout:
// BoltMetaDB.Load reuses an open DB, and the stable store never goes away
// under Raft (which panics when it cannot read or write it).
type walLog struct {
	id          string // the member, named in errors
	dir         string
	segmentSize int64
	open        func() (*wal.WAL, error)
	meta        *metadb.BoltMetaDB
	logger      *slog.Logger

	mu sync.RWMutex // write-held to swap w, read-held by every call into it
	w  *wal.WAL     // nil after a reopen failed

	wmu     sync.Mutex // serialises writes and reopens
	stale   bool       // a write failed: w must be reopened before the next one
	lastTry time.Time
	stored  uint64 // the last index Raft was told is stored

	failure atomic.Pointer[logFailure] // nil while the log is writable
	reopens atomic.Uint64
}

type logFailure struct {
	err   error
	since time.Time
}

var (
	_ raft.LogStore          = (*walLog)(nil)
	_ raft.StableStore       = (*walLog)(nil)
	_ raft.MonotonicLogStore = (*walLog)(nil)
)

// openWALLog opens the log in dir, with segments of segmentSize bytes (0:
// raft-wal's default, 64 MiB).
func openWALLog(id, dir string, segmentSize int, hlog hclog.Logger, logger *slog.Logger) (*walLog, error) {
	meta := &metadb.BoltMetaDB{}
	l := &walLog{id: id, dir: dir, segmentSize: int64(segmentSize), meta: meta, logger: logger}
	if segmentSize <= 0 {
		segmentSize = defaultSegmentSize
		l.segmentSize = defaultSegmentSize
	}
	l.open = func() (*wal.WAL, error) {
		w, err := wal.Open(dir, wal.WithLogger(hlog), wal.WithMetaStore(meta), wal.WithSegmentSize(segmentSize), wal.WithSegmentFiler(newSealFixFiler(dir)))
		if err != nil {
			return nil, fmt.Errorf("open raft log %s: %w", dir, err)
		}
		return w, nil
	}
	// A process that stopped right after a failed sealing append left what
	// reopenLocked clears; a restart clears it too.
	if err := clearUncommitted(dir); err != nil {
		meta.Close()
		return nil, fmt.Errorf("raft log %s: clear what a failed write left: %w", dir, err)
	}
	w, err := l.open()
	if err != nil {
		meta.Close()
		return nil, err
	}
	l.w = w
	if l.stored, err = w.LastIndex(); err != nil {
		l.close()
		return nil, err
	}
	return l, nil
}

// Failure returns why the log cannot be written now, wrapping
// ErrLogUnwritable, and since when; nil while it can.
func (l *walLog) Failure() (error, time.Time) {
	f := l.failure.Load()
	if f == nil {
		return nil, time.Time{}
	}
	return f.err, f.since
}

// failedLocked records a failed write or reopen (wmu held).
func (l *walLog) failedLocked(what string, err error) error {
	err = fmt.Errorf("%w on node %s: %s: %w", ErrLogUnwritable, l.id, what, err)
	l.stale = true
	if old := l.failure.Load(); old != nil {
		l.failure.Store(&logFailure{err: err, since: old.since})
	} else {
		l.failure.Store(&logFailure{err: err, since: time.Now()})
		l.logger.Error("raft log cannot be written; this node takes no new entries until it can", "err", err)
	}
	return err
}

// wrote records a successful write (wmu held).
func (l *walLog) wroteLocked() {
	if old := l.failure.Swap(nil); old != nil {
		l.logger.Info("raft log writable again", "after", time.Since(old.since).Round(time.Millisecond), "reopens", l.reopens.Load())
	}
}

// ready makes sure a log that failed has been reopened before it is
// written again (wmu held). Reopens on the write path are at most
// reopenEvery apart; in between, writes fail with the last error at once.
func (l *walLog) readyLocked() error {
	if !l.stale && l.w != nil {
		return nil
	}
	if time.Since(l.lastTry) < reopenEvery {
		if err, _ := l.Failure(); err != nil {
			return err
		}
		return fmt.Errorf("%w on node %s", ErrLogUnwritable, l.id)
	}
	return l.reopenLocked()
}

// reopenLocked closes the WAL and opens it again from disk (wmu held). An
// entry that a failed write left on disk beyond what Raft was told is stored
// is cut off: Raft will send it again.
func (l *walLog) reopenLocked() error {
	l.lastTry = time.Now()
	l.reopens.Add(1)
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.w != nil {
		l.w.Close() // leaves the metadata DB open, as wanted
		l.w = nil
	}
	if err := clearUncommitted(l.dir); err != nil {
		return l.failedLocked("reopen: clear what a failed write left", err)
	}
	w, err := l.open()
	if err != nil {
		return l.failedLocked("reopen", err)
	}
	first, ferr := w.FirstIndex()
	last, lerr := w.LastIndex()
	if err := errors.Join(ferr, lerr); err != nil {
		w.Close()
		return l.failedLocked("reopen", err)
	}
	if last > l.stored && l.stored >= first && first > 0 {
		if err := w.DeleteRange(l.stored+1, last); err != nil {
			w.Close()
			return l.failedLocked(fmt.Sprintf("reopen: cut off entries %d-%d that a failed write left", l.stored+1, last), err)
		}
	}
	l.w = w
	l.stale = false
	l.logger.Info("raft log reopened after a failed write", "last_index", min(last, l.stored))
	return nil
}

// raft-wal's segment format (segment/format.go): a 32-byte file header,
// then frames, each an 8-byte header (type, 3 zero bytes, length or CRC)
// and a payload padded to 8 bytes. Commit frames have no payload.
const (
	walFileHeaderLen  = 32
	walFrameHeaderLen = 8
	walFrameIndex     = 2
	walFrameCommit    = 3
)

// clearUncommitted zeroes what a failed append left after the last commit
// frame of the newest segment file in dir. raft-wal's recovery ignores
// uncommitted entries, but not an uncommitted index frame: a failed append
// that was sealing the segment leaves one, and the recovered segment then
// counts as sealed while its metadata says it is not, so every append fails
// with "segment is sealed", after a reopen or a restart alike. Only bytes
// after the last commit are touched, which recovery discards anyway.
func clearUncommitted(dir string) error {
	names, err := filepath.Glob(filepath.Join(dir, "*.wal"))
	if err != nil || len(names) == 0 {
		return err
	}
	slices.Sort(names) // named by zero-padded base index: the tail is last
	f, err := os.OpenFile(names[len(names)-1], os.O_RDWR, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	size := fi.Size()
	commitEnd, end, sawIndex := int64(walFileHeaderLen), int64(walFileHeaderLen), false
	var hdr [walFrameHeaderLen]byte
	for off := int64(walFileHeaderLen); off+walFrameHeaderLen <= size; {
		if _, err := f.ReadAt(hdr[:], off); err != nil {
			break
		}
		typ := hdr[0]
		if typ == 0 || typ > walFrameCommit || hdr[1]|hdr[2]|hdr[3] != 0 {
			break // zeros (never written) or garbage: recovery stops here too
		}
		off += walFrameHeaderLen
		if typ == walFrameCommit {
			commitEnd, end, sawIndex = off, off, false
			continue
		}
		sawIndex = sawIndex || typ == walFrameIndex
		n := int64(binary.LittleEndian.Uint32(hdr[4:]))
		off += n + (walFrameHeaderLen-n%walFrameHeaderLen)%walFrameHeaderLen
		end = min(off, size)
	}
	if !sawIndex || end <= commitEnd {
		return nil
	}
	// Punching a hole needs no space; where it is unsupported the
	// (allocated) bytes are overwritten.
	err = unix.Fallocate(int(f.Fd()), unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, commitEnd, end-commitEnd)
	if err != nil {
		if _, err = f.WriteAt(make([]byte, end-commitEnd), commitEnd); err != nil {
			return fmt.Errorf("zero %s from %d to %d: %w", f.Name(), commitEnd, end, err)
		}
	}
	return f.Sync()
}

// check runs in the background while the log has failed: it reopens a
// failed WAL and, once it is open, declares the log writable again when
// one segment's worth of space can be reserved beside it (so that the next
// rotation will not fail too). The next write confirms it or fails again.
func (l *walLog) check() {
	if err, _ := l.Failure(); err == nil {
		return
	}
	l.wmu.Lock()
	defer l.wmu.Unlock()
	if l.stale || l.w == nil {
		if l.reopenLocked() != nil {
			return
		}
	}
	if err := reserve(l.dir, l.segmentSize); err != nil {
		l.failedLocked("no room for a new log segment", err)
		l.stale = false // the WAL itself is fine; writes may still go into the current segment
		return
	}
	l.wroteLocked()
}

// reserve checks that size bytes can be allocated in dir: it fallocates a
// temporary file and removes it (or compares statfs's free space where the
// file system cannot allocate).
func reserve(dir string, size int64) error {
	f, err := os.CreateTemp(dir, ".space-check.*")
	if err != nil {
		return err
	}
	defer func() {
		f.Close()
		os.Remove(f.Name())
	}()
	err = unix.Fallocate(int(f.Fd()), 0, 0, size)
	if errors.Is(err, unix.EOPNOTSUPP) || errors.Is(err, unix.ENOSYS) {
		var st unix.Statfs_t
		if err = unix.Statfs(dir, &st); err == nil && int64(st.Bavail)*int64(st.Bsize) < size {
			err = unix.ENOSPC
		}
	}
	if err != nil {
		return fmt.Errorf("reserve %d bytes in %s: %w", size, dir, err)
	}
	return nil
}

// reading returns the open WAL for a read, with mu read-held; call done.
func (l *walLog) reading() (w *wal.WAL, done func(), err error) {
	l.mu.RLock()
	if l.w == nil {
		l.mu.RUnlock()
		if err, _ := l.Failure(); err != nil {
			return nil, nil, err
		}
		return nil, nil, fmt.Errorf("%w on node %s: log closed", ErrLogUnwritable, l.id)
	}
	return l.w, l.mu.RUnlock, nil
}

// FirstIndex implements raft.LogStore.
func (l *walLog) FirstIndex() (uint64, error) {
	w, done, err := l.reading()
	if err != nil {
		return 0, err
	}
	defer done()
	return w.FirstIndex()
}

// LastIndex implements raft.LogStore.
func (l *walLog) LastIndex() (uint64, error) {
	w, done, err := l.reading()
	if err != nil {
		return 0, err
	}
	defer done()
	return w.LastIndex()
}

// GetLog implements raft.LogStore.
func (l *walLog) GetLog(index uint64, log *raft.Log) error {
	w, done, err := l.reading()
	if err != nil {
		return err
	}
	defer done()
	return w.GetLog(index, log)
}

// StoreLog implements raft.LogStore.
func (l *walLog) StoreLog(log *raft.Log) error { return l.StoreLogs([]*raft.Log{log}) }

// StoreLogs implements raft.LogStore. A failed write marks the log failed
// and makes the next write reopen it first.
func (l *walLog) StoreLogs(logs []*raft.Log) error {
	if len(logs) == 0 {
		return nil
	}
	l.wmu.Lock()
	defer l.wmu.Unlock()
	if err := l.readyLocked(); err != nil {
		return err
	}
	l.mu.RLock()
	err := l.w.StoreLogs(logs)
	l.mu.RUnlock()
	if err != nil {
		return l.failedLocked(fmt.Sprintf("append entries %d-%d", logs[0].Index, logs[len(logs)-1].Index), err)
	}
	l.stored = logs[len(logs)-1].Index
	l.wroteLocked()
	return nil
}

// DeleteRange implements raft.LogStore.
func (l *walLog) DeleteRange(min, max uint64) error {
	l.wmu.Lock()
	defer l.wmu.Unlock()
	if err := l.readyLocked(); err != nil {
		return err
	}
	l.mu.RLock()
	err := l.w.DeleteRange(min, max)
	l.mu.RUnlock()
	if err != nil {
		return l.failedLocked(fmt.Sprintf("delete entries %d-%d", min, max), err)
	}
	if max >= l.stored && min <= l.stored+1 {
		l.stored = min - 1
	}
	return nil
}

// IsMonotonic implements raft.MonotonicLogStore, as raft-wal does: after a
// snapshot is installed the whole log is replaced.
func (l *walLog) IsMonotonic() bool { return true }

// Set implements raft.StableStore, straight on the metadata DB (as raft-wal
// does), so it works whatever state the log is in.
func (l *walLog) Set(key, val []byte) error { return l.meta.SetStable(key, val) }

// Get implements raft.StableStore.
func (l *walLog) Get(key []byte) ([]byte, error) { return l.meta.GetStable(key) }

// SetUint64 implements raft.StableStore, encoding as raft-wal does (8 bytes,
// little endian), so existing state reads back.
func (l *walLog) SetUint64(key []byte, val uint64) error {
	var buf [8]byte
	binary.LittleEndian.PutUint64(buf[:], val)
	return l.Set(key, buf[:])
}

// GetUint64 implements raft.StableStore.
func (l *walLog) GetUint64(key []byte) (uint64, error) {
	raw, err := l.Get(key)
	if err != nil || len(raw) == 0 {
		return 0, err
	}
	if len(raw) != 8 {
		return 0, fmt.Errorf("consensus: stable store key %q holds %d bytes, not a uint64", key, len(raw))
	}
	return binary.LittleEndian.Uint64(raw), nil
}

// close closes the WAL and its metadata DB (raft-wal v0.4.0's Close leaves
// the DB open, holding its flock).
func (l *walLog) close() error {
	l.wmu.Lock()
	defer l.wmu.Unlock()
	l.mu.Lock()
	defer l.mu.Unlock()
	var err error
	if l.w != nil {
		err = l.w.Close()
		l.w = nil
	}
	return errors.Join(err, l.meta.Close())
}
