package chunker

import (
	"bytes"
	"context"
	"errors"
	"io"
	"math/rand/v2"
	"testing"
	"testing/iotest"
)

func randomBytes(seed uint64, n int) []byte {
	b := make([]byte, n)
	rng := rand.New(rand.NewPCG(seed, seed^0x5eed))
	for i := 0; i+8 <= n; i += 8 {
		v := rng.Uint64()
		for k := range 8 {
			b[i+k] = byte(v >> (8 * k))
		}
	}
	for i := n &^ 7; i < n; i++ {
		b[i] = byte(rng.Uint32())
	}
	return b
}

// cutAll returns the chunk lengths of data.
func cutAll(t testing.TB, r io.Reader, o Options) []int {
	t.Helper()
	c := NewCutter(r, o)
	var sizes []int
	for {
		b, err := c.Next()
		if err == io.EOF {
			return sizes
		}
		if err != nil {
			t.Fatal(err)
		}
		sizes = append(sizes, len(b))
	}
}

func TestOptionsValidate(t *testing.T) {
	tests := []struct {
		name string
		o    Options
		ok   bool
	}{
		{"default", DefaultOptions(), true},
		{"small", Options{MinSize: 64, AvgSize: 256, MaxSize: 1024}, true},
		{"min too small", Options{MinSize: 10, AvgSize: 256, MaxSize: 1024}, false},
		{"avg not above min", Options{MinSize: 256, AvgSize: 256, MaxSize: 1024}, false},
		{"max not above avg", Options{MinSize: 64, AvgSize: 1024, MaxSize: 1024}, false},
		{"max over limit", Options{MinSize: 64, AvgSize: 1024, MaxSize: MaxRawSize + 1}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.o.Validate()
			if (err == nil) != tt.ok {
				t.Fatalf("Validate() = %v, want ok=%v", err, tt.ok)
			}
			if err != nil && !errors.Is(err, ErrBadOptions) {
				t.Fatalf("error %v is not ErrBadOptions", err)
			}
		})
	}
}

func TestCutterBounds(t *testing.T) {
	o := DefaultOptions()
	data := randomBytes(1, 64<<20)
	sizes := cutAll(t, bytes.NewReader(data), o)
	total := 0
	for i, n := range sizes {
		total += n
		if n > o.MaxSize || (n < o.MinSize && i != len(sizes)-1) {
			t.Fatalf("chunk %d has %d bytes, outside [%d, %d]", i, n, o.MinSize, o.MaxSize)
		}
	}
	if total != len(data) {
		t.Fatalf("chunks cover %d bytes, want %d", total, len(data))
	}
	avg := total / len(sizes)
	if avg < o.AvgSize/2 || avg > 2*o.AvgSize {
		t.Fatalf("average chunk %d bytes, want about %d", avg, o.AvgSize)
	}
	t.Logf("%d chunks, average %d KiB", len(sizes), avg>>10)
}

func TestCutterIndependentOfReads(t *testing.T) {
	o := Options{MinSize: 64, AvgSize: 256, MaxSize: 1024}
	data := randomBytes(2, 200_000)
	want := cutAll(t, bytes.NewReader(data), o)
	readers := map[string]io.Reader{
		"one byte": iotest.OneByteReader(bytes.NewReader(data)),
		"half":     iotest.HalfReader(bytes.NewReader(data)),
		"data+EOF": iotest.DataErrReader(bytes.NewReader(data)),
	}
	for name, r := range readers {
		t.Run(name, func(t *testing.T) {
			got := cutAll(t, r, o)
			if len(got) != len(want) {
				t.Fatalf("%d chunks, want %d", len(got), len(want))
			}
			for i := range got {
				if got[i] != want[i] {
					t.Fatalf("chunk %d: %d bytes, want %d", i, got[i], want[i])
				}
			}
		})
	}
}

