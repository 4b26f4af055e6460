package client

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"
	"sync/atomic"
	"time"

	"github.com/ddstore/ddstore/chunker"
	"github.com/ddstore/ddstore/internal/blake3"
	pb "github.com/ddstore/ddstore/proto/ddstore/v1"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// ErrCorrupt: what the cluster sent does not match the file's hashes.
var ErrCorrupt = errors.New("client: downloaded data does not match its hash")

// errBadChunk: a chunk a node sent does not match its ID. The node may have
// sent its copy unchecked: asked again with verify, it checks its copy,
// quarantines a bad one and sends another.
var errBadChunk = fmt.Errorf("%w: a chunk does not match its ID", ErrCorrupt)

// GetOptions tune a download.
type GetOptions struct {
	Consistency pb.Consistency
	// Progress, if set, is called with the number of file bytes in place
	// so far (including a verified prefix kept by a resume).
	Progress func(done, total int64)
	// Retries is how many times a broken stream is resumed, on the next
	// node, from the next chunk. 0: 3.
	Retries int
	// Sources is how many nodes the download reads from at once, each
	// sending every Sources-th chunk, so that it is not bound by one node's
	// disk or network. It is at most the number of node addresses the
	// client was given. 0: DefaultSources, or 1 when every address is a
	// loopback one: nodes on the client's own host share its cores and
	// disk, and three streams there only add their overhead (measured:
	// 0.95 x one stream; 2.97 x when each node has its own link).
	Sources int
}

// DefaultSources is how many nodes a download reads from at once unless
// GetOptions.Sources says otherwise (or every node is on this host).
const DefaultSources = 3

// GetResult says what a download did.
type GetResult struct {
	Manifest      *pb.FileManifest
	ResumedAt     int   // first chunk fetched (0 for a fresh download)
	KeptBytes     int64 // bytes of an earlier partial download kept
	BytesReceived int64 // stored (compressed) bytes received
	Duration      time.Duration
	// BadCopies counts chunks that arrived not matching their ID and were
	// asked for again, checked by the node.
	BadCopies int
	// Failovers counts the times a node's stream failed or stalled and the
	// download resumed from the first chunk not yet written, without it.
	Failovers int
}

// decodeWindow is how many received chunks are decoded and verified at once.
const decodeWindow = 4

// Get streams the file name into w, verifying each chunk against its ID and
// the whole file against its hash. If the stream breaks it resumes from the
// next chunk on another node.
func (c *Client) Get(ctx context.Context, name string, w io.Writer, opts GetOptions) (*GetResult, error) {
	start := time.Now()
	d := &download{c: c, name: name, w: w, opts: opts, hash: blake3.New()}
	if err := d.run(ctx, 0, 0); err != nil {
		return d.res, err
	}
	d.res.Duration = time.Since(start)
	return d.res, nil
}

// GetFile downloads name into the file at path. With resume, the chunks
// already in the file are checked against the manifest and the download
// continues from the first one that is missing or wrong; without it the file
// is rewritten. The file is synced to disk before GetFile returns.
func (c *Client) GetFile(ctx context.Context, name, path string, resume bool, opts GetOptions) (*GetResult, error) {
	start := time.Now()
	m, err := c.Stat(ctx, name, opts.Consistency)
	if err != nil {
		return nil, err
	}
	flags := os.O_RDWR | os.O_CREATE
	if !resume {
		flags |= os.O_TRUNC
	}
	f, err := os.OpenFile(path, flags, 0o644)
	if err != nil {
		return nil, fmt.Errorf("client: %w", err)
	}
	defer f.Close()

	h := blake3.New()
	index, offset := 0, int64(0)
	if resume {
		index, offset, err = verifyPrefix(f, m, h)
		if err != nil {
			return nil, err
		}
	}
	if err := f.Truncate(offset); err != nil {
		return nil, fmt.Errorf("client: %w", err)
	}
	if _, err := f.Seek(offset, io.SeekStart); err != nil {
		return nil, fmt.Errorf("client: %w", err)
	}
	d := &download{c: c, name: name, w: newWriteBehind(f, offset), opts: opts, hash: h, expect: m}
	d.res = &GetResult{ResumedAt: index, KeptBytes: offset}
	if opts.Progress != nil {
		opts.Progress(offset, int64(m.GetSize()))
	}
	if err := d.run(ctx, index, offset); err != nil {
		return d.res, err
	}
	if err := f.Sync(); err != nil {
		return d.res, fmt.Errorf("client: %w", err)
	}
	d.res.Duration = time.Since(start)
	return d.res, nil
}

