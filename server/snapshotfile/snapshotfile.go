// Package snapshotfile reads and writes saved catalog snapshots: the files
// `ddstore snapshot save` writes and `ddstore snapshot restore` reads, and
// the streams of Cluster.SnapshotSave and Cluster.SnapshotRestore that carry
// them.
//
// A file is the magic "DDSNAP1\n", then the encoded SnapshotHeader's length
// (4 bytes, big-endian), the encoded header, the data (header.size bytes:
// the catalog's Raft snapshot, as catalog.FSM persists it) and the
// BLAKE3-256 of everything between the magic and itself. A stream carries
// the same bytes without the magic: a header piece, data pieces, and the
// checksum piece.
package snapshotfile

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/ddstore/ddstore/internal/blake3"
	"google.golang.org/protobuf/proto"

	"github.com/ddstore/ddstore/catalog"
	pb "github.com/ddstore/ddstore/proto/ddstore/v1"
)

// Format is the header's format this package writes and reads.
const Format = 1

// Magic starts a snapshot file.
const Magic = "DDSNAP1\n"

// PieceSize is the most data one stream message carries.
const PieceSize = 1 << 20

// maxHeader bounds an encoded header.
const maxHeader = 64 << 10

// Errors a caller can test with errors.Is. Every error of Receive, Verify
// and Send about the snapshot itself wraps ErrInvalid and one of the
// others.
var (
	// ErrInvalid: the snapshot is not one that can be restored.
	ErrInvalid = errors.New("invalid snapshot")
	// ErrFormat: not a ddstore catalog snapshot, or of a format this
	// version does not know.
	ErrFormat = errors.New("unknown snapshot format")
	// ErrTruncated: the snapshot ends early.
	ErrTruncated = errors.New("snapshot truncated")
	// ErrChecksum: the bytes do not match their checksum.
	ErrChecksum = errors.New("snapshot checksum mismatch")
)

func invalid(kind error, format string, args ...any) error {
	return fmt.Errorf("%w: %w: %s", ErrInvalid, kind, fmt.Sprintf(format, args...))
}

// EncodeHeader encodes h deterministically.
func EncodeHeader(h *pb.SnapshotHeader) ([]byte, error) {
	return proto.MarshalOptions{Deterministic: true}.Marshal(h)
}

// decodeHeader decodes and checks an encoded header.
func decodeHeader(b []byte) (*pb.SnapshotHeader, error) {
	if len(b) > maxHeader {
		return nil, invalid(ErrFormat, "header of %d bytes", len(b))
	}
	h := &pb.SnapshotHeader{}
	if err := proto.Unmarshal(b, h); err != nil {
		return nil, invalid(ErrFormat, "header: %v", err)
	}
	if h.GetFormat() != Format {
		return nil, invalid(ErrFormat, "format %d; this version reads format %d", h.GetFormat(), Format)
	}
	if h.GetSize() > catalog.MaxSnapshotSize+1<<20 {
		return nil, invalid(ErrFormat, "header claims %d bytes of data", h.GetSize())
	}
	return h, nil
}

// Hasher returns a fresh checksum of a snapshot's bytes.
func Hasher() *blake3.Hasher { return blake3.New() }

// headerPrefix is the header's length as it precedes the header.
func headerPrefix(hb []byte) []byte { return binary.BigEndian.AppendUint32(nil, uint32(len(hb))) }

// Recv returns the next piece of a stream; io.EOF when it ends.
type Recv func() (*pb.SnapshotPiece, error)

