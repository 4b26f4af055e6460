package s3

import (
	"context"
	"crypto/md5"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/ddstore/ddstore/client"
	pb "github.com/ddstore/ddstore/proto/ddstore/v1"
	"google.golang.org/protobuf/proto"
)

// etagOf is an object's ETag (unquoted): the MD5 stored when it was
// uploaded through the gateway (md5-of-md5s-N for a multipart upload); for
// a file put through ddstore's own API, which has none, a tag made of its
// BLAKE3.
func etagOf(m *pb.FileManifest) string {
	if e := m.GetMetadata()[metaETag]; e != "" {
		return e
	}
	if b := m.GetBlake3(); len(b) >= 16 {
		return hex.EncodeToString(b[:16])
	}
	return ""
}

// storedHeaderNames are the object headers kept with the object and
// returned by GET and HEAD, besides Content-Type and x-amz-meta-*.
func storedHeaderNames() []string {
	return []string{"Cache-Control", "Content-Disposition", "Content-Encoding", "Content-Language", "Expires"}
}

// objectMetadata is what an upload's headers say to keep with the object.
func objectMetadata(h http.Header) map[string]string {
	meta := map[string]string{}
	if ct := h.Get("Content-Type"); ct != "" {
		meta[metaContentType] = ct
	}
	for _, name := range storedHeaderNames() {
		v := h.Get(name)
		if name == "Content-Encoding" {
			// aws-chunked is how the body travelled, not what it is.
			var kept []string
			for _, e := range strings.Split(v, ",") {
				if e = strings.TrimSpace(e); e != "" && e != "aws-chunked" {
					kept = append(kept, e)
				}
			}
			v = strings.Join(kept, ",")
		}
		if v != "" {
			meta[strings.ToLower(name)] = v
		}
	}
	for name, vals := range h {
		if lower := strings.ToLower(name); strings.HasPrefix(lower, userMetaPrefix) && len(vals) > 0 {
			meta[lower] = strings.Join(vals, ",")
		}
	}
	return meta
}

// setObjectHeaders sets the headers of a GET or HEAD answer.
func setObjectHeaders(h http.Header, m *pb.FileManifest) {
	meta := m.GetMetadata()
	ct := meta[metaContentType]
	if ct == "" {
		ct = "binary/octet-stream"
	}
	h.Set("Content-Type", ct)
	h.Set("ETag", `"`+etagOf(m)+`"`)
	h.Set("Last-Modified", time.Unix(0, m.GetCreatedUnixNano()).UTC().Format(http.TimeFormat))
	h.Set("Accept-Ranges", "bytes")
	for _, name := range storedHeaderNames() {
		if v := meta[strings.ToLower(name)]; v != "" {
			h.Set(name, v)
		}
	}
	for k, v := range meta {
		if strings.HasPrefix(k, userMetaPrefix) {
			h[http.CanonicalHeaderKey(k)] = []string{v}
		}
	}
}

// decodeMD5 reads a Content-MD5 header.
func decodeMD5(v string) ([]byte, error) {
	b, err := base64.StdEncoding.DecodeString(strings.TrimSpace(v))
	if err != nil || len(b) != md5.Size {
		return nil, errorf("InvalidDigest", "The Content-MD5 you specified is not valid.")
	}
	return b, nil
}

// upload streams a request's body into the file name through the client's
// chunker, computing its MD5 on the way; the commit carries the MD5 as the
// ETag and happens only if the body matched what the client said of it
// (length, Content-MD5, payload hash, chunk signatures).
func (g *Gateway) upload(ctx context.Context, req *request, name string, meta map[string]string) (string, *client.PutResult, error) {
	body, length, err := req.body()
	if err != nil {
		return "", nil, err
	}
	if length < 0 && req.r.ContentLength < 0 && req.sig != nil && !strings.HasPrefix(req.sig.PayloadHash, "STREAMING-") {
		return "", nil, errorf("MissingContentLength", "You must provide the Content-Length HTTP header.")
	}
	var wantMD5 []byte
	if v := req.r.Header.Get("Content-MD5"); v != "" {
		if wantMD5, err = decodeMD5(v); err != nil {
			return "", nil, err
		}
	}
	select {
	case g.uploads <- struct{}{}:
	case <-ctx.Done():
		return "", nil, ctx.Err()
	}
	defer func() { <-g.uploads }()
	d := newDigestReader(body, length, wantMD5, "")
	res, err := req.c.Put(ctx, name, d, client.PutOptions{
		Overwrite: true,
		Metadata:  meta,
		BeforeCommit: func(m *pb.FileManifest) error {
			if err := d.check(); err != nil {
				return err
			}
			m.Metadata[metaETag] = d.etag()
			return nil
		},
	})
	if err != nil {
		return "", res, err
	}
	return d.etag(), res, nil
}

