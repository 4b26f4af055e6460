package server_test

import (
	"context"
	"io"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/ddstore/ddstore/client"
	"github.com/ddstore/ddstore/internal/localcluster"
)

// gateReader yields r, but stops after open bytes until gate is closed.
type gateReader struct {
	r      io.Reader
	open   int64
	n      int64
	gate   chan struct{}
	halted chan struct{} // closed when it first waits at the gate
}

func (g *gateReader) Read(p []byte) (int, error) {
	if g.n >= g.open {
		select {
		case <-g.halted:
		default:
			close(g.halted)
		}
		<-g.gate
	} else if rest := g.open - g.n; int64(len(p)) > rest {
		p = p[:rest]
	}
	n, err := g.r.Read(p)
	g.n += int64(n)
	return n, err
}

// TestCollectNowSparesUploads: gc --now in the middle of an upload deletes
// none of the chunks the upload already sent (they are pinned on the node
// it goes through), and the upload then commits and downloads whole. Before
// pins, every such upload failed at commit and had to be sent again.
func TestCollectNowSparesUploads(t *testing.T) {
	cl := startCluster(t, localcluster.Options{Replicas: 2})
	c := newClient(t, cl, cl.Members[1].APIAddr)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	const size = 48 << 20
	g := &gateReader{r: randomReader(3, size), open: size / 2, gate: make(chan struct{}), halted: make(chan struct{})}
	done := make(chan error, 1)
	go func() {
		_, err := c.Put(ctx, "racing.bin", g, client.PutOptions{})
		done <- err
	}()
	<-g.halted
	// Wait until the first half's chunks are stored.
	var held uint64
	for deadline := time.Now().Add(30 * time.Second); ; {
		st, err := c.Status(ctx)
		if err != nil {
			t.Fatal(err)
		}
		held = 0
		for _, n := range st.GetNodes() {
			held += n.GetChunks()
		}
		if held >= 2*10 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("only %d chunk copies stored 30 s after the upload began", held)
		}
		time.Sleep(50 * time.Millisecond)
	}
	// A busy host (the race detector) may see an election here: gc answers
	// Unavailable without a leader, and is asked again, as a user would.
	gc, err := c.CollectWith(ctx, client.CollectOptions{Now: true})
	for deadline := time.Now().Add(20 * time.Second); status.Code(err) == codes.Unavailable && time.Now().Before(deadline); {
		time.Sleep(200 * time.Millisecond)
		gc, err = c.CollectWith(ctx, client.CollectOptions{Now: true})
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("gc --now during the upload: %d unreferenced, %d pinned, %d copies deleted (%d copies stored)", gc.GetUnreferenced(), gc.GetPinned(), gc.GetDeletedCopies(), held)
	if gc.GetDeletedCopies() != 0 || gc.GetPinned() == 0 || gc.GetPinned() != gc.GetUnreferenced() {
		t.Fatalf("gc --now took %d copies and spared %d of %d unreferenced chunks; want every chunk of the upload spared", gc.GetDeletedCopies(), gc.GetPinned(), gc.GetUnreferenced())
	}
	close(g.gate)
	if err := <-done; err != nil {
		t.Fatalf("the upload gc --now raced: %v", err)
	}
	if got := download(t, c, "racing.bin"); string(got) != string(hashOf(t, randomReader(3, size))) {
		t.Fatal("download differs")
	}
	// Committed, its chunks are no longer pinned: removed, gc --now takes them.
	if err := c.Delete(ctx, "racing.bin"); err != nil {
		t.Fatal(err)
	}
	gc, err = c.CollectWith(ctx, client.CollectOptions{Now: true})
	if err != nil {
		t.Fatal(err)
	}
	if gc.GetPinned() != 0 || gc.GetDeletedCopies() == 0 {
		t.Fatalf("after rm, gc --now spared %d chunks and deleted %d copies; want none spared", gc.GetPinned(), gc.GetDeletedCopies())
	}
}
