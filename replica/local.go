package replica

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/ddstore/ddstore/chunker"
)

// ErrLocked: another Local (in this or another process) has the directory open.
var ErrLocked = errors.New("replica: local store directory is in use")

// Local file format: a header, then the encoded bytes.
//
//	magic "DDC1" (4 bytes) | codec (1 byte) | raw size (4 bytes, big endian) | data
const (
	localMagic     = "DDC1"
	localHeaderLen = len(localMagic) + 1 + 4
	// localSlack is what a stored file may hold beyond header+MaxRawSize:
	// encoders store incompressible chunks raw, so encoded data is never
	// larger than MaxRawSize; the slack only guards the bound.
	localSlack   = 64 << 10
	localMaxFile = int64(localHeaderLen + chunker.MaxRawSize + localSlack)

	localLockName       = "LOCK"
	localTmpName        = "tmp"
	localQuarantineName = "quarantine"
)

// Local is the embedded default Store: one file per chunk under a directory,
// named by the chunk's hex ID in a fan-out directory named by its first two
// hex digits (dir/ab/ab12...). A Put is durable when it returns: the file is
// written under dir/tmp, synced, renamed into place and its directory synced.
// Get verifies every read; a corrupt file is moved to dir/quarantine. One
// process at a time may open a directory (an flock on dir/LOCK).
type Local struct {
	dir        string
	tmp        string
	quarantine string
	codecs     *chunker.Codecs
	log        *slog.Logger
	lockFile   *os.File

	// stripes serialise Put, Delete and quarantine per ID, so that exactly
	// one concurrent Put of an ID reports written and the counters stay exact.
	stripes [256]sync.Mutex
	// fanout[b] is set once the fan-out directory for first byte b exists
	// and its entry in dir has been synced by this process.
	fanout [256]atomic.Bool

	chunks atomic.Int64
	bytes  atomic.Int64

	mu       sync.Mutex
	idle     sync.Cond // signalled when inflight drops to 0 after close
	closed   bool
	inflight int
}

var (
	_ Store        = (*Local)(nil)
	_ SpaceChecker = (*Local)(nil)
)

// OpenLocal opens (creating it if needed) the local chunk store in dir. It
// takes an exclusive lock on dir/LOCK, failing with ErrLocked while another
// Local holds it, removes temporary files left by a crash and counts the
// chunks held.
func OpenLocal(dir string) (*Local, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("replica: local store: %w", err)
	}
	lf, err := os.OpenFile(filepath.Join(dir, localLockName), os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, fmt.Errorf("replica: local store: %w", err)
	}
	if err := unix.Flock(int(lf.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		lf.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			return nil, fmt.Errorf("%w: %s is locked by another process or store (%s)", ErrLocked, dir, localLockName)
		}
		return nil, fmt.Errorf("replica: local store: lock %s: %w", dir, err)
	}
	if _, err := os.Stat(filepath.Join(dir, packDirName)); err == nil {
		// Opened as an empty file-per-chunk store, a converted directory
		// would look as if every chunk were lost.
		lf.Close()
		return nil, fmt.Errorf("replica: local store: %s holds a pack store (it was opened with --store pack, which converted it): open it as a pack store", dir)
	}
	l := &Local{
		dir:        dir,
		tmp:        filepath.Join(dir, localTmpName),
		quarantine: filepath.Join(dir, localQuarantineName),
		codecs:     chunker.NewCodecs(),
		log:        slog.Default().With("store", "local", "dir", dir),
		lockFile:   lf,
	}
	l.idle.L = &l.mu
	if err := l.init(); err != nil {
		l.unlock()
		return nil, err
	}
	return l, nil
}

func (l *Local) init() error {
	if err := os.RemoveAll(l.tmp); err != nil {
		return fmt.Errorf("replica: local store: clear %s: %w", l.tmp, err)
	}
	for _, d := range []string{l.tmp, l.quarantine} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return fmt.Errorf("replica: local store: %w", err)
		}
	}
	var n, size int64
	err := l.walk(context.Background(), func(_ chunker.ID, s int64) error {
		n++
		size += s
		return nil
	})
	if err != nil {
		return fmt.Errorf("replica: local store: count chunks: %w", err)
	}
	l.chunks.Store(n)
	l.bytes.Store(size)
	return nil
}

func (l *Local) unlock() error {
	err := unix.Flock(int(l.lockFile.Fd()), unix.LOCK_UN)
	if cerr := l.lockFile.Close(); err == nil {
		err = cerr
	}
	return err
}

// enter registers a call in progress; it fails once the store is closed.
func (l *Local) enter(ctx context.Context) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return ErrClosed
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	l.inflight++
	return nil
}

