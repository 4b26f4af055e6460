package replica

import (
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ddstore/ddstore/chunker"
)

func openLocal(t testing.TB, dir string) *Local {
	t.Helper()
	l, err := OpenLocal(dir)
	if err != nil {
		t.Fatalf("OpenLocal: %v", err)
	}
	t.Cleanup(func() { l.Close() })
	return l
}

func TestLocalConformance(t *testing.T) {
	l := openLocal(t, t.TempDir())
	if l.Kind() != "local" {
		t.Errorf("Kind = %q", l.Kind())
	}
	testStore(t, l)
	if err := l.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	testClosed(t, l)
}

func TestLocalLayout(t *testing.T) {
	dir := t.TempDir()
	l := openLocal(t, dir)
	ctx := ctxFor(t)
	c := encode(t, chunker.NewCodecs(), compressible("layout", 50<<10), chunker.Zstd)
	if _, err := l.Put(ctx, c); err != nil {
		t.Fatal(err)
	}
	h := c.ID.String()
	b, err := os.ReadFile(filepath.Join(dir, h[:2], h))
	if err != nil {
		t.Fatalf("chunk file: %v", err)
	}
	if string(b[:4]) != "DDC1" || chunker.Codec(b[4]) != chunker.Zstd ||
		binary.BigEndian.Uint32(b[5:9]) != uint32(c.RawSize) || string(b[9:]) != string(c.Data) {
		t.Errorf("chunk file does not hold magic, codec, raw size and data: % x...", b[:min(len(b), 16)])
	}
	ents, err := os.ReadDir(filepath.Join(dir, "tmp"))
	if err != nil || len(ents) != 0 {
		t.Errorf("tmp holds %d entries (%v), want none", len(ents), err)
	}
}

// TestLocalCorrupt damages chunk files on disk and checks that Get reports
// chunker.ErrCorrupt and moves them to the quarantine.
func TestLocalCorrupt(t *testing.T) {
	codecs := chunker.NewCodecs()
	for _, tc := range []struct {
		name   string
		codec  chunker.Codec
		damage func(t *testing.T, path string)
	}{
		{"FlipRawData", chunker.Raw, flipByte(-1)},
		{"FlipZstdData", chunker.Zstd, flipByte(-1)},
		{"FlipZstdFirstDataByte", chunker.Zstd, flipByte(int64(localHeaderLen))},
		{"FlipMagic", chunker.Raw, flipByte(0)},
		{"FlipCodec", chunker.Raw, flipByte(4)},
		{"FlipRawSize", chunker.Zstd, flipByte(8)},
		{"HugeRawSize", chunker.Raw, func(t *testing.T, p string) {
			writeAt(t, p, 5, []byte{0xff, 0xff, 0xff, 0xff})
		}},
		{"Truncated", chunker.Raw, truncateTo(-100)},
		{"TruncatedZstd", chunker.Zstd, truncateTo(-1)},
		{"HeaderOnly", chunker.Raw, truncateTo(int64(localHeaderLen))},
		{"ShortHeader", chunker.Raw, truncateTo(3)},
		{"Empty", chunker.Raw, truncateTo(0)},
		{"Oversized", chunker.Raw, truncateTo(localMaxFile + 1)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			l := openLocal(t, dir)
			ctx := ctxFor(t)
			var raw []byte
			if tc.codec == chunker.Zstd {
				raw = compressible(tc.name, 64<<10)
			} else {
				raw = randomBytes(t, 64<<10)
			}
			c := encode(t, codecs, raw, tc.codec)
			other := encode(t, codecs, randomBytes(t, 1000), chunker.Raw)
			for _, x := range []chunker.Encoded{c, other} {
				if _, err := l.Put(ctx, x); err != nil {
					t.Fatal(err)
				}
			}
			h := c.ID.String()
			p := filepath.Join(dir, h[:2], h)
			tc.damage(t, p)
			fi, err := os.Stat(p)
			if err != nil {
				t.Fatal(err)
			}
			// Usage counts the bytes of a file as they were when it was
			// stored; it cannot know that a file changed size since.
			resized := fi.Size() != int64(localHeaderLen+len(c.Data))

			_, err = l.Get(ctx, c.ID)
			if !errors.Is(err, chunker.ErrCorrupt) {
				t.Fatalf("Get damaged chunk: err = %v, want chunker.ErrCorrupt", err)
			}
			if ok, err := l.Has(ctx, c.ID); err != nil || ok {
				t.Errorf("Has after quarantine = %v, %v; want false, nil", ok, err)
			}
			if _, err := l.Get(ctx, c.ID); !errors.Is(err, ErrNotFound) {
				t.Errorf("second Get: err = %v, want ErrNotFound", err)
			}
			q, err := os.ReadDir(filepath.Join(dir, "quarantine"))
			if err != nil || len(q) != 1 || !strings.HasPrefix(q[0].Name(), h+".") {
				t.Errorf("quarantine holds %v (%v), want one file named %s.<time>", q, err, h)
			}
			u, err := l.Usage(ctx)
			want := Usage{Chunks: 1, Bytes: uint64(localHeaderLen + len(other.Data))}
			if err != nil || u.Chunks != want.Chunks || (!resized && u.Bytes != want.Bytes) {
				t.Errorf("Usage = %+v, %v; want %+v", u, err, want)
			}
			// The undamaged chunk is still served, and the damaged one can
			// be stored again.
			if _, err := l.Get(ctx, other.ID); err != nil {
				t.Errorf("Get undamaged chunk: %v", err)
			}
			if written, err := l.Put(ctx, c); err != nil || !written {
				t.Errorf("Put after quarantine = %v, %v; want true, nil", written, err)
			}
			if _, err := l.Get(ctx, c.ID); err != nil {
				t.Errorf("Get restored chunk: %v", err)
			}
		})
	}
}

