package client

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/ddstore/ddstore/internal/blake3"
	pb "github.com/ddstore/ddstore/proto/ddstore/v1"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
)

// RangeFile is one file a DownloadRange brings, as it starts.
type RangeFile struct {
	Index    int              // its place in the listing (by name, then cluster)
	Cluster  string           // the cluster that holds it
	Manifest *pb.FileManifest // whole, every chunk
}

// RangeOptions select and tune a DownloadRange.
type RangeOptions struct {
	Prefix      string // only names that start with it
	Consistency pb.Consistency
	Verify      bool // the nodes check every chunk before they send it
}

// RangeResult says what a DownloadRange brought.
type RangeResult struct {
	Files []RangeFile // every file handed to fn, in order
	// Unanswered names the peer clusters that may hold matches but did not
	// answer the listing: their files are missing.
	Unanswered []*pb.ClusterNote
	Bytes      int64 // file bytes received
	Duration   time.Duration
}

// errRangeSkip: fn returned before reading its file whole; the rest of the
// file is received and checked, not handed on.
var errRangeSkip = errors.New("client: file skipped by the caller")

// DownloadRange downloads, in one server-streaming call (Files.DownloadRange),
// every file of the cluster and of its peer clusters whose time range
// overlaps [from, to] (inclusive; a zero time leaves that end open, not
// both). fn is called for each file in turn with a reader of its bytes:
// every chunk is checked against its ID before it can be read, and the
// reader returns io.EOF only once the file's size and whole-file BLAKE3
// match its manifest (else an ErrCorrupt error). fn need not read the file
// whole; an error from fn ends the download with that error. A file
// deleted between the listing and its turn does not come. A stream that
// fails before anything arrived is tried on the next node; one that breaks
// later fails (call again: the CLI's get --from --to resumes, this does not).
func (c *Client) DownloadRange(ctx context.Context, from, to time.Time, opts RangeOptions, fn func(RangeFile, io.Reader) error) (*RangeResult, error) {
	start := time.Now()
	req := &pb.DownloadRangeRequest{Prefix: opts.Prefix, Consistency: opts.Consistency, Verify: opts.Verify}
	if !from.IsZero() {
		req.TimeFromUnixNano = proto.Int64(from.UnixNano())
	}
	if !to.IsZero() {
		req.TimeToUnixNano = proto.Int64(to.UnixNano())
	}
	if from.IsZero() && to.IsZero() {
		return nil, errors.New("client: download range: give a time range (from, to or both)")
	}
	if !from.IsZero() && !to.IsZero() && to.Before(from) {
		return nil, fmt.Errorf("client: download range: %s..%s is reversed: it ends before it starts", from.UTC().Format(time.RFC3339Nano), to.UTC().Format(time.RFC3339Nano))
	}
	res := &RangeResult{}
	var err error
	for attempt := 0; attempt < len(c.conns); attempt++ {
		conn, idx := c.node()
		var moved bool
		moved, err = c.downloadRange(ctx, pb.NewFilesClient(conn), c.addrs[idx], req, fn, res)
		if err == nil || moved || !retryable(err) || ctx.Err() != nil {
			break
		}
		c.failover(idx, err)
	}
	res.Duration = time.Since(start)
	return res, err
}

// rangeFile is the file a DownloadRange stream is on.
type rangeFile struct {
	info    RangeFile
	total   int // chunks in its manifest
	next    int // next chunk index
	hash    *blake3.Hasher
	written int64
	pw      *io.PipeWriter
	done    chan error // fn's answer
	fnErr   error      // fn's answer, once received
	fnDone  bool
	skipped bool // fn returned before the end
}

// wait waits for fn to return and gives its answer.
func (f *rangeFile) wait() error {
	if !f.fnDone {
		f.fnErr, f.fnDone = <-f.done, true
	}
	return f.fnErr
}

