package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"fmt"
	mrand "math/rand/v2"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/ddstore/ddstore/chunker"
	"github.com/ddstore/ddstore/client"
	"github.com/ddstore/ddstore/internal/localcluster"
	"github.com/ddstore/ddstore/replica"
)

// TestPackNodeCrash: three nodes on the pack store, as child processes,
// under a steady stream of puts, deletes and gc --now runs; a node is killed
// with SIGKILL at 20 random moments (fixed seed; the leader too, one time in
// three) and restarted. Afterwards every file whose put returned and that was
// not removed downloads whole (the client verifies each chunk and the file's
// BLAKE3), every removed one is gone, and each node's pack store, reopened
// offline, holds no copy that fails verification.
func TestPackNodeCrash(t *testing.T) {
	if testing.Short() {
		t.Skip("a minute of kills")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	dir := t.TempDir()
	cl, err := localcluster.Start(ctx, localcluster.Options{Dir: dir, Exe: exe, Store: "pack", Fast: true})
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	c, err := cl.Client(client.WithCallTimeout(3 * time.Second))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()

	var mu sync.Mutex
	kept := map[string][]byte{} // name -> content, for every put that returned
	var removed []string
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w := range 2 {
		wg.Go(func() {
			rng := mrand.New(mrand.NewPCG(uint64(w), 7))
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				name := fmt.Sprintf("w%d/f%04d.bin", w, i)
				data := make([]byte, 64<<10+rng.IntN(3<<20))
				rand.Read(data)
				pctx, pcancel := context.WithTimeout(ctx, 20*time.Second)
				_, err := c.Put(pctx, name, bytes.NewReader(data), client.PutOptions{})
				pcancel()
				mu.Lock()
				if err == nil {
					kept[name] = data
				}
				// Now and then remove an older file and collect at once.
				var victim string
				if i%5 == 4 {
					for n := range kept {
						if n != name {
							victim = n
							break
						}
					}
				}
				mu.Unlock()
				if victim != "" {
					dctx, dcancel := context.WithTimeout(ctx, 10*time.Second)
					if err := c.Delete(dctx, victim); err == nil {
						mu.Lock()
						delete(kept, victim)
						removed = append(removed, victim)
						mu.Unlock()
						c.CollectWith(dctx, client.CollectOptions{Now: true})
					}
					dcancel()
				}
			}
		})
	}

	rng := mrand.New(mrand.NewPCG(2026, 11))
	for kill := range 20 {
		time.Sleep(time.Duration(200+rng.IntN(800)) * time.Millisecond)
		i := 1 + rng.IntN(2)
		if kill%3 == 2 {
			if l := cl.Leader(ctx); l >= 0 {
				i = l
			}
		}
		if err := cl.StopNode(i, true); err != nil {
			t.Fatalf("kill %d (%s): %v", kill, cl.Members[i].ID, err)
		}
		if err := cl.StartNode(ctx, i); err != nil {
			t.Fatalf("restart %s after kill %d: %v", cl.Members[i].ID, kill, err)
		}
		if err := cl.WaitReady(ctx, 3); err != nil {
			t.Fatalf("after kill %d of %s: %v", kill, cl.Members[i].ID, err)
		}
	}
	close(stop)
	wg.Wait()

	mu.Lock()
	defer mu.Unlock()
	if len(kept) < 20 {
		t.Fatalf("only %d puts returned during the kills", len(kept))
	}
	for name, want := range kept {
		var got bytes.Buffer
		if _, err := c.Get(ctx, name, &got, client.GetOptions{}); err != nil || !bytes.Equal(got.Bytes(), want) {
			t.Fatalf("%s after the kills: %v (%d of %d bytes)", name, err, got.Len(), len(want))
		}
	}
	for _, name := range removed {
		if _, err := c.Stat(ctx, name, 0); err == nil {
			t.Fatalf("%s was removed but is listed", name)
		}
	}
	c.Close()
	if err := cl.Close(); err != nil {
		t.Logf("close: %v", err)
	}
	var chunks int
	for _, m := range cl.Members {
		p, err := replica.OpenPack(ctx, filepath.Join(m.DataDir, "chunks"), replica.PackOptions{})
		if err != nil {
			t.Fatalf("reopen %s's pack store: %v", m.ID, err)
		}
		err = p.Walk(ctx, func(id chunker.ID, _ int64) error {
			chunks++
			_, err := p.Get(ctx, id)
			return err
		})
		p.Close()
		if err != nil {
			t.Fatalf("%s's pack store holds a bad copy: %v", m.ID, err)
		}
	}
	var torn int
	logs, _ := filepath.Glob(filepath.Join(dir, "*.log"))
	for _, l := range logs {
		b, _ := os.ReadFile(l)
		torn += bytes.Count(b, []byte("cut a torn tail off a pack"))
	}
	t.Logf("20 kills: %d files kept and downloaded whole, %d removed and gone, %d chunk copies verified on the three nodes; %d torn pack tails cut at restarts", len(kept), len(removed), chunks, torn)
}
