package chunker

import (
	"bytes"
	"fmt"
	"slices"
	"testing"
)

// refCut is the byte-at-a-time definition of a cut that scan computes four
// bytes at a time: the chunk at the start of data ends after the first
// byte, from MinSize on, where the gear hash has none of maskS's bits set
// (maskL's from AvgSize on), or at MaxSize.
func refCut(data []byte, o Options, maskS, maskL uint64) int {
	n := len(data)
	if n <= o.MinSize {
		return n
	}
	n = min(n, o.MaxSize)
	var h uint64
	for i := o.MinSize; i < n; i++ {
		h = h<<1 + gear[data[i]]
		mask := maskS
		if i >= o.AvgSize {
			mask = maskL
		}
		if h&mask == 0 {
			return i + 1
		}
	}
	return n
}

// TestCutMatchesReference: the unrolled scan cuts exactly where the
// byte-at-a-time definition does, for random and low-entropy data, chunk
// sizes that are and are not multiples of four, and stream ends anywhere.
// A difference would move chunk boundaries and defeat deduplication against
// data stored before.
func TestCutMatchesReference(t *testing.T) {
	lowEntropy := randomBytes(11, 6<<20)
	for i := range lowEntropy {
		lowEntropy[i] &= 3
	}
	text := []byte{}
	for i := 0; len(text) < 6<<20; i++ {
		text = fmt.Appendf(text, "2026-11-%02d,station-%d,%.1f,%d\n", i%30+1, i%17, float64(i%400)/10, i%1000)
	}
	inputs := map[string][]byte{"random": randomBytes(10, 6<<20), "low entropy": lowEntropy, "text": text, "zeros": make([]byte, 1<<20)}
	opts := []Options{
		DefaultOptions(),
		{MinSize: 64, AvgSize: 256, MaxSize: 1024},
		{MinSize: 65, AvgSize: 203, MaxSize: 1001},
		{MinSize: 4 << 10, AvgSize: 16 << 10, MaxSize: 64 << 10},
		{MinSize: 1001, AvgSize: 3003, MaxSize: 9002},
	}
	for name, data := range inputs {
		for _, o := range opts {
			t.Run(fmt.Sprintf("%s/%d-%d-%d", name, o.MinSize, o.AvgSize, o.MaxSize), func(t *testing.T) {
				c := NewCutter(nil, o)
				var want []int
				for rest := data; len(rest) > 0; {
					n := refCut(rest, o, c.maskS, c.maskL)
					want = append(want, n)
					rest = rest[n:]
				}
				if got := cutAll(t, bytes.NewReader(data), o); !slices.Equal(got, want) {
					t.Fatalf("%d chunks, want %d; first difference at chunk %d", len(got), len(want), firstDiff(got, want))
				}
				// Data that ends anywhere, so that the four-at-a-time loop
				// leaves every possible tail (small options: the rule is the
				// same whatever the sizes).
				if o.MaxSize > 64<<10 {
					return
				}
				for end := o.MinSize; end+4 <= min(len(data), o.MaxSize+9); end += max(1, o.MinSize/7) {
					for k := range 5 {
						if got, want := c.cut(data[:end+k]), refCut(data[:end+k], o, c.maskS, c.maskL); got != want {
							t.Fatalf("cut of %d bytes = %d, want %d", end+k, got, want)
						}
					}
				}
			})
		}
	}
}

func firstDiff(a, b []int) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	return min(len(a), len(b))
}

// TestCutPointsPinned: the chunk sizes of a fixed input under the default
// options, as every ddstore so far has cut it. The gear table and the cut
// rule are fixed forever; this fails if either changes.
func TestCutPointsPinned(t *testing.T) {
	got := cutAll(t, bytes.NewReader(randomBytes(1, 16<<20)), DefaultOptions())
	want := []int{798003, 1303912, 1183062, 1154504, 908217, 1560441, 1232432, 1098068, 1166717, 1626087, 1354652, 1257858, 2039605, 93658}
	if !slices.Equal(got, want) {
		t.Fatalf("chunk sizes %v, want %v", got, want)
	}
}
