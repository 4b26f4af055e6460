package chunker

import (
	"encoding/hex"
	"errors"
	"fmt"
	"runtime"
	"sync"

	"github.com/ddstore/ddstore/internal/blake3"
	"github.com/klauspost/compress/zstd"
)

// IDSize is the length of a chunk ID in bytes.
const IDSize = 32

// ID names a chunk: the BLAKE3-256 hash of its uncompressed bytes.
type ID [IDSize]byte

// Sum returns the ID of raw.
func Sum(raw []byte) ID { return ID(blake3.Sum256(raw)) }

// String returns the ID in lower-case hex.
func (id ID) String() string { return hex.EncodeToString(id[:]) }

// ParseID parses a chunk ID from its hex form.
func ParseID(s string) (ID, error) {
	var id ID
	if len(s) != 2*IDSize {
		return id, fmt.Errorf("%w: %q is %d characters, want %d hex digits", ErrBadID, s, len(s), 2*IDSize)
	}
	if _, err := hex.Decode(id[:], []byte(s)); err != nil {
		return id, fmt.Errorf("%w: %q: %v", ErrBadID, s, err)
	}
	return id, nil
}

// IDFromBytes converts the wire form of an ID (32 bytes) to an ID.
func IDFromBytes(b []byte) (ID, error) {
	var id ID
	if len(b) != IDSize {
		return id, fmt.Errorf("%w: %d bytes, want %d", ErrBadID, len(b), IDSize)
	}
	copy(id[:], b)
	return id, nil
}

// Codec tells how a chunk's stored bytes are encoded. The values match the
// wire enum ddstore.v1.Codec.
type Codec uint8

const (
	// Raw chunks are stored as they are: compression did not shrink them.
	Raw Codec = 0
	// Zstd chunks are stored as one zstd frame.
	Zstd Codec = 1
)

func (c Codec) String() string {
	switch c {
	case Raw:
		return "raw"
	case Zstd:
		return "zstd"
	}
	return fmt.Sprintf("codec(%d)", uint8(c))
}

// MaxRawSize is the largest raw chunk any ddstore component accepts,
// whatever the chunker's settings. It bounds the memory one chunk can take.
const MaxRawSize = 8 << 20

// Errors a caller can test with errors.Is.
var (
	ErrBadID      = errors.New("chunker: malformed chunk ID")
	ErrCorrupt    = errors.New("chunker: chunk bytes do not match their ID")
	ErrBadEncoded = errors.New("chunker: undecodable chunk")
)

// Encoded is a chunk as it is sent and stored: its ID, its raw size and its
// possibly compressed bytes.
type Encoded struct {
	ID      ID
	RawSize int
	Codec   Codec
	Data    []byte
}

// Codecs compresses and decompresses chunks. It is safe for concurrent use;
// the zero value is not usable, call NewCodecs.
type Codecs struct {
	enc *zstd.Encoder
	dec *zstd.Decoder
	buf sync.Pool // *[]byte scratch buffers for decompression
}

// NewCodecs returns zstd codecs tuned for chunk-sized buffers.
func NewCodecs() *Codecs {
	enc, err := zstd.NewWriter(nil,
		zstd.WithEncoderLevel(zstd.SpeedFastest),
		// EncodeAll serializes on this many encoders: one per core.
		zstd.WithEncoderConcurrency(runtime.GOMAXPROCS(0)),
		zstd.WithLowerEncoderMem(true))
	if err != nil {
		panic(fmt.Sprintf("chunker: zstd encoder: %v", err)) // options are constant
	}
	dec, err := zstd.NewReader(nil,
		zstd.WithDecoderConcurrency(0),
		zstd.WithDecodeAllCapLimit(true),
		zstd.WithDecoderMaxMemory(MaxRawSize))
	if err != nil {
		panic(fmt.Sprintf("chunker: zstd decoder: %v", err))
	}
	return &Codecs{enc: enc, dec: dec}
}

// Incompressibility probe: a chunk of at least probeMin bytes is first
// compressed as probeParts evenly spaced pieces of probePart bytes; if that
// sample does not shrink below probeKeep of its size, the chunk is stored raw
// without compressing it whole (zstd spends ~1 s/GB finding out that random
// data does not compress).
const (
	probeMin   = 256 << 10
	probePart  = 16 << 10
	probeParts = 4
	probeKeep  = 0.97
)

