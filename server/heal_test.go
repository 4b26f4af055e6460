package server_test

import (
	"bytes"
	"context"
	"errors"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/ddstore/ddstore/chunker"
	"github.com/ddstore/ddstore/client"
	"github.com/ddstore/ddstore/internal/localcluster"
	"github.com/ddstore/ddstore/internal/testenv"
	pb "github.com/ddstore/ddstore/proto/ddstore/v1"
	"github.com/ddstore/ddstore/server"
)

// manualHealing turns the background loops off so that tests run passes
// themselves.
func manualHealing(grace time.Duration, memcached ...string) func(*server.Config) {
	return func(c *server.Config) {
		c.RepairInterval, c.ScrubInterval, c.GCInterval = -1, -1, -1
		c.GCGrace = grace
		c.Memcached = memcached
		c.MemcachedMaxItem = 8 << 20 // the test's memcached runs with -I 8m
		c.CacheSize = 8 << 20        // smaller than the test files: the FIFO turns over
	}
}

func chunkIDs(t *testing.T, c *client.Client, name string) []chunker.ID {
	t.Helper()
	m, err := c.Stat(context.Background(), name, pb.Consistency_CONSISTENCY_LINEARIZABLE)
	if err != nil {
		t.Fatal(err)
	}
	var ids []chunker.ID
	for _, ref := range m.GetChunks() {
		ids = append(ids, chunker.ID(ref.GetId()))
	}
	return ids
}

func tierTotals(t *testing.T, c *client.Client) (hits, misses, errs uint64) {
	t.Helper()
	st, err := c.Status(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range st.GetNodes() {
		for _, tier := range n.GetCache() {
			hits += tier.GetHits()
			misses += tier.GetMisses()
			errs += tier.GetErrors()
		}
	}
	return hits, misses, errs
}

// TestCacheTiers: the second read of a file is served from the cache tiers
// (memory and a real memcached), byte-identical; killing memcached in the
// middle of downloads fails none of them.
func TestCacheTiers(t *testing.T) {
	mc, err := testenv.StartMemcached(256, 8<<20)
	if err != nil {
		t.Fatal(err)
	}
	defer mc.Stop()
	cl := startCluster(t, localcluster.Options{Tune: manualHealing(time.Hour, mc.Addr)})
	c := newClient(t, cl, cl.Members[0].APIAddr)
	ctx := context.Background()
	const size = 48 << 20
	if _, err := c.Put(ctx, "hot.bin", randomReader(31, size), client.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	want := hashOf(t, randomReader(31, size))
	if got := download(t, c, "hot.bin"); !bytes.Equal(got, want) {
		t.Fatal("first read differs")
	}
	h1, m1, _ := tierTotals(t, c)
	if got := download(t, c, "hot.bin"); !bytes.Equal(got, want) {
		t.Fatal("second read differs")
	}
	h2, m2, _ := tierTotals(t, c)
	chunks := uint64(len(chunkIDs(t, c, "hot.bin")))
	t.Logf("first read: %d hits %d misses; second read: %d hits, %d misses (%d chunks)", h1, m1, h2-h1, m2-m1, chunks)
	if h2-h1 < chunks {
		t.Fatalf("second read: %d cache hits for %d chunks", h2-h1, chunks)
	}

	// memcached dies while four downloads run: each download holds on at
	// its first chunk until memcached is dead, so every one of them fetches
	// most of its chunks with memcached gone.
	_, _, errsBefore := tierTotals(t, c)
	var started sync.WaitGroup
	killed := make(chan struct{})
	var wg sync.WaitGroup
	errs := make([]error, 4)
	for i := range errs {
		started.Add(1)
		wg.Go(func() {
			var once sync.Once
			h := new(bytes.Buffer)
			_, err := c.Get(ctx, "hot.bin", h, client.GetOptions{Progress: func(done, total int64) {
				if done > 0 && done < total {
					once.Do(func() { started.Done(); <-killed })
				}
			}})
			once.Do(started.Done) // a download that failed before its first chunk
			if err == nil && !bytes.Equal(hashOf(t, h), want) {
				err = errors.New("download differs")
			}
			errs[i] = err
		})
	}
	started.Wait()
	mc.Kill()
	close(killed)
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("download %d with memcached killed: %v", i, err)
		}
	}
	_, _, errsAfter := tierTotals(t, c)
	t.Logf("memcached errors during the downloads: %d", errsAfter-errsBefore)
	if errsAfter == errsBefore {
		t.Fatal("no memcached error counted: the downloads never met the dead memcached")
	}
	// With memcached gone, reads go on from the stores.
	if got := download(t, c, "hot.bin"); !bytes.Equal(got, want) {
		t.Fatal("read after memcached died differs")
	}
}