func (l *Local) leave() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.inflight--
	if l.inflight == 0 && l.closed {
		l.idle.Broadcast()
	}
}

func (l *Local) isClosed() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.closed
}

func (l *Local) path(id chunker.ID) string {
	h := id.String()
	return filepath.Join(l.dir, h[:2], h)
}

// stripe returns the lock for id. It is picked by the last byte of the ID:
// the first picks the fan-out directory, so a different one spreads the IDs
// of one directory.
func (l *Local) stripe(id chunker.ID) *sync.Mutex { return &l.stripes[id[chunker.IDSize-1]] }

// Kind returns "local".
func (l *Local) Kind() string { return "local" }

// Dir returns the store's directory.
func (l *Local) Dir() string { return l.dir }

// Has reports whether the chunk's file exists.
func (l *Local) Has(ctx context.Context, id chunker.ID) (bool, error) {
	if err := l.enter(ctx); err != nil {
		return false, err
	}
	defer l.leave()
	_, err := os.Lstat(l.path(id))
	switch {
	case err == nil:
		return true, nil
	case errors.Is(err, fs.ErrNotExist):
		return false, nil
	}
	return false, fmt.Errorf("replica: local store: %w", err)
}

// Put writes c durably unless a file for c.ID exists already.
func (l *Local) Put(ctx context.Context, c chunker.Encoded) (bool, error) {
	if err := l.enter(ctx); err != nil {
		return false, err
	}
	defer l.leave()
	if c.RawSize < 0 || c.RawSize > chunker.MaxRawSize || int64(localHeaderLen+len(c.Data)) > localMaxFile {
		return false, fmt.Errorf("%w: chunk %s: raw size %d, %d stored bytes", chunker.ErrBadEncoded, c.ID, c.RawSize, len(c.Data))
	}
	mu := l.stripe(c.ID)
	mu.Lock()
	defer mu.Unlock()

	final := l.path(c.ID)
	if _, err := os.Lstat(final); err == nil {
		return false, nil
	} else if !errors.Is(err, fs.ErrNotExist) {
		return false, fmt.Errorf("replica: local store: %w", err)
	}
	if err := l.ensureFanout(c.ID[0]); err != nil {
		return false, noSpace(err)
	}
	placed, err := l.writeFile(c, final)
	if placed {
		l.chunks.Add(1)
		l.bytes.Add(int64(localHeaderLen + len(c.Data)))
	}
	if err != nil {
		return false, noSpace(err)
	}
	return true, nil
}

// CheckSpace reports whether the store has room for one more of the largest
// chunk files: it reserves that much in a temporary file (fallocate, which
// also counts against quotas) and removes it. Where the file system cannot
// reserve space it compares the free space statfs reports instead. The
// error wraps ErrNoSpace when there is no room.
func (l *Local) CheckSpace(ctx context.Context) error {
	if err := l.enter(ctx); err != nil {
		return err
	}
	defer l.leave()
	f, err := os.CreateTemp(l.tmp, "space-check.*")
	if err != nil {
		return noSpace(fmt.Errorf("replica: local store: check space: %w", err))
	}
	defer func() {
		f.Close()
		os.Remove(f.Name())
	}()
	err = unix.Fallocate(int(f.Fd()), 0, 0, localMaxFile)
	if errors.Is(err, unix.EOPNOTSUPP) || errors.Is(err, unix.ENOSYS) {
		var st unix.Statfs_t
		if err = unix.Statfs(l.dir, &st); err == nil && int64(st.Bavail)*int64(st.Bsize) < localMaxFile {
			err = unix.ENOSPC
		}
	}
	if err != nil {
		return noSpace(fmt.Errorf("replica: local store: no room for a %d-byte chunk file in %s: %w", localMaxFile, l.dir, err))
	}
	return nil
}

