package server_test

import (
	"bytes"
	"context"
	"testing"
	"time"

	"github.com/ddstore/ddstore/client"
	"github.com/ddstore/ddstore/internal/localcluster"
	"github.com/ddstore/ddstore/internal/testenv"
)

// TestGridFSCluster: a 3-node cluster whose nodes keep chunks in GridFS on a
// real MongoDB-wire server (FerretDB) stores and serves a file intact.
func TestGridFSCluster(t *testing.T) {
	mongo, err := testenv.StartMongo()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(mongo.Stop)
	cl := startCluster(t, localcluster.Options{Store: "gridfs", MongoURI: mongo.URI})
	c := newClient(t, cl)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()

	const size = 24 << 20
	res, err := c.Put(ctx, "gridfs.bin", randomReader(5, size), client.PutOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := download(t, c, "gridfs.bin"), hashOf(t, randomReader(5, size)); !bytes.Equal(got, want) {
		t.Fatalf("hash %x, want %x", got, want)
	}
	for _, m := range cl.Members {
		if kind := m.Node.Store().Kind(); kind != "gridfs" {
			t.Fatalf("%s store is %q", m.ID, kind)
		}
		u, err := m.Node.Store().Usage(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if int(u.Chunks) != res.Chunks {
			t.Errorf("%s holds %d chunks in GridFS, want %d", m.ID, u.Chunks, res.Chunks)
		}
	}
}
