package s3

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/hex"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/ddstore/ddstore/client"
	pb "github.com/ddstore/ddstore/proto/ddstore/v1"
)

// lastName sorts after every name that starts with a given prefix: a
// listing that starts after prefix+lastName skips them all (names are
// UTF-8; U+10FFFF is the greatest code point).
const lastName = "\U0010FFFF"

// s3Time formats a time as S3's XML does.
func s3Time(t time.Time) string { return t.UTC().Format("2006-01-02T15:04:05.000Z") }

// bucketExists reports whether the bucket's marker file exists, with the
// manifest of the marker.
func bucketExists(ctx context.Context, c *client.Client, bucket string) (*pb.FileManifest, error) {
	m, err := c.Stat(ctx, bucket+"/"+BucketMarker, pb.Consistency_CONSISTENCY_LINEARIZABLE)
	if err != nil {
		if isNotFound(err) {
			return nil, errorf("NoSuchBucket", "The specified bucket does not exist")
		}
		return nil, clusterError(err, "NoSuchBucket")
	}
	return m, nil
}

// requireBucket checks that a bucket exists before an operation on its
// objects: NoSuchBucket if not. A key whose prefix lies inside the bucket
// (weather/2026/ in the bucket weather) may not read the bucket's marker;
// the check is then left out and the operation itself is authorized by the
// cluster, name by name.
func requireBucket(ctx context.Context, c *client.Client, bucket string) error {
	_, err := bucketExists(ctx, c, bucket)
	if isCode(err, "AccessDenied") {
		return nil
	}
	return err
}

// listBuckets finds buckets by walking the names the caller may list one
// top-level prefix at a time (one small listing each, skipping the rest of
// the prefix), and keeps those with a marker.
func (g *Gateway) listBuckets(ctx context.Context, req *request) error {
	res := listAllMyBucketsResult{Xmlns: s3NS, Owner: owner{ID: "ddstore", DisplayName: "ddstore"}}
	after := ""
	for {
		l, err := req.c.List(ctx, client.ListOptions{StartAfter: after, Limit: 1})
		if err != nil {
			return clusterError(err, "NoSuchBucket")
		}
		if len(l.Files) == 0 {
			break
		}
		name := l.Files[0].GetName()
		bucket, _, ok := strings.Cut(name, "/")
		if !ok {
			after = name
			continue
		}
		after = bucket + "/" + lastName
		if checkBucketName(bucket) != nil {
			continue
		}
		m, err := bucketExists(ctx, req.c, bucket)
		if err != nil {
			if isCode(err, "NoSuchBucket") {
				continue
			}
			return err
		}
		res.Buckets = append(res.Buckets, bucketInfo{Name: bucket, CreationDate: s3Time(time.Unix(0, m.GetCreatedUnixNano()))})
		if !l.Truncated {
			break
		}
	}
	return req.writeXML(http.StatusOK, res)
}

func isCode(err error, code string) bool {
	e, ok := err.(*Error)
	return ok && e.Code == code
}

func (g *Gateway) createBucket(ctx context.Context, req *request) error {
	if err := checkBucketName(req.bucket); err != nil {
		return err
	}
	if req.r.ContentLength > 0 {
		var cfg createBucketConfiguration
		if err := req.readXML(&cfg); err != nil {
			return err
		}
	}
	if _, err := bucketExists(ctx, req.c, req.bucket); err == nil {
		return errorf("BucketAlreadyOwnedByYou", "Your previous request to create the named bucket succeeded and you already own it.")
	} else if !isCode(err, "NoSuchBucket") {
		return err
	}
	_, err := req.c.Put(ctx, req.bucket+"/"+BucketMarker, strings.NewReader(""), client.PutOptions{
		Metadata: map[string]string{"s3-bucket": req.bucket},
	})
	if err != nil {
		if strings.Contains(err.Error(), "exists") {
			return errorf("BucketAlreadyOwnedByYou", "Your previous request to create the named bucket succeeded and you already own it.")
		}
		return clusterError(err, "NoSuchBucket")
	}
	req.w.Header().Set("Location", "/"+req.bucket)
	req.w.WriteHeader(http.StatusOK)
	return nil
}

func (g *Gateway) headBucket(ctx context.Context, req *request) error {
	if _, err := bucketExists(ctx, req.c, req.bucket); err != nil {
		return err
	}
	req.w.WriteHeader(http.StatusOK)
	return nil
}

func (g *Gateway) bucketLocation(ctx context.Context, req *request) error {
	if _, err := bucketExists(ctx, req.c, req.bucket); err != nil {
		return err
	}
	return req.writeXML(http.StatusOK, locationConstraint{Xmlns: s3NS})
}