// verifyPrefix reads the chunks already in f, in order, while they match the
// manifest, feeding them to the whole-file hash. It returns the index and
// offset of the first chunk to fetch.
func verifyPrefix(f *os.File, m *pb.FileManifest, h hash.Hash) (int, int64, error) {
	var buf []byte
	for i, ref := range m.GetChunks() {
		size := int(ref.GetRawSize())
		if cap(buf) < size {
			buf = make([]byte, size)
		}
		buf = buf[:size]
		if _, err := f.ReadAt(buf, int64(ref.GetOffset())); err != nil {
			if err == io.EOF || errors.Is(err, io.ErrUnexpectedEOF) {
				return i, int64(ref.GetOffset()), nil
			}
			return 0, 0, fmt.Errorf("client: read partial download: %w", err)
		}
		if id := chunker.Sum(buf); !bytes.Equal(id[:], ref.GetId()) {
			return i, int64(ref.GetOffset()), nil
		}
		h.Write(buf)
	}
	return len(m.GetChunks()), int64(m.GetSize()), nil
}

// download is one file download, possibly over several streams.
type download struct {
	c      *Client
	name   string
	w      io.Writer
	opts   GetOptions
	hash   hash.Hash
	expect *pb.FileManifest // manifest the written prefix belongs to, if any
	res    *GetResult
	verify bool // ask the nodes to check every chunk before sending it
	// partial: only part of the file is fetched (a range), so the whole-file
	// hash cannot be checked; each chunk still is, against its ID.
	partial bool
	// end, when above 0, is the index after the last chunk wanted (a
	// range): no chunk past it is received.
	end int
	// avoid: nodes whose stream failed during this download, left out of
	// the next attempts while others remain.
	avoid map[int]bool
	// single: a node did not apply the step asked (it predates steps), so
	// the rest is read from one node.
	single bool
}

// errNoStep: a node sent every chunk when asked for every n-th.
var errNoStep = errors.New("client: the node does not send every n-th chunk (an older version)")

func (d *download) run(ctx context.Context, index int, offset int64) error {
	if d.res == nil {
		d.res = &GetResult{}
	}
	retries := d.opts.Retries
	if retries == 0 {
		retries = 3
	}
	for attempt := 0; ; attempt++ {
		next, nextOff, err := d.streams(ctx, d.sources(), index, offset)
		if err == nil {
			return nil
		}
		progressed := next > index
		index, offset = next, nextOff
		if errors.Is(err, errBadChunk) && !d.verify && ctx.Err() == nil {
			// The node's copy is bad: ask again, from that chunk, with
			// every chunk checked by the node first.
			d.c.logger.Warn("a chunk did not match its ID; asking again with checks on the node", "file", d.name, "chunk", index, "err", err)
			d.verify = true
			d.res.BadCopies++
			continue
		}
		if errors.Is(err, errNoStep) && !d.single {
			// A node that predates steps (a cluster being upgraded):
			// read the rest from one node.
			d.c.logger.Warn("a node cannot send every n-th chunk; reading the rest from one node", "file", d.name, "chunk", index, "err", err)
			d.single = true
			continue
		}
		if !retryable(err) || ctx.Err() != nil || (attempt >= retries && !progressed) {
			return err
		}
		failed := -1
		var se *sourceError
		if errors.As(err, &se) {
			failed = se.node
		}
		if failed < 0 {
			_, failed = d.c.node()
		}
		d.c.failover(failed, err)
		d.c.avoid(failed)
		if d.avoid == nil {
			d.avoid = map[int]bool{}
		}
		d.avoid[failed] = true
		d.res.Failovers++
		if progressed {
			attempt = 0
		}
	}
}

