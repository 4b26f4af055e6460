package chunker

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"testing"
)

// weatherRows returns n bytes of CSV observations whose values drift, which
// zstd shrinks to about a fifth.
func weatherRows(n int) []byte {
	var b bytes.Buffer
	t, p := 12.0, 1013.0
	for i := 0; b.Len() < n; i++ {
		t += float64(i%7-3) * 0.1
		p += float64(i%5-2) * 0.05
		fmt.Fprintf(&b, "2026-11-%02dT%02d:%02d:00Z,station-%03d,%.1f,%.1f,%d\n", 1+i/86400%28, i/3600%24, i/60%60, i%97, t, p, i%360)
	}
	return b.Bytes()[:n]
}

func benchData() map[string][]byte {
	return map[string][]byte{"random": randomBytes(9, 64<<20), "text": weatherRows(64 << 20)}
}

func BenchmarkCutter(b *testing.B) {
	data := randomBytes(8, 64<<20)
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		c := NewCutter(bytes.NewReader(data), DefaultOptions())
		for {
			if _, err := c.Next(); err == io.EOF {
				break
			}
		}
	}
}

func BenchmarkSum(b *testing.B) {
	data := randomBytes(8, 1<<20)
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		Sum(data)
	}
}

func BenchmarkEncode(b *testing.B) {
	c := NewCodecs()
	for name, data := range benchData() {
		chunk := data[:1<<20]
		b.Run(name, func(b *testing.B) {
			b.SetBytes(int64(len(chunk)))
			for b.Loop() {
				c.Encode(chunk)
			}
		})
	}
}

func BenchmarkDecode(b *testing.B) {
	c := NewCodecs()
	for name, data := range benchData() {
		e := c.Encode(data[:1<<20])
		b.Run(name, func(b *testing.B) {
			dst := make([]byte, 0, 1<<20)
			b.SetBytes(1 << 20)
			for b.Loop() {
				if _, err := c.Decode(dst, e); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkPipeline is the whole client-side path: cut, BLAKE3 and zstd on
// all cores.
func BenchmarkPipeline(b *testing.B) {
	codecs := NewCodecs()
	for name, data := range benchData() {
		b.Run(name, func(b *testing.B) {
			b.SetBytes(int64(len(data)))
			for b.Loop() {
				p := Pipeline{Codecs: codecs}
				if _, err := p.Run(context.Background(), bytes.NewReader(data), func(Piece) error { return nil }); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
