package replica

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"

	"github.com/ddstore/ddstore/chunker"
	"github.com/ddstore/ddstore/internal/testenv"
)

// TestGridFS runs the GridFS store against FerretDB on each of its
// backends, SQLite and PostgreSQL (or the servers named by
// DDSTORE_TEST_MONGO_URI and DDSTORE_TEST_MONGO_POSTGRES_URI), with a fresh
// database per subtest.
func TestGridFS(t *testing.T) {
	for _, backend := range []string{"SQLite", "PostgreSQL"} {
		t.Run(backend, func(t *testing.T) {
			m := startGridFSBackend(t, backend, testenv.PostgresOptions{})
			testGridFS(t, m)
		})
	}
}

// startGridFSBackend starts FerretDB on the named backend ("SQLite" or
// "PostgreSQL", any case), stopped when the test ends.
func startGridFSBackend(t testing.TB, backend string, opts testenv.PostgresOptions) *testenv.Mongo {
	t.Helper()
	var m *testenv.Mongo
	var err error
	switch strings.ToLower(backend) {
	case "", "sqlite":
		m, err = testenv.StartMongo()
	case "postgresql", "postgres":
		ctx, cancel := testenv.Context(time.Minute)
		defer cancel()
		m, err = testenv.StartMongoPostgres(ctx, opts)
	default:
		t.Fatalf("unknown FerretDB backend %q (sqlite or postgresql)", backend)
	}
	if err != nil {
		t.Fatalf("MongoDB-wire server (%s): %v", backend, err)
	}
	t.Cleanup(m.Stop)
	return m
}

func testGridFS(t *testing.T, m *testenv.Mongo) {
	t.Run("Conformance", func(t *testing.T) {
		g := openGridFS(t, m.URI)
		if g.Kind() != "gridfs" {
			t.Errorf("Kind = %q", g.Kind())
		}
		testStore(t, g)
		if err := g.Close(); err != nil {
			t.Fatalf("Close: %v", err)
		}
		testClosed(t, g)
	})

	t.Run("Reopen", func(t *testing.T) {
		g := openGridFS(t, m.URI)
		ctx := ctxFor(t)
		c := chunker.NewCodecs().Encode(compressible("reopen", 100<<10))
		if _, err := g.Put(ctx, c); err != nil {
			t.Fatal(err)
		}
		g2, err := OpenGridFS(ctx, m.URI, g.db)
		if err != nil {
			t.Fatalf("second OpenGridFS: %v", err)
		}
		defer g2.Close()
		got, err := g2.Get(ctx, c.ID)
		if err != nil {
			t.Fatalf("Get through a second store: %v", err)
		}
		sameChunk(t, got, c)
		if u, err := g2.Usage(ctx); err != nil || u != (Usage{Chunks: 1, Bytes: uint64(len(c.Data))}) {
			t.Errorf("Usage = %+v, %v", u, err)
		}
	})

	// Two stores on one database put the same chunks at once: the unique
	// index on the chunk documents turns the loser's upload into a
	// duplicate-key error, reported as written=false.
	t.Run("TwoStoresRace", func(t *testing.T) {
		g := openGridFS(t, m.URI)
		ctx := ctxFor(t)
		g2, err := OpenGridFS(ctx, m.URI, g.db)
		if err != nil {
			t.Fatalf("second OpenGridFS: %v", err)
		}
		defer g2.Close()
		codecs := chunker.NewCodecs()
		for i := range 5 {
			c := encode(t, codecs, randomBytes(t, 3*gridfsChunkSize+i), chunker.Raw)
			var wg sync.WaitGroup
			var written [2]bool
			var errs [2]error
			for j, s := range []*GridFS{g, g2} {
				wg.Go(func() { written[j], errs[j] = s.Put(ctx, c) })
			}
			wg.Wait()
			if errs[0] != nil || errs[1] != nil {
				t.Fatalf("Puts: %v, %v", errs[0], errs[1])
			}
			if written[0] == written[1] {
				t.Errorf("written = %v: want exactly one true", written)
			}
			for _, s := range []*GridFS{g, g2} {
				got, err := s.Get(ctx, c.ID)
				if err != nil {
					t.Fatalf("Get: %v", err)
				}
				sameChunk(t, got, c)
			}
		}
	})

	t.Run("Corrupt", func(t *testing.T) {
		testGridFSCorrupt(t, m.URI)
	})

	// A writer that died between its chunk documents and its file document
	// left them behind: Put waits for a file that never comes, removes them
	// and stores the chunk.
	t.Run("DeadWriterLeftovers", func(t *testing.T) {
		g := openGridFS(t, m.URI)
		ctx := ctxFor(t)
		c := encode(t, chunker.NewCodecs(), randomBytes(t, 2*gridfsChunkSize+3), chunker.Raw)
		hexID := c.ID.String()
		if _, err := g.chunks.InsertOne(ctx, bson.D{{Key: "_id", Value: pieceID(hexID, 0)}, {Key: "files_id", Value: hexID},
			{Key: "n", Value: int32(0)}, {Key: "data", Value: bson.Binary{Data: []byte("stale")}}}); err != nil {
			t.Fatal(err)
		}
		if written, err := g.Put(ctx, c); err != nil || !written {
			t.Fatalf("Put over a dead writer's leftovers = %v, %v", written, err)
		}
		got, err := g.Get(ctx, c.ID)
		if err != nil {
			t.Fatal(err)
		}
		sameChunk(t, got, c)
	})

	// A chunk stored by an earlier version, through the driver's GridFS
	// writer (driver-chosen chunk document _ids), is still read, counted and
	// deleted; a chunk stored now is read by any GridFS reader.
	t.Run("Layouts", func(t *testing.T) {
		g := openGridFS(t, m.URI)
		ctx := ctxFor(t)
		codecs := chunker.NewCodecs()
		old := encode(t, codecs, randomBytes(t, 3*gridfsChunkSize+7), chunker.Raw)
		hexID := old.ID.String()
		us, err := g.bucket.OpenUploadStreamWithID(ctx, hexID, hexID, options.GridFSUpload().SetMetadata(
			bson.D{{Key: "codec", Value: int32(old.Codec)}, {Key: "raw_size", Value: int32(old.RawSize)}}))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := us.Write(old.Data); err != nil {
			t.Fatal(err)
		}
		if err := us.Close(); err != nil {
			t.Fatal(err)
		}
		got, err := g.Get(ctx, old.ID)
		if err != nil {
			t.Fatalf("Get of a driver-written chunk: %v", err)
		}
		sameChunk(t, got, old)

		now := encode(t, codecs, randomBytes(t, 2*gridfsChunkSize+9), chunker.Raw)
		if _, err := g.Put(ctx, now); err != nil {
			t.Fatal(err)
		}
		var buf bytes.Buffer
		if _, err := g.bucket.DownloadToStream(ctx, now.ID.String(), &buf); err != nil || !bytes.Equal(buf.Bytes(), now.Data) {
			t.Fatalf("the driver's GridFS reader read %d bytes of a stored chunk (%v), want %d", buf.Len(), err, len(now.Data))
		}
		if u, err := g.Usage(ctx); err != nil || u.Chunks != 2 {
			t.Fatalf("Usage = %+v, %v", u, err)
		}
		for _, c := range []chunker.Encoded{old, now} {
			if err := g.Delete(ctx, c.ID); err != nil {
				t.Fatal(err)
			}
			if ok, err := g.Has(ctx, c.ID); err != nil || ok {
				t.Fatalf("Has after Delete = %v, %v", ok, err)
			}
		}
		if n, err := g.chunks.CountDocuments(ctx, bson.D{}); err != nil || n != 0 {
			t.Fatalf("%d chunk documents left after deleting every chunk (%v)", n, err)
		}
	})
}