// Receive reads a snapshot stream from recv and writes it to w as a
// snapshot file (with the magic), checking as it goes: the header first, of
// a known format; then exactly header.size bytes of data; then a checksum
// that matches. It returns the header once the checksum is checked; w has
// then received the whole file. Errors about the stream wrap ErrInvalid;
// errors of recv and w are returned as they are.
func Receive(recv Recv, w io.Writer) (*pb.SnapshotHeader, error) {
	p, err := recv()
	if err == io.EOF {
		return nil, invalid(ErrTruncated, "no header")
	}
	if err != nil {
		return nil, err
	}
	hb := p.GetHeader()
	if hb == nil {
		return nil, invalid(ErrFormat, "the stream does not start with a header")
	}
	h, err := decodeHeader(hb)
	if err != nil {
		return nil, err
	}
	sum := Hasher()
	mw := io.MultiWriter(w, sum)
	if _, err := io.WriteString(w, Magic); err != nil {
		return nil, err
	}
	if _, err := mw.Write(headerPrefix(hb)); err != nil {
		return nil, err
	}
	if _, err := mw.Write(hb); err != nil {
		return nil, err
	}
	var got uint64
	for {
		p, err := recv()
		if err == io.EOF {
			return nil, invalid(ErrTruncated, "%d of %d bytes and no checksum", got, h.GetSize())
		}
		if err != nil {
			return nil, err
		}
		switch part := p.GetPart().(type) {
		case *pb.SnapshotPiece_Data:
			if got+uint64(len(part.Data)) > h.GetSize() {
				return nil, invalid(ErrFormat, "more than the %d bytes of data the header announces", h.GetSize())
			}
			if _, err := mw.Write(part.Data); err != nil {
				return nil, err
			}
			got += uint64(len(part.Data))
		case *pb.SnapshotPiece_Blake3:
			if got != h.GetSize() {
				return nil, invalid(ErrTruncated, "%d of %d bytes", got, h.GetSize())
			}
			if want := sum.Sum(nil); !bytes.Equal(part.Blake3, want) {
				return nil, invalid(ErrChecksum, "the data does not match its BLAKE3")
			}
			if _, err := w.Write(part.Blake3); err != nil {
				return nil, err
			}
			// Anything after the checksum is refused.
			if p, err := recv(); err != io.EOF {
				if err != nil {
					return nil, err
				}
				return nil, invalid(ErrFormat, "a %T piece after the checksum", p.GetPart())
			}
			return h, nil
		default:
			return nil, invalid(ErrFormat, "unexpected piece %T", p.GetPart())
		}
	}
}

// File is a snapshot file checked whole by Verify: its header and where its
// data lies.
type File struct {
	Header      *pb.SnapshotHeader
	HeaderBytes []byte // the encoded header, as the file holds it
	DataOffset  int64  // where the data starts in the file
}

// Verify reads a whole snapshot file from r and checks its magic, header,
// length and checksum, holding one buffer in memory (the data is not kept).
// Errors about the file wrap ErrInvalid.
func Verify(r io.Reader) (*File, error) {
	br := bufio.NewReaderSize(r, 256<<10)
	magic := make([]byte, len(Magic))
	if _, err := io.ReadFull(br, magic); err != nil {
		if err == io.EOF || err == io.ErrUnexpectedEOF {
			return nil, invalid(ErrTruncated, "shorter than the magic")
		}
		return nil, err
	}
	if string(magic) != Magic {
		return nil, invalid(ErrFormat, "not a ddstore catalog snapshot (bad magic %q)", magic)
	}
	prefix := make([]byte, 4)
	if _, err := io.ReadFull(br, prefix); err != nil {
		return nil, eofIsTruncated(err, "in the header")
	}
	n := binary.BigEndian.Uint32(prefix)
	if n > maxHeader {
		return nil, invalid(ErrFormat, "header of %d bytes", n)
	}
	hb := make([]byte, n)
	if _, err := io.ReadFull(br, hb); err != nil {
		return nil, eofIsTruncated(err, "in the header")
	}
	h, err := decodeHeader(hb)
	if err != nil {
		return nil, err
	}
	sum := Hasher()
	sum.Write(prefix)
	sum.Write(hb)
	k, err := io.CopyN(sum, br, int64(h.GetSize()))
	if err != nil {
		return nil, eofIsTruncated(err, fmt.Sprintf("%d of %d bytes of data", k, h.GetSize()))
	}
	want := make([]byte, 32)
	if _, err := io.ReadFull(br, want); err != nil {
		return nil, eofIsTruncated(err, "in the checksum")
	}
	if extra, _ := br.Read(make([]byte, 1)); extra != 0 {
		return nil, invalid(ErrFormat, "bytes after the checksum")
	}
	if !bytes.Equal(sum.Sum(nil), want) {
		return nil, invalid(ErrChecksum, "the file does not match its BLAKE3 (corrupted)")
	}
	return &File{Header: h, HeaderBytes: hb, DataOffset: int64(len(Magic) + 4 + len(hb))}, nil
}