// writeFile writes c to a temporary file, syncs it, renames it to final and
// syncs final's directory. placed reports whether the file reached final,
// which it may have even if the directory sync then failed.
func (l *Local) writeFile(c chunker.Encoded, final string) (placed bool, err error) {
	f, err := os.CreateTemp(l.tmp, c.ID.String()+".*")
	if err != nil {
		return false, fmt.Errorf("replica: local store: %w", err)
	}
	defer func() {
		if !placed {
			f.Close()
			os.Remove(f.Name())
		}
	}()
	var hdr [localHeaderLen]byte
	copy(hdr[:], localMagic)
	hdr[len(localMagic)] = byte(c.Codec)
	binary.BigEndian.PutUint32(hdr[len(localMagic)+1:], uint32(c.RawSize))
	if _, err = f.Write(hdr[:]); err != nil {
		return false, fmt.Errorf("replica: local store: write %s: %w", f.Name(), err)
	}
	if _, err = f.Write(c.Data); err != nil {
		return false, fmt.Errorf("replica: local store: write %s: %w", f.Name(), err)
	}
	if err = fdatasync(f); err != nil {
		return false, fmt.Errorf("replica: local store: sync %s: %w", f.Name(), err)
	}
	if err = f.Close(); err != nil {
		return false, fmt.Errorf("replica: local store: close %s: %w", f.Name(), err)
	}
	if err = os.Rename(f.Name(), final); err != nil {
		return false, fmt.Errorf("replica: local store: %w", err)
	}
	if err := syncDir(filepath.Dir(final)); err != nil {
		// The file is in place but not known durable: the Put failed.
		return true, fmt.Errorf("replica: local store: %w", err)
	}
	return true, nil
}

// ensureFanout creates the fan-out directory for first byte b if needed and
// syncs the store directory once per process so its entry is durable.
func (l *Local) ensureFanout(b byte) error {
	if l.fanout[b].Load() {
		return nil
	}
	p := filepath.Join(l.dir, hex.EncodeToString([]byte{b}))
	if err := os.Mkdir(p, 0o755); err != nil && !errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("replica: local store: %w", err)
	}
	if err := syncDir(l.dir); err != nil {
		return fmt.Errorf("replica: local store: %w", err)
	}
	l.fanout[b].Store(true)
	return nil
}

// Get reads and verifies the chunk. A file that fails verification is moved
// to dir/quarantine and reported with chunker.ErrCorrupt.
func (l *Local) Get(ctx context.Context, id chunker.ID) (chunker.Encoded, error) {
	return l.get(ctx, id, true)
}

// GetUnverified returns the chunk as stored, without checking it against
// its ID (see UnverifiedGetter).
func (l *Local) GetUnverified(ctx context.Context, id chunker.ID) (chunker.Encoded, error) {
	return l.get(ctx, id, false)
}

func (l *Local) get(ctx context.Context, id chunker.ID, verify bool) (chunker.Encoded, error) {
	if err := l.enter(ctx); err != nil {
		return chunker.Encoded{}, err
	}
	defer l.leave()
	p := l.path(id)
	f, err := os.Open(p)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return chunker.Encoded{}, fmt.Errorf("%w: %s", ErrNotFound, id)
		}
		return chunker.Encoded{}, fmt.Errorf("replica: local store: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return chunker.Encoded{}, fmt.Errorf("replica: local store: %w", err)
	}
	c, cerr, err := l.read(f, fi.Size(), id)
	if err != nil {
		return chunker.Encoded{}, fmt.Errorf("replica: local store: read %s: %w", p, err)
	}
	if cerr == nil && verify {
		cerr = l.codecs.Verify(c)
	}
	if cerr != nil {
		l.quarantineFile(id, fi, cerr)
		return chunker.Encoded{}, fmt.Errorf("%w: local store: %s: %w", chunker.ErrCorrupt, p, cerr)
	}
	return c, nil
}

// read parses a chunk file of the given size. A malformed file is reported
// in corrupt; err is an I/O error.
func (l *Local) read(f *os.File, size int64, id chunker.ID) (c chunker.Encoded, corrupt, err error) {
	if size < int64(localHeaderLen) || size > localMaxFile {
		return c, fmt.Errorf("file is %d bytes, outside [%d, %d]", size, localHeaderLen, localMaxFile), nil
	}
	buf := make([]byte, size)
	if _, err := io.ReadFull(f, buf); err != nil {
		if errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) {
			return c, fmt.Errorf("file shrank while read: %w", err), nil
		}
		return c, nil, err
	}
	if !bytes.Equal(buf[:len(localMagic)], []byte(localMagic)) {
		return c, fmt.Errorf("bad magic %q", buf[:len(localMagic)]), nil
	}
	raw := binary.BigEndian.Uint32(buf[len(localMagic)+1:])
	if raw > chunker.MaxRawSize {
		return c, fmt.Errorf("header declares %d raw bytes (limit %d)", raw, chunker.MaxRawSize), nil
	}
	return chunker.Encoded{
		ID:      id,
		RawSize: int(raw),
		Codec:   chunker.Codec(buf[len(localMagic)]),
		Data:    buf[localHeaderLen:],
	}, nil, nil
}

