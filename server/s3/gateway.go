// Package s3 is ddstore's S3-compatible gateway: an http.Handler that
// speaks the S3 REST API (path-style addressing, AWS Signature Version 4)
// and maps it onto a ddstore cluster through the Go client. A bucket is a
// name prefix ("bucket/key" is the ddstore file "bucket/key"); its existence
// is recorded by a marker file "bucket/.s3-bucket". Every request is sent to
// the cluster with the ddstore token bound to the access key that signed
// it, so the cluster grants an S3 key exactly the role and name prefix of
// its token. Objects stream through the client's chunker (bounded memory);
// a copy commits the source's chunk list under the new name; multipart
// parts are hidden files whose chunk lists Complete concatenates.
package s3

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/ddstore/ddstore/client"
	"github.com/prometheus/client_golang/prometheus"
)

// Names the gateway keeps inside a bucket's prefix, hidden from listings.
const (
	// BucketMarker is the file whose existence makes "bucket/" a bucket.
	BucketMarker = ".s3-bucket"
	// MultipartDir holds multipart uploads in progress:
	// "bucket/.s3-multipart/<upload ID>/upload" (the upload's key and
	// metadata) and ".../part.00001" (each part, a file of its own).
	MultipartDir = ".s3-multipart/"
)

// Metadata keys the gateway stores in a file's manifest.
const (
	metaETag        = "s3-etag"
	metaContentType = "content-type"
	metaKey         = "s3-key"       // a multipart upload's object key
	metaInitiated   = "s3-initiated" // a multipart upload's start, RFC 3339
	userMetaPrefix  = "x-amz-meta-"
)

// Config configures a Gateway.
type Config struct {
	// Addrs are the cluster's node API addresses.
	Addrs []string
	// ClientOptions are given to every client of the cluster: TLS with the
	// cluster's CA and the gateway's client certificate, timeouts. An
	// access key's client adds its token.
	ClientOptions []client.Option
	// TLS: ClientOptions speak TLS, so tokens may be sent. Without it the
	// cluster is insecure and keys' tokens are not sent (it enforces
	// nothing).
	TLS bool
	// KeysFile is the keys file (s3 key create); read at start and again
	// when an unknown key signs a request and the file has changed.
	KeysFile string
	// Keys are keys given directly (tests); merged under KeysFile's.
	Keys []Key
	// AnonymousRead names buckets anyone may read (GET, HEAD, list)
	// without signing; served with the gateway's own credentials
	// (ClientOptions), for those buckets only.
	AnonymousRead []string
	// MaxUploads bounds uploads (PutObject, UploadPart) in progress at
	// once, which bounds the gateway's memory; more wait. Default 4.
	MaxUploads int
	// Registry, if set, gets the gateway's request metrics.
	Registry *prometheus.Registry
	Logger   *slog.Logger
	// Now is the clock (tests); default time.Now.
	Now func() time.Time
}

// Gateway serves the S3 API for one cluster.
type Gateway struct {
	cfg     Config
	log     *slog.Logger
	keys    *keyring
	anon    map[string]bool
	uploads chan struct{}
	metrics *metrics

	mu      sync.Mutex
	clients map[string]*client.Client // by access key ID; "" is the gateway's own
}

