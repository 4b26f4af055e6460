// Package grpcpool is the buffer pool that nodes and clients give gRPC
// for the frames they receive and the messages they encode. gRPC's default
// pool clears every buffer it hands out, the whole capacity, although gRPC
// then fills it completely (a received frame is read into it with
// io.ReadFull; an encoded message is written into it from the start and
// cut to what was written). On a download or an upload that is one extra
// pass over every byte on each side. Pool hands buffers out as they were
// left.
package grpcpool

import (
	"sync"

	"google.golang.org/grpc/mem"
)

// sizes are the capacities pooled: gRPC's own tiers (a 16 KiB HTTP/2
// frame, io.Copy's 32 KiB, 1 MiB). Larger buffers are allocated, not
// pooled.
var sizes = [...]int{256, 4 << 10, 16 << 10, 32 << 10, 1 << 20}

// Pool is a mem.BufferPool whose buffers are not cleared.
type Pool struct {
	tiers [len(sizes)]sync.Pool
}

var _ mem.BufferPool = (*Pool)(nil)

// New returns an empty pool.
func New() *Pool { return &Pool{} }

// tier is the index of the smallest size holding n, or -1.
func tier(n int) int {
	for i, s := range sizes {
		if n <= s {
			return i
		}
	}
	return -1
}

// Get returns a buffer of length n, its contents whatever they were.
func (p *Pool) Get(n int) *[]byte {
	i := tier(n)
	if i < 0 {
		b := make([]byte, n)
		return &b
	}
	if b, ok := p.tiers[i].Get().(*[]byte); ok {
		*b = (*b)[:n]
		return b
	}
	b := make([]byte, n, sizes[i])
	return &b
}

// Put takes back a buffer Get returned (or a prefix of it).
func (p *Pool) Put(b *[]byte) {
	if i := tier(cap(*b)); i >= 0 && cap(*b) == sizes[i] {
		p.tiers[i].Put(b)
	}
}