// quarantineFile moves a corrupt chunk file out of the store, unless it was
// replaced since it was read (fi).
func (l *Local) quarantineFile(id chunker.ID, fi os.FileInfo, why error) {
	mu := l.stripe(id)
	mu.Lock()
	defer mu.Unlock()
	p := l.path(id)
	cur, err := os.Lstat(p)
	if err != nil || !os.SameFile(cur, fi) {
		return
	}
	dst := filepath.Join(l.quarantine, id.String()+"."+strconv.FormatInt(time.Now().UnixNano(), 10))
	if err := os.Rename(p, dst); err != nil {
		l.log.Error("cannot quarantine corrupt chunk", "id", id, "err", err, "corruption", why)
		return
	}
	l.chunks.Add(-1)
	l.bytes.Add(-cur.Size())
	if err := syncDir(filepath.Dir(p)); err != nil {
		l.log.Warn("sync after quarantine", "err", err)
	}
	l.log.Warn("quarantined corrupt chunk", "id", id, "to", dst, "corruption", why)
}

// Delete removes the chunk's file. It does not sync the directory: a chunk
// deleted just before a crash may reappear, which is harmless.
func (l *Local) Delete(ctx context.Context, id chunker.ID) error {
	if err := l.enter(ctx); err != nil {
		return err
	}
	defer l.leave()
	mu := l.stripe(id)
	mu.Lock()
	defer mu.Unlock()
	p := l.path(id)
	fi, err := os.Lstat(p)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("replica: local store: %w", err)
	}
	if err := os.Remove(p); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		return fmt.Errorf("replica: local store: %w", err)
	}
	l.chunks.Add(-1)
	l.bytes.Add(-fi.Size())
	return nil
}

// Walk calls fn for every chunk file, with its size. It stops early with
// ErrClosed if the store is closed meanwhile. Close waits for a Walk in
// progress, so fn must not call Close.
func (l *Local) Walk(ctx context.Context, fn func(id chunker.ID, storedSize int64) error) error {
	if err := l.enter(ctx); err != nil {
		return err
	}
	defer l.leave()
	return l.walk(ctx, func(id chunker.ID, size int64) error {
		if l.isClosed() {
			return ErrClosed
		}
		return fn(id, size)
	})
}

func (l *Local) walk(ctx context.Context, fn func(id chunker.ID, storedSize int64) error) error {
	for b := range 256 {
		name := hex.EncodeToString([]byte{byte(b)})
		if err := l.walkFanout(ctx, name, fn); err != nil {
			return err
		}
	}
	return nil
}

func (l *Local) walkFanout(ctx context.Context, name string, fn func(id chunker.ID, storedSize int64) error) error {
	d, err := os.Open(filepath.Join(l.dir, name))
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("replica: local store: %w", err)
	}
	defer d.Close()
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		ents, err := d.ReadDir(512)
		for _, e := range ents {
			if err := ctx.Err(); err != nil {
				return err
			}
			n := e.Name()
			if !e.Type().IsRegular() || len(n) != 2*chunker.IDSize || n[:2] != name {
				continue
			}
			id, perr := chunker.ParseID(n)
			if perr != nil || id.String() != n {
				continue
			}
			info, ierr := e.Info()
			if errors.Is(ierr, fs.ErrNotExist) {
				continue // deleted meanwhile
			}
			if ierr != nil {
				return fmt.Errorf("replica: local store: %w", ierr)
			}
			if ferr := fn(id, info.Size()); ferr != nil {
				return ferr
			}
		}
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("replica: local store: %w", err)
		}
	}
}

// Usage returns the chunk count and the bytes their files take, kept up to
// date in memory since the store was opened.
func (l *Local) Usage(ctx context.Context) (Usage, error) {
	if err := l.enter(ctx); err != nil {
		return Usage{}, err
	}
	defer l.leave()
	return Usage{Chunks: uint64(max(l.chunks.Load(), 0)), Bytes: uint64(max(l.bytes.Load(), 0))}, nil
}

// Close waits for calls in progress, then releases the directory lock.
// Every later call, Close included, returns ErrClosed.
func (l *Local) Close() error {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return ErrClosed
	}
	l.closed = true
	for l.inflight > 0 {
		l.idle.Wait()
	}
	l.mu.Unlock()
	if err := l.unlock(); err != nil {
		return fmt.Errorf("replica: local store: release lock: %w", err)
	}
	return nil
}

func fdatasync(f *os.File) error {
	sc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	if err := sc.Control(func(fd uintptr) {
		for {
			serr = unix.Fdatasync(int(fd))
			if serr != unix.EINTR {
				return
			}
		}
	}); err != nil {
		return err
	}
	return serr
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("sync directory %s: %w", dir, err)
	}
	return nil
}
