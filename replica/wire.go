package replica

import (
	"fmt"

	"github.com/ddstore/ddstore/chunker"
	pb "github.com/ddstore/ddstore/proto/ddstore/v1"
)

// ErrBadChunk: a chunk message is malformed (before any hashing).
var ErrBadChunk = fmt.Errorf("replica: malformed chunk")

// FromWire checks the shape of a wire chunk and converts it. It does not
// verify the bytes against the ID; Codecs.Verify does.
func FromWire(c *pb.Chunk) (chunker.Encoded, error) {
	if c == nil {
		return chunker.Encoded{}, fmt.Errorf("%w: no chunk in message", ErrBadChunk)
	}
	id, err := chunker.IDFromBytes(c.GetId())
	if err != nil {
		return chunker.Encoded{}, fmt.Errorf("%w: %w", ErrBadChunk, err)
	}
	e := chunker.Encoded{ID: id, RawSize: int(c.GetRawSize()), Codec: chunker.Codec(c.GetCodec()), Data: c.GetData()}
	switch {
	case e.RawSize == 0 || e.RawSize > chunker.MaxRawSize:
		return e, fmt.Errorf("%w: chunk %s declares %d raw bytes (allowed 1 to %d)", ErrBadChunk, id, e.RawSize, chunker.MaxRawSize)
	case e.Codec != chunker.Raw && e.Codec != chunker.Zstd:
		return e, fmt.Errorf("%w: chunk %s has unknown codec %d", ErrBadChunk, id, c.GetCodec())
	case len(e.Data) == 0:
		return e, fmt.Errorf("%w: chunk %s has no data", ErrBadChunk, id)
	case len(e.Data) > e.RawSize:
		return e, fmt.Errorf("%w: chunk %s stores %d bytes for %d raw bytes (compressed chunks must be smaller)", ErrBadChunk, id, len(e.Data), e.RawSize)
	}
	return e, nil
}

// ToWire converts a chunk to its wire form. The data is shared, not copied.
func ToWire(e chunker.Encoded) *pb.Chunk {
	return &pb.Chunk{Id: e.ID[:], RawSize: uint32(e.RawSize), Codec: pb.Codec(e.Codec), Data: e.Data}
}