// openGridFS opens a GridFS store on a database of its own, dropped when
// the test ends.
func openGridFS(t testing.TB, uri string) *GridFS {
	t.Helper()
	var b [6]byte
	if _, err := rand.Read(b[:]); err != nil {
		t.Fatal(err)
	}
	db := "ddstore_test_" + hex.EncodeToString(b[:])
	ctx := ctxFor(t)
	g, err := OpenGridFS(ctx, uri, db)
	if err != nil {
		t.Fatalf("OpenGridFS: %v", err)
	}
	t.Cleanup(func() {
		g.Close()
		// ctx may have run out during a long benchmark.
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		client, err := mongo.Connect(options.Client().ApplyURI(uri))
		if err != nil {
			t.Logf("drop %s: %v", db, err)
			return
		}
		defer client.Disconnect(ctx)
		if err := client.Database(db).Drop(ctx); err != nil {
			t.Logf("drop %s: %v", db, err)
		}
	})
	return g
}

// testGridFSCorrupt damages a stored chunk through the driver and checks
// that Get reports chunker.ErrCorrupt and leaves the copy in place.
func testGridFSCorrupt(t *testing.T, uri string) {
	codecs := chunker.NewCodecs()
	// Three GridFS chunk documents: 128 KiB, 128 KiB and the rest.
	const size = 2*gridfsChunkSize + 1000
	for _, tc := range []struct {
		name   string
		codec  chunker.Codec
		damage func(t *testing.T, g *GridFS, id string)
	}{
		{"FlipRawByte", chunker.Raw, flipGridFSByte(1, 12345)},
		{"FlipZstdByte", chunker.Zstd, flipGridFSByte(0, 100)},
		{"ShortChunkDoc", chunker.Raw, setGridFSData(1, func(b []byte) []byte { return b[:len(b)-1] })},
		{"LongLastChunkDoc", chunker.Raw, setGridFSData(2, func(b []byte) []byte { return append(b, 0) })},
		{"MissingChunkDoc", chunker.Raw, func(t *testing.T, g *GridFS, id string) {
			ctx := ctxFor(t)
			if _, err := g.bucket.GetChunksCollection().DeleteOne(ctx, bson.D{{Key: "files_id", Value: id}, {Key: "n", Value: 1}}); err != nil {
				t.Fatal(err)
			}
		}},
		{"BadMetadata", chunker.Raw, updateGridFSFile(bson.D{{Key: "metadata.codec", Value: "zstd"}})},
		{"WrongRawSize", chunker.Raw, updateGridFSFile(bson.D{{Key: "metadata.raw_size", Value: int32(size - 1)}})},
		{"WrongCodec", chunker.Raw, updateGridFSFile(bson.D{{Key: "metadata.codec", Value: int32(chunker.Zstd)}})},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g := openGridFS(t, uri)
			ctx := ctxFor(t)
			var raw []byte
			if tc.codec == chunker.Zstd {
				raw = compressible(tc.name, 4<<20) // compresses to more than one chunk document
			} else {
				raw = randomBytes(t, size)
			}
			c := encode(t, codecs, raw, tc.codec)
			if _, err := g.Put(ctx, c); err != nil {
				t.Fatal(err)
			}
			tc.damage(t, g, c.ID.String())
			if _, err := g.Get(ctx, c.ID); !errors.Is(err, chunker.ErrCorrupt) {
				t.Fatalf("Get damaged chunk: err = %v, want chunker.ErrCorrupt", err)
			}
			if ok, err := g.Has(ctx, c.ID); err != nil || !ok {
				t.Errorf("Has after a corrupt Get = %v, %v; want true, nil (the copy stays)", ok, err)
			}
			// Deleting the damaged copy lets a good one be stored again.
			if err := g.Delete(ctx, c.ID); err != nil {
				t.Fatal(err)
			}
			if written, err := g.Put(ctx, c); err != nil || !written {
				t.Fatalf("Put after Delete = %v, %v", written, err)
			}
			got, err := g.Get(ctx, c.ID)
			if err != nil {
				t.Fatalf("Get restored chunk: %v", err)
			}
			sameChunk(t, got, c)
		})
	}
}

