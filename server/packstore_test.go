package server_test

import (
	"bytes"
	"context"
	"testing"
	"time"

	"github.com/ddstore/ddstore/client"
	"github.com/ddstore/ddstore/internal/localcluster"
)

// TestPackStoreCluster: a cluster on the pack store (--store pack) stores,
// serves, removes and collects files as on the default store, and a node
// restarted on it serves what it held.
func TestPackStoreCluster(t *testing.T) {
	cl := startCluster(t, localcluster.Options{Store: "pack", Replicas: 2})
	c := newClient(t, cl)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	const size = 40 << 20
	if _, err := c.Put(ctx, "p.bin", randomReader(51, size), client.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	want := hashOf(t, randomReader(51, size))
	if got := download(t, c, "p.bin"); !bytes.Equal(got, want) {
		t.Fatal("download differs")
	}
	if err := cl.StopNode(1, false); err != nil {
		t.Fatal(err)
	}
	if err := cl.StartNode(ctx, 1); err != nil {
		t.Fatal(err)
	}
	if err := cl.WaitReady(ctx, 3); err != nil {
		t.Fatal(err)
	}
	if got := download(t, newClient(t, cl, cl.Members[1].APIAddr), "p.bin"); !bytes.Equal(got, want) {
		t.Fatal("download through the restarted node differs")
	}
	if err := c.Delete(ctx, "p.bin"); err != nil {
		t.Fatal(err)
	}
	gc, err := c.CollectWith(ctx, client.CollectOptions{Now: true})
	if err != nil {
		t.Fatal(err)
	}
	st, err := c.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range st.GetNodes() {
		if n.GetChunks() != 0 {
			t.Fatalf("node %s holds %d chunks after rm and gc --now (%d copies deleted)", n.GetId(), n.GetChunks(), gc.GetDeletedCopies())
		}
	}
}