// deleteBucket removes an empty bucket: its marker, and the files of
// multipart uploads never completed.
func (g *Gateway) deleteBucket(ctx context.Context, req *request) error {
	if _, err := bucketExists(ctx, req.c, req.bucket); err != nil {
		return err
	}
	var leftovers []string
	after := ""
	for {
		l, err := req.c.List(ctx, client.ListOptions{Prefix: req.bucket + "/", StartAfter: after, Limit: 1000})
		if err != nil {
			return clusterError(err, "NoSuchBucket")
		}
		for _, f := range l.Files {
			key := strings.TrimPrefix(f.GetName(), req.bucket+"/")
			if !hidden(key) {
				return errorf("BucketNotEmpty", "The bucket you tried to delete is not empty")
			}
			if key != BucketMarker {
				leftovers = append(leftovers, f.GetName())
			}
			after = f.GetName()
		}
		if !l.Truncated {
			break
		}
	}
	for _, name := range append(leftovers, req.bucket+"/"+BucketMarker) {
		if err := req.c.Delete(ctx, name); err != nil && !isNotFound(err) {
			return clusterError(err, "NoSuchBucket")
		}
	}
	req.w.WriteHeader(http.StatusNoContent)
	return nil
}

// listQuery is a ListObjects or ListObjectsV2 request.
type listQuery struct {
	v2         bool
	prefix     string
	delimiter  string
	maxKeys    int
	after      string // key (or common prefix, skipped whole) to list after
	afterIsCP  bool
	token      string // V2 continuation token as given
	startAfter string // V2 start-after
	marker     string // V1 marker
	encodeURL  bool
	fetchOwner bool
}

// maxListKeys is the most keys one listing answers, as in S3.
const maxListKeys = 1000

func parseListQuery(q url.Values, v2 bool) (listQuery, error) {
	lq := listQuery{v2: v2, prefix: q.Get("prefix"), delimiter: q.Get("delimiter"), maxKeys: maxListKeys,
		encodeURL: q.Get("encoding-type") == "url", fetchOwner: q.Get("fetch-owner") == "true"}
	if v := q.Get("max-keys"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 {
			return lq, errorf("InvalidArgument", "max-keys must be a non-negative integer")
		}
		lq.maxKeys = min(n, maxListKeys)
	}
	if v2 {
		lq.startAfter = q.Get("start-after")
		lq.after = lq.startAfter
		if t := q.Get("continuation-token"); t != "" {
			lq.token = t
			raw, err := base64.RawURLEncoding.DecodeString(t)
			if err != nil || len(raw) < 2 || (raw[0] != 'k' && raw[0] != 'c') || raw[1] != ':' {
				return lq, errorf("InvalidArgument", "The continuation token provided is incorrect")
			}
			lq.after, lq.afterIsCP = string(raw[2:]), raw[0] == 'c'
		}
	} else {
		lq.marker = q.Get("marker")
		lq.after = lq.marker
		if lq.delimiter != "" && strings.HasSuffix(lq.marker, lq.delimiter) && strings.HasPrefix(lq.marker, lq.prefix) {
			lq.afterIsCP = true
		}
	}
	return lq, nil
}

// continuationToken encodes where a listing stopped: after a key, or after
// a common prefix (all of whose keys are skipped).
func continuationToken(last string, isCP bool) string {
	kind := "k:"
	if isCP {
		kind = "c:"
	}
	return base64.RawURLEncoding.EncodeToString([]byte(kind + last))
}

// catalogReader is what a listing asks of the cluster (a *client.Client;
// the unit tests give a fake).
type catalogReader interface {
	List(ctx context.Context, opts client.ListOptions) (*client.Listing, error)
	Stat(ctx context.Context, name string, consistency pb.Consistency) (*pb.FileManifest, error)
}

// lister walks a bucket's names in order, page by page, and can skip past
// every name under a prefix without listing them.
type lister struct {
	c      catalogReader
	prefix string // full ddstore prefix
	after  string
	buf    []*pb.FileInfo
	more   bool // the cluster has names after buf
	page   int
}

func newLister(c catalogReader, prefix, after string, page int) *lister {
	return &lister{c: c, prefix: prefix, after: after, more: true, page: page}
}

// next returns the next name, or nil at the end.
func (l *lister) next(ctx context.Context) (*pb.FileInfo, error) {
	if len(l.buf) == 0 && l.more {
		res, err := l.c.List(ctx, client.ListOptions{Prefix: l.prefix, StartAfter: l.after, Limit: l.page})
		if err != nil {
			return nil, err
		}
		l.buf, l.more = res.Files, res.Truncated
	}
	if len(l.buf) == 0 {
		return nil, nil
	}
	f := l.buf[0]
	l.buf = l.buf[1:]
	l.after = f.GetName()
	return f, nil
}

// skip moves past every name up to and including after.
func (l *lister) skip(after string) {
	for len(l.buf) > 0 && l.buf[0].GetName() <= after {
		l.buf = l.buf[1:]
	}
	if after > l.after {
		l.after = after
	}
}