// flipByte returns a damage function inverting the byte at off (negative:
// from the end).
func flipByte(off int64) func(*testing.T, string) {
	return func(t *testing.T, p string) {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		i := off
		if i < 0 {
			i += int64(len(b))
		}
		writeAt(t, p, i, []byte{^b[i]})
	}
}

// truncateTo returns a damage function setting the file's size (negative:
// shortening it by that much).
func truncateTo(size int64) func(*testing.T, string) {
	return func(t *testing.T, p string) {
		if size < 0 {
			fi, err := os.Stat(p)
			if err != nil {
				t.Fatal(err)
			}
			size += fi.Size()
		}
		if err := os.Truncate(p, size); err != nil {
			t.Fatal(err)
		}
	}
}

func writeAt(t *testing.T, p string, off int64, b []byte) {
	t.Helper()
	f, err := os.OpenFile(p, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt(b, off); err != nil {
		t.Fatal(err)
	}
}

func TestLocalLock(t *testing.T) {
	dir := t.TempDir()
	l := openLocal(t, dir)
	l2, err := OpenLocal(dir)
	if !errors.Is(err, ErrLocked) {
		if l2 != nil {
			l2.Close()
		}
		t.Fatalf("second OpenLocal: err = %v, want ErrLocked", err)
	}
	if !strings.Contains(err.Error(), dir) {
		t.Errorf("error %q does not name the directory", err)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	l3, err := OpenLocal(dir)
	if err != nil {
		t.Fatalf("OpenLocal after Close: %v", err)
	}
	l3.Close()
}

func TestLocalReopen(t *testing.T) {
	dir := t.TempDir()
	codecs := chunker.NewCodecs()
	ctx := ctxFor(t)
	l, err := OpenLocal(dir)
	if err != nil {
		t.Fatal(err)
	}
	want := map[chunker.ID]int64{}
	for i := range 20 {
		c := encode(t, codecs, randomBytes(t, 1000*(i+1)), chunker.Raw)
		if _, err := l.Put(ctx, c); err != nil {
			t.Fatal(err)
		}
		want[c.ID] = int64(localHeaderLen + len(c.Data))
	}
	u1, err := l.Usage(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}

	// Litter the directory as a crash and stray files would.
	mustWrite := func(p string) {
		t.Helper()
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte("junk"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	some := chunker.Sum([]byte("x")).String()
	mustWrite(filepath.Join(dir, "tmp", some+".123456"))
	mustWrite(filepath.Join(dir, some[:2], "not-a-chunk"))
	mustWrite(filepath.Join(dir, some[:2], strings.ToUpper(some)))
	mustWrite(filepath.Join(dir, "zz", some))
	wrong := "00"
	if some[:2] == wrong {
		wrong = "01"
	}
	mustWrite(filepath.Join(dir, wrong, some)) // an ID in the wrong fan-out directory

	l2 := openLocal(t, dir)
	u2, err := l2.Usage(ctx)
	if err != nil || u2 != u1 {
		t.Errorf("Usage after reopen = %+v, %v; want %+v", u2, err, u1)
	}
	got := map[chunker.ID]int64{}
	if err := l2.Walk(ctx, func(id chunker.ID, size int64) error { got[id] = size; return nil }); err != nil {
		t.Fatal(err)
	}
	if len(got) != len(want) {
		t.Errorf("Walk after reopen saw %d chunks, want %d", len(got), len(want))
	}
	for id, size := range want {
		if got[id] != size {
			t.Errorf("Walk: %s has size %d, want %d", id, got[id], size)
		}
		if _, err := l2.Get(ctx, id); err != nil {
			t.Errorf("Get after reopen: %v", err)
		}
	}
	if ents, err := os.ReadDir(filepath.Join(dir, "tmp")); err != nil || len(ents) != 0 {
		t.Errorf("tmp holds %d entries after reopen (%v), want none", len(ents), err)
	}
}

func TestLocalPutRejectsBadSize(t *testing.T) {
	l := openLocal(t, t.TempDir())
	ctx := ctxFor(t)
	for _, c := range []chunker.Encoded{
		{RawSize: -1},
		{RawSize: chunker.MaxRawSize + 1},
	} {
		if _, err := l.Put(ctx, c); !errors.Is(err, chunker.ErrBadEncoded) {
			t.Errorf("Put raw size %d: err = %v, want chunker.ErrBadEncoded", c.RawSize, err)
		}
	}
}

func BenchmarkLocalPut(b *testing.B) {
	l := openLocal(b, b.TempDir())
	ctx := ctxFor(b)
	c := chunker.NewCodecs().Encode(randomBytes(b, 1<<20))
	b.SetBytes(int64(len(c.Data)))
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		// Put trusts the caller's ID: give each iteration a new one.
		binary.BigEndian.PutUint64(c.ID[:], uint64(i))
		if written, err := l.Put(ctx, c); err != nil || !written {
			b.Fatalf("Put = %v, %v", written, err)
		}
	}
}

func BenchmarkLocalGet(b *testing.B) {
	l := openLocal(b, b.TempDir())
	ctx := ctxFor(b)
	codecs := chunker.NewCodecs()
	ids := make([]chunker.ID, 16)
	for i := range ids {
		c := codecs.Encode(randomBytes(b, 1<<20))
		if _, err := l.Put(ctx, c); err != nil {
			b.Fatal(err)
		}
		ids[i] = c.ID
	}
	b.SetBytes(1 << 20)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := l.Get(ctx, ids[i%len(ids)]); err != nil {
			b.Fatal(err)
		}
	}
}

// TestLocalRefusesPackDir: a directory converted to the pack store is not
// opened as an empty file-per-chunk store.
func TestLocalRefusesPackDir(t *testing.T) {
	dir := t.TempDir()
	p, err := OpenPack(ctxFor(t), dir, PackOptions{})
	if err != nil {
		t.Fatal(err)
	}
	p.Close()
	if l, err := OpenLocal(dir); err == nil || !strings.Contains(err.Error(), "pack store") {
		if l != nil {
			l.Close()
		}
		t.Fatalf("OpenLocal of a pack directory: %v; want a refusal naming the pack store", err)
	}
}