// sources returns the nodes (indexes into the client's addresses) this
// attempt reads from: the current node first, then the next ones, skipping
// those that failed during this download or lately in another, at most
// GetOptions.Sources.
func (d *download) sources() []int {
	want := d.opts.Sources
	if d.single {
		want = 1
	}
	if want <= 0 {
		want = DefaultSources
		if d.c.local {
			want = 1
		}
	}
	want = min(want, pb.MaxDownloadStep)
	_, cur := d.c.node()
	n := len(d.c.conns)
	var out []int
	for k := range n {
		i := (cur + k) % n
		if k > 0 && (d.avoid[i] || d.c.avoided(i)) {
			continue
		}
		if out = append(out, i); len(out) == want {
			break
		}
	}
	return out
}

// sourceError is a failure of the stream from one node.
type sourceError struct {
	node int
	err  error
}

func (e *sourceError) Error() string { return e.err.Error() }
func (e *sourceError) Unwrap() error { return e.err }

// streams fetches chunks from index on, from the nodes srcs at once: the
// k-th node sends every len(srcs)-th chunk from index+k on. The chunks are
// put back in order, checked, and written. It returns where it got to.
func (d *download) streams(parent context.Context, srcs []int, index int, offset int64) (next int, nextOff int64, err error) {
	ctx, cancel := context.WithCancel(parent)
	defer cancel()
	step := len(srcs)
	// The first node's manifest says which file this is; each other
	// node's must name the same one, within a deadline its time sets.
	asked := time.Now()
	first := d.open(ctx, srcs[0], index, step, nil, 0)
	m, err := first.manifest()
	if err != nil {
		first.stop()
		return index, offset, err
	}
	startIn := startTimeout(time.Since(asked))
	first.chunksNext()
	if d.expect != nil && !bytes.Equal(d.expect.GetBlake3(), m.GetBlake3()) {
		first.stop()
		return index, offset, fmt.Errorf("%w: %q changed on the cluster during the download; start again without resume", ErrCorrupt, d.name)
	}
	d.expect, d.res.Manifest = m, m
	refs := m.GetChunks()
	total := int64(m.GetSize())
	last := len(refs)
	if d.end > 0 {
		last = min(last, d.end)
	}
	srcsUsed := []*source{first}
	for k := 1; k < step && index+k < last; k++ {
		srcsUsed = append(srcsUsed, d.open(ctx, srcs[k], index+k, step, m, startIn))
	}
	defer func() {
		cancel()
		for _, s := range srcsUsed {
			s.stop()
			d.res.BytesReceived += s.received.Load()
		}
	}()
	from := index
	for k, s := range srcsUsed {
		go s.receive(ctx, refs, from+k, last)
	}
	for i := index; i < last; i++ {
		s := srcsUsed[(i-from)%step]
		slot, ok := <-s.slots
		if !ok {
			return index, offset, s.failure()
		}
		r := <-slot
		if r.err != nil {
			return index, offset, s.wrap(r.err)
		}
		if _, err := d.w.Write(r.raw); err != nil {
			return index, offset, fmt.Errorf("client: write: %w", err)
		}
		s.dog.tick()
		d.hash.Write(r.raw)
		index++
		offset += int64(len(r.raw))
		if d.opts.Progress != nil {
			d.opts.Progress(offset, total)
		}
	}
	if offset != total {
		return index, offset, fmt.Errorf("%w: got %d bytes of %q, want %d", ErrCorrupt, offset, d.name, total)
	}
	if d.partial {
		return index, offset, nil
	}
	if sum := d.hash.Sum(nil); !bytes.Equal(sum, m.GetBlake3()) {
		return index, offset, fmt.Errorf("%w: whole-file BLAKE3 of %q is %x, the catalog says %x", ErrCorrupt, d.name, sum, m.GetBlake3())
	}
	return index, offset, nil
}

