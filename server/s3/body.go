package s3

import (
	"bufio"
	"bytes"
	"crypto/md5"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"hash"
	"hash/crc32"
	"hash/crc64"
	"io"
	"strconv"
	"strings"
)

// maxChunkLine bounds one aws-chunked header or trailer line.
const maxChunkLine = 4096

// maxSignedChunk bounds one aws-chunked chunk (clients send 64 KiB to a few
// MiB).
const maxSignedChunk = 64 << 20

// chunkedReader decodes an aws-chunked body (what awscli, the SDKs and
// minio-go send with x-amz-content-sha256: STREAMING-...): each chunk is
// "hex-size[;chunk-signature=SIG]\r\n" data "\r\n", the last one of size 0,
// then optional trailing headers (a checksum, and with a signed trailer its
// signature) and an empty line. With a signing key, each chunk's signature
// is checked against the one before it (the seed is the request's); a chunk
// that does not match ends the body with SignatureDoesNotMatch, before the
// upload is committed. A trailing x-amz-checksum-crc32, -crc32c, -crc64nvme,
// -sha1 or -sha256 is checked against the decoded bytes.
type chunkedReader struct {
	br      *bufio.Reader
	signed  bool
	key     []byte // signing key (signed chunks)
	prevSig string
	date    string // X-Amz-Date
	scope   string

	left     int64     // bytes of the current chunk still to read
	chunkSig string    // signature the current chunk claims
	chunkSHA hash.Hash // of the current chunk, when signed
	done     bool
	err      error

	checksums map[string]hash.Hash // x-amz-checksum-<name> of the decoded bytes, when announced
}

// newChunkedReader reads an aws-chunked body. With s non-nil and signed
// chunks, key is the request's signing key and s's signature the seed.
func newChunkedReader(body io.Reader, s *sigRequest, key []byte, signed bool, trailer string) *chunkedReader {
	c := &chunkedReader{br: bufio.NewReaderSize(body, 64<<10), signed: signed, key: key}
	if s != nil {
		c.prevSig, c.date, c.scope = s.Signature, s.Date.UTC().Format(timeFormat), s.Scope
	}
	for _, t := range strings.Split(trailer, ",") {
		name := strings.ToLower(strings.TrimSpace(t))
		if h := checksumHash(name); h != nil {
			if c.checksums == nil {
				c.checksums = map[string]hash.Hash{}
			}
			c.checksums[name] = h
		}
	}
	return c
}

// checksumHash is the hash of a checksum header, or nil for one not known.
func checksumHash(name string) hash.Hash {
	switch name {
	case "x-amz-checksum-crc32":
		return crc32.NewIEEE()
	case "x-amz-checksum-crc32c":
		return crc32.New(crc32.MakeTable(crc32.Castagnoli))
	case "x-amz-checksum-crc64nvme":
		return crc64.New(crc64.MakeTable(0x9a6c9329ac4bc9b5))
	case "x-amz-checksum-sha256":
		return sha256.New()
	}
	return nil
}

func (c *chunkedReader) Read(p []byte) (int, error) {
	if c.err != nil {
		return 0, c.err
	}
	for c.left == 0 {
		if c.done {
			return 0, io.EOF
		}
		if err := c.nextChunk(); err != nil {
			c.err = err
			return 0, err
		}
	}
	if int64(len(p)) > c.left {
		p = p[:c.left]
	}
	n, err := c.br.Read(p)
	c.left -= int64(n)
	if c.chunkSHA != nil {
		c.chunkSHA.Write(p[:n])
	}
	for _, h := range c.checksums {
		h.Write(p[:n])
	}
	if err == io.EOF {
		err = errorf("IncompleteBody", "the aws-chunked body ended inside a chunk")
	}
	if err != nil {
		c.err = err
		return n, err
	}
	if c.left == 0 {
		if err := c.endChunk(); err != nil {
			c.err = err
			return n, err
		}
	}
	return n, nil
}

// line reads one CRLF-terminated line.
func (c *chunkedReader) line() (string, error) {
	var b []byte
	for {
		part, err := c.br.ReadSlice('\n')
		b = append(b, part...)
		if len(b) > maxChunkLine {
			return "", errorf("IncompleteBody", "an aws-chunked line is too long")
		}
		if err == bufio.ErrBufferFull {
			continue
		}
		if err != nil {
			return "", errorf("IncompleteBody", "the aws-chunked body ended early")
		}
		return strings.TrimRight(string(b), "\r\n"), nil
	}
}

