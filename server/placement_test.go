package server_test

import (
	"context"
	"testing"
	"time"

	"github.com/ddstore/ddstore/chunker"
	"github.com/ddstore/ddstore/client"
	"github.com/ddstore/ddstore/internal/localcluster"
)

// TestEvenPlacement: copies go where each chunk's rendezvous order puts
// them, not always to the node the client talks to. A file uploaded
// entirely through node 1 of 3 with R=2 leaves every node within 10% of an
// even share of the copies (the entry node used to keep one of every
// chunk: after 6 GiB, 5,326 copies against 2,720 and 3,062).
func TestEvenPlacement(t *testing.T) {
	cl := startCluster(t, localcluster.Options{Replicas: 2})
	c := newClient(t, cl, cl.Members[0].APIAddr)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	const size = 96 << 20
	res, err := c.Put(ctx, "spread.bin", randomReader(9, size), client.PutOptions{
		Chunking: chunker.Options{MinSize: 32 << 10, AvgSize: 64 << 10, MaxSize: 256 << 10},
	})
	if err != nil {
		t.Fatal(err)
	}
	st, err := c.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var total uint64
	for _, n := range st.GetNodes() {
		total += n.GetChunks()
	}
	if want := uint64(2 * res.Chunks); total != want {
		t.Fatalf("%d copies stored for %d chunks at R=2, want %d", total, res.Chunks, want)
	}
	mean := float64(total) / float64(len(st.GetNodes()))
	for _, n := range st.GetNodes() {
		dev := (float64(n.GetChunks()) - mean) / mean
		t.Logf("node %s: %d copies (%+.1f%% of an even share)", n.GetId(), n.GetChunks(), 100*dev)
		if dev > 0.10 || dev < -0.10 {
			t.Errorf("node %s holds %d copies, more than 10%% from the even share %.0f", n.GetId(), n.GetChunks(), mean)
		}
	}
	if got := download(t, c, "spread.bin"); string(got) != string(hashOf(t, randomReader(9, size))) {
		t.Fatal("download differs")
	}
}