// source is one Download stream of a download, from one node: its chunks
// arrive decoded and checked, in order, on slots.
type source struct {
	d        *download
	node     int
	addr     string
	stream   pb.Files_DownloadClient
	openErr  error
	ctx      context.Context
	dog      *watchdog
	stopDog  func()
	step     int
	want     *pb.FileManifest // the manifest this stream must name (nil for the first)
	started  *time.Timer      // an extra source's start timeout, stopped by its manifest
	slots    chan chan decoded
	err      error // why slots closed early; read after it is closed
	received atomic.Int64
}

// An extra source (a node other than the first) must send its manifest
// within startTimeout of the first manifest's time: sourceStartFactor times
// that time, at least sourceStartMin and at most sourceStartMax (and the
// progress timeout). A node that does not is left, and the download goes on
// without it, rather than waiting the progress timeout: on a LAN, where the
// first manifest comes in a few milliseconds, a hung node costs a download
// 0.5 s, not 3 s.
const (
	sourceStartFactor = 20
	sourceStartMin    = 500 * time.Millisecond
	sourceStartMax    = 3 * time.Second
)

func startTimeout(first time.Duration) time.Duration {
	return min(max(first*sourceStartFactor, sourceStartMin), sourceStartMax)
}

// sourceStallTimeout is the progress timeout of each stream of a download
// that reads from several nodes, once its manifest is in (at most the
// client's progress timeout): a node that sends no chunk for this long,
// while the others wait for it, is left, and the download resumes on the
// others. A download from one node has no one else to ask and waits the
// whole progress timeout; so does a first manifest, which a leader
// election may hold up on every node alike.
const sourceStallTimeout = 5 * time.Second

// open starts the stream of every step-th chunk from index on, from node
// i. A node that sends nothing for the progress timeout is left: the
// download resumes on the next one. An extra source (want, the first
// source's manifest, is set) must send its manifest within startIn.
func (d *download) open(ctx context.Context, i, index, step int, want *pb.FileManifest, startIn time.Duration) *source {
	s := &source{d: d, node: i, addr: d.c.addrs[i], step: step, want: want, slots: make(chan chan decoded, decodeWindow)}
	timeout := d.c.progressTimeout
	if want != nil && timeout > 0 {
		startIn = min(startIn, timeout)
		start, cancel := context.WithCancelCause(ctx)
		s.started = time.AfterFunc(startIn, func() {
			cancel(fmt.Errorf("%w: node %s sent no manifest within %s", ErrNoProgress, s.addr, startIn))
		})
		ctx = start
	}
	s.ctx, s.dog, s.stopDog = watch(ctx, timeout, s.addr)
	req := &pb.DownloadRequest{Name: d.name, StartIndex: uint32(index), Consistency: d.opts.Consistency, Verify: d.verify}
	if step > 1 {
		req.Step = uint32(step)
	}
	s.stream, s.openErr = pb.NewFilesClient(d.c.conns[i]).Download(s.ctx, req)
	return s
}

// chunksNext is called once the source's manifest is in: with other
// sources to ask, a stall of this one costs sourceStallTimeout.
func (s *source) chunksNext() {
	if s.step > 1 {
		s.dog.limit(sourceStallTimeout)
	}
}

func (s *source) stop() {
	if s.started != nil {
		s.started.Stop()
	}
	s.stopDog()
}

// wrap names the node in err, with the watchdog's verdict if it ended the
// stream.
func (s *source) wrap(err error) error {
	return &sourceError{node: s.node, err: cause(s.ctx, err)}
}

// failure is why the stream ended before its last chunk.
func (s *source) failure() error {
	if s.err == nil {
		return s.wrap(status.Errorf(codes.DataLoss, "download of %q from %s ended early", s.d.name, s.addr))
	}
	return s.wrap(s.err)
}

