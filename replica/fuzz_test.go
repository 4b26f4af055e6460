package replica

import (
	"bytes"
	"errors"
	"math"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/ddstore/ddstore/chunker"
	pb "github.com/ddstore/ddstore/proto/ddstore/v1"
)

// hostileChunks are chunk messages FromWire must refuse.
func hostileChunks(codecs *chunker.Codecs) map[string]*pb.Chunk {
	raw := codecs.Encode([]byte("short, so stored raw"))
	z := codecs.Encode(bytes.Repeat([]byte("compressible "), 100))
	with := func(e chunker.Encoded, change func(c *pb.Chunk)) *pb.Chunk {
		c := proto.CloneOf(ToWire(e))
		change(c)
		return c
	}
	return map[string]*pb.Chunk{
		"empty":                {},
		"short ID":             with(raw, func(c *pb.Chunk) { c.Id = c.Id[:31] }),
		"long ID":              with(raw, func(c *pb.Chunk) { c.Id = append(c.Id, 0) }),
		"raw size 0":           with(raw, func(c *pb.Chunk) { c.RawSize = 0 }),
		"raw size over limit":  with(z, func(c *pb.Chunk) { c.RawSize = chunker.MaxRawSize + 1 }),
		"raw size 2^32-1":      with(z, func(c *pb.Chunk) { c.RawSize = math.MaxUint32 }),
		"unknown codec":        with(raw, func(c *pb.Chunk) { c.Codec = 2 }),
		"codec 256 (uint8 0)":  with(raw, func(c *pb.Chunk) { c.Codec = 256 }),
		"codec 257 (uint8 1)":  with(z, func(c *pb.Chunk) { c.Codec = 257 }),
		"negative codec":       with(raw, func(c *pb.Chunk) { c.Codec = -1 }),
		"no data":              with(raw, func(c *pb.Chunk) { c.Data = nil }),
		"raw data short":       with(raw, func(c *pb.Chunk) { c.Data = c.Data[:3] }),
		"raw data long":        with(raw, func(c *pb.Chunk) { c.Data = append(bytes.Clone(c.Data), 0) }),
		"compressed too large": with(z, func(c *pb.Chunk) { c.Data = make([]byte, c.RawSize+1) }),
	}
}

func TestFromWireRefusesHostile(t *testing.T) {
	for name, c := range hostileChunks(chunker.NewCodecs()) {
		if _, err := FromWire(c); !errors.Is(err, ErrBadChunk) {
			t.Errorf("%s: FromWire = %v, want an error wrapping ErrBadChunk", name, err)
		}
	}
	if _, err := FromWire(nil); !errors.Is(err, ErrBadChunk) {
		t.Errorf("FromWire(nil) = %v", err)
	}
}

// FuzzFromWire decodes arbitrary chunk messages: FromWire never panics, a
// refusal wraps ErrBadChunk, an accepted chunk is within the bounds and
// converts back to the same message, and verifying it (which decodes zstd
// data from the wire) never panics and accepts only bytes that match the ID.
func FuzzFromWire(f *testing.F) {
	codecs := chunker.NewCodecs()
	for _, raw := range [][]byte{[]byte("x"), []byte("short, so stored raw"), bytes.Repeat([]byte("compressible "), 100)} {
		b, err := proto.Marshal(ToWire(codecs.Encode(raw)))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	for _, c := range hostileChunks(codecs) {
		b, err := proto.Marshal(c)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte("\x0a\x20not a chunk, just bytes that look like one"))
	f.Fuzz(func(t *testing.T, data []byte) {
		c := &pb.Chunk{}
		if proto.Unmarshal(data, c) != nil {
			return
		}
		e, err := FromWire(c)
		if err != nil {
			if !errors.Is(err, ErrBadChunk) {
				t.Fatalf("FromWire = %v, want an error wrapping ErrBadChunk", err)
			}
			return
		}
		switch {
		case e.RawSize < 1 || e.RawSize > chunker.MaxRawSize:
			t.Fatalf("accepted raw size %d", e.RawSize)
		case e.Codec != chunker.Raw && e.Codec != chunker.Zstd:
			t.Fatalf("accepted codec %d", e.Codec)
		case len(e.Data) < 1 || len(e.Data) > e.RawSize || (e.Codec == chunker.Raw && len(e.Data) != e.RawSize):
			t.Fatalf("accepted %d bytes of codec %d for %d raw bytes", len(e.Data), e.Codec, e.RawSize)
		}
		back := ToWire(e)
		if !bytes.Equal(back.GetId(), c.GetId()) || back.GetRawSize() != c.GetRawSize() || back.GetCodec() != c.GetCodec() || !bytes.Equal(back.GetData(), c.GetData()) {
			t.Fatalf("chunk converts back to %v, came as %v", back, c)
		}
		if err := codecs.Verify(e); err == nil {
			raw, err := codecs.Decode(nil, e)
			if err != nil || len(raw) != e.RawSize || chunker.Sum(raw) != e.ID {
				t.Fatalf("verified chunk decodes to %d bytes (%v)", len(raw), err)
			}
		}
	})
}