func eofIsTruncated(err error, where string) error {
	if err == io.EOF || err == io.ErrUnexpectedEOF {
		return invalid(ErrTruncated, "the file ends %s", where)
	}
	return err
}

// Send reads the snapshot file f describes from r (an io.ReaderAt over
// the file Verify checked) and sends it as a stream: the header, data
// pieces of at most PieceSize, and the checksum computed from the bytes
// sent, so that a file changed since Verify is refused by the receiver.
func Send(f *File, r io.ReaderAt, send func(*pb.SnapshotPiece) error) error {
	if err := send(&pb.SnapshotPiece{Part: &pb.SnapshotPiece_Header{Header: f.HeaderBytes}}); err != nil {
		return err
	}
	sum := Hasher()
	sum.Write(headerPrefix(f.HeaderBytes))
	sum.Write(f.HeaderBytes)
	data := io.NewSectionReader(r, f.DataOffset, int64(f.Header.GetSize()))
	buf := make([]byte, PieceSize)
	for {
		k, err := io.ReadFull(data, buf)
		if k > 0 {
			sum.Write(buf[:k])
			if err := send(&pb.SnapshotPiece{Part: &pb.SnapshotPiece_Data{Data: buf[:k]}}); err != nil {
				return err
			}
		}
		if err == io.EOF || err == io.ErrUnexpectedEOF {
			break
		}
		if err != nil {
			return err
		}
	}
	return send(&pb.SnapshotPiece{Part: &pb.SnapshotPiece_Blake3{Blake3: sum.Sum(nil)}})
}

// Data returns a reader over the data of the file f describes.
func (f *File) Data(r io.ReaderAt) *io.SectionReader {
	return io.NewSectionReader(r, f.DataOffset, int64(f.Header.GetSize()))
}

// Catalog decodes data (a snapshot's data) as a catalog would restore it,
// checking every manifest and record, and returns the catalog. Errors wrap
// ErrInvalid (and catalog.ErrInvalid).
func Catalog(data io.Reader) (*catalog.FSM, error) {
	f := catalog.NewFSM()
	if err := f.Restore(io.NopCloser(data)); err != nil {
		return nil, fmt.Errorf("%w: %w: the catalog in it: %w", ErrInvalid, ErrFormat, err)
	}
	return f, nil
}

// Totals returns the files in a catalog and the sum of their sizes.
func Totals(f *catalog.FSM) (files, bytes uint64) {
	f.Read(func(s *catalog.State) { files, bytes = s.Totals() })
	return files, bytes
}

// Check opens the snapshot file at path and checks it whole before anything
// is sent anywhere: magic, header, length and checksum (Verify), then the
// catalog in it, decoded as a restore would, against the header's counts.
func Check(path string) (*File, error) {
	fh, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer fh.Close()
	f, err := Verify(fh)
	if err != nil {
		return nil, err
	}
	cat, err := Catalog(f.Data(fh))
	if err != nil {
		return nil, err
	}
	files, bytes := Totals(cat)
	if files != f.Header.GetFiles() || bytes != f.Header.GetBytes() {
		return nil, invalid(ErrFormat, "it holds %d files (%d bytes), its header says %d (%d)", files, bytes, f.Header.GetFiles(), f.Header.GetBytes())
	}
	return f, nil
}
