package replica

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"

	"github.com/ddstore/ddstore/chunker"
)

// Pack file format. A pack is a sequence of records, each a fixed header
// followed by the chunk's encoded bytes (none for a tombstone):
//
//	off len field
//	  0   4 magic "DDP1"
//	  4   1 kind: 1 chunk, 2 tombstone
//	  5   1 codec
//	  6   2 zero
//	  8  32 chunk ID
//	 40   4 raw size (chunk) or 0
//	 44   4 data length
//	 48   4 shadowed pack (tombstone: the pack holding the record it deletes)
//	 52   4 CRC32C of the data
//	 56   4 CRC32C of bytes 0-55
//	 60     data
//
// Integers are big endian. A record is copied between packs byte for byte
// (compaction): nothing in it depends on where it lies.
const (
	packMagic  = "DDP1"
	packHdrLen = 60

	recChunk byte = 1
	recTomb  byte = 2

	// packMaxData bounds a record's data as Local bounds a chunk file.
	packMaxData = chunker.MaxRawSize + localSlack
	// packMaxRecord is the largest record.
	packMaxRecord = packHdrLen + packMaxData
)

// Index file format, one per sealed pack (packs/NNNNNNNNNN.idx), written once
// the pack is durable and never changed:
//
//	magic "DDX1" | pack number (4) | pack size (8) | count (4) |
//	count × (kind (1) | ID (32) | offset (4) | length (4) | shadow (4)) |
//	CRC32C of all the preceding bytes (4)
//
// An index whose checksum, pack number or pack size does not match its pack
// is ignored and the pack is scanned instead.
const (
	idxMagic    = "DDX1"
	idxHdrLen   = 4 + 4 + 8 + 4
	idxEntryLen = 1 + chunker.IDSize + 4 + 4 + 4
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// errBadRecord: bytes that are not a whole, intact record.
var errBadRecord = errors.New("bad pack record")

// packEntry is one record of a pack, as an index file lists it.
type packEntry struct {
	kind   byte
	id     chunker.ID
	off    uint32
	len    uint32 // header + data
	shadow uint32 // tombstones
}

// recordHeader encodes a record header into b (packHdrLen bytes).
func recordHeader(b []byte, kind byte, codec chunker.Codec, id chunker.ID, rawSize int, data []byte, shadow uint32) {
	copy(b[0:4], packMagic)
	b[4] = kind
	b[5] = byte(codec)
	b[6], b[7] = 0, 0
	copy(b[8:40], id[:])
	binary.BigEndian.PutUint32(b[40:], uint32(rawSize))
	binary.BigEndian.PutUint32(b[44:], uint32(len(data)))
	binary.BigEndian.PutUint32(b[48:], shadow)
	binary.BigEndian.PutUint32(b[52:], crc32.Checksum(data, castagnoli))
	binary.BigEndian.PutUint32(b[56:], crc32.Checksum(b[:56], castagnoli))
}

// parsedHeader is a record header that passed its own checksum.
type parsedHeader struct {
	kind    byte
	codec   chunker.Codec
	id      chunker.ID
	rawSize uint32
	dataLen uint32
	shadow  uint32
	dataCRC uint32
}

func (h parsedHeader) recordLen() int64 { return packHdrLen + int64(h.dataLen) }

// parseHeader checks a record header (magic, checksum, bounds).
func parseHeader(b []byte) (parsedHeader, error) {
	var h parsedHeader
	if len(b) < packHdrLen {
		return h, fmt.Errorf("%w: %d-byte header", errBadRecord, len(b))
	}
	if !bytes.Equal(b[:4], []byte(packMagic)) {
		return h, fmt.Errorf("%w: bad magic %q", errBadRecord, b[:4])
	}
	if crc32.Checksum(b[:56], castagnoli) != binary.BigEndian.Uint32(b[56:]) {
		return h, fmt.Errorf("%w: header checksum mismatch", errBadRecord)
	}
	h.kind = b[4]
	h.codec = chunker.Codec(b[5])
	copy(h.id[:], b[8:40])
	h.rawSize = binary.BigEndian.Uint32(b[40:])
	h.dataLen = binary.BigEndian.Uint32(b[44:])
	h.shadow = binary.BigEndian.Uint32(b[48:])
	h.dataCRC = binary.BigEndian.Uint32(b[52:])
	switch {
	case h.kind != recChunk && h.kind != recTomb:
		return h, fmt.Errorf("%w: unknown kind %d", errBadRecord, h.kind)
	case h.kind == recTomb && h.dataLen != 0:
		return h, fmt.Errorf("%w: tombstone with %d data bytes", errBadRecord, h.dataLen)
	case h.dataLen > packMaxData:
		return h, fmt.Errorf("%w: %d data bytes (limit %d)", errBadRecord, h.dataLen, packMaxData)
	case h.rawSize > chunker.MaxRawSize:
		return h, fmt.Errorf("%w: raw size %d (limit %d)", errBadRecord, h.rawSize, chunker.MaxRawSize)
	}
	return h, nil
}

// parseRecord checks a whole record (header and data checksums) and returns
// its header.
func parseRecord(b []byte) (parsedHeader, error) {
	h, err := parseHeader(b)
	if err != nil {
		return h, err
	}
	if int64(len(b)) != h.recordLen() {
		return h, fmt.Errorf("%w: %d bytes, header says %d", errBadRecord, len(b), h.recordLen())
	}
	if crc32.Checksum(b[packHdrLen:], castagnoli) != h.dataCRC {
		return h, fmt.Errorf("%w: data checksum mismatch", errBadRecord)
	}
	return h, nil
}

// scanResult is what scanning a pack found.
type scanResult struct {
	entries []packEntry
	// end is where the last intact record ends: bytes after it are a torn
	// tail (a crash mid-append), to be cut off.
	end int64
	// skipped counts damaged bytes between intact records (left in place,
	// never served).
	skipped int64
}

// scanPack reads every record of a pack file of the given size. A record
// that fails its checksums is skipped if an intact record follows it
// somewhere (damage in the middle); otherwise it and everything after it is
// the torn tail. Only I/O errors are returned.
func scanPack(f *os.File, size int64) (scanResult, error) {
	var res scanResult
	r := &packReader{f: f, size: size}
	off := int64(0)
	for off < size {
		h, err := r.recordAt(off)
		if err == nil {
			res.entries = append(res.entries, packEntry{kind: h.kind, id: h.id, off: uint32(off), len: uint32(h.recordLen()), shadow: h.shadow})
			off += h.recordLen()
			continue
		}
		if !errors.Is(err, errBadRecord) {
			return res, err
		}
		next, err := r.nextRecord(off + 1)
		if err != nil {
			return res, err
		}
		if next < 0 {
			break // torn tail
		}
		res.skipped += next - off
		off = next
	}
	res.end = off
	return res, nil
}

// packReader reads records of a pack file, reusing one buffer.
type packReader struct {
	f    *os.File
	size int64
	buf  []byte
}

// recordAt reads and checks the record at off. A record that is not intact
// (or does not fit in the file) is reported with errBadRecord.
func (r *packReader) recordAt(off int64) (parsedHeader, error) {
	if r.size-off < packHdrLen {
		return parsedHeader{}, fmt.Errorf("%w: %d bytes left for a header", errBadRecord, r.size-off)
	}
	var hb [packHdrLen]byte
	if _, err := r.f.ReadAt(hb[:], off); err != nil {
		return parsedHeader{}, readErr(err)
	}
	h, err := parseHeader(hb[:])
	if err != nil {
		return h, err
	}
	if off+h.recordLen() > r.size {
		return h, fmt.Errorf("%w: record of %d bytes at %d runs past the end (%d)", errBadRecord, h.recordLen(), off, r.size)
	}
	if cap(r.buf) < int(h.recordLen()) {
		r.buf = make([]byte, h.recordLen())
	}
	b := r.buf[:h.recordLen()]
	if _, err := r.f.ReadAt(b, off); err != nil {
		return h, readErr(err)
	}
	return parseRecord(b)
}

// nextRecord returns the offset of the first intact record at or after
// from, or -1 when there is none. It is only used on damaged packs.
func (r *packReader) nextRecord(from int64) (int64, error) {
	const window = 1 << 20
	buf := make([]byte, window+len(packMagic)-1)
	for pos := from; pos < r.size; pos += window {
		n, err := r.f.ReadAt(buf[:min(int64(len(buf)), r.size-pos)], pos)
		if err != nil && !errors.Is(err, io.EOF) {
			return 0, err
		}
		b := buf[:n]
		for i := 0; ; {
			j := bytes.Index(b[i:], []byte(packMagic))
			if j < 0 || i+j >= window {
				break
			}
			cand := pos + int64(i+j)
			if _, err := r.recordAt(cand); err == nil {
				return cand, nil
			} else if !errors.Is(err, errBadRecord) {
				return 0, err
			}
			i += j + 1
		}
	}
	return -1, nil
}

// readErr turns a short read into errBadRecord (the file is shorter than
// its records say); other errors are I/O errors.
func readErr(err error) error {
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return fmt.Errorf("%w: short read: %w", errBadRecord, err)
	}
	return err
}