func (g *Gateway) listObjects(ctx context.Context, req *request) error {
	lq, err := parseListQuery(req.r.URL.Query(), req.op == "ListObjectsV2")
	if err != nil {
		return err
	}
	if err := requireBucket(ctx, req.c, req.bucket); err != nil {
		return err
	}
	res, err := listBucket(ctx, req.c, req.bucket, lq)
	if err != nil {
		return err
	}
	return req.writeXML(http.StatusOK, res)
}

// listBucket answers a listing of a bucket.
func listBucket(ctx context.Context, c catalogReader, bucket string, lq listQuery) (*listBucketResult, error) {
	enc := func(s string) string {
		if lq.encodeURL {
			return strings.ReplaceAll(url.QueryEscape(s), "+", "%20")
		}
		return s
	}
	res := &listBucketResult{Xmlns: s3NS, Name: bucket, Prefix: enc(lq.prefix), MaxKeys: lq.maxKeys, Delimiter: enc(lq.delimiter)}
	if lq.encodeURL {
		res.EncodingType = "url"
	}
	if lq.v2 {
		res.ContinuationToken, res.StartAfter = lq.token, enc(lq.startAfter)
	} else {
		m := enc(lq.marker)
		res.Marker = &m
	}
	base := bucket + "/"
	after := ""
	if lq.after != "" {
		after = base + lq.after
		if lq.afterIsCP {
			after += lastName
		}
	}
	if after < base+lq.prefix {
		after = "" // names start at the prefix anyway
	}
	l := newLister(c, base+lq.prefix, after, min(lq.maxKeys+1, maxListKeys))
	count := 0
	var files []*pb.FileInfo
	var last string
	var lastCP bool
	for {
		f, err := l.next(ctx)
		if err != nil {
			return nil, clusterError(err, "NoSuchBucket")
		}
		if f == nil {
			break
		}
		key := strings.TrimPrefix(f.GetName(), base)
		if hidden(key) {
			if key != BucketMarker {
				l.skip(base + MultipartDir + lastName)
			}
			continue
		}
		cp := ""
		if lq.delimiter != "" {
			if i := strings.Index(key[len(lq.prefix):], lq.delimiter); i >= 0 {
				cp = key[:len(lq.prefix)+i+len(lq.delimiter)]
			}
		}
		if count == lq.maxKeys {
			res.IsTruncated = count > 0 || lq.maxKeys == 0
			if lq.maxKeys == 0 {
				res.IsTruncated = false // S3 answers max-keys=0 with nothing, not truncated
			}
			break
		}
		if cp != "" {
			res.CommonPrefixes = append(res.CommonPrefixes, commonPrefix{Prefix: enc(cp)})
			l.skip(base + cp + lastName)
			last, lastCP = cp, true
		} else {
			oi := objectInfo{Key: enc(key), LastModified: s3Time(time.Unix(0, f.GetCreatedUnixNano())),
				Size: int64(f.GetSize()), StorageClass: "STANDARD"}
			if !lq.v2 || lq.fetchOwner {
				oi.Owner = &owner{ID: "ddstore", DisplayName: "ddstore"}
			}
			res.Contents = append(res.Contents, oi)
			files = append(files, f)
			last, lastCP = key, false
		}
		count++
	}
	if err := fillETags(ctx, c, base, res.Contents, files); err != nil {
		return nil, clusterError(err, "NoSuchKey")
	}
	if lq.v2 {
		res.KeyCount = &count
		if res.IsTruncated {
			res.NextContinuationToken = continuationToken(last, lastCP)
		}
	} else if res.IsTruncated {
		res.NextMarker = enc(last)
	}
	return res, nil
}

// fillETags sets the listed objects' ETags: a listing carries no
// metadata, so each object's manifest is read (a stale read of the node
// asked, several at once; a linearizable one if that node's copy is not the
// listed version).
func fillETags(ctx context.Context, c catalogReader, base string, objs []objectInfo, files []*pb.FileInfo) error {
	const parallel = 8
	sem := make(chan struct{}, parallel)
	errs := make(chan error, len(objs))
	for i := range objs {
		sem <- struct{}{}
		go func() {
			defer func() { <-sem }()
			m, err := c.Stat(ctx, files[i].GetName(), pb.Consistency_CONSISTENCY_STALE)
			if err == nil && !bytes.Equal(m.GetBlake3(), files[i].GetBlake3()) {
				m, err = c.Stat(ctx, files[i].GetName(), pb.Consistency_CONSISTENCY_LINEARIZABLE)
			}
			if err != nil {
				if isNotFound(err) { // deleted since: keep a tag of its content
					objs[i].ETag = `"` + hex.EncodeToString(files[i].GetBlake3()[:16]) + `"`
					err = nil
				}
				errs <- err
				return
			}
			objs[i].ETag = `"` + etagOf(m) + `"`
			errs <- nil
		}()
	}
	var first error
	for range objs {
		if err := <-errs; err != nil && first == nil {
			first = err
		}
	}
	return first
}
