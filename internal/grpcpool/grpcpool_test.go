package grpcpool

import "testing"

// TestPool: Get returns the length asked for, within a pooled capacity when
// one holds it; a buffer put back is handed out again (not cleared); odd
// capacities are not pooled.
func TestPool(t *testing.T) {
	p := New()
	for _, tc := range []struct{ n, cap int }{{0, 256}, {1, 256}, {256, 256}, {257, 4 << 10}, {16 << 10, 16 << 10}, {20000, 32 << 10}, {1 << 20, 1 << 20}, {1<<20 + 1, 1<<20 + 1}} {
		b := p.Get(tc.n)
		if len(*b) != tc.n || cap(*b) != tc.cap {
			t.Errorf("Get(%d): len %d cap %d, want len %d cap %d", tc.n, len(*b), cap(*b), tc.n, tc.cap)
		}
	}
	// sync.Pool may drop what it holds at any time (a GC); retry a few
	// times to see a buffer come back.
	for range 100 {
		b := p.Get(16 << 10)
		(*b)[0] = 42
		p.Put(b)
		if c := p.Get(10000); cap(*c) == 16<<10 && (*c)[0] == 42 {
			return
		}
	}
	t.Error("a buffer put back never came out again, as it was left")
}

// TestPutOddCapacity: a buffer whose capacity is no tier's is dropped, so
// that Get never hands out less capacity than its tier promises.
func TestPutOddCapacity(t *testing.T) {
	p := New()
	b := make([]byte, 100, 300)
	p.Put(&b)
	for range 10 {
		if c := p.Get(200); cap(*c) != 256 {
			t.Fatalf("Get(200) has capacity %d, want 256", cap(*c))
		}
	}
}
