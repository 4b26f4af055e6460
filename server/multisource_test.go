package server_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/ddstore/ddstore/client"
	"github.com/ddstore/ddstore/internal/blake3"
	"github.com/ddstore/ddstore/internal/localcluster"
	pb "github.com/ddstore/ddstore/proto/ddstore/v1"
	"github.com/ddstore/ddstore/server"
	"google.golang.org/grpc/codes"
)

// TestDownloadStep: a Download stream with a step carries the whole
// manifest, then every step-th chunk from its start index, each with its
// index; a step above MaxDownloadStep is refused.
func TestDownloadStep(t *testing.T) {
	cl := startCluster(t, localcluster.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c := newClient(t, cl)
	const size = 12 << 20
	if _, err := c.Put(ctx, "step.bin", randomReader(5, size), client.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	ids := chunkIDs(t, c, "step.bin")
	if len(ids) < 6 {
		t.Fatalf("%d chunks; the test wants at least 6", len(ids))
	}
	files := pb.NewFilesClient(rawConn(t, cl, cl.Members[2].APIAddr))
	for _, tc := range []struct{ start, step int }{{0, 1}, {1, 3}, {2, 2}, {len(ids) - 1, 5}, {0, pb.MaxDownloadStep}} {
		s, err := files.Download(ctx, &pb.DownloadRequest{Name: "step.bin", StartIndex: uint32(tc.start), Step: uint32(tc.step)})
		if err != nil {
			t.Fatal(err)
		}
		first, err := s.Recv()
		if err != nil {
			t.Fatal(err)
		}
		if got := len(first.GetManifest().GetChunks()); got != len(ids) {
			t.Fatalf("start %d step %d: the manifest lists %d chunks, want all %d", tc.start, tc.step, got, len(ids))
		}
		var got []int
		for {
			msg, err := s.Recv()
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
			i := int(msg.GetIndex())
			if !bytes.Equal(msg.GetChunk().GetId(), ids[i][:]) {
				t.Fatalf("start %d step %d: message for chunk %d carries another chunk", tc.start, tc.step, i)
			}
			got = append(got, i)
		}
		var want []int
		for i := tc.start; i < len(ids); i += tc.step {
			want = append(want, i)
		}
		if !slices.Equal(got, want) {
			t.Fatalf("start %d step %d: chunks %v, want %v", tc.start, tc.step, got, want)
		}
	}
	s, err := files.Download(ctx, &pb.DownloadRequest{Name: "step.bin", Step: pb.MaxDownloadStep + 1})
	if err == nil {
		_, err = s.Recv()
	}
	wantCode(t, err, codes.InvalidArgument, "step")
}

// TestDownloadFromSeveralNodes: a client that knows the three nodes reads a
// file from all three at once, each sending a third of the chunks; the file
// arrives whole. A node stopped early in the download does not
// fail it: the rest comes from the other two.
func TestDownloadFromSeveralNodes(t *testing.T) {
	cl := startCluster(t, localcluster.Options{Tune: func(c *server.Config) { c.HTTPAddr = "127.0.0.1:0" }})
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	c := newClient(t, cl)
	// Each node's third (32 MiB) is well above what its stream can have in
	// flight (an 8 MiB window, 4 chunks being decoded, the sockets'
	// buffers), so that the node stopped below still has chunks to send
	// however slowly the client reads.
	const size = 96 << 20
	if _, err := c.Put(ctx, "multi.bin", randomReader(9, size), client.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	ids := chunkIDs(t, c, "multi.bin")
	want := hashOf(t, randomReader(9, size))

	hc := httpsClient(t, cl)
	served := func() []float64 {
		var out []float64
		for _, m := range cl.Members {
			out = append(out, scrapeNode(t, hc, m.Node.HTTPAddr()).value("ddstore_chunks_served_total", "to=download"))
		}
		return out
	}
	before := served()
	h := blake3.New()
	if _, err := c.Get(ctx, "multi.bin", h, client.GetOptions{Sources: 3}); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(h.Sum(nil), want) {
		t.Fatal("the download differs from the file")
	}
	after := served()
	for i := range cl.Members {
		d := after[i] - before[i]
		t.Logf("%s served %g of %d chunks", cl.Members[i].ID, d, len(ids))
		if d < float64(len(ids)/3) || d > float64(len(ids)/3+1) {
			t.Errorf("%s served %g chunks, want a third of %d", cl.Members[i].ID, d, len(ids))
		}
	}

	// Files of fewer chunks than nodes: no stream is opened for nothing,
	// and each arrives whole, from the start and resumed from its last
	// chunk.
	resumed := false
	for _, n := range []int64{0, 1, 300 << 10, 2 << 20} {
		name := fmt.Sprintf("few/%d.bin", n)
		if _, err := c.Put(ctx, name, randomReader(byte(n>>10), n), client.PutOptions{}); err != nil {
			t.Fatal(err)
		}
		h := blake3.New()
		if _, err := c.Get(ctx, name, h, client.GetOptions{Sources: 3}); err != nil {
			t.Fatalf("%d bytes: %v", n, err)
		}
		if !bytes.Equal(h.Sum(nil), hashOf(t, randomReader(byte(n>>10), n))) {
			t.Fatalf("%d bytes: the download differs", n)
		}
		m, err := c.Stat(ctx, name, pb.Consistency_CONSISTENCY_LINEARIZABLE)
		if err != nil {
			t.Fatal(err)
		}
		if len(m.GetChunks()) < 2 {
			continue
		}
		// Resumed with only the last chunk missing.
		last := m.GetChunks()[len(m.GetChunks())-1]
		whole, err := io.ReadAll(randomReader(byte(n>>10), n))
		if err != nil {
			t.Fatal(err)
		}
		path := filepath.Join(t.TempDir(), "partial")
		if err := os.WriteFile(path, whole[:last.GetOffset()], 0o644); err != nil {
			t.Fatal(err)
		}
		res, err := c.GetFile(ctx, name, path, true, client.GetOptions{Sources: 3})
		if err != nil {
			t.Fatalf("%d bytes, resumed: %v", n, err)
		}
		if got, err := os.ReadFile(path); err != nil || !bytes.Equal(got, whole) || res.ResumedAt != len(m.GetChunks())-1 {
			t.Fatalf("%d bytes, resumed at chunk %d of %d: the file differs (%v)", n, res.ResumedAt, len(m.GetChunks()), err)
		}
		resumed = true
	}
	if !resumed {
		t.Fatal("no file of a few chunks had two: the resume was not tried")
	}

	// One node goes away after the first chunk: the download finishes
	// from the others.
	victim := 2
	h.Reset()
	stopped := false
	res, err := c.Get(ctx, "multi.bin", h, client.GetOptions{Sources: 3, Progress: func(done, total int64) {
		if !stopped && done > 0 {
			stopped = true
			if err := cl.StopNode(victim, true); err != nil {
				t.Error(err)
			}
		}
	}})
	if err != nil {
		t.Fatalf("download with node %d stopped: %v", victim, err)
	}
	if !stopped {
		t.Fatal("the node was never stopped")
	}
	if !bytes.Equal(h.Sum(nil), want) {
		t.Fatal("the download with a node stopped differs from the file")
	}
	t.Logf("with %s stopped: %d bytes received for a %d-byte file, %d failovers", cl.Members[victim].ID, res.BytesReceived, size, res.Failovers)
	if res.Failovers < 1 {
		t.Errorf("no failover reported: the stopped node's stream should have failed and the rest come from the others")
	}
}
