package replica

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"os"
	"sort"
	"strconv"
	"sync"
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"

	"github.com/ddstore/ddstore/chunker"
	"github.com/ddstore/ddstore/internal/testenv"
)

// gridfsBenchBackend starts FerretDB on the backend DDSTORE_GRIDFS_BACKEND
// names (sqlite, the default, or postgresql) and opens a store on it. With
// DDSTORE_GRIDFS_PG_INDEX=gin (PostgreSQL only) the GIN indexes on
// `_jsonb->'_id'` that `ddstore gridfs index` creates (ferretpg.EnsureIndexes,
// through testenv.Postgres.IndexIDs) are created once the store's tables
// exist, with the planner settings they need (ferretpg.Settings).
func gridfsBenchBackend(b *testing.B, durable bool) (*testenv.Mongo, *GridFS, string) {
	backend := os.Getenv("DDSTORE_GRIDFS_BACKEND")
	if backend == "" {
		backend = "sqlite"
	}
	gin := os.Getenv("DDSTORE_GRIDFS_PG_INDEX") == "gin"
	if gin && backend == "sqlite" {
		b.Fatal("DDSTORE_GRIDFS_PG_INDEX=gin needs DDSTORE_GRIDFS_BACKEND=postgresql")
	}
	m := startGridFSBackend(b, backend, testenv.PostgresOptions{Durable: durable, IDIndexPlanning: gin})
	g := openGridFS(b, m.URI)
	desc := "FerretDB v1.24.2 on " + backend
	if gin {
		if err := m.Postgres.IndexIDs(b.Context()); err != nil {
			b.Fatal(err)
		}
		desc += " with GIN indexes on _jsonb->'_id'"
	}
	if backend != "sqlite" {
		if durable {
			desc += " (fsync on)"
		} else {
			desc += " (fsync off)"
		}
	}
	return m, g, desc
}

// BenchmarkGridFSGetGrowth measures a one-chunk Get from the GridFS store
// as the store grows (16 MiB, 100 MiB, then DDSTORE_GRIDFS_MIB if set,
// default 500): the first, middle and last chunk stored, each read once,
// then 20 chunks spread over the store (median and slowest).
// The store is filled with 1 MiB random chunks by 4 writers at once.
// DDSTORE_GRIDFS_BACKEND and DDSTORE_GRIDFS_PG_INDEX as gridfsBenchBackend.
//
//	go test ./replica -run '^$' -bench GridFSGetGrowth -benchtime 1x -timeout 60m
//	DDSTORE_GRIDFS_BACKEND=postgresql DDSTORE_GRIDFS_MIB=5120 go test ./replica -run '^$' -bench GridFSGetGrowth -benchtime 1x -timeout 120m
func BenchmarkGridFSGetGrowth(b *testing.B) {
	_, g, desc := gridfsBenchBackend(b, false)
	b.Logf("%s", desc)
	ctx := b.Context()
	top := 500
	if v, err := strconv.Atoi(os.Getenv("DDSTORE_GRIDFS_MIB")); err == nil && v > 100 {
		top = v
	}
	var ids []chunker.ID
	for range b.N {
		for _, target := range []int{16, 100, top} {
			t0 := time.Now()
			added, err := fillGridFS(ctx, g, target-len(ids), 4)
			if err != nil {
				b.Fatal(err)
			}
			ids = append(ids, added...)
			put := time.Since(t0)
			var lat []time.Duration
			for _, id := range []chunker.ID{ids[0], ids[len(ids)/2], ids[len(ids)-1]} {
				t1 := time.Now()
				if _, err := g.Get(ctx, id); err != nil {
					b.Fatal(err)
				}
				lat = append(lat, time.Since(t1).Round(time.Millisecond))
			}
			// Then up to 20 more chunks spread over the store (not when a
			// read takes seconds: the three above tell that already).
			var more []time.Duration
			for i := range 20 {
				if lat[0]+lat[1]+lat[2] > 3*time.Second {
					break
				}
				id := ids[(2*i+1)*len(ids)/40]
				t1 := time.Now()
				if _, err := g.Get(ctx, id); err != nil {
					b.Fatal(err)
				}
				more = append(more, time.Since(t1))
			}
			spread := ""
			if len(more) > 0 {
				sort.Slice(more, func(i, j int) bool { return more[i] < more[j] })
				spread = fmt.Sprintf("; %d chunks spread over the store: median %v, slowest %v", len(more),
					more[len(more)/2].Round(time.Millisecond), more[len(more)-1].Round(time.Millisecond))
			}
			b.Logf("%4d MiB stored (last %d MiB put at %.1f MB/s): Get of first, middle, last chunk: %v%s",
				len(ids), len(added), float64(len(added)<<20)/put.Seconds()/1e6, lat, spread)
		}
	}
}

// fillGridFS puts n random 1 MiB chunks with the given number of writers
// and returns their IDs.
func fillGridFS(ctx context.Context, g *GridFS, n, writers int) ([]chunker.ID, error) {
	if n <= 0 {
		return nil, nil
	}
	ids := make([]chunker.ID, n)
	errs := make([]error, writers)
	codecs := chunker.NewCodecs()
	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			for i := w; i < n && errs[w] == nil; i += writers {
				raw := make([]byte, 1<<20)
				rand.Read(raw)
				c := codecs.Encode(raw)
				if _, err := g.Put(ctx, c); err != nil {
					errs[w] = err
				}
				ids[i] = c.ID
			}
		})
	}
	wg.Wait()
	return ids, errors.Join(errs...)
}

