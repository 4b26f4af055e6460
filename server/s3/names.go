package s3

import (
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/ddstore/ddstore/catalog"
)

// checkBucketName applies S3's bucket naming rules: 3 to 63 characters of
// lowercase letters, digits, dots and hyphens, starting and ending with a
// letter or digit.
func checkBucketName(b string) *Error {
	if len(b) < 3 || len(b) > 63 {
		return errorf("InvalidBucketName", "The specified bucket is not valid: %q must be 3 to 63 characters long", b)
	}
	for i := 0; i < len(b); i++ {
		c := b[i]
		ok := 'a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '.' || c == '-'
		if !ok || (i == 0 || i == len(b)-1) && (c == '.' || c == '-') {
			return errorf("InvalidBucketName", "The specified bucket is not valid: %q", b)
		}
	}
	if strings.Contains(b, "..") {
		return errorf("InvalidBucketName", "The specified bucket is not valid: %q", b)
	}
	return nil
}

// checkKey refuses a key that is not a ddstore name under the bucket, or
// that names the gateway's own hidden files.
func checkKey(bucket, key string) *Error {
	if key == BucketMarker || strings.HasPrefix(key, MultipartDir) {
		return errorf("InvalidArgument", "the key %q is reserved by the ddstore gateway", key)
	}
	if len(bucket)+1+len(key) > catalog.MaxNameLen {
		return errorf("KeyTooLongError", "Your key is too long")
	}
	if err := catalog.ValidateName(bucket + "/" + key); err != nil {
		return errorf("InvalidArgument", "the key %q cannot be a ddstore name (no empty, '.' or '..' path segments, no control characters): %v", key, err)
	}
	return nil
}

// hidden reports whether a key (under its bucket) is one of the gateway's
// own files.
func hidden(key string) bool {
	return key == BucketMarker || strings.HasPrefix(key, MultipartDir)
}

// byteRange is a resolved Range: [Start, Start+Length).
type byteRange struct {
	Start, Length int64
}

// errNoRange: the Range header is absent or not one S3 honours (it is
// then ignored and the whole object served, as S3 does).
var errNoRange = errors.New("no usable range")

// rangeError is an unsatisfiable range of an object of Size bytes.
type rangeError struct{ Size int64 }

func (e *rangeError) Error() string {
	return fmt.Sprintf("the requested range is not satisfiable (object of %d bytes)", e.Size)
}

// parseRange resolves a Range header ("bytes=a-b", "bytes=a-", "bytes=-n")
// against an object of size bytes. Several ranges, or a header that is not
// a byte range, give errNoRange; a range starting past the end gives a
// *rangeError (InvalidRange, 416).
func parseRange(h string, size int64) (byteRange, error) {
	spec, ok := strings.CutPrefix(strings.TrimSpace(h), "bytes=")
	if !ok || strings.Contains(spec, ",") {
		return byteRange{}, errNoRange
	}
	first, last, ok := strings.Cut(strings.TrimSpace(spec), "-")
	if !ok {
		return byteRange{}, errNoRange
	}
	if first == "" {
		n, err := strconv.ParseInt(last, 10, 64)
		if err != nil || n < 0 {
			return byteRange{}, errNoRange
		}
		if n == 0 || size == 0 {
			return byteRange{}, &rangeError{Size: size}
		}
		n = min(n, size)
		return byteRange{Start: size - n, Length: n}, nil
	}
	start, err := strconv.ParseInt(first, 10, 64)
	if err != nil || start < 0 {
		return byteRange{}, errNoRange
	}
	end := size - 1
	if last != "" {
		e, err := strconv.ParseInt(last, 10, 64)
		if err != nil || e < start {
			return byteRange{}, errNoRange
		}
		end = min(e, size-1)
	}
	if start >= size {
		return byteRange{}, &rangeError{Size: size}
	}
	return byteRange{Start: start, Length: end - start + 1}, nil
}

// invalidRangeSize finds a rangeError's object size.
func invalidRangeSize(err error) (int64, bool) {
	var re *rangeError
	if errors.As(err, &re) {
		return re.Size, true
	}
	return 0, false
}