func TestCutterEdgeCases(t *testing.T) {
	tests := []struct {
		name string
		n    int
		want int // chunks
	}{
		{"empty", 0, 0},
		{"one byte", 1, 1},
		{"below minimum", 256<<10 - 1, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := len(cutAll(t, bytes.NewReader(randomBytes(3, tt.n)), DefaultOptions())); got != tt.want {
				t.Fatalf("%d chunks, want %d", got, tt.want)
			}
		})
	}
	t.Run("zeros cut at max", func(t *testing.T) {
		for _, n := range cutAll(t, bytes.NewReader(make([]byte, 10<<20)), DefaultOptions())[:2] {
			if n != 4<<20 {
				t.Fatalf("chunk of zeros has %d bytes, want the maximum", n)
			}
		}
	})
	t.Run("read error", func(t *testing.T) {
		boom := errors.New("disk on fire")
		c := NewCutter(iotest.ErrReader(boom), DefaultOptions())
		if _, err := c.Next(); !errors.Is(err, boom) {
			t.Fatalf("Next() = %v, want %v", err, boom)
		}
	})
	t.Run("bad options", func(t *testing.T) {
		c := NewCutter(bytes.NewReader([]byte("x")), Options{MinSize: 1, AvgSize: 2, MaxSize: 3})
		if _, err := c.Next(); !errors.Is(err, ErrBadOptions) {
			t.Fatalf("Next() = %v, want ErrBadOptions", err)
		}
	})
}