// TestScrubAndRepair: a chunk corrupted on disk on one node is found by
// scrub and rewritten from a good copy; downloads stay correct meanwhile.
func TestScrubAndRepair(t *testing.T) {
	cl := startCluster(t, localcluster.Options{Store: "local", Tune: manualHealing(time.Hour)}) // corrupts chunk files
	c := newClient(t, cl)
	ctx := context.Background()
	const size = 24 << 20
	if _, err := c.Put(ctx, "f.bin", randomReader(41, size), client.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	want := hashOf(t, randomReader(41, size))
	ids := chunkIDs(t, c, "f.bin")
	victim := cl.Members[1]
	path := func(id chunker.ID) string {
		return filepath.Join(victim.DataDir, "chunks", id.String()[:2], id.String())
	}
	if err := corruptAt(path(ids[2]), 100); err != nil {
		t.Fatal(err)
	}
	rep, err := victim.Node.Scrub(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Corrupt != 1 || rep.Repaired != 1 || rep.Chunks != len(ids) {
		t.Fatalf("scrub: %+v, want 1 corrupt, 1 repaired, %d chunks", rep, len(ids))
	}
	if _, err := victim.Node.Store().Get(ctx, ids[2]); err != nil {
		t.Fatalf("rewritten chunk: %v", err)
	}

	// Another corrupt copy: downloads through that node stay correct, and a
	// repair pass restores the copy the read path set aside.
	if err := corruptAt(path(ids[3]), 7); err != nil {
		t.Fatal(err)
	}
	if got := download(t, newClient(t, cl, victim.APIAddr), "f.bin"); !bytes.Equal(got, want) {
		t.Fatal("download through the node with a corrupt copy differs")
	}
	rr, err := c.Repair(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("repair: %+v", rr)
	for _, m := range cl.Members {
		if ok, _ := m.Node.Store().Has(ctx, ids[3]); !ok {
			t.Fatalf("%s lacks chunk 3 after repair", m.ID)
		}
	}
	st, _ := c.Status(ctx)
	for _, n := range st.GetNodes() {
		if n.GetId() == victim.ID && n.GetHeal().GetScrubCorrupt() != 1 {
			t.Fatalf("status does not report the corrupt copy: %v", n.GetHeal())
		}
	}
}

// TestRepairAfterNodeLoss: one node of three with R=2 is stopped for good;
// after repair every chunk has two copies on the live nodes.
func TestRepairAfterNodeLoss(t *testing.T) {
	cl := startCluster(t, localcluster.Options{Replicas: 2, Tune: manualHealing(time.Hour)})
	c := newClient(t, cl)
	ctx := context.Background()
	for i, name := range []string{"a.bin", "b.bin", "c.bin"} {
		if _, err := c.Put(ctx, name, randomReader(byte(50+i), 12<<20), client.PutOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	leader := cl.Leader(ctx)
	lost := (leader + 1) % 3
	if err := cl.StopNode(lost, true); err != nil {
		t.Fatal(err)
	}
	var live []*localcluster.Member
	for i, m := range cl.Members {
		if i != lost {
			live = append(live, m)
		}
	}
	rest := newClient(t, cl, live[0].APIAddr, live[1].APIAddr)
	rr, err := rest.Repair(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("repair: %+v", rr)
	if rr.GetLost() != 0 || rr.GetCopiesMade() == 0 {
		t.Fatalf("repair after losing a node: %+v", rr)
	}
	for _, name := range []string{"a.bin", "b.bin", "c.bin"} {
		for _, id := range chunkIDs(t, rest, name) {
			for _, m := range live {
				if ok, _ := m.Node.Store().Has(ctx, id); !ok {
					t.Fatalf("%s: chunk %s not on live node %s after repair", name, id, m.ID)
				}
			}
		}
	}
	again, err := rest.Repair(ctx)
	if err != nil || again.GetUnderReplicated() != 0 {
		t.Fatalf("second repair pass: %+v %v", again, err)
	}
}

// TestGarbageCollection: after a delete and the grace period, the file's own
// chunks are gone from every store while chunks shared with another file
// stay; uploads racing a collection commit whole or fail cleanly.
func TestGarbageCollection(t *testing.T) {
	const grace = 700 * time.Millisecond
	cl := startCluster(t, localcluster.Options{Tune: manualHealing(grace)})
	c := newClient(t, cl)
	ctx := context.Background()
	a := make([]byte, 24<<20)
	if _, err := randomReader(61, int64(len(a))).Read(a); err != nil {
		t.Fatal(err)
	}
	b := append(bytes.Clone(a[:12<<20]), make([]byte, 4<<20)...) // shares A's first half
	for name, data := range map[string][]byte{"a.bin": a, "b.bin": b} {
		if _, err := c.Put(ctx, name, bytes.NewReader(data), client.PutOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	inB := map[chunker.ID]bool{}
	for _, id := range chunkIDs(t, c, "b.bin") {
		inB[id] = true
	}
	var unique, shared []chunker.ID
	for _, id := range chunkIDs(t, c, "a.bin") {
		if inB[id] {
			shared = append(shared, id)
		} else {
			unique = append(unique, id)
		}
	}
	if len(unique) == 0 || len(shared) == 0 {
		t.Fatalf("test files share %d chunks and differ in %d; want both", len(shared), len(unique))
	}
	if err := c.Delete(ctx, "a.bin"); err != nil {
		t.Fatal(err)
	}
	first, err := c.Collect(ctx, false)
	if err != nil {
		t.Fatal(err)
	}
	if first.GetEligible() != 0 || first.GetDeletedCopies() != 0 || first.GetUnreferenced() != uint64(len(unique)) {
		t.Fatalf("sweep inside the grace period: %+v, want %d unreferenced and nothing deleted", first, len(unique))
	}
	time.Sleep(grace + 100*time.Millisecond)
	dry, err := c.Collect(ctx, true)
	if err != nil || dry.GetEligible() != uint64(len(unique)) || dry.GetDeletedCopies() != 0 {
		t.Fatalf("dry run: %+v %v", dry, err)
	}
	for _, m := range cl.Members {
		if ok, _ := m.Node.Store().Has(ctx, unique[0]); !ok {
			t.Fatal("a dry run deleted a chunk")
		}
	}
	done, err := c.Collect(ctx, false)
	if err != nil {
		t.Fatal(err)
	}
	if done.GetDeletedCopies() != uint64(3*len(unique)) {
		t.Fatalf("sweep: %+v, want %d copies deleted", done, 3*len(unique))
	}
	for _, m := range cl.Members {
		for _, id := range unique {
			if ok, _ := m.Node.Store().Has(ctx, id); ok {
				t.Fatalf("%s still holds a collected chunk", m.ID)
			}
		}
		for _, id := range shared {
			if ok, _ := m.Node.Store().Has(ctx, id); !ok {
				t.Fatalf("%s lost a chunk b.bin still uses", m.ID)
			}
		}
	}
	if got := download(t, c, "b.bin"); !bytes.Equal(got, hashOf(t, bytes.NewReader(b))) {
		t.Fatal("b.bin differs after collection")
	}
}

// TestUploadRacingCollection: with a grace period of 1ns, uploads of a deleted
// file's bytes race sweeps; each upload either commits a file that downloads
// whole or fails at its commit with FailedPrecondition and leaves no file.
// Every other upload waits, between sending its chunks and committing, until
// a whole sweep has run, so sweeps surely run while uploads do. A sweep
// spares the chunks an upload relies on (pins) and deletes the rest of the
// removed file's; which it meets depends on timing, so the test counts both.
func TestUploadRacingCollection(t *testing.T) {
	for _, tc := range []struct {
		name  string
		grace time.Duration
		now   bool // sweeps are gc --now
	}{
		// A grace of 0 would mean the default (1h): no sweep would delete.
		{"grace 1ns", time.Nanosecond, false},
		// gc --now does not wait out the hour; uploads stay as safe.
		{"gc --now", time.Hour, true},
	} {
		t.Run(tc.name, func(t *testing.T) { testUploadRacingCollection(t, tc.grace, tc.now) })
	}
}

func testUploadRacingCollection(t *testing.T, grace time.Duration, now bool) {
	cl := startCluster(t, localcluster.Options{Tune: manualHealing(grace)})
	c := newClient(t, cl)
	ctx := context.Background()
	const size = 16 << 20
	want := hashOf(t, randomReader(71, size))
	committed, failed, racing := 0, 0, 0
	var deleted, spared uint64 // by the sweeps that ran during an upload
	for round := range 6 {
		if _, err := c.Put(ctx, "src.bin", randomReader(71, size), client.PutOptions{Overwrite: true}); err != nil {
			t.Fatal(err)
		}
		if err := c.Delete(ctx, "src.bin"); err != nil {
			t.Fatal(err)
		}
		type sweep struct {
			start, end      time.Time
			deleted, spared uint64
		}
		var (
			mu     sync.Mutex
			sweeps []sweep
		)
		// raced reports whether, this round, a whole sweep has run since t.
		raced := func(t time.Time) bool {
			mu.Lock()
			defer mu.Unlock()
			return slices.ContainsFunc(sweeps, func(s sweep) bool { return s.start.After(t) })
		}
		stop := make(chan struct{})
		var wg sync.WaitGroup
		putStart := time.Now()
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				start := time.Now()
				resp, err := c.CollectWith(ctx, client.CollectOptions{Now: now})
				if err != nil {
					t.Errorf("sweep: %v", err)
					return
				}
				mu.Lock()
				sweeps = append(sweeps, sweep{start, time.Now(), resp.GetDeletedCopies(), resp.GetPinned()})
				mu.Unlock()
			}
		})
		var opts client.PutOptions
		opts.Overwrite = true
		if round%2 == 0 {
			var once sync.Once
			opts.Progress = func(int64) {
				once.Do(func() {
					held := time.Now()
					for !raced(held) {
						if time.Since(held) > 30*time.Second {
							t.Errorf("round %d: no sweep ran in 30s while the upload waited", round)
							return
						}
						time.Sleep(5 * time.Millisecond)
					}
				})
			}
		}
		name := "race.bin"
		_, err := c.Put(ctx, name, randomReader(71, size), opts)
		putEnd := time.Now()
		close(stop)
		wg.Wait()
		for _, s := range sweeps {
			if s.start.After(putStart) && s.end.Before(putEnd) {
				racing++
				deleted += s.deleted
				spared += s.spared
			}
		}
		if err == nil {
			committed++
			if got := download(t, c, name); !bytes.Equal(got, want) {
				t.Fatalf("round %d: committed file does not download intact", round)
			}
			c.Delete(ctx, name)
			continue
		}
		failed++
		code := status.Code(err)
		t.Logf("round %d: upload failed cleanly: %v (%v)", round, err, code)
		if code != codes.FailedPrecondition || !strings.HasPrefix(err.Error(), "commit ") {
			t.Fatalf("round %d: upload failed with %v (%v), want its commit refused with FailedPrecondition", round, err, code)
		}
		if _, serr := c.Stat(ctx, name, pb.Consistency_CONSISTENCY_LINEARIZABLE); status.Code(serr) != codes.NotFound {
			t.Fatalf("round %d: failed upload left a file behind: %v", round, serr)
		}
	}
	t.Logf("%d uploads committed, %d failed cleanly; %d sweeps ran while an upload did, deleting %d copies and sparing %d pinned chunks", committed, failed, racing, deleted, spared)
	if racing < 3 {
		t.Fatalf("%d sweeps ran while an upload did, want at least one per waiting upload (3)", racing)
	}
	if deleted+spared == 0 {
		t.Fatal("the sweeps that ran during uploads neither deleted nor spared anything: they never met the removed file's chunks")
	}
}

// TestRepairWhenTheClusterGrows: a file stored while the cluster had one
// node (R=3 capped at 1) gets its other copies as soon as nodes join, not at
// the next repair interval.
func TestRepairWhenTheClusterGrows(t *testing.T) {
	cl, err := localcluster.New(localcluster.Options{Dir: t.TempDir(), Replicas: 3, Fast: true, Tune: func(c *server.Config) {
		manualHealing(time.Hour)(c)
		c.RepairInterval = time.Hour // only the join may start a pass
	}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cl.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := cl.StartNode(ctx, 0); err != nil {
		t.Fatal(err)
	}
	if err := cl.WaitReady(ctx, 1); err != nil {
		t.Fatal(err)
	}
	c := newClient(t, cl, cl.Members[0].APIAddr)
	if _, err := c.Put(ctx, "early.bin", randomReader(77, 6<<20), client.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	ids := chunkIDs(t, c, "early.bin")
	for i := 1; i < 3; i++ {
		if err := cl.StartNode(ctx, i); err != nil {
			t.Fatal(err)
		}
	}
	if err := cl.WaitReady(ctx, 3); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	for {
		missing := 0
		for _, m := range cl.Members {
			for _, id := range ids {
				if ok, _ := m.Node.Store().Has(ctx, id); !ok {
					missing++
				}
			}
		}
		if missing == 0 {
			break
		}
		if time.Since(start) > 20*time.Second {
			t.Fatalf("%d copies of early.bin's %d chunks still missing %s after the cluster grew to 3", missing, len(ids), time.Since(start))
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Logf("early.bin's %d chunks on all 3 nodes %s after the cluster grew", len(ids), time.Since(start).Round(time.Millisecond))
}
