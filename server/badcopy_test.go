package server_test

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/ddstore/ddstore/client"
	"github.com/ddstore/ddstore/internal/blake3"
	"github.com/ddstore/ddstore/internal/localcluster"
	"github.com/ddstore/ddstore/server"
)

// TestDownloadFindsBadCopy: a node sends its own copies unchecked (the
// client checks every chunk); a copy damaged on disk is caught by the
// client, which asks again with verify: the node checks its copy,
// quarantines it, sends a good one from another node, and the download
// ends byte-identical. The damage is in the chunk's data, past the header,
// so nothing but the hash can tell.
func TestDownloadFindsBadCopy(t *testing.T) {
	cl := startCluster(t, localcluster.Options{Store: "local", Tune: func(c *server.Config) { // corrupts a chunk file
		manualHealing(time.Hour)(c)
		c.CacheSize = -1 // the copy on disk is what the node reads
	}})
	victim := cl.Members[0]
	c := newClient(t, cl, victim.APIAddr)
	ctx := context.Background()
	const size = 24 << 20
	if _, err := c.Put(ctx, "f.bin", randomReader(43, size), client.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	want := hashOf(t, randomReader(43, size))
	ids := chunkIDs(t, c, "f.bin")
	bad := ids[len(ids)/2]
	path := filepath.Join(victim.DataDir, "chunks", bad.String()[:2], bad.String())
	if err := corruptAt(path, 4096); err != nil {
		t.Fatal(err)
	}
	h := blake3.New()
	res, err := c.Get(ctx, "f.bin", h, client.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(h.Sum(nil), want) {
		t.Fatal("download differs from the file")
	}
	if res.BadCopies != 1 {
		t.Fatalf("the client met %d bad copies; want the one damaged (sent unchecked by the node)", res.BadCopies)
	}
	q, err := filepath.Glob(filepath.Join(victim.DataDir, "chunks", "quarantine", bad.String()+"*"))
	if err != nil || len(q) != 1 {
		t.Fatalf("quarantine holds %v (%v); want the bad copy of %s", q, err, bad)
	}
	if _, err := os.Stat(path); !os.IsNotExist(err) {
		t.Fatalf("the bad copy is still in place: %v", err)
	}
}
