package server_test

import (
	"bytes"
	"context"
	"testing"
	"time"

	"github.com/ddstore/ddstore/client"
	"github.com/ddstore/ddstore/internal/localcluster"
	"github.com/ddstore/ddstore/internal/testenv"
	"github.com/ddstore/ddstore/server"
)

// TestStockMemcached: with memcached as Debian starts it (`-m 256`, its
// default 1 MiB item limit) and no in-process tier, the second read of a
// 100 MiB file is served from the memcached tier, chunks over 1 MiB included
// (stored in pieces), as `ddstore status` counts it.
func TestStockMemcached(t *testing.T) {
	mc, err := testenv.StartMemcached(256, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer mc.Stop()
	size := 100 << 20
	if raceEnabled {
		size = 16 << 20
	}
	cl := startCluster(t, localcluster.Options{Tune: func(c *server.Config) {
		manualHealing(time.Hour, mc.Addr)(c)
		c.MemcachedMaxItem = 0 // memcached's default, 1 MiB
		c.CacheSize = -1       // no in-process tier: every hit is memcached's
		c.CacheMaxFile = -1    // a file of any size is cached
	}})
	c := newClient(t, cl, cl.Members[0].APIAddr)
	ctx := context.Background()
	if _, err := c.Put(ctx, "stock.bin", randomReader(77, int64(size)), client.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	want := hashOf(t, randomReader(77, int64(size)))
	if got := download(t, c, "stock.bin"); !bytes.Equal(got, want) {
		t.Fatal("first read differs")
	}
	time.Sleep(500 * time.Millisecond) // the tier stores in the background
	h1, m1, _ := tierTotals(t, c)
	if got := download(t, c, "stock.bin"); !bytes.Equal(got, want) {
		t.Fatal("second read differs")
	}
	h2, m2, _ := tierTotals(t, c)
	chunks := uint64(len(chunkIDs(t, c, "stock.bin")))
	var skipped, large uint64
	st, err := c.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range st.GetNodes() {
		for _, tier := range n.GetCache() {
			skipped += tier.GetSkipped()
		}
	}
	m, err := c.Stat(ctx, "stock.bin", 0)
	if err != nil {
		t.Fatal(err)
	}
	for _, ref := range m.GetChunks() {
		if ref.GetStoredSize() > 1<<20-100 {
			large++
		}
	}
	t.Logf("%d chunks (%d over 1 MiB stored); first read %d hits %d misses; second read %d hits %d misses; %d skipped", chunks, large, h1, m1, h2-h1, m2-m1, skipped)
	if h2-h1 < chunks || skipped != 0 {
		t.Fatalf("second read: %d memcached hits for %d chunks, %d skipped", h2-h1, chunks, skipped)
	}
}

// TestLargeDownloadSkipsMemcached: downloading a file larger than
// CacheMaxFile neither asks memcached nor fills it (a scan), so its second
// read gets no hits; a file under the limit is served from memcached the
// second time.
func TestLargeDownloadSkipsMemcached(t *testing.T) {
	mc, err := testenv.StartMemcached(256, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer mc.Stop()
	cl := startCluster(t, localcluster.Options{Tune: func(c *server.Config) {
		manualHealing(time.Hour, mc.Addr)(c)
		c.MemcachedMaxItem = 0 // memcached's default, 1 MiB, as it runs here
		c.CacheSize = -1       // no in-process tier: every hit is memcached's
		c.CacheMaxFile = 4 << 20
	}})
	c := newClient(t, cl, cl.Members[0].APIAddr)
	ctx := context.Background()
	for name, size := range map[string]int64{"big.bin": 16 << 20, "small.bin": 2 << 20} {
		if _, err := c.Put(ctx, name, randomReader(byte(len(name)), size), client.PutOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	h0, m0, _ := tierTotals(t, c)
	for range 2 {
		download(t, c, "big.bin")
		time.Sleep(200 * time.Millisecond) // a fill would happen in the background
	}
	h1, m1, _ := tierTotals(t, c)
	if h1 != h0 || m1 != m0 {
		t.Fatalf("two downloads of a file over the limit asked memcached: %d hits, %d misses", h1-h0, m1-m0)
	}
	download(t, c, "small.bin")
	time.Sleep(500 * time.Millisecond) // the tier stores in the background
	h2, _, _ := tierTotals(t, c)
	download(t, c, "small.bin")
	h3, _, _ := tierTotals(t, c)
	if chunks := uint64(len(chunkIDs(t, c, "small.bin"))); h3-h2 < chunks {
		t.Fatalf("second read of a file under the limit: %d memcached hits for %d chunks", h3-h2, chunks)
	}
}