// manifest receives the stream's manifest, all its pages.
func (s *source) manifest() (*pb.FileManifest, error) {
	if s.openErr != nil {
		return nil, s.wrap(s.openErr)
	}
	first, err := s.stream.Recv()
	if err != nil {
		return nil, s.wrap(err)
	}
	s.dog.tick()
	m := first.GetManifest()
	if m == nil {
		return nil, s.wrap(status.Error(codes.Internal, "download stream did not start with the manifest"))
	}
	if s.step > 1 && int(first.GetStep()) != s.step {
		return nil, s.wrap(errNoStep)
	}
	for len(m.GetChunks()) < int(first.GetChunksTotal()) {
		page, err := s.stream.Recv()
		if err != nil {
			return nil, s.wrap(err)
		}
		s.dog.tick()
		if page.GetChunk() != nil || len(page.GetManifest().GetChunks()) == 0 {
			return nil, s.wrap(status.Errorf(codes.DataLoss, "download of %q: the manifest stopped after %d of its %d chunks", s.d.name, len(m.GetChunks()), first.GetChunksTotal()))
		}
		m.Chunks = append(m.Chunks, page.GetManifest().GetChunks()...)
	}
	return m, nil
}

// receive reads the stream's chunks from index on, every step-th up to
// last, into slots, each decoded and checked in its own goroutine; it
// closes slots when done or failed (s.err says why).
func (s *source) receive(ctx context.Context, refs []*pb.ChunkRef, index, last int) {
	defer close(s.slots)
	if s.want != nil {
		m, err := s.manifest()
		if s.started != nil {
			s.started.Stop()
		}
		if err == nil && (!bytes.Equal(m.GetBlake3(), s.want.GetBlake3()) || len(m.GetChunks()) != len(refs)) {
			err = fmt.Errorf("%w: %q changed on the cluster during the download", ErrCorrupt, s.d.name)
		}
		if err != nil {
			s.err = err
			return
		}
		s.chunksNext()
	}
	codecs := s.d.c.codecs
	for want := index; want < last; want += s.step {
		s.dog.tick()
		msg, err := s.stream.Recv()
		s.dog.tick()
		if err == io.EOF {
			err = status.Errorf(codes.DataLoss, "download of %q from %s ended before chunk %d of %d", s.d.name, s.addr, want, len(refs))
		}
		if err != nil {
			s.err = err
			return
		}
		// Waiting here for the chunks of the other nodes, or for the
		// writer, is not this node's stall.
		slot := make(chan decoded, 1)
		s.dog.pause()
		select {
		case s.slots <- slot:
		case <-ctx.Done():
			s.err = ctx.Err()
			return
		}
		s.dog.resume()
		s.received.Add(int64(len(msg.GetChunk().GetData())))
		go func() {
			slot <- decodeChunk(codecs, want, refs, msg)
		}()
	}
}

// decoded is one received chunk, decoded and verified (or why not).
type decoded struct {
	index int
	raw   []byte
	err   error
}

// decodeChunk checks that msg carries chunk want of the manifest and returns
// its verified raw bytes.
func decodeChunk(codecs *chunker.Codecs, want int, refs []*pb.ChunkRef, msg *pb.DownloadResponse) (r decoded) {
	r.index = want
	if int(msg.GetIndex()) != want {
		r.err = fmt.Errorf("%w: server sent chunk %d, expected %d", ErrCorrupt, msg.GetIndex(), want)
		return r
	}
	ref, wc := refs[want], msg.GetChunk()
	if !bytes.Equal(wc.GetId(), ref.GetId()) || wc.GetRawSize() != ref.GetRawSize() {
		r.err = fmt.Errorf("%w: chunk %d is not the one the manifest names", errBadChunk, want)
		return r
	}
	id, err := chunker.IDFromBytes(wc.GetId())
	if err != nil {
		r.err = err
		return r
	}
	raw, err := codecs.Decode(nil, chunker.Encoded{ID: id, RawSize: int(wc.GetRawSize()), Codec: chunker.Codec(wc.GetCodec()), Data: wc.GetData()})
	if err != nil {
		r.err = fmt.Errorf("%w: chunk %d: %w", errBadChunk, want, err)
		return r
	}
	r.raw = raw
	return r
}