// nextChunk reads a chunk's header line.
func (c *chunkedReader) nextChunk() error {
	l, err := c.line()
	if err != nil {
		return err
	}
	sizeHex, ext, _ := strings.Cut(l, ";")
	size, perr := strconv.ParseInt(strings.TrimSpace(sizeHex), 16, 64)
	if perr != nil || size < 0 || size > maxSignedChunk {
		return errorf("IncompleteBody", "bad aws-chunked chunk header %q", l)
	}
	c.chunkSig = ""
	if sig, ok := strings.CutPrefix(strings.TrimSpace(ext), "chunk-signature="); ok {
		c.chunkSig = sig
	}
	if c.signed {
		if c.chunkSig == "" {
			return errorf("SignatureDoesNotMatch", "an aws-chunked chunk has no chunk-signature")
		}
		c.chunkSHA = sha256.New()
	}
	c.left = size
	if size == 0 {
		if err := c.verifyChunk(); err != nil {
			return err
		}
		c.done = true
		return c.trailer()
	}
	return nil
}

// verifyChunk checks the signature of the chunk just read.
func (c *chunkedReader) verifyChunk() error {
	if !c.signed {
		return nil
	}
	sts := "AWS4-HMAC-SHA256-PAYLOAD\n" + c.date + "\n" + c.scope + "\n" + c.prevSig + "\n" + emptySHA256 + "\n" + hex.EncodeToString(c.chunkSHA.Sum(nil))
	want := hex.EncodeToString(hmacSHA256(c.key, sts))
	if want != c.chunkSig {
		return errorf("SignatureDoesNotMatch", "the signature of an aws-chunked chunk does not match")
	}
	c.prevSig = c.chunkSig
	return nil
}

// endChunk checks a data chunk's signature and reads the CRLF after it.
func (c *chunkedReader) endChunk() error {
	if err := c.verifyChunk(); err != nil {
		return err
	}
	var crlf [2]byte
	if _, err := io.ReadFull(c.br, crlf[:]); err != nil || crlf != [2]byte{'\r', '\n'} {
		return errorf("IncompleteBody", "an aws-chunked chunk is not followed by CRLF")
	}
	return nil
}

// trailer reads the trailing headers up to the empty line, checking the
// checksums they carry.
func (c *chunkedReader) trailer() error {
	var trailers []string
	for {
		l, err := c.line()
		if err == nil && l == "" {
			break
		}
		if err != nil {
			if len(trailers) == 0 {
				return nil // a body that simply ends after the last chunk
			}
			return err
		}
		trailers = append(trailers, l)
	}
	for _, t := range trailers {
		name, val, _ := strings.Cut(t, ":")
		name, val = strings.ToLower(strings.TrimSpace(name)), strings.TrimSpace(val)
		if name == "x-amz-trailer-signature" {
			continue // the checksums below are checked themselves
		}
		h := c.checksums[name]
		if h == nil {
			continue // not announced in x-amz-trailer, or not a checksum known here
		}
		if got := base64.StdEncoding.EncodeToString(h.Sum(nil)); got != val {
			return errorf("BadDigest", "the %s you specified did not match the calculated checksum", name)
		}
	}
	return nil
}

// digestReader computes the MD5 (the ETag) of what passes through it and
// counts it; at the end it checks the length announced, the Content-MD5
// and the x-amz-content-sha256 if the client gave them, so that a body that
// does not match is refused before the upload is committed.
type digestReader struct {
	r       io.Reader
	md5     hash.Hash
	sha     hash.Hash // nil: no payload hash to check
	wantSHA string
	wantMD5 []byte
	want    int64 // -1: unknown
	n       int64
	checked bool
	result  error // of the check, once done
}

func newDigestReader(r io.Reader, wantLen int64, contentMD5 []byte, payloadSHA string) *digestReader {
	d := &digestReader{r: r, md5: md5.New(), want: wantLen, wantMD5: contentMD5}
	if len(payloadSHA) == 64 {
		d.sha, d.wantSHA = sha256.New(), payloadSHA
	}
	return d
}

func (d *digestReader) Read(p []byte) (int, error) {
	n, err := d.r.Read(p)
	d.md5.Write(p[:n])
	if d.sha != nil {
		d.sha.Write(p[:n])
	}
	d.n += int64(n)
	if d.want >= 0 && d.n > d.want {
		return n, errorf("IncompleteBody", "the body is longer than announced (%d bytes)", d.want)
	}
	if err == io.EOF {
		if cerr := d.check(); cerr != nil {
			return n, cerr
		}
	}
	return n, err
}

func (d *digestReader) check() error {
	if !d.checked {
		d.checked = true
		d.result = d.compare()
	}
	return d.result
}

func (d *digestReader) compare() error {
	if d.want >= 0 && d.n != d.want {
		return errorf("IncompleteBody", "the body ended after %d of %d bytes", d.n, d.want)
	}
	if d.wantMD5 != nil && !bytes.Equal(d.md5.Sum(nil), d.wantMD5) {
		return errorf("BadDigest", "The Content-MD5 you specified did not match what we received.")
	}
	if d.sha != nil && hex.EncodeToString(d.sha.Sum(nil)) != d.wantSHA {
		return errorf("XAmzContentSHA256Mismatch", "The provided 'x-amz-content-sha256' header does not match what was computed.")
	}
	return nil
}

// etag is the hex MD5 of what was read.
func (d *digestReader) etag() string { return hex.EncodeToString(d.md5.Sum(nil)) }
