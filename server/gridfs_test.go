package server_test

import (
	"bytes"
	"context"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/ddstore/ddstore/client"
	"github.com/ddstore/ddstore/internal/localcluster"
	"github.com/ddstore/ddstore/internal/testenv"
)

// TestGridFSCluster: a 3-node cluster whose nodes keep chunks in GridFS on a
// real MongoDB-wire server (FerretDB, on its SQLite and on its PostgreSQL
// backend, as FerretDB ships) stores and serves a file intact.
func TestGridFSCluster(t *testing.T) {
	t.Run("SQLite", func(t *testing.T) {
		mongo, err := testenv.StartMongo()
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(mongo.Stop)
		testGridFSCluster(t, mongo, 24<<20, nil)
	})
	t.Run("PostgreSQL", func(t *testing.T) {
		mongo := startMongoPostgres(t, testenv.PostgresOptions{})
		testGridFSCluster(t, mongo, 24<<20, nil)
	})
}

// TestGridFSClusterPostgresLarge: a large file (256 MiB, or
// DDSTORE_GRIDFS_CLUSTER_MIB; 32 MiB under the race detector) uploads to and downloads byte-identical from a
// 3-node cluster on FerretDB's PostgreSQL backend with the GIN indexes on
// `_jsonb->'_id'` that ferretpg.EnsureIndexes makes (as `ddstore gridfs
// index` does): without
// them every chunk read scans its node's whole collection (FerretDB v1.24.2
// never uses its own _id index there), and reading a 1 GiB file would take
// hours.
//
//	DDSTORE_GRIDFS_CLUSTER_MIB=1024 go test ./server -run TestGridFSClusterPostgresLarge -v -timeout 30m
func TestGridFSClusterPostgresLarge(t *testing.T) {
	size := int64(256 << 20)
	if raceEnabled {
		size = 32 << 20 // the plain `make test` run moves the 256 MiB
	}
	if v, err := strconv.Atoi(os.Getenv("DDSTORE_GRIDFS_CLUSTER_MIB")); err == nil && v > 0 {
		size = int64(v) << 20
	}
	mongo := startMongoPostgres(t, testenv.PostgresOptions{IDIndexPlanning: true})
	testGridFSCluster(t, mongo, size, func(ctx context.Context) error { return mongo.Postgres.IndexIDs(ctx) })
}

func startMongoPostgres(t *testing.T, opts testenv.PostgresOptions) *testenv.Mongo {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	mongo, err := testenv.StartMongoPostgres(ctx, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(mongo.Stop)
	return mongo
}

// testGridFSCluster starts a 3-node cluster on the GridFS store at mongo,
// runs prepare (if any) once the nodes have opened their stores, then puts
// a random file of size bytes and gets it back.
func testGridFSCluster(t *testing.T, mongo *testenv.Mongo, size int64, prepare func(context.Context) error) {
	cl := startCluster(t, localcluster.Options{Store: "gridfs", MongoURI: mongo.URI})
	c := newClient(t, cl)
	ctx, cancel := context.WithTimeout(context.Background(), 25*time.Minute)
	defer cancel()
	if prepare != nil {
		if err := prepare(ctx); err != nil {
			t.Fatal(err)
		}
	}

	t0 := time.Now()
	res, err := c.Put(ctx, "gridfs.bin", randomReader(5, size), client.PutOptions{})
	if err != nil {
		t.Fatal(err)
	}
	up := time.Since(t0)
	t0 = time.Now()
	got := download(t, c, "gridfs.bin")
	downT := time.Since(t0)
	if want := hashOf(t, randomReader(5, size)); !bytes.Equal(got, want) {
		t.Fatalf("hash %x, want %x", got, want)
	}
	t.Logf("%d MiB (%d chunks, R=3): put %.1f s (%.1f MB/s), get %.1f s (%.1f MB/s)", size>>20, res.Chunks,
		up.Seconds(), float64(size)/up.Seconds()/1e6, downT.Seconds(), float64(size)/downT.Seconds()/1e6)
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