// BenchmarkGridFSThroughput measures, in one run on one FerretDB, a file of
// DDSTORE_GRIDFS_THROUGHPUT_MIB (default 256) random bytes uploaded and
// downloaded through the driver's GridFS (one GridFS file, 128 KiB chunk
// documents: direct GridFS) and through the GridFS store (the file cut
// into content-defined chunks as a client cuts it, each chunk Put, then
// each Get, by 1 and by 4 goroutines). DDSTORE_GRIDFS_BACKEND and
// DDSTORE_GRIDFS_PG_INDEX as gridfsBenchBackend; PostgreSQL runs with fsync
// on.
//
//	DDSTORE_GRIDFS_BACKEND=postgresql go test ./replica -run '^$' -bench GridFSThroughput -benchtime 1x -timeout 60m
func BenchmarkGridFSThroughput(b *testing.B) {
	m, g, desc := gridfsBenchBackend(b, true)
	ctx := b.Context()
	size := 256
	if v, err := strconv.Atoi(os.Getenv("DDSTORE_GRIDFS_THROUGHPUT_MIB")); err == nil && v > 0 {
		size = v
	}
	data := make([]byte, size<<20)
	rand.Read(data)
	mb := func(d time.Duration) string { return fmt.Sprintf("%.1f MB/s", float64(len(data))/d.Seconds()/1e6) }
	for range b.N {
		up, down, err := directGridFS(ctx, m.URI, data)
		if err != nil {
			b.Fatal(err)
		}
		b.Logf("%s, %d MiB random: direct GridFS: upload %s, download %s", desc, size, mb(up), mb(down))

		var chunks []chunker.Encoded
		codecs := chunker.NewCodecs()
		cut := chunker.NewCutter(bytes.NewReader(data), chunker.DefaultOptions())
		for {
			raw, err := cut.Next()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				b.Fatal(err)
			}
			chunks = append(chunks, codecs.Encode(append([]byte(nil), raw...)))
		}
		for _, workers := range []int{1, 4} {
			if workers > 1 { // a fresh database: every chunk is written again
				g = openGridFS(b, m.URI)
				if m.Postgres != nil && os.Getenv("DDSTORE_GRIDFS_PG_INDEX") == "gin" {
					if err := m.Postgres.IndexIDs(ctx); err != nil {
						b.Fatal(err)
					}
				}
			}
			up, err := forChunks(len(chunks), workers, func(i int) error {
				_, err := g.Put(ctx, chunks[i])
				return err
			})
			if err != nil {
				b.Fatal(err)
			}
			var lat []time.Duration
			var mu sync.Mutex
			down, err := forChunks(len(chunks), workers, func(i int) error {
				t0 := time.Now()
				got, err := g.Get(ctx, chunks[i].ID)
				if err == nil && !bytes.Equal(got.Data, chunks[i].Data) {
					err = fmt.Errorf("chunk %d read back differs", i)
				}
				mu.Lock()
				lat = append(lat, time.Since(t0))
				mu.Unlock()
				return err
			})
			if err != nil {
				b.Fatal(err)
			}
			sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
			b.Logf("%s, %d MiB random: GridFS store, %d chunks by %d goroutine(s): upload %s, download %s (Get median %v, max %v)",
				desc, size, len(chunks), workers, mb(up), mb(down), lat[len(lat)/2].Round(time.Millisecond), lat[len(lat)-1].Round(time.Millisecond))
		}
	}
}

// forChunks runs fn for 0..n-1 on the given number of goroutines and
// returns how long it took.
func forChunks(n, workers int, fn func(i int) error) (time.Duration, error) {
	t0 := time.Now()
	errs := make([]error, workers)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for i := w; i < n && errs[w] == nil; i += workers {
				errs[w] = fn(i)
			}
		})
	}
	wg.Wait()
	return time.Since(t0), errors.Join(errs...)
}

// directGridFS uploads data as one GridFS file through the driver (128 KiB
// chunk documents, as the store's) into a database of its own, downloads it
// and compares.
func directGridFS(ctx context.Context, uri string, data []byte) (up, down time.Duration, err error) {
	cl, err := mongo.Connect(options.Client().ApplyURI(uri))
	if err != nil {
		return 0, 0, fmt.Errorf("direct gridfs: %w", err)
	}
	defer cl.Disconnect(context.WithoutCancel(ctx))
	db := cl.Database(fmt.Sprintf("ddstore_direct_%d", time.Now().UnixNano()))
	defer db.Drop(context.WithoutCancel(ctx))
	bucket := db.GridFSBucket(options.GridFSBucket().SetChunkSizeBytes(gridfsChunkSize))
	t0 := time.Now()
	id := bson.NewObjectID()
	if err := bucket.UploadFromStreamWithID(ctx, id, "direct", bytes.NewReader(data)); err != nil {
		return 0, 0, fmt.Errorf("direct gridfs upload: %w", err)
	}
	up = time.Since(t0)
	var buf bytes.Buffer
	buf.Grow(len(data))
	t0 = time.Now()
	if _, err := bucket.DownloadToStream(ctx, id, &buf); err != nil {
		return 0, 0, fmt.Errorf("direct gridfs download: %w", err)
	}
	down = time.Since(t0)
	if !bytes.Equal(buf.Bytes(), data) {
		return 0, 0, errors.New("direct gridfs: downloaded bytes differ")
	}
	return up, down, nil
}