// New returns a gateway. It connects to the cluster on first use.
func New(cfg Config) (*Gateway, error) {
	if len(cfg.Addrs) == 0 {
		return nil, errors.New("s3 gateway: no cluster address")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.MaxUploads <= 0 {
		cfg.MaxUploads = 4
	}
	keys := map[string]Key{}
	for _, k := range cfg.Keys {
		keys[k.AccessKeyID] = k
	}
	if cfg.KeysFile != "" {
		fromFile, err := LoadKeys(cfg.KeysFile)
		if err != nil {
			return nil, fmt.Errorf("s3 gateway: %w", err)
		}
		for id, k := range fromFile {
			keys[id] = k
		}
	}
	g := &Gateway{
		cfg: cfg, log: cfg.Logger, keys: newKeyring(cfg.KeysFile, keys),
		anon: map[string]bool{}, uploads: make(chan struct{}, cfg.MaxUploads),
		clients: map[string]*client.Client{},
	}
	for _, b := range cfg.AnonymousRead {
		if err := checkBucketName(b); err != nil {
			return nil, fmt.Errorf("s3 gateway: anonymous read: %w", err)
		}
		g.anon[b] = true
	}
	if cfg.Registry != nil {
		m, err := newMetrics(cfg.Registry)
		if err != nil {
			return nil, fmt.Errorf("s3 gateway: %w", err)
		}
		g.metrics = m
	}
	return g, nil
}

// Close closes the gateway's connections to the cluster.
func (g *Gateway) Close() error {
	g.mu.Lock()
	defer g.mu.Unlock()
	var errs []error
	for id, c := range g.clients {
		errs = append(errs, c.Close())
		delete(g.clients, id)
	}
	return errors.Join(errs...)
}

// clientFor returns the cluster client of an access key (cached), or the
// gateway's own for key nil.
func (g *Gateway) clientFor(k *Key) (*client.Client, error) {
	id := ""
	if k != nil {
		id = k.AccessKeyID
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if c, ok := g.clients[id]; ok {
		return c, nil
	}
	opts := append([]client.Option{client.WithLogger(g.log)}, g.cfg.ClientOptions...)
	if k != nil && g.cfg.TLS {
		opts = append(opts, client.WithToken(k.Token))
	}
	c, err := client.New(g.cfg.Addrs, opts...)
	if err != nil {
		return nil, fmt.Errorf("s3 gateway: client: %w", err)
	}
	g.clients[id] = c
	return c, nil
}

// request is one S3 request being served.
type request struct {
	w         *responseWriter
	r         *http.Request
	id        string
	bucket    string
	key       string
	op        string
	sig       *sigRequest // nil: anonymous
	signKey   []byte
	c         *client.Client
	anonymous bool
}

// ServeHTTP serves one S3 request.
func (g *Gateway) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := g.cfg.Now()
	rw := &responseWriter{ResponseWriter: w}
	req := &request{w: rw, r: r, id: newRequestID()}
	rw.Header().Set("x-amz-request-id", req.id)
	rw.Header().Set("Server", "ddstore")
	body := &countingReader{r: r.Body}
	r.Body = body
	req.bucket, req.key = splitPath(r.URL.Path)
	req.op = operation(r, req.bucket, req.key)
	if g.metrics != nil {
		// Deferred: a download that fails after its answer began ends the
		// handler with http.ErrAbortHandler, and is counted too.
		defer func() {
			code := rw.status
			if code == 0 {
				code = http.StatusOK
			}
			g.metrics.observe(req.op, code, time.Since(start), body.n, rw.n)
		}()
	}
	if err := g.serve(r.Context(), req); err != nil {
		g.writeError(req, err)
	}
}

func (g *Gateway) serve(ctx context.Context, req *request) error {
	r := req.r
	if req.op == "" {
		return errorf("NotImplemented", "A header or query you provided requests a function that is not implemented.")
	}
	if err := g.authenticate(req); err != nil {
		return err
	}
	if req.bucket != "" && req.op != "CreateBucket" {
		if err := checkBucketName(req.bucket); err != nil {
			return err
		}
	}
	if req.key != "" {
		if err := checkKey(req.bucket, req.key); err != nil {
			return err
		}
	}
	switch req.op {
	case "ListBuckets":
		return g.listBuckets(ctx, req)
	case "CreateBucket":
		return g.createBucket(ctx, req)
	case "DeleteBucket":
		return g.deleteBucket(ctx, req)
	case "HeadBucket":
		return g.headBucket(ctx, req)
	case "GetBucketLocation":
		return g.bucketLocation(ctx, req)
	case "ListObjectsV2", "ListObjects":
		return g.listObjects(ctx, req)
	case "DeleteObjects":
		return g.deleteObjects(ctx, req)
	case "ListMultipartUploads":
		return g.listUploads(ctx, req)
	case "PutObject":
		return g.putObject(ctx, req)
	case "CopyObject":
		return g.copyObject(ctx, req)
	case "GetObject", "HeadObject":
		return g.getObject(ctx, req, r.Method == http.MethodHead)
	case "DeleteObject":
		return g.deleteObject(ctx, req)
	case "CreateMultipartUpload":
		return g.createUpload(ctx, req)
	case "UploadPart":
		return g.uploadPart(ctx, req)
	case "CompleteMultipartUpload":
		return g.completeUpload(ctx, req)
	case "AbortMultipartUpload":
		return g.abortUpload(ctx, req)
	case "ListParts":
		return g.listParts(ctx, req)
	}
	return errorf("NotImplemented", "%s is not implemented", req.op)
}

// readOnly are the operations anonymous readers of a bucket may call.
func readOnly(op string) bool {
	switch op {
	case "GetObject", "HeadObject", "ListObjects", "ListObjectsV2", "HeadBucket", "GetBucketLocation":
		return true
	}
	return false
}

// authenticate checks the request's signature and picks the cluster
// client it is served with.
func (g *Gateway) authenticate(req *request) error {
	r := req.r
	if !hasAuth(r) {
		if req.bucket != "" && g.anon[req.bucket] && readOnly(req.op) {
			c, err := g.clientFor(nil)
			if err != nil {
				return err
			}
			req.c, req.anonymous = c, true
			return nil
		}
		return errorf("AccessDenied", "Access Denied: sign requests with an access key (ddstore s3 key create)")
	}
	s, serr := parseAuth(r, g.cfg.Now())
	if serr != nil {
		return serr
	}
	k, ok := g.keys.get(s.AccessKey)
	if !ok {
		return errorf("InvalidAccessKeyId", "The AWS Access Key Id you provided does not exist in our records.")
	}
	if err := s.verify(r, k.Secret); err != nil {
		return err
	}
	req.sig, req.signKey = s, signingKey(k.Secret, s.Scope)
	c, err := g.clientFor(&k)
	if err != nil {
		return err
	}
	req.c = c
	return nil
}

// body returns the request's decoded body and its length (-1: unknown),
// checking what the signature says of it as it is read: an aws-chunked
// body's chunk signatures, or a signed payload's SHA-256.
func (req *request) body() (io.Reader, int64, error) {
	r := req.r
	length := r.ContentLength
	if req.sig == nil {
		return r.Body, length, nil
	}
	ph := req.sig.PayloadHash
	switch {
	case strings.HasPrefix(ph, "STREAMING-"):
		signed := ph == streamingBody || ph == streamingBodyTrailer
		if !signed && ph != streamingUnsignedTrailer {
			return nil, 0, errorf("InvalidArgument", "x-amz-content-sha256 %q is not supported", ph)
		}
		length = -1
		if v := r.Header.Get("X-Amz-Decoded-Content-Length"); v != "" {
			if _, err := fmt.Sscan(v, &length); err != nil || length < 0 {
				return nil, 0, errorf("InvalidArgument", "bad x-amz-decoded-content-length %q", v)
			}
		}
		return newChunkedReader(r.Body, req.sig, req.signKey, signed, r.Header.Get("X-Amz-Trailer")), length, nil
	case ph == unsignedBody:
		return r.Body, length, nil
	case len(ph) == 64:
		return &shaCheck{d: newDigestReader(r.Body, -1, nil, ph)}, length, nil
	}
	return nil, 0, errorf("InvalidArgument", "x-amz-content-sha256 %q is not a SHA-256, UNSIGNED-PAYLOAD or STREAMING-...", ph)
}

// shaCheck passes a body through, checking its SHA-256 at the end.
type shaCheck struct{ d *digestReader }

func (s *shaCheck) Read(p []byte) (int, error) { return s.d.Read(p) }

// readXML decodes a small XML request body into v.
func (req *request) readXML(v any) error {
	body, _, err := req.body()
	if err != nil {
		return err
	}
	raw, err := io.ReadAll(io.LimitReader(body, 4<<20))
	if err != nil {
		var se *Error
		if errors.As(err, &se) {
			return se
		}
		return errorf("IncompleteBody", "reading the request body: %v", err)
	}
	if md := req.r.Header.Get("Content-MD5"); md != "" {
		want, derr := decodeMD5(md)
		if derr != nil {
			return derr
		}
		d := newDigestReader(strings.NewReader(string(raw)), -1, want, "")
		if _, err := io.Copy(io.Discard, d); err != nil {
			return err
		}
	}
	if err := xml.Unmarshal(raw, v); err != nil {
		return errorf("MalformedXML", "The XML you provided was not well-formed or did not validate against our published schema.")
	}
	return nil
}

// writeXML answers with an XML document.
func (req *request) writeXML(status int, v any) error {
	out, err := xml.Marshal(v)
	if err != nil {
		return fmt.Errorf("s3 gateway: xml: %w", err)
	}
	req.w.Header().Set("Content-Type", "application/xml")
	req.w.WriteHeader(status)
	io.WriteString(req.w, xml.Header)
	_, err = req.w.Write(out)
	return err
}

func (g *Gateway) writeError(req *request, err error) {
	e := clusterError(err, "NoSuchKey")
	if e.Status >= 500 {
		g.log.Warn("s3 request failed", "op", req.op, "bucket", req.bucket, "key", req.key, "request_id", req.id, "err", err)
	} else {
		g.log.Debug("s3 request refused", "op", req.op, "bucket", req.bucket, "key", req.key, "code", e.Code, "err", err)
	}
	if req.w.status != 0 {
		return // the answer had begun: the connection is all that can be cut
	}
	resource := req.r.URL.Path
	if e.Code == "InvalidRange" {
		if size, ok := invalidRangeSize(err); ok {
			req.w.Header().Set("Content-Range", fmt.Sprintf("bytes */%d", size))
		}
	}
	if req.r.Method == http.MethodHead {
		req.w.WriteHeader(e.Status)
		return
	}
	req.writeXML(e.Status, errorBody{Code: e.Code, Message: e.Message, Resource: resource, RequestID: req.id})
}

// responseWriter records the status and counts the body bytes sent.
type responseWriter struct {
	http.ResponseWriter
	status int
	n      int64
}

func (w *responseWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *responseWriter) Write(p []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	n, err := w.ResponseWriter.Write(p)
	w.n += int64(n)
	return n, err
}

func (w *responseWriter) Flush() {
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

// countingReader counts the request body bytes received.
type countingReader struct {
	r io.ReadCloser
	n int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

func (c *countingReader) Close() error { return c.r.Close() }

func newRequestID() string {
	b := make([]byte, 8)
	rand.Read(b)
	return strings.ToUpper(hex.EncodeToString(b))
}

// splitPath splits a path-style request path into bucket and key.
func splitPath(p string) (bucket, key string) {
	p = strings.TrimPrefix(p, "/")
	bucket, key, _ = strings.Cut(p, "/")
	return bucket, key
}

// operation names the S3 operation of a request ("" if not one served).
func operation(r *http.Request, bucket, key string) string {
	q := r.URL.Query()
	switch {
	case bucket == "":
		if r.Method == http.MethodGet {
			return "ListBuckets"
		}
		return ""
	case key == "":
		switch r.Method {
		case http.MethodGet:
			switch {
			case q.Has("location"):
				return "GetBucketLocation"
			case q.Has("uploads"):
				return "ListMultipartUploads"
			case q.Get("list-type") == "2":
				return "ListObjectsV2"
			case hasSubresource(q):
				return ""
			}
			return "ListObjects"
		case http.MethodPut:
			if hasSubresource(q) {
				return ""
			}
			return "CreateBucket"
		case http.MethodDelete:
			if hasSubresource(q) {
				return ""
			}
			return "DeleteBucket"
		case http.MethodHead:
			return "HeadBucket"
		case http.MethodPost:
			if q.Has("delete") {
				return "DeleteObjects"
			}
		}
		return ""
	}
	switch r.Method {
	case http.MethodGet:
		if q.Has("uploadId") {
			return "ListParts"
		}
		if hasSubresource(q) {
			return ""
		}
		return "GetObject"
	case http.MethodHead:
		return "HeadObject"
	case http.MethodPut:
		switch {
		case q.Has("uploadId") && q.Has("partNumber"):
			if r.Header.Get("X-Amz-Copy-Source") != "" {
				return "" // UploadPartCopy
			}
			return "UploadPart"
		case hasSubresource(q):
			return ""
		case r.Header.Get("X-Amz-Copy-Source") != "":
			return "CopyObject"
		}
		return "PutObject"
	case http.MethodDelete:
		if q.Has("uploadId") {
			return "AbortMultipartUpload"
		}
		if hasSubresource(q) {
			return ""
		}
		return "DeleteObject"
	case http.MethodPost:
		switch {
		case q.Has("uploads"):
			return "CreateMultipartUpload"
		case q.Has("uploadId"):
			return "CompleteMultipartUpload"
		}
	}
	return ""
}

// hasSubresource reports a query naming an S3 sub-resource the gateway does
// not serve (?acl, ?tagging, ?versioning, ...).
func hasSubresource(q map[string][]string) bool {
	for k := range q {
		switch k {
		case "acl", "tagging", "versioning", "policy", "cors", "lifecycle", "website", "logging",
			"notification", "replication", "encryption", "object-lock", "retention", "legal-hold",
			"versions", "torrent", "restore", "select", "accelerate", "requestPayment", "analytics",
			"inventory", "metrics", "ownershipControls", "publicAccessBlock", "intelligent-tiering", "attributes":
			return true
		}
	}
	return false
}