// chunkData reads the data of GridFS chunk document n of file id.
func chunkData(t *testing.T, g *GridFS, id string, n int) []byte {
	t.Helper()
	var doc struct {
		Data bson.Binary `bson:"data"`
	}
	err := g.bucket.GetChunksCollection().FindOne(ctxFor(t), bson.D{{Key: "files_id", Value: id}, {Key: "n", Value: n}}).Decode(&doc)
	if err != nil {
		t.Fatalf("chunk document %d of %s: %v", n, id, err)
	}
	return doc.Data.Data
}

// setGridFSData returns a damage function replacing the data of chunk
// document n with edit(data).
func setGridFSData(n int, edit func([]byte) []byte) func(*testing.T, *GridFS, string) {
	return func(t *testing.T, g *GridFS, id string) {
		data := edit(chunkData(t, g, id, n))
		res, err := g.bucket.GetChunksCollection().UpdateOne(ctxFor(t),
			bson.D{{Key: "files_id", Value: id}, {Key: "n", Value: n}},
			bson.D{{Key: "$set", Value: bson.D{{Key: "data", Value: bson.Binary{Data: data}}}}})
		if err != nil || res.ModifiedCount != 1 {
			t.Fatalf("update chunk document %d of %s: %+v, %v", n, id, res, err)
		}
	}
}

// flipGridFSByte returns a damage function inverting byte off of chunk
// document n.
func flipGridFSByte(n, off int) func(*testing.T, *GridFS, string) {
	return setGridFSData(n, func(b []byte) []byte {
		b = append([]byte(nil), b...)
		b[off] ^= 0xff
		return b
	})
}

// updateGridFSFile returns a damage function applying $set to the file
// document.
func updateGridFSFile(set bson.D) func(*testing.T, *GridFS, string) {
	return func(t *testing.T, g *GridFS, id string) {
		res, err := g.files.UpdateOne(ctxFor(t), bson.D{{Key: "_id", Value: id}}, bson.D{{Key: "$set", Value: set}})
		if err != nil || res.ModifiedCount != 1 {
			t.Fatalf("update file document %s: %+v, %v", id, res, err)
		}
	}
}
