package replica

import (
	"crypto/rand"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/ddstore/ddstore/chunker"
	"github.com/ddstore/ddstore/internal/testenv"
)

// BenchmarkGridFSGetGrowth measures a one-chunk Get from the GridFS store
// as the store grows (16 MiB, 100 MiB, then DDSTORE_GRIDFS_MIB if set,
// default 500): the first, middle and last chunk stored, each read once.
//
//	go test ./replica -run '^$' -bench GridFSGetGrowth -benchtime 1x -timeout 60m
func BenchmarkGridFSGetGrowth(b *testing.B) {
	m, err := testenv.StartMongo()
	if err != nil {
		b.Fatal(err)
	}
	defer m.Stop()
	g := openGridFS(b, m.URI)
	ctx := b.Context()
	top := 500
	if v, err := strconv.Atoi(os.Getenv("DDSTORE_GRIDFS_MIB")); err == nil && v > 100 {
		top = v
	}
	codecs := chunker.NewCodecs()
	var ids []chunker.ID
	stored := 0
	for range b.N {
		for _, target := range []int{16 << 20, 100 << 20, top << 20} {
			t0 := time.Now()
			for stored < target {
				raw := make([]byte, 1<<20)
				rand.Read(raw)
				c := codecs.Encode(raw)
				if _, err := g.Put(ctx, c); err != nil {
					b.Fatal(err)
				}
				ids = append(ids, c.ID)
				stored += len(raw)
			}
			put := time.Since(t0)
			var lat []time.Duration
			for _, id := range []chunker.ID{ids[0], ids[len(ids)/2], ids[len(ids)-1]} {
				t1 := time.Now()
				if _, err := g.Get(ctx, id); err != nil {
					b.Fatal(err)
				}
				lat = append(lat, time.Since(t1).Round(time.Millisecond))
			}
			b.Logf("%4d MiB stored (last %.1f s to put): Get of first, middle, last chunk: %v", stored>>20, put.Seconds(), lat)
		}
	}
}
