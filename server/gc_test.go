package server_test

import (
	"bytes"
	"context"
	"io/fs"
	"path/filepath"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/ddstore/ddstore/client"
	"github.com/ddstore/ddstore/internal/localcluster"
	"github.com/ddstore/ddstore/server/auth"
)

// diskBytes sums the sizes of the chunk files in every member's store: the
// space garbage collection gives back.
func diskBytes(t *testing.T, cl *localcluster.Cluster) int64 {
	t.Helper()
	var n int64
	for _, m := range cl.Members {
		err := filepath.WalkDir(filepath.Join(m.DataDir, "chunks"), func(p string, d fs.DirEntry, err error) error {
			if err != nil || d.IsDir() {
				return err
			}
			info, err := d.Info()
			if err == nil {
				n += info.Size()
			}
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	return n
}

// TestCollectNow: with a grace period of an hour, an ordinary sweep right
// after a file is removed deletes nothing, and gc --now gives its space back
// at once, on every node, while the files that remain download intact. Only
// admins may ask for it.
func TestCollectNow(t *testing.T) {
	cl := startCluster(t, localcluster.Options{Store: "local", Tune: manualHealing(time.Hour)}) // diskBytes: chunk files
	c := newClient(t, cl)
	ctx := context.Background()
	for name, seed := range map[string]byte{"keep.bin": 31, "gone.bin": 32} {
		if _, err := c.Put(ctx, name, randomReader(seed, 24<<20), client.PutOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	gone := chunkIDs(t, c, "gone.bin")
	before := diskBytes(t, cl)
	if err := c.Delete(ctx, "gone.bin"); err != nil {
		t.Fatal(err)
	}
	if resp, err := c.Collect(ctx, false); err != nil || resp.GetDeletedCopies() != 0 || resp.GetEligible() != 0 {
		t.Fatalf("a sweep within the grace period: %v %v, want nothing deleted", resp, err)
	}
	if got := diskBytes(t, cl); got != before {
		t.Fatalf("disk went from %d to %d bytes without a collection", before, got)
	}

	token, err := cl.Token(auth.RoleWrite, "", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	writer, err := client.New(cl.Addrs(), append(cl.TLSOnly(), client.WithToken(token))...)
	if err != nil {
		t.Fatal(err)
	}
	defer writer.Close()
	if _, err := writer.CollectWith(ctx, client.CollectOptions{Now: true}); status.Code(err) != codes.PermissionDenied {
		t.Fatalf("gc --now by a writer: %v, want PermissionDenied", err)
	}

	start := time.Now()
	resp, err := c.CollectWith(ctx, client.CollectOptions{Now: true})
	if err != nil {
		t.Fatal(err)
	}
	took := time.Since(start)
	after := diskBytes(t, cl)
	t.Logf("gc --now: %d unreferenced chunks, %d copies deleted in %s; chunk files %d -> %d bytes (%d MiB given back)",
		resp.GetUnreferenced(), resp.GetDeletedCopies(), took.Round(time.Millisecond), before, after, (before-after)>>20)
	if !resp.GetNow() || resp.GetGrace() != "0s" {
		t.Errorf("response %v does not say it did not wait", resp)
	}
	if resp.GetDeletedCopies() != uint64(3*len(gone)) {
		t.Fatalf("gc --now deleted %d copies, want %d (3 of each of gone.bin's %d chunks)", resp.GetDeletedCopies(), 3*len(gone), len(gone))
	}
	// gone.bin is 24 MiB of random bytes, stored raw on 3 nodes.
	if freed := before - after; freed < 3*24<<20 {
		t.Fatalf("gc --now freed %d bytes on disk, want at least %d", freed, 3*24<<20)
	}
	for _, m := range cl.Members {
		for _, id := range gone {
			if ok, _ := m.Node.Store().Has(ctx, id); ok {
				t.Fatalf("%s still holds a chunk of the removed file", m.ID)
			}
		}
	}
	if got, want := download(t, c, "keep.bin"), hashOf(t, randomReader(31, 24<<20)); !bytes.Equal(got, want) {
		t.Fatal("keep.bin does not download intact after gc --now")
	}
	if resp, err := c.CollectWith(ctx, client.CollectOptions{Now: true}); err != nil || resp.GetUnreferenced() != 0 || resp.GetDeletedCopies() != 0 {
		t.Fatalf("second gc --now: %v %v, want nothing left", resp, err)
	}
}

// TestGCClockSurvivesLeaderChange: the time a chunk was first seen
// unreferenced is kept in the catalog, so a chunk that waited out the grace
// period under one leader is collected by the next at its first sweep,
// without waiting again (a leader's memory would start the clock anew).
func TestGCClockSurvivesLeaderChange(t *testing.T) {
	const grace = 3 * time.Second
	cl := startCluster(t, localcluster.Options{Tune: manualHealing(grace)})
	c := newClient(t, cl)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if _, err := c.Put(ctx, "old.bin", randomReader(41, 8<<20), client.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	ids := chunkIDs(t, c, "old.bin")
	if err := c.Delete(ctx, "old.bin"); err != nil {
		t.Fatal(err)
	}
	first, err := c.Collect(ctx, false) // starts the clocks
	if err != nil {
		t.Fatal(err)
	}
	if first.GetUnreferenced() != uint64(len(ids)) || first.GetDeletedCopies() != 0 {
		t.Fatalf("first sweep: %v, want %d unreferenced and nothing deleted", first, len(ids))
	}
	oldLeader := cl.Leader(ctx)
	if oldLeader < 0 {
		t.Fatal("no leader")
	}
	// Wait out the grace period on the old leader: its dry run says when.
	for {
		dry, err := c.Collect(ctx, true)
		if err != nil {
			t.Fatal(err)
		}
		if dry.GetEligible() == uint64(len(ids)) {
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("the chunks never became eligible: %v", dry)
		}
		time.Sleep(100 * time.Millisecond)
	}
	moved := time.Now()
	if err := cl.Members[oldLeader].Node.TransferLeadership(); err != nil {
		t.Fatal(err)
	}
	newLeader := -1
	for newLeader < 0 || newLeader == oldLeader {
		if ctx.Err() != nil {
			t.Fatal("no new leader")
		}
		newLeader = cl.Leader(ctx)
	}
	resp, err := c.Collect(ctx, false)
	if err != nil {
		t.Fatal(err)
	}
	since := time.Since(moved)
	t.Logf("leadership %s -> %s; its first sweep %s later deleted %d copies", cl.Members[oldLeader].ID, cl.Members[newLeader].ID, since.Round(time.Millisecond), resp.GetDeletedCopies())
	if since >= grace {
		t.Fatalf("the leader change and sweep took %s, not less than the grace period: the test proves nothing", since)
	}
	if resp.GetDeletedCopies() != uint64(3*len(ids)) {
		t.Fatalf("the new leader's first sweep: %v, want %d copies deleted without waiting again", resp, 3*len(ids))
	}
}
