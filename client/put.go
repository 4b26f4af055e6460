package client

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"time"

	"github.com/ddstore/ddstore/chunker"
	pb "github.com/ddstore/ddstore/proto/ddstore/v1"
	"github.com/ddstore/ddstore/timerange"
	"google.golang.org/grpc"
)

// ErrReplaced: a put with Overwrite lost a race. Another put changed the
// file after this one began and committed first; this one was not committed.
var ErrReplaced = errors.New("client: a concurrent put replaced the file first; this put was not committed")

// PutOptions tune an upload.
type PutOptions struct {
	Date string // calendar day (YYYY-MM-DD); empty: the day of the commit
	// TimeRange, if set, is asked once the file has been read to its end,
	// just before the commit, for the UTC time range its data covers
	// (inclusive): a scanner fed by the reader reports what it found, or
	// FixedRange gives one. ok false: none; the file covers the whole day
	// of Date. An error stops the put before the commit. Date, if set,
	// must be the range's first day.
	TimeRange func() (r timerange.Range, ok bool, err error)
	Metadata  map[string]string // user metadata stored with the file
	Overwrite bool              // replace a file of the same name
	Chunking  chunker.Options   // zero: chunker.DefaultOptions()
	Workers   int               // chunk encoders; 0: all cores
	// Progress, if set, is called with the number of file bytes read and
	// handled so far.
	Progress func(done int64)
	// BeforeCommit, if set, is called once the file has been read to its
	// end and its chunks are stored, just before the commit, with the
	// manifest about to be committed: it may add metadata learnt while the
	// file was read (a digest, say) or refuse the commit by returning an
	// error, which Put then returns (wrapped) without committing.
	BeforeCommit func(m *pb.FileManifest) error
}

// PutResult says what an upload did.
type PutResult struct {
	Manifest    *pb.FileManifest
	Chunks      int   // chunks in the file
	ChunksSent  int   // chunks the cluster lacked and that were sent
	BytesSent   int64 // stored (compressed) bytes sent
	Size        int64
	Duration    time.Duration
	ChunksKnown int // chunks the cluster already held (deduplicated)
}

// commitTimeout bounds one attempt of a commit: the node checks that every
// chunk of the file has its copies, which for a very large file takes a
// while.
const commitTimeout = 2 * time.Minute

// batch bounds how much of the file waits for one "which are missing" answer.
const (
	batchChunks = 32
	batchBytes  = 16 << 20
)

// Put reads r to its end and stores it as name. The file is cut and
// compressed locally; for each batch of chunks the client asks which ones the
// cluster lacks and streams only those, so a re-run after an interruption
// sends only what is still missing and an unchanged file sends no chunk bytes
// at all. The file is listed only when Commit succeeds.
func (c *Client) Put(ctx context.Context, name string, r io.Reader, opts PutOptions) (*PutResult, error) {
	start := time.Now()
	// A file no longer than the chunker's minimum is one chunk: it goes up
	// with its commit, in one call.
	chunking := opts.Chunking
	if chunking == (chunker.Options{}) {
		chunking = chunker.DefaultOptions()
	}
	head := make([]byte, min(chunking.MinSize, smallPutMax)+1)
	n, err := io.ReadFull(r, head)
	switch {
	case (err == io.EOF || err == io.ErrUnexpectedEOF) && n > 0:
		res, err := c.putSmall(ctx, name, head[:n], opts)
		if err == nil {
			res.Duration = time.Since(start)
		}
		return res, err
	case err == io.EOF:
		// Empty: the ordinary path commits a file of no chunks.
	case err != nil && err != io.ErrUnexpectedEOF:
		return &PutResult{}, fmt.Errorf("read %q: %w", name, err)
	}
	r = io.MultiReader(bytes.NewReader(head[:n]), r)
	tr := &touchReader{r: r}
	for attempt := 0; ; attempt++ {
		conn, idx := c.node()
		res, err := c.put(ctx, conn, c.addrs[idx], name, tr, opts)
		if err == nil {
			res.Duration = time.Since(start)
			return res, nil
		}
		if !retryable(err) {
			return res, err
		}
		c.failover(idx, err)
		// A node that failed before the file was read (a dead node, a
		// hung one) costs nothing: try the next one at once.
		if tr.touched || attempt >= len(c.conns) || ctx.Err() != nil {
			return res, err
		}
	}
}

// smallPutMax bounds a file sent whole with its commit: well within one
// message.
const smallPutMax = 4 << 20