func (g *Gateway) putObject(ctx context.Context, req *request) error {
	if err := requireBucket(ctx, req.c, req.bucket); err != nil {
		return err
	}
	etag, _, err := g.upload(ctx, req, req.bucket+"/"+req.key, objectMetadata(req.r.Header))
	if err != nil {
		return clusterError(err, "NoSuchKey")
	}
	req.w.Header().Set("ETag", `"`+etag+`"`)
	req.w.WriteHeader(http.StatusOK)
	return nil
}

// statObject reads an object's manifest: NoSuchKey, or NoSuchBucket when
// the bucket is missing too.
func statObject(ctx context.Context, c *client.Client, bucket, key string) (*pb.FileManifest, error) {
	m, err := c.Stat(ctx, bucket+"/"+key, pb.Consistency_CONSISTENCY_LINEARIZABLE)
	if err == nil {
		return m, nil
	}
	if !isNotFound(err) {
		return nil, clusterError(err, "NoSuchKey")
	}
	if berr := requireBucket(ctx, c, bucket); berr != nil {
		return nil, berr
	}
	return nil, errorf("NoSuchKey", "The specified key does not exist.")
}

// checkConditions applies If-Match, If-None-Match, If-Modified-Since and
// If-Unmodified-Since; it returns 304 or 412 when they say not to serve.
func checkConditions(r *http.Request, m *pb.FileManifest) (int, bool) {
	etag := `"` + etagOf(m) + `"`
	mod := time.Unix(0, m.GetCreatedUnixNano()).Truncate(time.Second)
	matches := func(list string) bool {
		for _, e := range strings.Split(list, ",") {
			e = strings.TrimSpace(e)
			if e == "*" || e == etag || `"`+e+`"` == etag {
				return true
			}
		}
		return false
	}
	if v := r.Header.Get("If-Match"); v != "" && !matches(v) {
		return http.StatusPreconditionFailed, false
	}
	if v := r.Header.Get("If-Unmodified-Since"); v != "" && r.Header.Get("If-Match") == "" {
		if t, err := http.ParseTime(v); err == nil && mod.After(t) {
			return http.StatusPreconditionFailed, false
		}
	}
	if v := r.Header.Get("If-None-Match"); v != "" && matches(v) {
		return http.StatusNotModified, false
	}
	if v := r.Header.Get("If-Modified-Since"); v != "" && r.Header.Get("If-None-Match") == "" {
		if t, err := http.ParseTime(v); err == nil && !mod.After(t) {
			return http.StatusNotModified, false
		}
	}
	return 0, true
}

// getObject serves GET and HEAD. A ranged GET starts the download at the
// chunk holding the range's first byte.
func (g *Gateway) getObject(ctx context.Context, req *request, head bool) error {
	m, err := statObject(ctx, req.c, req.bucket, req.key)
	if err != nil {
		return err
	}
	if code, ok := checkConditions(req.r, m); !ok {
		if code == http.StatusPreconditionFailed {
			return errorf("PreconditionFailed", "At least one of the pre-conditions you specified did not hold")
		}
		req.w.Header().Set("ETag", `"`+etagOf(m)+`"`)
		req.w.WriteHeader(code)
		return nil
	}
	size := int64(m.GetSize())
	rng := byteRange{Start: 0, Length: size}
	ranged := false
	if h := req.r.Header.Get("Range"); h != "" {
		r, err := parseRange(h, size)
		var re *rangeError
		switch {
		case errors.As(err, &re):
			return &Error{Code: "InvalidRange", Status: http.StatusRequestedRangeNotSatisfiable, Message: "The requested range is not satisfiable", err: err}
		case err == nil:
			rng, ranged = r, true
		}
	}
	h := req.w.Header()
	setObjectHeaders(h, m)
	q := req.r.URL.Query()
	for param, header := range map[string]string{"response-content-type": "Content-Type", "response-content-disposition": "Content-Disposition",
		"response-cache-control": "Cache-Control", "response-content-encoding": "Content-Encoding",
		"response-content-language": "Content-Language", "response-expires": "Expires"} {
		if v := q.Get(param); v != "" {
			h.Set(header, v)
		}
	}
	h.Set("Content-Length", strconv.FormatInt(rng.Length, 10))
	status := http.StatusOK
	if ranged {
		h.Set("Content-Range", fmt.Sprintf("bytes %d-%d/%d", rng.Start, rng.Start+rng.Length-1, size))
		status = http.StatusPartialContent
	}
	req.w.WriteHeader(status)
	if head || rng.Length == 0 {
		return nil
	}
	if _, err := req.c.GetRange(ctx, m, rng.Start, rng.Length, req.w, client.GetOptions{}); err != nil {
		// The status is sent: cutting the connection is how the client
		// learns that the body is short.
		g.log.Warn("s3 download failed after the answer began", "bucket", req.bucket, "key", req.key, "request_id", req.id, "err", err)
		panic(http.ErrAbortHandler)
	}
	return nil
}

