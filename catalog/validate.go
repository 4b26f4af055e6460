package catalog

import (
	"errors"
	"fmt"
	"math"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/ddstore/ddstore/chunker"
	pb "github.com/ddstore/ddstore/proto/ddstore/v1"
)

// Errors a caller can test with errors.Is.
var (
	// ErrNotFound: no file of that name.
	ErrNotFound = errors.New("catalog: not found")
	// ErrExists: a different file of that name exists and overwrite was not asked.
	ErrExists = errors.New("catalog: already exists")
	// ErrInvalid: the command or manifest breaks a rule; the message says which.
	ErrInvalid = errors.New("catalog: invalid")
	// ErrCollecting: a file names a chunk that garbage collection is
	// deleting; uploading the file again stores it anew.
	ErrCollecting = errors.New("catalog: chunk being garbage-collected")
	// ErrCollectedSinceCheck: a garbage collection finished between a
	// commit's check that its chunks are stored and the commit; the
	// proposer checks again.
	ErrCollectedSinceCheck = errors.New("catalog: chunks collected since the commit checked them")
	// ErrChanged: an overwrite expected to replace one version of a file,
	// but another commit changed the file first.
	ErrChanged = errors.New("catalog: file changed by a concurrent commit")
)

// Limits on what a manifest may hold.
const (
	MaxNameLen       = 1024     // bytes
	MaxMetadataBytes = 64 << 10 // keys plus values
	MaxMetadataKeys  = 128
	DateLayout       = "2006-01-02"
)

func invalid(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrInvalid, fmt.Sprintf(format, args...))
}

// ValidateName checks a file name: 1 to 1024 bytes of UTF-8 without control
// characters, '/'-separated segments that are neither empty, "." nor "..",
// and no leading '/'. Names look like relative paths so that `ddstore get`
// can map them onto a file system safely.
func ValidateName(name string) error {
	switch {
	case name == "":
		return invalid("file name is empty")
	case len(name) > MaxNameLen:
		return invalid("file name is %d bytes long; the limit is %d", len(name), MaxNameLen)
	case !utf8.ValidString(name):
		return invalid("file name %q is not valid UTF-8", name)
	case strings.HasPrefix(name, "/"):
		return invalid("file name %q starts with '/'; names are relative", name)
	}
	for _, r := range name {
		if unicode.IsControl(r) {
			return invalid("file name %q holds control character %U", name, r)
		}
	}
	for _, seg := range strings.Split(name, "/") {
		switch seg {
		case "":
			return invalid("file name %q has an empty path segment", name)
		case ".", "..":
			return invalid("file name %q has a %q path segment", name, seg)
		}
	}
	return nil
}

// ValidateDate checks a calendar day written YYYY-MM-DD.
func ValidateDate(d string) error {
	t, err := time.Parse(DateLayout, d)
	if err != nil || t.Format(DateLayout) != d {
		return invalid("date %q is not a calendar day written YYYY-MM-DD", d)
	}
	return nil
}

// ValidateManifest checks that a manifest adds up: a valid name and date,
// a valid time range (both ends or none; see ValidateRange) whose first
// day is the date,
// a 32-byte file hash, chunks that tile the file from offset 0 without gaps,
// each with a 32-byte ID and sizes within the limits, stored_size equal to
// the chunks' stored sizes, and metadata within its limits. It does not look
// at created_unix_nano, which the cluster sets. It never panics, whatever
// the manifest holds (nil chunks included), and every error wraps ErrInvalid.
func ValidateManifest(m *pb.FileManifest) error {
	if m == nil {
		return invalid("no manifest")
	}
	if err := ValidateFile(m.GetName(), m.GetDate(), m.GetMetadata()); err != nil {
		return err
	}
	if err := validateManifestRange(m); err != nil {
		return err
	}
	if len(m.GetBlake3()) != chunker.IDSize {
		return invalid("file %q: whole-file hash is %d bytes, want %d", m.GetName(), len(m.GetBlake3()), chunker.IDSize)
	}
	var offset, stored uint64
	for i, c := range m.GetChunks() {
		switch {
		case len(c.GetId()) != chunker.IDSize:
			return invalid("file %q: chunk %d has a %d-byte ID, want %d", m.GetName(), i, len(c.GetId()), chunker.IDSize)
		case c.GetOffset() != offset:
			return invalid("file %q: chunk %d starts at %d, want %d (chunks must tile the file)", m.GetName(), i, c.GetOffset(), offset)
		case c.GetRawSize() == 0 || c.GetRawSize() > chunker.MaxRawSize:
			return invalid("file %q: chunk %d has raw size %d, want 1..%d", m.GetName(), i, c.GetRawSize(), chunker.MaxRawSize)
		case c.GetStoredSize() == 0 || c.GetStoredSize() > c.GetRawSize():
			return invalid("file %q: chunk %d has stored size %d, want 1..%d (its raw size)", m.GetName(), i, c.GetStoredSize(), c.GetRawSize())
		case offset > math.MaxUint64-uint64(c.GetRawSize()):
			return invalid("file %q: chunk %d ends beyond 2^64 bytes", m.GetName(), i)
		}
		offset += uint64(c.GetRawSize())
		stored += uint64(c.GetStoredSize())
	}
	if offset != m.GetSize() {
		return invalid("file %q: chunks hold %d bytes but the size is %d", m.GetName(), offset, m.GetSize())
	}
	if stored != m.GetStoredSize() {
		return invalid("file %q: chunks store %d bytes but stored_size is %d", m.GetName(), stored, m.GetStoredSize())
	}
	return nil
}

// ValidateFile checks what a manifest says besides its chunks and hashes: the
// name, the date (empty: the day of the commit) and the metadata. An upload
// is checked with it before any chunk travels.
func ValidateFile(name, date string, metadata map[string]string) error {
	if err := ValidateName(name); err != nil {
		return err
	}
	if date != "" {
		if err := ValidateDate(date); err != nil {
			return err
		}
	}
	if len(metadata) > MaxMetadataKeys {
		return invalid("file %q: %d metadata keys; the limit is %d", name, len(metadata), MaxMetadataKeys)
	}
	total := 0
	for k, v := range metadata {
		if k == "" || !utf8.ValidString(k) || !utf8.ValidString(v) {
			return invalid("file %q: metadata keys must be non-empty UTF-8, values UTF-8", name)
		}
		total += len(k) + len(v)
	}
	if total > MaxMetadataBytes {
		return invalid("file %q: metadata is %d bytes; the limit is %d", name, total, MaxMetadataBytes)
	}
	return nil
}