// TestOneByteEdit: editing one byte in the middle of a 100 MiB file changes
// at most 3 chunk IDs, and the number of chunks changes by at most one.
func TestOneByteEdit(t *testing.T) {
	data := randomBytes(4, 100<<20)
	ids := func(b []byte) []ID {
		var out []ID
		p := Pipeline{}
		if _, err := p.Run(context.Background(), bytes.NewReader(b), func(c Piece) error {
			out = append(out, c.ID)
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		return out
	}
	before := ids(data)
	for _, edit := range []struct {
		name string
		at   int
	}{{"middle", len(data) / 2}, {"quarter", len(data) / 4}, {"near start", 1000}} {
		t.Run(edit.name, func(t *testing.T) {
			changed := bytes.Clone(data)
			changed[edit.at] ^= 0xff
			after := ids(changed)
			old := make(map[ID]bool, len(before))
			for _, id := range before {
				old[id] = true
			}
			fresh := 0
			for _, id := range after {
				if !old[id] {
					fresh++
				}
			}
			t.Logf("%d chunks before, %d after, %d new IDs", len(before), len(after), fresh)
			if fresh < 1 || fresh > 3 {
				t.Fatalf("%d chunk IDs changed, want 1..3", fresh)
			}
		})
	}
}

func TestPipeline(t *testing.T) {
	data := randomBytes(5, 20<<20)
	copy(data[5<<20:], bytes.Repeat([]byte("temperature,21.5;"), 300_000)) // compressible middle
	codecs := NewCodecs()
	for _, workers := range []int{1, 2, 4} {
		var next int
		var offset int64
		var kept []Piece
		p := Pipeline{Workers: workers, InFlight: 3, Codecs: codecs}
		sum, err := p.Run(context.Background(), iotest.HalfReader(bytes.NewReader(data)), func(c Piece) error {
			if c.Index != next || c.Offset != offset {
				t.Fatalf("piece %d at %d, want %d at %d", c.Index, c.Offset, next, offset)
			}
			next++
			offset += int64(c.RawSize)
			kept = append(kept, c)
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		// emit may keep a Piece's Data: every one is still intact once
		// the pipeline has cut and encoded all the others.
		var out bytes.Buffer
		for _, c := range kept {
			raw, err := codecs.Decode(nil, c.Encoded)
			if err != nil {
				t.Fatalf("piece %d (%s), decoded after the run: %v", c.Index, c.Codec, err)
			}
			out.Write(raw)
		}
		if !bytes.Equal(out.Bytes(), data) {
			t.Fatal("decoded chunks differ from the input")
		}
		if sum.Size != int64(len(data)) || sum.Chunks != next || sum.Hash != Sum(data) {
			t.Fatalf("summary %+v wrong", sum)
		}
	}
}

func TestPipelineErrors(t *testing.T) {
	data := randomBytes(6, 16<<20)
	boom := errors.New("boom")
	t.Run("emit error stops", func(t *testing.T) {
		calls := 0
		_, err := Pipeline{}.Run(context.Background(), bytes.NewReader(data), func(Piece) error {
			calls++
			if calls == 2 {
				return boom
			}
			return nil
		})
		if !errors.Is(err, boom) || calls != 2 {
			t.Fatalf("err %v after %d calls, want boom after 2", err, calls)
		}
	})
	t.Run("read error", func(t *testing.T) {
		r := io.MultiReader(bytes.NewReader(data[:5<<20]), iotest.ErrReader(boom))
		if _, err := (Pipeline{}).Run(context.Background(), r, func(Piece) error { return nil }); !errors.Is(err, boom) {
			t.Fatalf("err %v, want boom", err)
		}
	})
	t.Run("cancelled", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		_, err := Pipeline{}.Run(ctx, bytes.NewReader(data), func(Piece) error { cancel(); return nil })
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("err %v, want context.Canceled", err)
		}
	})
}

func TestCodecs(t *testing.T) {
	c := NewCodecs()
	text := bytes.Repeat([]byte("2026-11-24T10:00:00Z,station-7,12.5,1013.2\n"), 10000)
	random := randomBytes(7, 100000)
	tests := []struct {
		name  string
		raw   []byte
		codec Codec
	}{{"text", text, Zstd}, {"random", random, Raw}, {"empty", nil, Raw}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := c.Encode(tt.raw)
			if e.Codec != tt.codec || e.ID != Sum(tt.raw) || e.RawSize != len(tt.raw) {
				t.Fatalf("Encode: codec %v id ok %v size %d", e.Codec, e.ID == Sum(tt.raw), e.RawSize)
			}
			raw, err := c.Decode(nil, e)
			if err != nil || !bytes.Equal(raw, tt.raw) {
				t.Fatalf("Decode: %v", err)
			}
			if err := c.Verify(e); err != nil {
				t.Fatal(err)
			}
			if len(e.Data) > 0 {
				bad := e
				bad.Data = bytes.Clone(e.Data)
				bad.Data[len(bad.Data)/2] ^= 1
				if err := c.Verify(bad); !errors.Is(err, ErrCorrupt) && !errors.Is(err, ErrBadEncoded) {
					t.Fatalf("Verify(corrupt) = %v", err)
				}
			}
		})
	}
	t.Run("oversized", func(t *testing.T) {
		if _, err := c.Decode(nil, Encoded{RawSize: MaxRawSize + 1, Codec: Zstd}); !errors.Is(err, ErrBadEncoded) {
			t.Fatalf("err %v", err)
		}
	})
	t.Run("wrong id", func(t *testing.T) {
		e := c.Encode(text)
		e.ID[0] ^= 1
		if _, err := c.Decode(nil, e); !errors.Is(err, ErrCorrupt) {
			t.Fatalf("err %v", err)
		}
	})
}

func TestParseID(t *testing.T) {
	id := Sum([]byte("x"))
	got, err := ParseID(id.String())
	if err != nil || got != id {
		t.Fatalf("ParseID round trip: %v", err)
	}
	for _, bad := range []string{"", "zz", id.String()[:63] + "g"} {
		if _, err := ParseID(bad); !errors.Is(err, ErrBadID) {
			t.Fatalf("ParseID(%q) = %v", bad, err)
		}
	}
	if _, err := IDFromBytes(make([]byte, 31)); !errors.Is(err, ErrBadID) {
		t.Fatal("IDFromBytes accepted 31 bytes")
	}
}