// putSmall stores a file of one chunk with one call (two with Overwrite,
// which first learns the version it replaces).
func (c *Client) putSmall(ctx context.Context, name string, data []byte, opts PutOptions) (*PutResult, error) {
	e := c.codecs.Encode(data)
	m := &pb.FileManifest{
		Name: name, Date: opts.Date, Metadata: opts.Metadata,
		Size: uint64(len(data)), Blake3: e.ID[:], StoredSize: uint64(len(e.Data)),
		Chunks: []*pb.ChunkRef{{Id: e.ID[:], RawSize: uint32(e.RawSize), StoredSize: uint32(len(e.Data))}},
	}
	if err := setTimeRange(m, opts); err != nil {
		return &PutResult{}, fmt.Errorf("put %q: not committed: %w", name, err)
	}
	req := &pb.CommitRequest{Manifest: m, Overwrite: opts.Overwrite, RequestId: newRequestID(), Chunks: []*pb.Chunk{{
		Id: e.ID[:], RawSize: uint32(e.RawSize), Codec: pb.Codec(e.Codec), Data: e.Data,
	}}}
	res := &PutResult{Chunks: 1, ChunksSent: 1, BytesSent: int64(len(e.Data)), Size: int64(len(data))}
	if opts.BeforeCommit != nil {
		m.Metadata = maps.Clone(m.Metadata)
		if m.Metadata == nil {
			m.Metadata = map[string]string{}
		}
		if err := opts.BeforeCommit(m); err != nil {
			return &PutResult{}, fmt.Errorf("put %q: not committed: %w", name, err)
		}
	}
	if opts.Overwrite {
		err := c.call(ctx, func(ctx context.Context, conn *grpc.ClientConn) error {
			intent, err := pb.NewFilesClient(conn).MissingChunks(ctx, &pb.MissingChunksRequest{Intent: &pb.UploadIntent{
				Name: name, Date: opts.Date, Metadata: opts.Metadata, Overwrite: true,
			}})
			req.Replaces = intent.GetCurrent()
			return err
		})
		if err != nil {
			return &PutResult{}, fmt.Errorf("check %q before upload: %w", name, err)
		}
	}
	err := c.callFor(ctx, c.progressTimeout, func(ctx context.Context, conn *grpc.ClientConn) error {
		resp, err := pb.NewFilesClient(conn).Commit(ctx, req)
		res.Manifest = resp.GetManifest()
		return err
	})
	if err != nil {
		res.ChunksSent, res.BytesSent = 0, 0
		if hasReason(err, pb.ReasonFileChanged) {
			return res, fmt.Errorf("commit %q: %w: %w", name, ErrReplaced, err)
		}
		return res, fmt.Errorf("commit %q: %w", name, err)
	}
	if opts.Progress != nil {
		opts.Progress(int64(len(data)))
	}
	return res, nil
}

// touchReader records whether the file was read at all.
type touchReader struct {
	r       io.Reader
	touched bool
}

func (t *touchReader) Read(p []byte) (int, error) {
	t.touched = true
	return t.r.Read(p)
}

