package replica

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/ddstore/ddstore/chunker"
)

// randomBytes returns n random bytes.
func randomBytes(t testing.TB, n int) []byte {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

// compressible returns n bytes zstd shrinks a lot, different for each seed.
func compressible(seed string, n int) []byte {
	var buf bytes.Buffer
	for i := 0; buf.Len() < n; i++ {
		fmt.Fprintf(&buf, "%s,row %d,temp %d.%d,wind %d\n", seed, i, i%40, i%10, i%17)
	}
	return buf.Bytes()[:n]
}

// encode encodes raw and checks it got the wanted codec.
func encode(t testing.TB, codecs *chunker.Codecs, raw []byte, want chunker.Codec) chunker.Encoded {
	t.Helper()
	c := codecs.Encode(raw)
	if c.Codec != want {
		t.Fatalf("encoded %d bytes with %v, want %v", len(raw), c.Codec, want)
	}
	return c
}

func ctxFor(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

func sameChunk(t testing.TB, got, want chunker.Encoded) {
	t.Helper()
	if got.ID != want.ID || got.RawSize != want.RawSize || got.Codec != want.Codec || !bytes.Equal(got.Data, want.Data) {
		t.Fatalf("got chunk %s (%v, raw %d, %d bytes), want %s (%v, raw %d, %d bytes)",
			got.ID, got.Codec, got.RawSize, len(got.Data), want.ID, want.Codec, want.RawSize, len(want.Data))
	}
}

// storedOverhead bounds what a store may add to a chunk's encoded bytes in
// the sizes it reports.
const storedOverhead = 64

// testStore runs the conformance suite on s, which must be empty. The
// subtests share s and run in order.
func testStore(t *testing.T, s Store) {
	codecs := chunker.NewCodecs()
	ctx := ctxFor(t)
	stored := map[chunker.ID]chunker.Encoded{} // what s should hold

	checkContents := func(t *testing.T) {
		t.Helper()
		seen := map[chunker.ID]int64{}
		err := s.Walk(ctx, func(id chunker.ID, size int64) error {
			if _, dup := seen[id]; dup {
				t.Errorf("Walk reported %s twice", id)
			}
			seen[id] = size
			return nil
		})
		if err != nil {
			t.Fatalf("Walk: %v", err)
		}
		var sum int64
		for id, size := range seen {
			c, ok := stored[id]
			if !ok {
				t.Errorf("Walk reported %s, which is not stored", id)
				continue
			}
			if size < int64(len(c.Data)) || size > int64(len(c.Data))+storedOverhead {
				t.Errorf("Walk: %s has size %d, holds %d encoded bytes", id, size, len(c.Data))
			}
			sum += size
		}
		for id := range stored {
			if _, ok := seen[id]; !ok {
				t.Errorf("Walk missed %s", id)
			}
		}
		u, err := s.Usage(ctx)
		if err != nil {
			t.Fatalf("Usage: %v", err)
		}
		if want := (Usage{Chunks: uint64(len(stored)), Bytes: uint64(sum)}); u != want {
			t.Errorf("Usage = %+v, want %+v", u, want)
		}
	}

	t.Run("Empty", func(t *testing.T) {
		checkContents(t)
	})

	t.Run("RoundTrip", func(t *testing.T) {
		for _, tc := range []struct {
			name  string
			raw   []byte
			codec chunker.Codec
		}{
			{"zstd", compressible("roundtrip", 200<<10), chunker.Zstd},
			{"raw", randomBytes(t, 100<<10), chunker.Raw},
			{"raw-tiny", randomBytes(t, 1), chunker.Raw},
			{"zstd-multi-gridfs-chunk", compressible("big", 3<<20), chunker.Zstd},
		} {
			t.Run(tc.name, func(t *testing.T) {
				c := encode(t, codecs, tc.raw, tc.codec)
				if ok, err := s.Has(ctx, c.ID); err != nil || ok {
					t.Fatalf("Has before Put = %v, %v; want false, nil", ok, err)
				}
				written, err := s.Put(ctx, c)
				if err != nil || !written {
					t.Fatalf("first Put = %v, %v; want true, nil", written, err)
				}
				stored[c.ID] = c
				written, err = s.Put(ctx, c)
				if err != nil || written {
					t.Fatalf("second Put = %v, %v; want false, nil", written, err)
				}
				if ok, err := s.Has(ctx, c.ID); err != nil || !ok {
					t.Fatalf("Has after Put = %v, %v; want true, nil", ok, err)
				}
				got, err := s.Get(ctx, c.ID)
				if err != nil {
					t.Fatalf("Get: %v", err)
				}
				sameChunk(t, got, c)
				raw, err := codecs.Decode(nil, got)
				if err != nil || !bytes.Equal(raw, tc.raw) {
					t.Fatalf("decoding the chunk read back: %v", err)
				}
			})
		}
		checkContents(t)
	})

	t.Run("Missing", func(t *testing.T) {
		id := chunker.Sum([]byte("never stored"))
		if _, err := s.Get(ctx, id); !errors.Is(err, ErrNotFound) {
			t.Errorf("Get missing: err = %v, want ErrNotFound", err)
		}
		if ok, err := s.Has(ctx, id); err != nil || ok {
			t.Errorf("Has missing = %v, %v; want false, nil", ok, err)
		}
		if err := s.Delete(ctx, id); err != nil {
			t.Errorf("Delete missing: %v", err)
		}
		checkContents(t)
	})

	t.Run("Delete", func(t *testing.T) {
		c := encode(t, codecs, randomBytes(t, 10<<10), chunker.Raw)
		if _, err := s.Put(ctx, c); err != nil {
			t.Fatal(err)
		}
		stored[c.ID] = c
		checkContents(t)
		if err := s.Delete(ctx, c.ID); err != nil {
			t.Fatalf("Delete: %v", err)
		}
		delete(stored, c.ID)
		if ok, err := s.Has(ctx, c.ID); err != nil || ok {
			t.Errorf("Has after Delete = %v, %v; want false, nil", ok, err)
		}
		if _, err := s.Get(ctx, c.ID); !errors.Is(err, ErrNotFound) {
			t.Errorf("Get after Delete: err = %v, want ErrNotFound", err)
		}
		if err := s.Delete(ctx, c.ID); err != nil {
			t.Errorf("second Delete: %v", err)
		}
		checkContents(t)
		// A deleted chunk can be stored again.
		if written, err := s.Put(ctx, c); err != nil || !written {
			t.Fatalf("Put after Delete = %v, %v; want true, nil", written, err)
		}
		stored[c.ID] = c
		checkContents(t)
	})

	t.Run("ConcurrentPuts", func(t *testing.T) {
		c := encode(t, codecs, compressible("concurrent", 300<<10), chunker.Zstd)
		const n = 8
		var wg sync.WaitGroup
		results := make([]bool, n)
		errs := make([]error, n)
		start := make(chan struct{})
		for i := range n {
			wg.Go(func() {
				<-start
				results[i], errs[i] = s.Put(ctx, c)
			})
		}
		close(start)
		wg.Wait()
		writers := 0
		for i := range n {
			if errs[i] != nil {
				t.Errorf("Put %d: %v", i, errs[i])
			}
			if results[i] {
				writers++
			}
		}
		if writers != 1 {
			t.Errorf("%d of %d concurrent Puts reported written, want 1", writers, n)
		}
		stored[c.ID] = c
		got, err := s.Get(ctx, c.ID)
		if err != nil {
			t.Fatalf("Get: %v", err)
		}
		sameChunk(t, got, c)
		checkContents(t)
	})

	t.Run("ConcurrentDistinct", func(t *testing.T) {
		const n = 8
		cs := make([]chunker.Encoded, n)
		for i := range cs {
			cs[i] = encode(t, codecs, randomBytes(t, 20<<10), chunker.Raw)
		}
		var wg sync.WaitGroup
		errs := make([]error, n)
		for i := range n {
			wg.Go(func() {
				var written bool
				if written, errs[i] = s.Put(ctx, cs[i]); errs[i] == nil && !written {
					errs[i] = errors.New("not written")
				}
				if errs[i] == nil {
					var got chunker.Encoded
					if got, errs[i] = s.Get(ctx, cs[i].ID); errs[i] == nil && !bytes.Equal(got.Data, cs[i].Data) {
						errs[i] = errors.New("read back different bytes")
					}
				}
			})
		}
		wg.Wait()
		for i, err := range errs {
			if err != nil {
				t.Errorf("chunk %d: %v", i, err)
			}
			stored[cs[i].ID] = cs[i]
		}
		checkContents(t)
	})

	t.Run("Large", func(t *testing.T) {
		// Larger than a GridFS chunk document (128 KiB) many times over.
		c := encode(t, codecs, randomBytes(t, 4<<20+12345), chunker.Raw)
		if written, err := s.Put(ctx, c); err != nil || !written {
			t.Fatalf("Put = %v, %v; want true, nil", written, err)
		}
		stored[c.ID] = c
		got, err := s.Get(ctx, c.ID)
		if err != nil {
			t.Fatalf("Get: %v", err)
		}
		sameChunk(t, got, c)
		checkContents(t)
	})

	t.Run("WalkStops", func(t *testing.T) {
		stop := errors.New("stop")
		calls := 0
		err := s.Walk(ctx, func(chunker.ID, int64) error {
			calls++
			return stop
		})
		if !errors.Is(err, stop) || calls != 1 {
			t.Errorf("Walk = %v after %d calls; want the callback's error after 1", err, calls)
		}
	})

	t.Run("CancelledContext", func(t *testing.T) {
		cctx, cancel := context.WithCancel(context.Background())
		cancel()
		var some chunker.ID
		for id := range stored {
			some = id
			break
		}
		fresh := encode(t, codecs, randomBytes(t, 1000), chunker.Raw)
		for _, tc := range []struct {
			name string
			op   func() error
		}{
			{"Has", func() error { _, err := s.Has(cctx, some); return err }},
			{"Put", func() error { _, err := s.Put(cctx, fresh); return err }},
			{"Get", func() error { _, err := s.Get(cctx, some); return err }},
			{"Delete", func() error { return s.Delete(cctx, some) }},
			{"Walk", func() error { return s.Walk(cctx, func(chunker.ID, int64) error { return nil }) }},
			{"Usage", func() error { _, err := s.Usage(cctx); return err }},
		} {
			t.Run(tc.name, func(t *testing.T) {
				if err := tc.op(); !errors.Is(err, context.Canceled) {
					t.Errorf("err = %v, want context.Canceled", err)
				}
			})
		}
		if ok, err := s.Has(ctx, fresh.ID); err != nil || ok {
			t.Errorf("Has after cancelled Put = %v, %v; want false, nil", ok, err)
		}
		if ok, err := s.Has(ctx, some); err != nil || !ok {
			t.Errorf("Has after cancelled Delete = %v, %v; want true, nil", ok, err)
		}
		checkContents(t)
	})
}

// testClosed checks that every call on a closed store fails with ErrClosed.
func testClosed(t *testing.T, s Store) {
	t.Helper()
	ctx := ctxFor(t)
	c := chunker.NewCodecs().Encode([]byte("after close"))
	for _, tc := range []struct {
		name string
		op   func() error
	}{
		{"Has", func() error { _, err := s.Has(ctx, c.ID); return err }},
		{"Put", func() error { _, err := s.Put(ctx, c); return err }},
		{"Get", func() error { _, err := s.Get(ctx, c.ID); return err }},
		{"Delete", func() error { return s.Delete(ctx, c.ID) }},
		{"Walk", func() error { return s.Walk(ctx, func(chunker.ID, int64) error { return nil }) }},
		{"Usage", func() error { _, err := s.Usage(ctx); return err }},
		{"Close", s.Close},
	} {
		if err := tc.op(); !errors.Is(err, ErrClosed) {
			t.Errorf("%s after Close: err = %v, want ErrClosed", tc.name, err)
		}
	}
}
