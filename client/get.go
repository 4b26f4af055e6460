package client

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"
	"time"

	"github.com/ddstore/ddstore/chunker"
	pb "github.com/ddstore/ddstore/proto/ddstore/v1"
	"github.com/zeebo/blake3"
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
}

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
}

func (d *download) run(ctx context.Context, index int, offset int64) error {
	if d.res == nil {
		d.res = &GetResult{}
	}
	retries := d.opts.Retries
	if retries == 0 {
		retries = 3
	}
	for attempt := 0; ; attempt++ {
		conn, idx := d.c.node()
		next, nextOff, err := d.stream(ctx, pb.NewFilesClient(conn), d.c.addrs[idx], index, offset)
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
		if !retryable(err) || ctx.Err() != nil || (attempt >= retries && !progressed) {
			return err
		}
		d.c.failover(idx, err)
		if progressed {
			attempt = 0
		}
	}
}

// stream fetches chunks from index on over one Download stream. It returns
// where it got to.
func (d *download) stream(parent context.Context, files pb.FilesClient, addr string, index int, offset int64) (next int, nextOff int64, err error) {
	// A node that sends nothing for the progress timeout is left: the
	// caller resumes on the next one.
	ctx, dog, stop := watch(parent, d.c.progressTimeout, addr)
	defer stop()
	defer func() {
		if parent.Err() == nil {
			err = cause(ctx, err)
		}
	}()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	s, err := files.Download(ctx, &pb.DownloadRequest{Name: d.name, StartIndex: uint32(index), Consistency: d.opts.Consistency, Verify: d.verify})
	if err != nil {
		return index, offset, err
	}
	first, err := s.Recv()
	if err != nil {
		return index, offset, err
	}
	m := first.GetManifest()
	if m == nil {
		return index, offset, status.Error(codes.Internal, "download stream did not start with the manifest")
	}
	for len(m.GetChunks()) < int(first.GetChunksTotal()) {
		page, err := s.Recv()
		if err != nil {
			return index, offset, err
		}
		dog.tick()
		if page.GetChunk() != nil || len(page.GetManifest().GetChunks()) == 0 {
			return index, offset, status.Errorf(codes.DataLoss, "download of %q: the manifest stopped after %d of its %d chunks", d.name, len(m.GetChunks()), first.GetChunksTotal())
		}
		m.Chunks = append(m.Chunks, page.GetManifest().GetChunks()...)
	}
	if d.expect != nil && !bytes.Equal(d.expect.GetBlake3(), m.GetBlake3()) {
		return index, offset, fmt.Errorf("%w: %q changed on the cluster during the download; start again without resume", ErrCorrupt, d.name)
	}
	d.expect, d.res.Manifest = m, m
	refs := m.GetChunks()
	total := int64(m.GetSize())

	codecs := d.c.codecs
	slots := make(chan chan decoded, decodeWindow)
	recvErr := make(chan error, 1)
	go func() {
		defer close(slots)
		last := len(refs)
		if d.end > 0 {
			last = min(last, d.end)
		}
		for want := index; want < last; want++ {
			msg, err := s.Recv()
			dog.tick()
			if err == io.EOF {
				err = status.Errorf(codes.DataLoss, "download of %q ended after chunk %d of %d", d.name, want, len(refs))
			}
			if err != nil {
				recvErr <- err
				return
			}
			slot := make(chan decoded, 1)
			select {
			case slots <- slot:
			case <-ctx.Done():
				recvErr <- ctx.Err()
				return
			}
			d.res.BytesReceived += int64(len(msg.GetChunk().GetData()))
			go func() {
				slot <- decodeChunk(codecs, want, refs, msg)
			}()
		}
		recvErr <- nil
	}()
	for slot := range slots {
		r := <-slot
		if r.err != nil {
			cancel()
			for range slots {
			}
			return index, offset, r.err
		}
		if _, err := d.w.Write(r.raw); err != nil {
			cancel()
			for range slots {
			}
			return index, offset, fmt.Errorf("client: write: %w", err)
		}
		dog.tick()
		d.hash.Write(r.raw)
		index++
		offset += int64(len(r.raw))
		if d.opts.Progress != nil {
			d.opts.Progress(offset, total)
		}
	}
	if err := <-recvErr; err != nil {
		return index, offset, err
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