// downloadRange runs one DownloadRange stream; moved says whether anything
// arrived.
func (c *Client) downloadRange(parent context.Context, fc pb.FilesClient, addr string, req *pb.DownloadRangeRequest, fn func(RangeFile, io.Reader) error, res *RangeResult) (moved bool, err error) {
	ctx, dog, stop := watch(parent, c.progressTimeout, addr)
	defer stop()
	defer func() {
		if parent.Err() == nil {
			err = cause(ctx, err)
		}
	}()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	s, err := fc.DownloadRange(ctx, req)
	if err != nil {
		return false, err
	}
	var cur *rangeFile
	// abort ends the file under way with err; fn sees it from Read.
	abort := func(err error) error {
		if cur != nil && cur.pw != nil {
			cur.pw.CloseWithError(err)
			cur.wait()
		}
		cur = nil
		return err
	}
	defer func() { abort(errors.New("client: download range stopped")) }()
	lastIndex := -1
	for {
		msg, err := s.Recv()
		if err == io.EOF {
			if cur != nil {
				return moved, abort(status.Errorf(codes.DataLoss, "download range: the stream ended within %q, at chunk %d of %d", cur.info.Manifest.GetName(), cur.next, cur.total))
			}
			return moved, nil
		}
		if err != nil {
			return moved, abort(err)
		}
		moved = true
		dog.tick()
		if len(msg.GetUnanswered()) > 0 {
			res.Unanswered = append(res.Unanswered, msg.GetUnanswered()...)
		}
		part := msg.GetPart()
		if part == nil {
			continue
		}
		if cur == nil || int(msg.GetFileIndex()) != cur.info.Index {
			if cur != nil {
				return moved, abort(status.Errorf(codes.DataLoss, "download range: file %d started before %q was whole (chunk %d of %d)", msg.GetFileIndex(), cur.info.Manifest.GetName(), cur.next, cur.total))
			}
			if int(msg.GetFileIndex()) <= lastIndex || part.GetManifest() == nil {
				return moved, status.Errorf(codes.DataLoss, "download range: file %d does not start with its manifest, after file %d", msg.GetFileIndex(), lastIndex)
			}
			lastIndex = int(msg.GetFileIndex())
			cur = &rangeFile{
				info:  RangeFile{Index: lastIndex, Cluster: part.GetCluster(), Manifest: part.GetManifest()},
				total: int(part.GetChunksTotal()), hash: blake3.New(),
			}
			if len(cur.info.Manifest.GetChunks()) > cur.total {
				return moved, status.Errorf(codes.DataLoss, "download range: the manifest of %q lists more than its %d chunks", cur.info.Manifest.GetName(), cur.total)
			}
		} else {
			m := cur.info.Manifest
			if len(m.GetChunks()) < cur.total { // a page of the manifest
				if part.GetChunk() != nil || len(part.GetManifest().GetChunks()) == 0 || len(m.GetChunks())+len(part.GetManifest().GetChunks()) > cur.total {
					return moved, status.Errorf(codes.DataLoss, "download range: the manifest of %q stopped after %d of its %d chunks", m.GetName(), len(m.GetChunks()), cur.total)
				}
				m.Chunks = append(m.Chunks, part.GetManifest().GetChunks()...)
			} else {
				if err := c.rangeChunk(cur, part); err != nil {
					return moved, abort(err)
				}
			}
		}
		if cur.pw == nil && len(cur.info.Manifest.GetChunks()) == cur.total {
			// The manifest is whole: hand the file to fn.
			pr, pw := io.Pipe()
			done := make(chan error, 1)
			cur.pw, cur.done = pw, done
			go func(f RangeFile) {
				err := fn(f, pr)
				pr.CloseWithError(errRangeSkip)
				done <- err
			}(cur.info)
		}
		if cur.pw != nil && cur.next == cur.total {
			if err := c.finishRangeFile(cur, res); err != nil {
				cur = nil
				return moved, err
			}
			cur = nil
		}
	}
}

// rangeChunk checks the next chunk of the current file and hands its bytes
// to fn.
func (c *Client) rangeChunk(cur *rangeFile, part *pb.DownloadResponse) error {
	if cur.next >= cur.total {
		return status.Errorf(codes.DataLoss, "download range: %q has %d chunks; got one more", cur.info.Manifest.GetName(), cur.total)
	}
	d := decodeChunk(c.codecs, cur.next, cur.info.Manifest.GetChunks(), part)
	if d.err != nil {
		return fmt.Errorf("download range: %q: %w", cur.info.Manifest.GetName(), d.err)
	}
	cur.next++
	cur.hash.Write(d.raw)
	cur.written += int64(len(d.raw))
	if cur.skipped {
		return nil
	}
	if _, err := cur.pw.Write(d.raw); err != nil {
		// The reader is closed only once fn returned.
		if ferr := cur.wait(); ferr != nil {
			return ferr
		}
		cur.skipped = true
	}
	return nil
}

// finishRangeFile checks the whole file, ends fn's reader and waits for fn.
func (c *Client) finishRangeFile(cur *rangeFile, res *RangeResult) error {
	m := cur.info.Manifest
	var bad error
	switch sum := cur.hash.Sum(nil); {
	case cur.written != int64(m.GetSize()):
		bad = fmt.Errorf("%w: got %d bytes of %q, want %d", ErrCorrupt, cur.written, m.GetName(), m.GetSize())
	case !bytes.Equal(sum, m.GetBlake3()):
		bad = fmt.Errorf("%w: whole-file BLAKE3 of %q is %x, the catalog says %x", ErrCorrupt, m.GetName(), sum, m.GetBlake3())
	}
	if bad != nil {
		cur.pw.CloseWithError(bad)
		cur.wait()
		return bad
	}
	cur.pw.Close()
	if err := cur.wait(); err != nil {
		return err
	}
	res.Files = append(res.Files, cur.info)
	res.Bytes += cur.written
	return nil
}

// DownloadRangeToDir is DownloadRange writing each file into dir: at
// DIR/NAME, or DIR/CLUSTER/NAME for a name an earlier file of the same
// call (another cluster's) took. Each is written as PATH.part and renamed
// to PATH once whole and verified; a file already at PATH is replaced.
func (c *Client) DownloadRangeToDir(ctx context.Context, from, to time.Time, dir string, opts RangeOptions) (*RangeResult, error) {
	taken := map[string]bool{}
	return c.DownloadRange(ctx, from, to, opts, func(f RangeFile, r io.Reader) error {
		name, cluster := filepath.FromSlash(f.Manifest.GetName()), filepath.FromSlash(f.Cluster)
		if !filepath.IsLocal(name) || (cluster != "" && (!filepath.IsLocal(cluster) || filepath.Base(cluster) != cluster)) {
			return fmt.Errorf("client: download range: file %q of cluster %q does not name a place inside %s", f.Manifest.GetName(), f.Cluster, dir)
		}
		path := filepath.Join(dir, name)
		if taken[name] {
			path = filepath.Join(dir, cluster, name)
		}
		taken[name] = true
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			return fmt.Errorf("client: %w", err)
		}
		part := path + ".part"
		out, err := os.Create(part)
		if err != nil {
			return fmt.Errorf("client: %w", err)
		}
		_, err = io.Copy(out, r)
		if err == nil {
			err = out.Sync()
		}
		if cerr := out.Close(); err == nil {
			err = cerr
		}
		if err == nil {
			err = os.Rename(part, path)
		}
		if err != nil {
			os.Remove(part)
			return fmt.Errorf("client: download range: %s: %w", path, err)
		}
		return nil
	})
}
