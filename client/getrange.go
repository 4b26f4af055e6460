package client

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sort"
	"time"

	"github.com/ddstore/ddstore/internal/blake3"
	pb "github.com/ddstore/ddstore/proto/ddstore/v1"
)

// errRangeDone ends a ranged download's stream once its last byte is written.
var errRangeDone = errors.New("client: range written")

// GetRange writes bytes [off, off+n) of the file that m (from Stat) describes
// into w. The download starts at the chunk holding off (the stream's start
// index), not at byte 0, and stops after the chunk holding the range's last
// byte. Every chunk is verified against its ID; the whole-file hash is
// checked too when the range is the whole file. If the file was replaced
// since m was read, GetRange fails with ErrCorrupt before writing anything.
// A broken stream resumes on the next node from the next chunk.
func (c *Client) GetRange(ctx context.Context, m *pb.FileManifest, off, n int64, w io.Writer, opts GetOptions) (*GetResult, error) {
	start := time.Now()
	size := int64(m.GetSize())
	if off < 0 || n < 0 || off+n > size {
		return nil, fmt.Errorf("client: range %d+%d is outside %q (%d bytes)", off, n, m.GetName(), size)
	}
	if n == 0 {
		return &GetResult{Manifest: m, Duration: time.Since(start)}, nil
	}
	refs := m.GetChunks()
	index := sort.Search(len(refs), func(i int) bool {
		return int64(refs[i].GetOffset())+int64(refs[i].GetRawSize()) > off
	})
	if index == len(refs) {
		return nil, fmt.Errorf("%w: the manifest of %q does not cover byte %d", ErrCorrupt, m.GetName(), off)
	}
	chunkOff := int64(refs[index].GetOffset())
	rw := &rangeWriter{w: w, skip: off - chunkOff, left: n, stop: off+n < size}
	d := &download{c: c, name: m.GetName(), w: rw, opts: opts, hash: blake3.New(), expect: m, partial: index > 0 || off+n < size}
	// The chunk after the one holding the range's last byte: the stream
	// is read no further.
	d.end = sort.Search(len(refs), func(i int) bool {
		return int64(refs[i].GetOffset()) >= off+n
	})
	d.res = &GetResult{ResumedAt: index}
	err := d.run(ctx, index, chunkOff)
	if err != nil && !errors.Is(err, errRangeDone) {
		return d.res, err
	}
	if rw.left != 0 {
		return d.res, fmt.Errorf("%w: %q ended %d bytes short of the range", ErrCorrupt, m.GetName(), rw.left)
	}
	d.res.Duration = time.Since(start)
	return d.res, nil
}

// rangeWriter passes on a range of what is written to it: it drops the
// first skip bytes, then writes left more; with stop it ends the download
// (errRangeDone) as soon as they are written.
type rangeWriter struct {
	w          io.Writer
	skip, left int64
	stop       bool
}

func (r *rangeWriter) Write(p []byte) (int, error) {
	n := len(p)
	if r.skip > 0 {
		s := min(r.skip, int64(len(p)))
		p, r.skip = p[s:], r.skip-s
	}
	if int64(len(p)) > r.left {
		p = p[:r.left]
	}
	if len(p) > 0 {
		if _, err := r.w.Write(p); err != nil {
			return 0, err
		}
		r.left -= int64(len(p))
	}
	if r.left == 0 && r.stop {
		return n, errRangeDone
	}
	return n, nil
}
