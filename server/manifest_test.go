package server_test

import (
	"bytes"
	"context"
	"os"
	"testing"
	"time"

	"github.com/ddstore/ddstore/chunker"
	"github.com/ddstore/ddstore/client"
	"github.com/ddstore/ddstore/internal/localcluster"
	pb "github.com/ddstore/ddstore/proto/ddstore/v1"
)

// TestHugeManifest: a file of more than 300,000 chunks (tiny ones, so that
// the test stays small) commits, lists, stats and downloads. Its manifest
// (about 15 MB) is larger than any one message may be: the commit goes in
// pages, the leader gets the command in pieces, stat and download answer in
// pages, and the commit asks the other nodes about its chunks in batches.
// The data directories are on tmpfs: 600,000 chunk files.
func TestHugeManifest(t *testing.T) {
	if testing.Short() || raceEnabled {
		t.Skip("stores 600,000 chunk files: minutes, ten times more under the race detector (it runs in the plain `make test` run)")
	}
	dir, err := os.MkdirTemp("/dev/shm", "ddstore-huge-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	cl := startCluster(t, localcluster.Options{Dir: dir, Replicas: 2})
	c := newClient(t, cl)
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()

	const size = 46 << 20
	opts := client.PutOptions{Chunking: chunker.Options{MinSize: 64, AvgSize: 128, MaxSize: 256}}
	start := time.Now()
	res, err := c.Put(ctx, "huge/many-chunks.bin", randomReader(7, size), opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("put: %d chunks, %d bytes in %.1fs", res.Chunks, res.Size, time.Since(start).Seconds())
	if res.Chunks < 300_000 {
		t.Fatalf("the file has %d chunks; the test wants at least 300,000", res.Chunks)
	}
	if got := len(res.Manifest.GetChunks()); got != res.Chunks {
		t.Fatalf("put answered a manifest of %d chunks, want %d", got, res.Chunks)
	}

	l, err := c.List(ctx, client.ListOptions{Prefix: "huge/"})
	if err != nil {
		t.Fatal(err)
	}
	if len(l.Files) != 1 || l.Files[0].GetChunks() != uint32(res.Chunks) || l.Files[0].GetSize() != size {
		t.Fatalf("listing: %v, want one file of %d chunks and %d bytes", l.Files, res.Chunks, size)
	}
	m, err := c.Stat(ctx, "huge/many-chunks.bin", pb.Consistency_CONSISTENCY_LINEARIZABLE)
	if err != nil {
		t.Fatal(err)
	}
	if len(m.GetChunks()) != res.Chunks || !bytes.Equal(m.GetBlake3(), res.Manifest.GetBlake3()) {
		t.Fatalf("stat: %d chunks, want %d", len(m.GetChunks()), res.Chunks)
	}
	for i, ref := range m.GetChunks() {
		if !bytes.Equal(ref.GetId(), res.Manifest.GetChunks()[i].GetId()) {
			t.Fatalf("stat: chunk %d differs from the one committed", i)
		}
	}

	start = time.Now()
	// Through a node that is not the leader: it holds two thirds of the
	// chunks and fetches the rest.
	one := newClient(t, cl, cl.Members[(cl.Leader(ctx)+1)%len(cl.Members)].APIAddr)
	if got := download(t, one, "huge/many-chunks.bin"); !bytes.Equal(got, hashOf(t, randomReader(7, size))) {
		t.Fatal("download differs from the file")
	}
	t.Logf("download in %.1fs", time.Since(start).Seconds())
}
