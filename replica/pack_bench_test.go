package replica

import (
	"context"
	"encoding/binary"
	"fmt"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ddstore/ddstore/chunker"
	"golang.org/x/sys/unix"
)

// BenchmarkStorePut compares Local and Pack Put throughput for 1 MiB and
// 16 KiB chunks with 1, 8 and 16 concurrent writers. Beside MB/s each
// result reports, measured in the same run on the same disk right after
// the puts, the rate of a raw sequential write + one fdatasync of the same
// chunk bytes (disk-MB/s; at least 64 MiB of them, so that one sync does
// not dominate), and the store's rate as a fraction of it (x-disk).
//
//	go test -run XXX -bench StorePut -benchtime 2s ./replica/
func BenchmarkStorePut(b *testing.B) {
	stores := []struct {
		name string
		open func(b *testing.B, dir string) Store
	}{
		{"local", func(b *testing.B, dir string) Store { return openLocal(b, dir) }},
		{"pack", func(b *testing.B, dir string) Store { return openPack(b, dir, PackOptions{}) }},
	}
	for _, size := range []int{1 << 20, 16 << 10} {
		raw := randomBytes(b, size)
		c := chunker.NewCodecs().Encode(raw) // incompressible: stored raw
		for _, writers := range []int{1, 8, 16} {
			for _, st := range stores {
				name := fmt.Sprintf("size=%s/writers=%d/store=%s", sizeName(size), writers, st.name)
				b.Run(name, func(b *testing.B) {
					dir := b.TempDir()
					s := st.open(b, dir)
					rate, syncs := benchPuts(b, s, c, writers)
					b.StopTimer()
					disk, err := diskBaseline(dir, c.Data, int64(b.N)*int64(len(c.Data)))
					if err != nil {
						b.Fatal(err)
					}
					b.ReportMetric(rate, "MB/s")
					b.ReportMetric(disk, "disk-MB/s")
					b.ReportMetric(rate/disk, "x-disk")
					if syncs >= 0 {
						b.ReportMetric(float64(syncs)/float64(b.N), "syncs/op")
					}
				})
			}
		}
	}
}

func sizeName(n int) string {
	if n >= 1<<20 {
		return fmt.Sprintf("%dMiB", n>>20)
	}
	return fmt.Sprintf("%dKiB", n>>10)
}

// benchPuts puts b.N copies of c under distinct IDs from the given number
// of goroutines and returns the rate in MB/s (10^6 bytes) and, for a Pack,
// the syncs it took (else -1).
func benchPuts(b *testing.B, s Store, c chunker.Encoded, writers int) (float64, int64) {
	ctx := context.Background()
	var next atomic.Int64
	var syncs0 int64 = -1
	p, isPack := s.(*Pack)
	if isPack {
		syncs0 = p.Stats().Syncs
	}
	b.SetBytes(int64(len(c.Data)))
	b.ResetTimer()
	start := time.Now()
	var wg sync.WaitGroup
	for range writers {
		wg.Go(func() {
			x := c
			for {
				i := next.Add(1)
				if i > int64(b.N) {
					return
				}
				// Put trusts the caller's ID: give each put a new one.
				binary.BigEndian.PutUint64(x.ID[:], uint64(i))
				if written, err := s.Put(ctx, x); err != nil || !written {
					b.Errorf("Put = %v, %v", written, err)
					return
				}
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	syncs := int64(-1)
	if isPack {
		syncs = p.Stats().Syncs - syncs0
	}
	return float64(b.N) * float64(len(c.Data)) / elapsed.Seconds() / 1e6, syncs
}

// diskBaseline writes data again and again, at least total and at least
// 64 MiB, sequentially to a new file in dir, with one fdatasync at the
// end, and returns the rate in MB/s.
func diskBaseline(dir string, data []byte, total int64) (float64, error) {
	f, err := os.CreateTemp(dir, "disk-baseline-")
	if err != nil {
		return 0, err
	}
	defer os.Remove(f.Name())
	defer f.Close()
	total = max(total, 64<<20)
	start := time.Now()
	var n int64
	for n < total {
		m, err := f.Write(data)
		if err != nil {
			return 0, err
		}
		n += int64(m)
	}
	if err := unix.Fdatasync(int(f.Fd())); err != nil {
		return 0, err
	}
	return float64(n) / time.Since(start).Seconds() / 1e6, nil
}

// BenchmarkPackIndexMemory measures the heap the pack index takes per
// chunk: it fills an index (256 shards of map[ID]packLoc, grown as puts
// grow it) with a million chunks and reports the heap it holds.
//
//	go test -run XXX -bench PackIndexMemory -benchtime 1x ./replica/
func BenchmarkPackIndexMemory(b *testing.B) {
	const chunks = 1_000_000
	for range b.N {
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		shards := new([256]packShard)
		for i := range shards {
			shards[i].index = map[chunker.ID]packLoc{}
			shards[i].pending = map[chunker.ID]chan struct{}{}
		}
		for i := range chunks {
			var id chunker.ID
			binary.BigEndian.PutUint64(id[:], uint64(i)*0x9e3779b97f4a7c15)
			binary.BigEndian.PutUint64(id[8:], uint64(i))
			shards[id[0]].index[id] = packLoc{pack: uint32(i >> 12), off: uint32(i), len: 1 << 20}
		}
		runtime.GC()
		runtime.ReadMemStats(&after)
		perChunk := float64(after.HeapAlloc-before.HeapAlloc) / chunks
		b.ReportMetric(perChunk, "B/chunk")
		b.ReportMetric(perChunk*chunks/(1<<20), "MiB/Mchunks")
		runtime.KeepAlive(shards)
	}
}
