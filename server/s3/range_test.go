package s3_test

import (
	"bytes"
	"context"
	"testing"

	"github.com/ddstore/ddstore/client"
	pb "github.com/ddstore/ddstore/proto/ddstore/v1"
)

// TestRangeStartsAtItsChunk: a ranged read (what GetObject with Range
// does) starts the download at the chunk that holds the range's first byte
// and stops after the chunk holding its last: the client receives those
// chunks only, not the file from byte 0 nor the chunks after the range.
func TestRangeStartsAtItsChunk(t *testing.T) {
	e := needEnv(t)
	ctx := context.Background()
	c, err := e.cl.Client()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	data := randomBytes(24<<20, 77)
	if _, err := c.Put(ctx, "range-test/file", bytes.NewReader(data), client.PutOptions{Overwrite: true}); err != nil {
		t.Fatal(err)
	}
	m, err := c.Stat(ctx, "range-test/file", pb.Consistency_CONSISTENCY_LINEARIZABLE)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range []struct{ off, n int64 }{{0, 10}, {17_000_000, 100}, {int64(len(data)) - 5, 5}, {3_000_000, 9_000_000}, {0, int64(len(data))}} {
		var out bytes.Buffer
		res, err := c.GetRange(ctx, m, r.off, r.n, &out, client.GetOptions{})
		if err != nil {
			t.Fatalf("range %d+%d: %v", r.off, r.n, err)
		}
		if !bytes.Equal(out.Bytes(), data[r.off:r.off+r.n]) {
			t.Fatalf("range %d+%d: wrong bytes", r.off, r.n)
		}
		// The chunks that hold the range, and what they store.
		first, last, stored := -1, -1, int64(0)
		for i, ref := range m.GetChunks() {
			start, end := int64(ref.GetOffset()), int64(ref.GetOffset())+int64(ref.GetRawSize())
			if end > r.off && start < r.off+r.n {
				if first < 0 {
					first = i
				}
				last = i
				stored += int64(ref.GetStoredSize())
			}
		}
		if res.ResumedAt != first {
			t.Fatalf("range %d+%d: the download started at chunk %d; the range starts in chunk %d", r.off, r.n, res.ResumedAt, first)
		}
		// The client reads the stream no further than the range's last
		// chunk: exactly those chunks' stored bytes arrive.
		if res.BytesReceived != stored {
			t.Fatalf("range %d+%d: received %d stored bytes; its chunks %d-%d store %d", r.off, r.n, res.BytesReceived, first, last, stored)
		}
		t.Logf("range %d+%d: chunks %d-%d of %d, %d bytes received", r.off, r.n, first, last, len(m.GetChunks()), res.BytesReceived)
	}
}