// Encode hashes and compresses raw. The result holds a fresh buffer; raw is
// not retained. Data is stored raw when zstd does not shrink it, or when a
// sample of it does not shrink by a few percent.
func (c *Codecs) Encode(raw []byte) Encoded {
	e := Encoded{ID: Sum(raw), RawSize: len(raw)}
	if len(raw) >= probeMin && !c.compressible(raw) {
		e.Codec, e.Data = Raw, append(make([]byte, 0, len(raw)), raw...)
		return e
	}
	// Room for zstd's worst case, so that incompressible data never makes
	// EncodeAll grow the buffer (which would double the memory per chunk).
	dst := c.enc.EncodeAll(raw, make([]byte, 0, len(raw)+len(raw)>>7+512))
	if len(dst) < len(raw) {
		e.Codec, e.Data = Zstd, dst
		return e
	}
	e.Codec, e.Data = Raw, append(dst[:0], raw...)
	return e
}

// compressible compresses a sample of raw (probeParts pieces spread over it)
// and reports whether it shrank below probeKeep of its size.
func (c *Codecs) compressible(raw []byte) bool {
	bp, _ := c.buf.Get().(*[]byte)
	if bp == nil {
		bp = new([]byte)
	}
	defer c.buf.Put(bp)
	const n = probeParts * probePart
	if cap(*bp) < 2*n+n>>7+512 {
		*bp = make([]byte, 0, 2*n+n>>7+512)
	}
	sample := (*bp)[:0]
	step := (len(raw) - probePart) / (probeParts - 1)
	for i := range probeParts {
		sample = append(sample, raw[i*step:i*step+probePart]...)
	}
	out := c.enc.EncodeAll(sample, sample[n:n])
	return float64(len(out)) < probeKeep*n
}

// Decode returns the raw bytes of e and checks them against e.ID. A
// compressed chunk is decoded into dst's storage when it is large enough (dst
// may be nil); a raw chunk's bytes are returned as they are, aliasing e.Data. It returns ErrCorrupt on a mismatch and
// ErrBadEncoded when the bytes cannot be decoded at the declared size.
func (c *Codecs) Decode(dst []byte, e Encoded) ([]byte, error) {
	if e.RawSize < 0 || e.RawSize > MaxRawSize {
		return nil, fmt.Errorf("%w: chunk %s declares %d raw bytes (limit %d)", ErrBadEncoded, e.ID, e.RawSize, MaxRawSize)
	}
	var raw []byte
	switch e.Codec {
	case Raw:
		if len(e.Data) != e.RawSize {
			return nil, fmt.Errorf("%w: chunk %s holds %d bytes, declares %d", ErrBadEncoded, e.ID, len(e.Data), e.RawSize)
		}
		raw = e.Data
	case Zstd:
		if cap(dst) < e.RawSize {
			dst = make([]byte, 0, e.RawSize)
		}
		out, err := c.dec.DecodeAll(e.Data, dst[:0:e.RawSize])
		if err != nil {
			return nil, fmt.Errorf("%w: chunk %s: %v", ErrBadEncoded, e.ID, err)
		}
		if len(out) != e.RawSize {
			return nil, fmt.Errorf("%w: chunk %s decodes to %d bytes, declares %d", ErrBadEncoded, e.ID, len(out), e.RawSize)
		}
		raw = out
	default:
		return nil, fmt.Errorf("%w: chunk %s has unknown codec %d", ErrBadEncoded, e.ID, e.Codec)
	}
	if Sum(raw) != e.ID {
		return nil, fmt.Errorf("%w: chunk %s", ErrCorrupt, e.ID)
	}
	return raw, nil
}

// Verify checks that e decodes to bytes whose hash is e.ID, without keeping
// them. Raw chunks are hashed in place; compressed ones are decoded into a
// pooled buffer.
func (c *Codecs) Verify(e Encoded) error {
	if e.Codec == Raw {
		if len(e.Data) != e.RawSize {
			return fmt.Errorf("%w: chunk %s holds %d bytes, declares %d", ErrBadEncoded, e.ID, len(e.Data), e.RawSize)
		}
		if Sum(e.Data) != e.ID {
			return fmt.Errorf("%w: chunk %s", ErrCorrupt, e.ID)
		}
		return nil
	}
	bp, _ := c.buf.Get().(*[]byte)
	if bp == nil {
		bp = new([]byte)
	}
	out, err := c.Decode(*bp, e)
	if err == nil && cap(out) <= 2*MaxRawSize {
		*bp = out[:0]
	}
	c.buf.Put(bp)
	return err
}