// encodeIndex returns the index file of a pack.
func encodeIndex(num uint32, size int64, entries []packEntry) []byte {
	b := make([]byte, idxHdrLen, idxHdrLen+len(entries)*idxEntryLen+4)
	copy(b, idxMagic)
	binary.BigEndian.PutUint32(b[4:], num)
	binary.BigEndian.PutUint64(b[8:], uint64(size))
	binary.BigEndian.PutUint32(b[16:], uint32(len(entries)))
	var e [idxEntryLen]byte
	for _, x := range entries {
		e[0] = x.kind
		copy(e[1:33], x.id[:])
		binary.BigEndian.PutUint32(e[33:], x.off)
		binary.BigEndian.PutUint32(e[37:], x.len)
		binary.BigEndian.PutUint32(e[41:], x.shadow)
		b = append(b, e[:]...)
	}
	return binary.BigEndian.AppendUint32(b, crc32.Checksum(b, castagnoli))
}

// decodeIndex parses an index file, checking it belongs to pack num of the
// given size.
func decodeIndex(b []byte, num uint32, size int64) ([]packEntry, error) {
	if len(b) < idxHdrLen+4 || !bytes.Equal(b[:4], []byte(idxMagic)) {
		return nil, errors.New("not a pack index")
	}
	body := b[:len(b)-4]
	if crc32.Checksum(body, castagnoli) != binary.BigEndian.Uint32(b[len(b)-4:]) {
		return nil, errors.New("index checksum mismatch")
	}
	if got := binary.BigEndian.Uint32(body[4:]); got != num {
		return nil, fmt.Errorf("index of pack %d", got)
	}
	if got := int64(binary.BigEndian.Uint64(body[8:])); got != size {
		return nil, fmt.Errorf("index of a %d-byte pack, the pack has %d", got, size)
	}
	n := int(binary.BigEndian.Uint32(body[16:]))
	if len(body) != idxHdrLen+n*idxEntryLen {
		return nil, fmt.Errorf("index declares %d entries in %d bytes", n, len(body))
	}
	entries := make([]packEntry, n)
	for i := range entries {
		e := body[idxHdrLen+i*idxEntryLen:]
		x := packEntry{kind: e[0], off: binary.BigEndian.Uint32(e[33:]), len: binary.BigEndian.Uint32(e[37:]), shadow: binary.BigEndian.Uint32(e[41:])}
		copy(x.id[:], e[1:33])
		if (x.kind != recChunk && x.kind != recTomb) || int64(x.off)+int64(x.len) > size || x.len < packHdrLen || x.len > packMaxRecord {
			return nil, fmt.Errorf("index entry %d is out of bounds", i)
		}
		entries[i] = x
	}
	return entries, nil
}