func (c *Client) put(parent context.Context, conn *grpc.ClientConn, addr, name string, r io.Reader, opts PutOptions) (*PutResult, error) {
	// Reading, asking and sending all count as progress: an upload stuck on
	// a node that stopped answering is given up after the progress
	// timeout.
	ctx, dog, stop := watch(parent, c.progressTimeout, addr)
	defer stop()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	files := pb.NewFilesClient(conn)
	res := &PutResult{}
	m := &pb.FileManifest{Name: name, Date: opts.Date, Metadata: opts.Metadata}

	// The cluster checks the name, date and metadata before the file is
	// read: a put it would refuse at commit sends no chunk.
	// With overwrite it names the version this put replaces; if another
	// put commits first, the commit fails (ErrReplaced) instead of both
	// reporting success.
	intent, err := files.MissingChunks(ctx, &pb.MissingChunksRequest{Intent: &pb.UploadIntent{
		Name: name, Date: opts.Date, Metadata: opts.Metadata, Overwrite: opts.Overwrite,
	}})
	if err != nil {
		return res, fmt.Errorf("check %q before upload: %w", name, cause(ctx, err))
	}
	dog.tick()

	// Batches go through two stages that overlap: this goroutine (the
	// pipeline's emit) asks which chunks of a full batch the cluster lacks
	// while the sender goroutine is still streaming the previous batch. At
	// most two batches are held: the one being sent and the one being filled
	// or asked about.
	up := &uploader{files: files, ctx: ctx, dog: dog, res: res, progress: opts.Progress, batches: make(chan sendBatch), done: make(chan struct{})}
	go up.run()
	sent := map[chunker.ID]bool{} // chunks sent, queued or known present in this upload
	var pending []chunker.Piece
	var pendingBytes int
	flush := func() error {
		if len(pending) == 0 {
			return nil
		}
		batch := pending
		pending, pendingBytes = nil, 0 // the sender owns batch now
		var ids [][]byte
		for i := range batch {
			if !sent[batch[i].ID] {
				ids = append(ids, batch[i].ID[:])
			}
		}
		missing := map[chunker.ID]bool{}
		if len(ids) > 0 {
			resp, err := files.MissingChunks(ctx, &pb.MissingChunksRequest{Ids: ids})
			if err != nil {
				return fmt.Errorf("ask which chunks are missing: %w", err)
			}
			dog.tick()
			for _, b := range resp.GetMissing() {
				id, err := chunker.IDFromBytes(b)
				if err != nil {
					return fmt.Errorf("server named a malformed chunk: %w", err)
				}
				missing[id] = true
			}
		}
		b := sendBatch{end: batch[len(batch)-1].Offset + int64(batch[len(batch)-1].RawSize)}
		for _, p := range batch {
			if sent[p.ID] {
				continue
			}
			sent[p.ID] = true
			if !missing[p.ID] {
				res.ChunksKnown++
				continue
			}
			b.chunks = append(b.chunks, p)
		}
		select {
		case up.batches <- b:
			return nil
		case <-up.done:
			return up.err
		}
	}

	pl := chunker.Pipeline{Options: opts.Chunking, Workers: opts.Workers}
	sum, err := pl.Run(ctx, r, func(p chunker.Piece) error {
		dog.tick()
		id := p.ID // a copy: slicing p.ID would keep p.Data alive with the manifest
		m.Chunks = append(m.Chunks, &pb.ChunkRef{
			Id: id[:], Offset: uint64(p.Offset), RawSize: uint32(p.RawSize), StoredSize: uint32(len(p.Data)),
		})
		m.StoredSize += uint64(len(p.Data))
		pending = append(pending, p)
		pendingBytes += len(p.Data)
		if len(pending) >= batchChunks || pendingBytes >= batchBytes {
			return flush()
		}
		return nil
	})
	if err == nil {
		err = flush()
	}
	if err != nil {
		cancel()
	}
	close(up.batches)
	<-up.done
	if err == nil {
		err = up.err
	}
	if err == nil && up.stream != nil {
		if _, err = up.stream.CloseAndRecv(); err != nil {
			err = fmt.Errorf("upload: %w", err)
		}
	}
	if err != nil {
		return res, cause(ctx, err)
	}
	stop() // the commit has its own bound
	m.Size = uint64(sum.Size)
	m.Blake3 = sum.Hash[:]
	if err := setTimeRange(m, opts); err != nil {
		return res, fmt.Errorf("put %q: not committed: %w", name, err)
	}
	res.Chunks, res.Size = sum.Chunks, sum.Size
	if opts.BeforeCommit != nil {
		m.Metadata = maps.Clone(m.Metadata)
		if m.Metadata == nil {
			m.Metadata = map[string]string{}
		}
		if err := opts.BeforeCommit(m); err != nil {
			return res, fmt.Errorf("put %q: not committed: %w", name, err)
		}
	}

	req := &pb.CommitRequest{Manifest: m, Overwrite: opts.Overwrite, Replaces: intent.GetCurrent(), RequestId: newRequestID()}
	err = c.callFor(parent, commitTimeout, func(ctx context.Context, conn *grpc.ClientConn) error {
		resp, err := pb.CommitPaged(ctx, pb.NewFilesClient(conn), req)
		res.Manifest = resp.GetManifest()
		return err
	})
	if res.Manifest != nil && len(res.Manifest.Chunks) == 0 {
		res.Manifest.Chunks = m.Chunks // a large manifest comes back without its list
	}
	if err != nil {
		if hasReason(err, pb.ReasonFileChanged) {
			return res, fmt.Errorf("commit %q: %w: %w", name, ErrReplaced, err)
		}
		return res, fmt.Errorf("commit %q: %w", name, err)
	}
	return res, nil
}

// sendBatch is the part of a batch the cluster lacks, in file order, and
// where the batch ends in the file.
type sendBatch struct {
	chunks []chunker.Piece
	end    int64
}

// uploader streams batches on one Upload stream, opened on first use. After
// done is closed, err and stream may be read and the counters it updated in
// res are final.
type uploader struct {
	files    pb.FilesClient
	ctx      context.Context
	dog      *watchdog
	res      *PutResult
	progress func(int64)
	batches  chan sendBatch
	done     chan struct{}
	stream   pb.Files_UploadClient
	err      error
}

func (u *uploader) run() {
	defer close(u.done)
	for b := range u.batches {
		if u.err = u.send(b); u.err != nil {
			return
		}
	}
}

func (u *uploader) send(b sendBatch) error {
	for i, p := range b.chunks {
		if u.stream == nil {
			var err error
			if u.stream, err = u.files.Upload(u.ctx); err != nil {
				return fmt.Errorf("open upload stream: %w", err)
			}
		}
		err := u.stream.Send(&pb.UploadRequest{Chunk: &pb.Chunk{
			Id: p.ID[:], RawSize: uint32(p.RawSize), Codec: pb.Codec(p.Codec), Data: p.Data,
		}})
		if err != nil {
			return uploadErr(u.stream, err)
		}
		u.dog.tick()
		u.res.ChunksSent++
		u.res.BytesSent += int64(len(p.Data))
		b.chunks[i] = chunker.Piece{} // drop the chunk bytes once sent
	}
	if u.progress != nil {
		u.progress(b.end)
	}
	return nil
}

// uploadErr returns the status that ended an upload stream: a failed Send
// only says io.EOF, the real error comes from CloseAndRecv.
func uploadErr(stream pb.Files_UploadClient, err error) error {
	if err == io.EOF {
		_, err = stream.CloseAndRecv()
		if err == nil {
			err = io.ErrUnexpectedEOF
		}
	}
	return fmt.Errorf("upload: %w", err)
}
