// Package blake3 is BLAKE3-256 (chunk IDs, whole-file hashes, snapshot
// checksums) computed on the calling goroutine, with the SIMD compression
// functions of lukechampine.com/blake3/guts (AVX-512 or AVX2 where the CPU
// has them).
//
// lukechampine.com/blake3's own Hasher hashes every 16 KiB of a large write
// on a goroutine of its own: quick on an idle machine, but on a busy one,
// where ddstore's nodes and clients already keep every core working, the
// goroutines cost more CPU than they save (on this project's 2-core test
// host, 1 MiB hashed on one core: 2.1 GB/s through that Hasher, 2.5 GB/s
// through github.com/zeebo/blake3's AVX2 code, and 3.9 GB/s here). This
// package keeps the tree of BLAKE3 as the reference implementation builds it
// incrementally: full 16-chunk buffers are compressed as their subtrees and
// merged on a stack of at most one subtree per height, and the last buffer
// is kept until Sum, since it is part of the root.
package blake3

import (
	"math/bits"

	"lukechampine.com/blake3/guts"
)

// Size is the length of a hash in bytes.
const Size = 32

// bufSize is the bytes compressed at once: guts.MaxSIMD chunks.
const bufSize = guts.MaxSIMD * guts.ChunkSize

// Hasher is an incremental BLAKE3-256 hash; it implements hash.Hash. The
// zero value is ready to use.
type Hasher struct {
	// stack[i] holds the chaining value of a subtree of 2^i buffers when
	// bit i of count is set.
	stack  [64][8]uint32
	count  uint64 // full buffers compressed so far
	buf    [bufSize]byte
	buflen int
}

// New returns a Hasher.
func New() *Hasher { return new(Hasher) }

// Sum256 returns the BLAKE3-256 hash of b.
func Sum256(b []byte) (out [Size]byte) {
	h := new(Hasher)
	h.Write(b)
	h.sum(&out)
	return out
}

// Write adds p to the hash; it never fails.
func (h *Hasher) Write(p []byte) (int, error) {
	n := len(p)
	if h.buflen > 0 {
		k := copy(h.buf[h.buflen:], p)
		h.buflen += k
		p = p[k:]
		if len(p) == 0 {
			// A full buffer waits: it is the root's if nothing follows.
			return n, nil
		}
		h.push(guts.CompressBuffer(&h.buf, bufSize, &guts.IV, h.count*guts.MaxSIMD, 0))
		h.buflen = 0
	}
	for len(p) > bufSize {
		h.push(guts.CompressBuffer((*[bufSize]byte)(p), bufSize, &guts.IV, h.count*guts.MaxSIMD, 0))
		p = p[bufSize:]
	}
	h.buflen = copy(h.buf[:], p)
	return n, nil
}

// push adds the subtree of the next buffer, merging equal-sized subtrees.
func (h *Hasher) push(n guts.Node) {
	cv := guts.ChainingValue(n)
	i := 0
	for ; h.count&(1<<i) != 0; i++ {
		cv = guts.ChainingValue(guts.ParentNode(h.stack[i], cv, &guts.IV, 0))
	}
	h.stack[i] = cv
	h.count++
}

// sum writes the hash of what was written so far to out.
func (h *Hasher) sum(out *[Size]byte) {
	root := guts.CompressBuffer(&h.buf, h.buflen, &guts.IV, h.count*guts.MaxSIMD, 0)
	for i := bits.TrailingZeros64(h.count); i < bits.Len64(h.count); i++ {
		if h.count&(1<<i) != 0 {
			root = guts.ParentNode(h.stack[i], guts.ChainingValue(root), &guts.IV, 0)
		}
	}
	root.Flags |= guts.FlagRoot
	words := guts.WordsToBytes(guts.CompressNode(root))
	copy(out[:], words[:Size])
}

// Sum appends the hash of what was written so far to b; it does not change
// the Hasher.
func (h *Hasher) Sum(b []byte) []byte {
	var out [Size]byte
	h.sum(&out)
	return append(b, out[:]...)
}

// Reset empties the Hasher.
func (h *Hasher) Reset() { h.count, h.buflen = 0, 0 }

// Size returns Size.
func (h *Hasher) Size() int { return Size }

// BlockSize returns BLAKE3's block size, 64 bytes.
func (h *Hasher) BlockSize() int { return guts.BlockSize }