func (g *Gateway) deleteObject(ctx context.Context, req *request) error {
	err := req.c.Delete(ctx, req.bucket+"/"+req.key)
	if err != nil && !isNotFound(err) {
		return clusterError(err, "NoSuchKey")
	}
	if err != nil {
		if berr := requireBucket(ctx, req.c, req.bucket); berr != nil {
			return berr
		}
	}
	req.w.WriteHeader(http.StatusNoContent)
	return nil
}

func (g *Gateway) deleteObjects(ctx context.Context, req *request) error {
	var dr deleteRequest
	if err := req.readXML(&dr); err != nil {
		return err
	}
	if len(dr.Objects) == 0 || len(dr.Objects) > 1000 {
		return errorf("MalformedXML", "The XML you provided was not well-formed or did not validate against our published schema.")
	}
	if err := requireBucket(ctx, req.c, req.bucket); err != nil {
		return err
	}
	res := deleteResult{Xmlns: s3NS}
	for _, o := range dr.Objects {
		if err := checkKey(req.bucket, o.Key); err != nil {
			res.Errors = append(res.Errors, deleteError{Key: o.Key, Code: err.Code, Message: err.Message})
			continue
		}
		err := req.c.Delete(ctx, req.bucket+"/"+o.Key)
		if err != nil && !isNotFound(err) {
			e := clusterError(err, "NoSuchKey")
			res.Errors = append(res.Errors, deleteError{Key: o.Key, Code: e.Code, Message: e.Message})
			continue
		}
		if !dr.Quiet {
			res.Deleted = append(res.Deleted, deletedObject{Key: o.Key})
		}
	}
	return req.writeXML(http.StatusOK, res)
}

// copySource reads x-amz-copy-source: "bucket/key" or "/bucket/key",
// URL-encoded, maybe with ?versionId.
func copySource(v string) (bucket, key string, err error) {
	v, _, _ = strings.Cut(v, "?")
	dec, uerr := url.PathUnescape(v)
	if uerr != nil {
		return "", "", errorf("InvalidArgument", "Copy Source must mention the source bucket and key: sourcebucket/sourcekey")
	}
	bucket, key = splitPath("/" + strings.TrimPrefix(dec, "/"))
	if bucket == "" || key == "" {
		return "", "", errorf("InvalidArgument", "Copy Source must mention the source bucket and key: sourcebucket/sourcekey")
	}
	return bucket, key, nil
}

// copyObject copies by manifest: the source's chunk list is committed under
// the new name, so no chunk bytes move.
func (g *Gateway) copyObject(ctx context.Context, req *request) error {
	sb, sk, err := copySource(req.r.Header.Get("X-Amz-Copy-Source"))
	if err != nil {
		return err
	}
	if e := checkBucketName(sb); e != nil {
		return e
	}
	if e := checkKey(sb, sk); e != nil {
		return e
	}
	if err := requireBucket(ctx, req.c, req.bucket); err != nil {
		return err
	}
	src, err := statObject(ctx, req.c, sb, sk)
	if err != nil {
		return err
	}
	if code, ok := copyConditions(req.r, src); !ok {
		return errorf("PreconditionFailed", "At least one of the pre-conditions you specified did not hold (%d)", code)
	}
	replace := strings.EqualFold(req.r.Header.Get("X-Amz-Metadata-Directive"), "REPLACE")
	if sb == req.bucket && sk == req.key && !replace {
		return errorf("InvalidRequest", "This copy request is illegal because it is trying to copy an object to itself without changing the object's metadata, storage class, website redirect location or encryption attributes.")
	}
	m := proto.Clone(src).(*pb.FileManifest)
	m.Name, m.CreatedUnixNano, m.Date = req.bucket+"/"+req.key, 0, ""
	if replace {
		meta := objectMetadata(req.r.Header)
		meta[metaETag] = etagOf(src)
		m.Metadata = meta
	}
	out, err := req.c.Commit(ctx, m, client.CommitOptions{Overwrite: true})
	if err != nil {
		return clusterError(err, "NoSuchKey")
	}
	return req.writeXML(http.StatusOK, copyObjectResult{Xmlns: s3NS, LastModified: s3Time(time.Unix(0, out.GetCreatedUnixNano())), ETag: `"` + etagOf(out) + `"`})
}

// copyConditions applies x-amz-copy-source-if-* to the source.
func copyConditions(r *http.Request, src *pb.FileManifest) (int, bool) {
	h := http.Header{}
	for _, c := range []string{"Match", "None-Match", "Modified-Since", "Unmodified-Since"} {
		if v := r.Header.Get("X-Amz-Copy-Source-If-" + c); v != "" {
			h.Set("If-"+c, v)
		}
	}
	if len(h) == 0 {
		return 0, true
	}
	return checkConditions(&http.Request{Header: h}, src)
}
