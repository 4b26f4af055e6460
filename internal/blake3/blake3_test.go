package blake3

import (
	"bytes"
	"encoding/hex"
	"hash"
	"math/rand/v2"
	"testing"

	reference "lukechampine.com/blake3"
)

var _ hash.Hash = (*Hasher)(nil)

// TestKnownAnswers: the inputs of the official BLAKE3 test vectors (byte i
// is i mod 251), hashed whole and written in uneven pieces. The hashes are
// the official vectors' up to 1025 bytes, and beyond that those
// github.com/zeebo/blake3 v0.2.4, ddstore's first BLAKE3 library, gave:
// chunk IDs name chunks on disk and in catalogs, so no change of
// implementation may change one.
func TestKnownAnswers(t *testing.T) {
	for _, tc := range []struct {
		n    int
		want string
	}{
		{0, "af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262"},
		{1, "2d3adedff11b61f14c886e35afa036736dcd87a74d27b5c1510225d0f592e213"},
		{1023, "10108970eeda3eb932baac1428c7a2163b0e924c9a9e25b35bba72b28f70bd11"},
		{1024, "42214739f095a406f3fc83deb889744ac00df831c10daa55189b5d121c855af7"},
		{1025, "d00278ae47eb27b34faecf67b4fe263f82d5412916c1ffd97c8cb7fb814b8444"},
		{65537, "7c99f9840a73dfcb6e5bfe4ff6d1558acab7e015640790c26411818bdbe17eca"},
		{1 << 20, "74cb441fd087764ca9c3694da742ebe30cbeb3060a17009ca81825c7a8d10343"},
		{3<<20 + 17, "26003c63117013de5d02be76e5e32a2f75bfbc075f17180fd5f9f0b4752d2bfe"},
	} {
		b := make([]byte, tc.n)
		for i := range b {
			b[i] = byte(i % 251)
		}
		sum := Sum256(b)
		if got := hex.EncodeToString(sum[:]); got != tc.want {
			t.Errorf("Sum256 of %d bytes = %s, want %s", tc.n, got, tc.want)
		}
		h := New()
		pieces := []int{1, 7, 1000, 1024, 4093, 70000, 300 << 10}
		for rest, i := b, 0; len(rest) > 0; i++ {
			k := min(pieces[i%len(pieces)], len(rest))
			h.Write(rest[:k])
			rest = rest[k:]
		}
		if got := hex.EncodeToString(h.Sum(nil)); got != tc.want {
			t.Errorf("streamed hash of %d bytes = %s, want %s", tc.n, got, tc.want)
		}
	}
}

// TestSameAsReference compares Sum256 and the Hasher, written in random
// pieces, with lukechampine.com/blake3 over lengths around every buffer and
// subtree boundary and random ones up to 3 MiB.
func TestSameAsReference(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	data := make([]byte, 3<<20+5)
	for i := range data {
		data[i] = byte(rng.Uint32())
	}
	var sizes []int
	for _, base := range []int{0, 1024, bufSize, 2 * bufSize, 3 * bufSize, 4 * bufSize, 7 * bufSize, 64 * bufSize, 1 << 20} {
		for d := -2; d <= 2; d++ {
			if base+d >= 0 {
				sizes = append(sizes, base+d)
			}
		}
	}
	for range 200 {
		sizes = append(sizes, rng.IntN(len(data)+1))
	}
	for _, n := range sizes {
		b := data[:n]
		want := reference.Sum256(b)
		if got := Sum256(b); got != want {
			t.Fatalf("Sum256 of %d bytes = %x, want %x", n, got, want)
		}
		h := New()
		for rest := b; len(rest) > 0; {
			k := min(1+rng.IntN(3*bufSize), len(rest))
			if rng.IntN(4) == 0 {
				k = min(bufSize, len(rest))
			}
			h.Write(rest[:k])
			rest = rest[k:]
		}
		if got := h.Sum(nil); !bytes.Equal(got, want[:]) {
			t.Fatalf("Hasher over %d bytes in pieces = %x, want %x", n, got, want)
		}
		// Sum does not change the state; writing on continues the hash.
		h.Write([]byte("more"))
		want2 := reference.Sum256(append(append([]byte{}, b...), "more"...))
		if got := h.Sum(nil); !bytes.Equal(got, want2[:]) {
			t.Fatalf("Hasher over %d bytes, Sum, then 4 more = %x, want %x", n, got, want2)
		}
		h.Reset()
		h.Write(b)
		if got := h.Sum(nil); !bytes.Equal(got, want[:]) {
			t.Fatalf("Hasher reset and written %d bytes = %x, want %x", n, got, want)
		}
	}
}

func BenchmarkSum256(b *testing.B) {
	data := make([]byte, 1<<20)
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		Sum256(data)
	}
}

func BenchmarkReferenceSum256(b *testing.B) {
	data := make([]byte, 1<<20)
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		reference.Sum256(data)
	}
}

func BenchmarkHasherWrite(b *testing.B) {
	data := make([]byte, 1<<20+333)
	b.SetBytes(int64(len(data)))
	h := New()
	for b.Loop() {
		h.Write(data)
	}
}
