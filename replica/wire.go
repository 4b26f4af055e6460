package replica

import (
	"fmt"

	"github.com/ddstore/ddstore/chunker"
	pb "github.com/ddstore/ddstore/proto/ddstore/v1"
)

// ErrBadChunk: a chunk message is malformed (before any hashing).
var ErrBadChunk = fmt.Errorf("replica: malformed chunk")

// FromWire checks the shape of a wire chunk, which may come from another
// node, cluster or client, and converts it: a 32-byte ID, a raw size of 1
// to chunker.MaxRawSize, a known codec, and data that is not empty, exactly
// the raw size for a raw chunk and at most the raw size for a compressed
// one (so never more than chunker.MaxRawSize). It never panics; every error
// wraps ErrBadChunk. It does not verify the bytes against the ID;
// Codecs.Verify does.
func FromWire(c *pb.Chunk) (chunker.Encoded, error) {
	if c == nil {
		return chunker.Encoded{}, fmt.Errorf("%w: no chunk in message", ErrBadChunk)
	}
	id, err := chunker.IDFromBytes(c.GetId())
	if err != nil {
		return chunker.Encoded{}, fmt.Errorf("%w: %w", ErrBadChunk, err)
	}
	// The raw size is checked before it becomes an int, which may be 32 bits.
	if raw := c.GetRawSize(); raw == 0 || raw > chunker.MaxRawSize {
		return chunker.Encoded{}, fmt.Errorf("%w: chunk %s declares %d raw bytes (allowed 1 to %d)", ErrBadChunk, id, raw, chunker.MaxRawSize)
	}
	e := chunker.Encoded{ID: id, RawSize: int(c.GetRawSize()), Codec: chunker.Codec(c.GetCodec()), Data: c.GetData()}
	switch {
	case c.GetCodec() != pb.Codec(chunker.Raw) && c.GetCodec() != pb.Codec(chunker.Zstd):
		return chunker.Encoded{}, fmt.Errorf("%w: chunk %s has unknown codec %d", ErrBadChunk, id, c.GetCodec())
	case len(e.Data) == 0:
		return chunker.Encoded{}, fmt.Errorf("%w: chunk %s has no data", ErrBadChunk, id)
	case e.Codec == chunker.Raw && len(e.Data) != e.RawSize:
		return chunker.Encoded{}, fmt.Errorf("%w: raw chunk %s holds %d bytes, declares %d", ErrBadChunk, id, len(e.Data), e.RawSize)
	case len(e.Data) > e.RawSize:
		return chunker.Encoded{}, fmt.Errorf("%w: chunk %s stores %d bytes for %d raw bytes (compressed chunks must be smaller)", ErrBadChunk, id, len(e.Data), e.RawSize)
	}
	return e, nil
}

// ToWire converts a chunk to its wire form. The data is shared, not copied.
func ToWire(e chunker.Encoded) *pb.Chunk {
	return &pb.Chunk{Id: e.ID[:], RawSize: uint32(e.RawSize), Codec: pb.Codec(e.Codec), Data: e.Data}
}
