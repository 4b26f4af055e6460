package s3_test

import (
	"bytes"
	"context"
	"crypto/md5"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
	awss3 "github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
	"github.com/aws/smithy-go"
	"github.com/ddstore/ddstore/server/auth"
	"github.com/ddstore/ddstore/server/s3"
)

// randomBytes returns n bytes that do not compress (so stored sizes are
// raw sizes) and differ by seed.
func randomBytes(n int, seed uint64) []byte {
	r := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	b := make([]byte, n)
	for i := 0; i+8 <= n; i += 8 {
		v := r.Uint64()
		for j := 0; j < 8; j++ {
			b[i+j] = byte(v >> (8 * j))
		}
	}
	for i := n - n%8; i < n; i++ {
		b[i] = byte(r.Uint32())
	}
	return b
}

// wantCode checks that err is an S3 error with code (and, if status is
// not 0, that HTTP status).
func wantCode(t *testing.T, err error, code string, status int) {
	t.Helper()
	if err == nil {
		t.Fatalf("no error; want %s", code)
	}
	var ae smithy.APIError
	if !errors.As(err, &ae) {
		t.Fatalf("error %v is not an S3 error; want %s", err, code)
	}
	if ae.ErrorCode() != code {
		t.Fatalf("error code %s (%v); want %s", ae.ErrorCode(), err, code)
	}
	if status != 0 {
		var re interface{ HTTPStatusCode() int }
		if errors.As(err, &re) && re.HTTPStatusCode() != status {
			t.Fatalf("HTTP status %d; want %d (%v)", re.HTTPStatusCode(), status, err)
		}
	}
}

func mustCreateBucket(t *testing.T, c *awss3.Client, b string) {
	t.Helper()
	if _, err := c.CreateBucket(context.Background(), &awss3.CreateBucketInput{Bucket: aws.String(b)}); err != nil {
		var ae smithy.APIError
		if errors.As(err, &ae) && ae.ErrorCode() == "BucketAlreadyOwnedByYou" {
			return
		}
		t.Fatal(err)
	}
}

func TestSDKBuckets(t *testing.T) {
	e := needEnv(t)
	ctx := context.Background()
	c := e.sdk(e.admin)
	if _, err := c.CreateBucket(ctx, &awss3.CreateBucketInput{Bucket: aws.String("buckets-a")}); err != nil {
		t.Fatal(err)
	}
	_, err := c.CreateBucket(ctx, &awss3.CreateBucketInput{Bucket: aws.String("buckets-a")})
	wantCode(t, err, "BucketAlreadyOwnedByYou", 409)
	_, err = c.CreateBucket(ctx, &awss3.CreateBucketInput{Bucket: aws.String("Bad_Name")})
	wantCode(t, err, "InvalidBucketName", 400)
	if _, err := c.HeadBucket(ctx, &awss3.HeadBucketInput{Bucket: aws.String("buckets-a")}); err != nil {
		t.Fatal(err)
	}
	_, err = c.HeadBucket(ctx, &awss3.HeadBucketInput{Bucket: aws.String("buckets-none")})
	var nf *types.NotFound
	if !errors.As(err, &nf) {
		t.Fatalf("HeadBucket of a missing bucket: %v; want NotFound", err)
	}
	mustCreateBucket(t, c, "buckets-b")
	lb, err := c.ListBuckets(ctx, &awss3.ListBucketsInput{})
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, b := range lb.Buckets {
		names = append(names, *b.Name)
		if b.CreationDate == nil || b.CreationDate.IsZero() {
			t.Errorf("bucket %s has no creation date", *b.Name)
		}
	}
	if !strings.Contains(strings.Join(names, ","), "buckets-a,buckets-b") {
		t.Fatalf("ListBuckets: %v; want buckets-a and buckets-b", names)
	}
	if _, err := c.PutObject(ctx, &awss3.PutObjectInput{Bucket: aws.String("buckets-b"), Key: aws.String("x"), Body: strings.NewReader("x")}); err != nil {
		t.Fatal(err)
	}
	_, err = c.DeleteBucket(ctx, &awss3.DeleteBucketInput{Bucket: aws.String("buckets-b")})
	wantCode(t, err, "BucketNotEmpty", 409)
	if _, err := c.DeleteBucket(ctx, &awss3.DeleteBucketInput{Bucket: aws.String("buckets-a")}); err != nil {
		t.Fatal(err)
	}
	_, err = c.DeleteBucket(ctx, &awss3.DeleteBucketInput{Bucket: aws.String("buckets-a")})
	wantCode(t, err, "NoSuchBucket", 404)
	_, err = c.PutObject(ctx, &awss3.PutObjectInput{Bucket: aws.String("buckets-a"), Key: aws.String("x"), Body: strings.NewReader("x")})
	wantCode(t, err, "NoSuchBucket", 404)
}

func TestSDKObjects(t *testing.T) {
	e := needEnv(t)
	ctx := context.Background()
	c := e.sdk(e.admin)
	mustCreateBucket(t, c, "objects")
	small := []byte("hello, ddstore")
	sum := md5.Sum(small)
	put, err := c.PutObject(ctx, &awss3.PutObjectInput{
		Bucket: aws.String("objects"), Key: aws.String("dir/hello.txt"), Body: bytes.NewReader(small),
		ContentType: aws.String("text/plain"), Metadata: map[string]string{"color": "blue"},
		ContentMD5: aws.String(base64.StdEncoding.EncodeToString(sum[:])),
	})
	if err != nil {
		t.Fatal(err)
	}
	if want := `"` + hex.EncodeToString(sum[:]) + `"`; aws.ToString(put.ETag) != want {
		t.Fatalf("PutObject ETag %s; want %s", aws.ToString(put.ETag), want)
	}
	head, err := c.HeadObject(ctx, &awss3.HeadObjectInput{Bucket: aws.String("objects"), Key: aws.String("dir/hello.txt")})
	if err != nil {
		t.Fatal(err)
	}
	if aws.ToString(head.ContentType) != "text/plain" || head.Metadata["color"] != "blue" || aws.ToInt64(head.ContentLength) != int64(len(small)) || aws.ToString(head.ETag) != aws.ToString(put.ETag) {
		t.Fatalf("HeadObject: type %q meta %v length %d etag %s", aws.ToString(head.ContentType), head.Metadata, aws.ToInt64(head.ContentLength), aws.ToString(head.ETag))
	}

	// A bad Content-MD5 is refused, and nothing is committed.
	bad := md5.Sum([]byte("other"))
	_, err = c.PutObject(ctx, &awss3.PutObjectInput{
		Bucket: aws.String("objects"), Key: aws.String("bad-md5"), Body: bytes.NewReader(small),
		ContentMD5: aws.String(base64.StdEncoding.EncodeToString(bad[:])),
	})
	wantCode(t, err, "BadDigest", 400)
	_, err = c.HeadObject(ctx, &awss3.HeadObjectInput{Bucket: aws.String("objects"), Key: aws.String("bad-md5")})
	var nf *types.NotFound
	if !errors.As(err, &nf) {
		t.Fatalf("HeadObject after a BadDigest put: %v; want NotFound", err)
	}

	// A large object streams up; ranges come back from the chunk that
	// holds their start.
	big := randomBytes(24<<20+12345, 1)
	if _, err := c.PutObject(ctx, &awss3.PutObjectInput{Bucket: aws.String("objects"), Key: aws.String("big.bin"), Body: bytes.NewReader(big)}); err != nil {
		t.Fatal(err)
	}
	got := getObject(t, c, "objects", "big.bin", "")
	if !bytes.Equal(got, big) {
		t.Fatalf("GetObject returned %d bytes, not the %d put", len(got), len(big))
	}
	for _, r := range []struct {
		h          string
		start, end int
	}{
		{"bytes=0-0", 0, 1},
		{"bytes=17000000-17000099", 17000000, 17000100},
		{"bytes=20000000-", 20000000, len(big)},
		{"bytes=-1000", len(big) - 1000, len(big)},
		{fmt.Sprintf("bytes=%d-%d", len(big)-10, len(big)+100), len(big) - 10, len(big)},
	} {
		out, err := c.GetObject(ctx, &awss3.GetObjectInput{Bucket: aws.String("objects"), Key: aws.String("big.bin"), Range: aws.String(r.h)})
		if err != nil {
			t.Fatalf("range %s: %v", r.h, err)
		}
		b, err := io.ReadAll(out.Body)
		out.Body.Close()
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(b, big[r.start:r.end]) {
			t.Fatalf("range %s: %d bytes, not bytes %d-%d", r.h, len(b), r.start, r.end)
		}
		if want := fmt.Sprintf("bytes %d-%d/%d", r.start, r.end-1, len(big)); aws.ToString(out.ContentRange) != want {
			t.Fatalf("range %s: Content-Range %q; want %q", r.h, aws.ToString(out.ContentRange), want)
		}
	}
	_, err = c.GetObject(ctx, &awss3.GetObjectInput{Bucket: aws.String("objects"), Key: aws.String("big.bin"), Range: aws.String(fmt.Sprintf("bytes=%d-", len(big)))})
	wantCode(t, err, "InvalidRange", 416)

	_, err = c.GetObject(ctx, &awss3.GetObjectInput{Bucket: aws.String("objects"), Key: aws.String("missing")})
	wantCode(t, err, "NoSuchKey", 404)
	_, err = c.GetObject(ctx, &awss3.GetObjectInput{Bucket: aws.String("no-such-bucket"), Key: aws.String("missing")})
	wantCode(t, err, "NoSuchBucket", 404)

	// Deletes: one, then several; deleting what is missing succeeds.
	if _, err := c.DeleteObject(ctx, &awss3.DeleteObjectInput{Bucket: aws.String("objects"), Key: aws.String("big.bin")}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.DeleteObject(ctx, &awss3.DeleteObjectInput{Bucket: aws.String("objects"), Key: aws.String("big.bin")}); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"m1", "m2", "m3"} {
		if _, err := c.PutObject(ctx, &awss3.PutObjectInput{Bucket: aws.String("objects"), Key: aws.String(k), Body: strings.NewReader(k)}); err != nil {
			t.Fatal(err)
		}
	}
	del, err := c.DeleteObjects(ctx, &awss3.DeleteObjectsInput{Bucket: aws.String("objects"), Delete: &types.Delete{Objects: []types.ObjectIdentifier{
		{Key: aws.String("m1")}, {Key: aws.String("m2")}, {Key: aws.String("m3")}, {Key: aws.String("never")},
	}}})
	if err != nil {
		t.Fatal(err)
	}
	if len(del.Deleted) != 4 || len(del.Errors) != 0 {
		t.Fatalf("DeleteObjects: %d deleted, %d errors", len(del.Deleted), len(del.Errors))
	}
	l, err := c.ListObjectsV2(ctx, &awss3.ListObjectsV2Input{Bucket: aws.String("objects")})
	if err != nil {
		t.Fatal(err)
	}
	if len(l.Contents) != 1 || aws.ToString(l.Contents[0].Key) != "dir/hello.txt" || aws.ToString(l.Contents[0].ETag) != aws.ToString(put.ETag) {
		t.Fatalf("after the deletes the bucket lists %+v; want dir/hello.txt with its ETag", l.Contents)
	}
}

func getObject(t *testing.T, c *awss3.Client, bucket, key, rng string) []byte {
	t.Helper()
	in := &awss3.GetObjectInput{Bucket: aws.String(bucket), Key: aws.String(key)}
	if rng != "" {
		in.Range = aws.String(rng)
	}
	out, err := c.GetObject(context.Background(), in)
	if err != nil {
		t.Fatal(err)
	}
	defer out.Body.Close()
	b, err := io.ReadAll(out.Body)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestSDKListObjectsV2(t *testing.T) {
	e := needEnv(t)
	ctx := context.Background()
	c := e.sdk(e.admin)
	mustCreateBucket(t, c, "listing")
	keys := []string{"a/1", "a/2", "a/b/3", "b/1", "c", "d/e/f/g", "e0", "e1", "e2", "e3", "e4"}
	for _, k := range keys {
		if _, err := c.PutObject(ctx, &awss3.PutObjectInput{Bucket: aws.String("listing"), Key: aws.String(k), Body: strings.NewReader(k)}); err != nil {
			t.Fatal(err)
		}
	}
	// A multipart upload in progress stays out of listings.
	if _, err := c.CreateMultipartUpload(ctx, &awss3.CreateMultipartUploadInput{Bucket: aws.String("listing"), Key: aws.String("pending")}); err != nil {
		t.Fatal(err)
	}
	type page struct {
		keys, prefixes []string
	}
	list := func(in *awss3.ListObjectsV2Input) []page {
		in.Bucket = aws.String("listing")
		var pages []page
		p := awss3.NewListObjectsV2Paginator(c, in)
		for p.HasMorePages() {
			out, err := p.NextPage(ctx)
			if err != nil {
				t.Fatal(err)
			}
			var pg page
			for _, o := range out.Contents {
				pg.keys = append(pg.keys, aws.ToString(o.Key))
			}
			for _, cp := range out.CommonPrefixes {
				pg.prefixes = append(pg.prefixes, aws.ToString(cp.Prefix))
			}
			if int(aws.ToInt32(out.KeyCount)) != len(pg.keys)+len(pg.prefixes) {
				t.Fatalf("KeyCount %d, but %d keys and %d prefixes", aws.ToInt32(out.KeyCount), len(pg.keys), len(pg.prefixes))
			}
			pages = append(pages, pg)
		}
		return pages
	}
	show := func(pages []page) string {
		var s []string
		for _, p := range pages {
			s = append(s, fmt.Sprintf("%v%v", p.keys, p.prefixes))
		}
		return strings.Join(s, " ")
	}
	for _, tc := range []struct {
		name string
		in   awss3.ListObjectsV2Input
		want string
	}{
		{"all", awss3.ListObjectsV2Input{}, "[a/1 a/2 a/b/3 b/1 c d/e/f/g e0 e1 e2 e3 e4][]"},
		{"delimiter", awss3.ListObjectsV2Input{Delimiter: aws.String("/")}, "[c e0 e1 e2 e3 e4][a/ b/ d/]"},
		{"prefix+delimiter", awss3.ListObjectsV2Input{Prefix: aws.String("a/"), Delimiter: aws.String("/")}, "[a/1 a/2][a/b/]"},
		{"prefix", awss3.ListObjectsV2Input{Prefix: aws.String("e")}, "[e0 e1 e2 e3 e4][]"},
		{"max-keys 2", awss3.ListObjectsV2Input{MaxKeys: aws.Int32(2)}, "[a/1 a/2][] [a/b/3 b/1][] [c d/e/f/g][] [e0 e1][] [e2 e3][] [e4][]"},
		{"max-keys 2 delimiter", awss3.ListObjectsV2Input{MaxKeys: aws.Int32(2), Delimiter: aws.String("/")}, "[][a/ b/] [c][d/] [e0 e1][] [e2 e3][] [e4][]"},
		{"start-after", awss3.ListObjectsV2Input{StartAfter: aws.String("d")}, "[d/e/f/g e0 e1 e2 e3 e4][]"},
		{"start-after delimiter", awss3.ListObjectsV2Input{StartAfter: aws.String("a/2"), Delimiter: aws.String("/")}, "[c e0 e1 e2 e3 e4][a/ b/ d/]"},
		{"no match", awss3.ListObjectsV2Input{Prefix: aws.String("zzz")}, "[][]"},
	} {
		if got := show(list(&tc.in)); got != tc.want {
			t.Errorf("%s: %s; want %s", tc.name, got, tc.want)
		}
	}
	// ListObjects (V1) pages with markers.
	out, err := c.ListObjects(ctx, &awss3.ListObjectsInput{Bucket: aws.String("listing"), MaxKeys: aws.Int32(3)})
	if err != nil {
		t.Fatal(err)
	}
	if len(out.Contents) != 3 || !aws.ToBool(out.IsTruncated) {
		t.Fatalf("ListObjects max-keys 3: %d keys, truncated %v", len(out.Contents), aws.ToBool(out.IsTruncated))
	}
	out, err = c.ListObjects(ctx, &awss3.ListObjectsInput{Bucket: aws.String("listing"), Marker: out.Contents[2].Key})
	if err != nil {
		t.Fatal(err)
	}
	if len(out.Contents) != len(keys)-3 || aws.ToString(out.Contents[0].Key) != "b/1" {
		t.Fatalf("ListObjects after marker: %d keys", len(out.Contents))
	}
	_, err = c.ListObjectsV2(ctx, &awss3.ListObjectsV2Input{Bucket: aws.String("listing-none")})
	wantCode(t, err, "NoSuchBucket", 404)
}

func TestSDKCopyObjectMovesNoChunks(t *testing.T) {
	e := needEnv(t)
	ctx := context.Background()
	c := e.sdk(e.admin)
	mustCreateBucket(t, c, "copies")
	data := randomBytes(8<<20, 2)
	put, err := c.PutObject(ctx, &awss3.PutObjectInput{Bucket: aws.String("copies"), Key: aws.String("src"), Body: bytes.NewReader(data),
		ContentType: aws.String("application/x-test"), Metadata: map[string]string{"k": "v"}})
	if err != nil {
		t.Fatal(err)
	}
	before := e.storedBytes(t)
	cp, err := c.CopyObject(ctx, &awss3.CopyObjectInput{Bucket: aws.String("copies"), Key: aws.String("dst"), CopySource: aws.String("copies/src")})
	if err != nil {
		t.Fatal(err)
	}
	if aws.ToString(cp.CopyObjectResult.ETag) != aws.ToString(put.ETag) {
		t.Fatalf("copy ETag %s; want the source's %s", aws.ToString(cp.CopyObjectResult.ETag), aws.ToString(put.ETag))
	}
	if after := e.storedBytes(t); after != before {
		t.Fatalf("the copy changed the cluster's stored bytes from %d to %d: chunk bytes moved", before, after)
	}
	if got := getObject(t, c, "copies", "dst", ""); !bytes.Equal(got, data) {
		t.Fatal("the copy's bytes differ from the source's")
	}
	head, err := c.HeadObject(ctx, &awss3.HeadObjectInput{Bucket: aws.String("copies"), Key: aws.String("dst")})
	if err != nil {
		t.Fatal(err)
	}
	if aws.ToString(head.ContentType) != "application/x-test" || head.Metadata["k"] != "v" {
		t.Fatalf("the copy's metadata: %q %v", aws.ToString(head.ContentType), head.Metadata)
	}
	// REPLACE gives new metadata, same bytes.
	if _, err := c.CopyObject(ctx, &awss3.CopyObjectInput{Bucket: aws.String("copies"), Key: aws.String("dst"), CopySource: aws.String("copies/src"),
		MetadataDirective: types.MetadataDirectiveReplace, Metadata: map[string]string{"k": "w"}}); err != nil {
		t.Fatal(err)
	}
	head, err = c.HeadObject(ctx, &awss3.HeadObjectInput{Bucket: aws.String("copies"), Key: aws.String("dst")})
	if err != nil || head.Metadata["k"] != "w" {
		t.Fatalf("after a REPLACE copy: %v %v", err, head.Metadata)
	}
	_, err = c.CopyObject(ctx, &awss3.CopyObjectInput{Bucket: aws.String("copies"), Key: aws.String("dst2"), CopySource: aws.String("copies/none")})
	wantCode(t, err, "NoSuchKey", 404)
}

func TestSDKMultipart(t *testing.T) {
	e := needEnv(t)
	ctx := context.Background()
	c := e.sdk(e.admin)
	mustCreateBucket(t, c, "multi")
	// 3 parts of 5 MiB and a short last one; with DDSTORE_S3_BIG=1, 1 GiB
	// in 63 parts of 16 MiB and a short last one (the size).
	partSize, n := 5<<20, 4
	if os.Getenv("DDSTORE_S3_BIG") != "" {
		partSize, n = 16<<20, 64
	}
	var parts [][]byte
	for i := range n - 1 {
		parts = append(parts, randomBytes(partSize, uint64(10+i)))
	}
	parts = append(parts, randomBytes(1<<20+7, 9))
	create, err := c.CreateMultipartUpload(ctx, &awss3.CreateMultipartUploadInput{Bucket: aws.String("multi"), Key: aws.String("big"),
		ContentType: aws.String("video/mp4"), Metadata: map[string]string{"origin": "test"}})
	if err != nil {
		t.Fatal(err)
	}
	id := create.UploadId
	upload := func(n int) string {
		out, err := c.UploadPart(ctx, &awss3.UploadPartInput{Bucket: aws.String("multi"), Key: aws.String("big"), UploadId: id,
			PartNumber: aws.Int32(int32(n)), Body: bytes.NewReader(parts[n-1])})
		if err != nil {
			t.Fatalf("part %d: %v", n, err)
		}
		return aws.ToString(out.ETag)
	}
	// Half the parts, then the upload is "interrupted".
	base := e.storedBytes(t)
	for i := 1; i <= n/2; i++ {
		upload(i)
	}
	half := e.storedBytes(t) - base
	lp, err := c.ListParts(ctx, &awss3.ListPartsInput{Bucket: aws.String("multi"), Key: aws.String("big"), UploadId: id})
	if err != nil {
		t.Fatal(err)
	}
	if len(lp.Parts) != n/2 || aws.ToInt64(lp.Parts[1].Size) != int64(partSize) {
		t.Fatalf("ListParts after two parts: %d parts", len(lp.Parts))
	}
	ups, err := c.ListMultipartUploads(ctx, &awss3.ListMultipartUploadsInput{Bucket: aws.String("multi")})
	if err != nil {
		t.Fatal(err)
	}
	if len(ups.Uploads) != 1 || aws.ToString(ups.Uploads[0].UploadId) != aws.ToString(id) || aws.ToString(ups.Uploads[0].Key) != "big" {
		t.Fatalf("ListMultipartUploads: %+v", ups.Uploads)
	}
	// The retry sends every part again: the cluster receives only the
	// chunks of the parts it lacks.
	var etags []string
	for n := 1; n <= len(parts); n++ {
		etags = append(etags, upload(n))
	}
	rest := e.storedBytes(t) - base - half
	var missing int64
	for _, p := range parts[n/2:] {
		missing += int64(len(p))
	}
	t.Logf("stored bytes (all copies): first %d parts %d, then a retry of all %d parts %d; the missing parts hold %d bytes (x3 copies: %d)", n/2, half, n, rest, missing, 3*missing)
	if half < int64(n/2*partSize) || rest > missing*3+missing/10 || rest < missing {
		t.Fatalf("the retry of all parts added %d stored bytes; the missing parts hold %d (x3 copies)", rest, missing)
	}

	// Completion errors.
	cparts := func(ns ...int) *types.CompletedMultipartUpload {
		u := &types.CompletedMultipartUpload{}
		for _, n := range ns {
			u.Parts = append(u.Parts, types.CompletedPart{PartNumber: aws.Int32(int32(n)), ETag: aws.String(etags[n-1])})
		}
		return u
	}
	_, err = c.CompleteMultipartUpload(ctx, &awss3.CompleteMultipartUploadInput{Bucket: aws.String("multi"), Key: aws.String("big"), UploadId: id,
		MultipartUpload: &types.CompletedMultipartUpload{Parts: []types.CompletedPart{{PartNumber: aws.Int32(1), ETag: aws.String(`"00000000000000000000000000000000"`)}}}})
	wantCode(t, err, "InvalidPart", 400)
	_, err = c.CompleteMultipartUpload(ctx, &awss3.CompleteMultipartUploadInput{Bucket: aws.String("multi"), Key: aws.String("big"), UploadId: aws.String("0123456789abcdef0123456789abcdef"),
		MultipartUpload: cparts(1, 2)})
	wantCode(t, err, "NoSuchUpload", 404)
	_, err = c.CompleteMultipartUpload(ctx, &awss3.CompleteMultipartUploadInput{Bucket: aws.String("multi"), Key: aws.String("big"), UploadId: id,
		MultipartUpload: cparts(n, 1)})
	wantCode(t, err, "InvalidPartOrder", 400)
	_, err = c.CompleteMultipartUpload(ctx, &awss3.CompleteMultipartUploadInput{Bucket: aws.String("multi"), Key: aws.String("big"), UploadId: id,
		MultipartUpload: cparts(n, n-1)})
	wantCode(t, err, "InvalidPartOrder", 400)

	beforeComplete := e.storedBytes(t)
	all := make([]int, n)
	for i := range all {
		all[i] = i + 1
	}
	done, err := c.CompleteMultipartUpload(ctx, &awss3.CompleteMultipartUploadInput{Bucket: aws.String("multi"), Key: aws.String("big"), UploadId: id, MultipartUpload: cparts(all...)})
	if err != nil {
		t.Fatal(err)
	}
	if after := e.storedBytes(t); after != beforeComplete {
		t.Fatalf("Complete changed the stored bytes from %d to %d", beforeComplete, after)
	}
	h := md5.New()
	for _, et := range etags {
		raw, _ := hex.DecodeString(strings.Trim(et, `"`))
		h.Write(raw)
	}
	if want := fmt.Sprintf(`"%x-%d"`, h.Sum(nil), n); aws.ToString(done.ETag) != want {
		t.Fatalf("multipart ETag %s; want %s", aws.ToString(done.ETag), want)
	}
	whole := bytes.Join(parts, nil)
	if got := getObject(t, c, "multi", "big", ""); !bytes.Equal(got, whole) {
		t.Fatalf("the completed object differs (%d bytes, want %d)", len(got), len(whole))
	}
	if got := getObject(t, c, "multi", "big", fmt.Sprintf("bytes=%d-%d", partSize-5, partSize+5)); !bytes.Equal(got, whole[partSize-5:partSize+6]) {
		t.Fatal("a range across two parts differs")
	}
	head, err := c.HeadObject(ctx, &awss3.HeadObjectInput{Bucket: aws.String("multi"), Key: aws.String("big")})
	if err != nil || aws.ToString(head.ContentType) != "video/mp4" || head.Metadata["origin"] != "test" || aws.ToString(head.ETag) != aws.ToString(done.ETag) {
		t.Fatalf("HeadObject of the completed object: %v %+v", err, head)
	}
	_, err = c.ListParts(ctx, &awss3.ListPartsInput{Bucket: aws.String("multi"), Key: aws.String("big"), UploadId: id})
	wantCode(t, err, "NoSuchUpload", 404)

	// EntityTooSmall: a part that is not the last is under 5 MiB.
	small, err := c.CreateMultipartUpload(ctx, &awss3.CreateMultipartUploadInput{Bucket: aws.String("multi"), Key: aws.String("small")})
	if err != nil {
		t.Fatal(err)
	}
	var smallTags []types.CompletedPart
	for n := 1; n <= 2; n++ {
		out, err := c.UploadPart(ctx, &awss3.UploadPartInput{Bucket: aws.String("multi"), Key: aws.String("small"), UploadId: small.UploadId,
			PartNumber: aws.Int32(int32(n)), Body: bytes.NewReader(randomBytes(1000, uint64(n)))})
		if err != nil {
			t.Fatal(err)
		}
		smallTags = append(smallTags, types.CompletedPart{PartNumber: aws.Int32(int32(n)), ETag: out.ETag})
	}
	_, err = c.CompleteMultipartUpload(ctx, &awss3.CompleteMultipartUploadInput{Bucket: aws.String("multi"), Key: aws.String("small"), UploadId: small.UploadId,
		MultipartUpload: &types.CompletedMultipartUpload{Parts: smallTags}})
	wantCode(t, err, "EntityTooSmall", 400)
	if _, err := c.AbortMultipartUpload(ctx, &awss3.AbortMultipartUploadInput{Bucket: aws.String("multi"), Key: aws.String("small"), UploadId: small.UploadId}); err != nil {
		t.Fatal(err)
	}
	_, err = c.UploadPart(ctx, &awss3.UploadPartInput{Bucket: aws.String("multi"), Key: aws.String("small"), UploadId: small.UploadId,
		PartNumber: aws.Int32(3), Body: strings.NewReader("x")})
	wantCode(t, err, "NoSuchUpload", 404)
	l, err := c.ListObjectsV2(ctx, &awss3.ListObjectsV2Input{Bucket: aws.String("multi")})
	if err != nil || len(l.Contents) != 1 {
		t.Fatalf("the bucket after complete and abort: %v %d objects; want only big", err, len(l.Contents))
	}
}

func TestSDKAuth(t *testing.T) {
	e := needEnv(t)
	ctx := context.Background()
	admin := e.sdk(e.admin)
	mustCreateBucket(t, admin, "auth")
	mustCreateBucket(t, admin, "weather")
	mustCreateBucket(t, admin, "public")
	if _, err := admin.PutObject(ctx, &awss3.PutObjectInput{Bucket: aws.String("auth"), Key: aws.String("k"), Body: strings.NewReader("secret")}); err != nil {
		t.Fatal(err)
	}
	if _, err := admin.PutObject(ctx, &awss3.PutObjectInput{Bucket: aws.String("public"), Key: aws.String("open"), Body: strings.NewReader("open data")}); err != nil {
		t.Fatal(err)
	}

	// A wrong secret, an unknown key.
	wrong := e.admin
	wrong.Secret = strings.Repeat("x", 40)
	_, err := e.sdk(wrong).GetObject(ctx, &awss3.GetObjectInput{Bucket: aws.String("auth"), Key: aws.String("k")})
	wantCode(t, err, "SignatureDoesNotMatch", 403)
	unknown := s3.Key{AccessKeyID: "DDSUNKNOWNUNKNOWN000", Secret: e.admin.Secret}
	_, err = e.sdk(unknown).GetObject(ctx, &awss3.GetObjectInput{Bucket: aws.String("auth"), Key: aws.String("k")})
	wantCode(t, err, "InvalidAccessKeyId", 403)

	// A read-only key reads but may not write.
	reader := e.sdk(e.reader)
	if got := getObject(t, reader, "auth", "k", ""); string(got) != "secret" {
		t.Fatalf("the read-only key read %q", got)
	}
	_, err = reader.PutObject(ctx, &awss3.PutObjectInput{Bucket: aws.String("auth"), Key: aws.String("w"), Body: strings.NewReader("x")})
	wantCode(t, err, "AccessDenied", 403)
	_, err = reader.DeleteObject(ctx, &awss3.DeleteObjectInput{Bucket: aws.String("auth"), Key: aws.String("k")})
	wantCode(t, err, "AccessDenied", 403)

	// A key bound to weather/ works there and nowhere else.
	w := e.sdk(e.weather)
	if _, err := w.PutObject(ctx, &awss3.PutObjectInput{Bucket: aws.String("weather"), Key: aws.String("today"), Body: strings.NewReader("sunny")}); err != nil {
		t.Fatal(err)
	}
	if got := getObject(t, w, "weather", "today", ""); string(got) != "sunny" {
		t.Fatalf("weather key read %q", got)
	}
	_, err = w.PutObject(ctx, &awss3.PutObjectInput{Bucket: aws.String("auth"), Key: aws.String("x"), Body: strings.NewReader("x")})
	wantCode(t, err, "AccessDenied", 403)
	_, err = w.GetObject(ctx, &awss3.GetObjectInput{Bucket: aws.String("auth"), Key: aws.String("k")})
	wantCode(t, err, "AccessDenied", 403)
	lb, err := w.ListBuckets(ctx, &awss3.ListBucketsInput{})
	if err != nil || len(lb.Buckets) != 1 || aws.ToString(lb.Buckets[0].Name) != "weather" {
		t.Fatalf("the weather key's ListBuckets: %v %+v", err, lb)
	}

	// A key bound to weather/2026/, inside the bucket: its objects, not the
	// rest of the bucket.
	w26 := e.sdk(e.weather26)
	if _, err := w26.PutObject(ctx, &awss3.PutObjectInput{Bucket: aws.String("weather"), Key: aws.String("2026/jan"), Body: strings.NewReader("cold")}); err != nil {
		t.Fatal(err)
	}
	if got := getObject(t, w26, "weather", "2026/jan", ""); string(got) != "cold" {
		t.Fatalf("weather/2026 key read %q", got)
	}
	_, err = w26.GetObject(ctx, &awss3.GetObjectInput{Bucket: aws.String("weather"), Key: aws.String("2026/none")})
	wantCode(t, err, "NoSuchKey", 404)
	_, err = w26.PutObject(ctx, &awss3.PutObjectInput{Bucket: aws.String("weather"), Key: aws.String("2025/jan"), Body: strings.NewReader("x")})
	wantCode(t, err, "AccessDenied", 403)
	_, err = w26.GetObject(ctx, &awss3.GetObjectInput{Bucket: aws.String("weather"), Key: aws.String("today")})
	wantCode(t, err, "AccessDenied", 403)
	l26, err := w26.ListObjectsV2(ctx, &awss3.ListObjectsV2Input{Bucket: aws.String("weather")})
	if err != nil || len(l26.Contents) != 1 || aws.ToString(l26.Contents[0].Key) != "2026/jan" {
		t.Fatalf("the weather/2026 key's listing of weather: %v %+v", err, l26)
	}

	// A key added to the keys file while the gateway runs works at once.
	// (An expired token's refusal, ExpiredToken, is TestErrorXML's: the
	// nodes allow 30 s of clock skew on a token's expiry.)
	tok, err := e.cl.Token(auth.RoleRead, "", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	short, err := s3.NewKey(tok, "short-lived")
	if err != nil {
		t.Fatal(err)
	}
	if err := s3.AppendKey(e.keysFile, short); err != nil {
		t.Fatal(err)
	}
	if got := getObject(t, e.sdk(short), "auth", "k", ""); string(got) != "secret" {
		t.Fatalf("a new key read %q", got)
	}
	_, err = e.sdk(short).PutObject(ctx, &awss3.PutObjectInput{Bucket: aws.String("auth"), Key: aws.String("w"), Body: strings.NewReader("x")})
	wantCode(t, err, "AccessDenied", 403)

	// Presigned URLs: valid, tampered, expired.
	ps := awss3.NewPresignClient(admin)
	req, err := ps.PresignGetObject(ctx, &awss3.GetObjectInput{Bucket: aws.String("auth"), Key: aws.String("k")}, awss3.WithPresignExpires(time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	if code, body := httpGet(t, req.URL); code != 200 || body != "secret" {
		t.Fatalf("presigned GET: %d %q", code, body)
	}
	if code, body := httpGet(t, strings.Replace(req.URL, "/auth/k", "/auth/k2", 1)); code != 403 || !strings.Contains(body, "SignatureDoesNotMatch") {
		t.Fatalf("tampered presigned GET: %d %s", code, body)
	}
	signer := v4.NewSigner(func(o *v4.SignerOptions) { o.DisableURIPathEscaping = true })
	hr, _ := http.NewRequest(http.MethodGet, e.url+"/auth/k?X-Amz-Expires=60", nil)
	old := time.Now().Add(-2 * time.Minute)
	url, _, err := signer.PresignHTTP(ctx, aws.Credentials{AccessKeyID: e.admin.AccessKeyID, SecretAccessKey: e.admin.Secret}, hr, "UNSIGNED-PAYLOAD", "s3", "us-east-1", old)
	if err != nil {
		t.Fatal(err)
	}
	if code, body := httpGet(t, url); code != 403 || !strings.Contains(body, "AccessDenied") || !strings.Contains(body, "expired") {
		t.Fatalf("expired presigned GET: %d %s", code, body)
	}

	// A request signed an hour ago: the clock skew limit.
	hr, _ = http.NewRequest(http.MethodGet, e.url+"/auth/k", nil)
	if err := signer.SignHTTP(ctx, aws.Credentials{AccessKeyID: e.admin.AccessKeyID, SecretAccessKey: e.admin.Secret}, hr, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855", "s3", "us-east-1", time.Now().Add(-time.Hour)); err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(hr)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 403 || !strings.Contains(string(b), "RequestTimeTooSkewed") {
		t.Fatalf("a request signed an hour ago: %d %s", resp.StatusCode, b)
	}

	// Unsigned requests: refused, except reads of an anonymous-read bucket.
	if code, body := httpGet(t, e.url+"/auth/k"); code != 403 || !strings.Contains(body, "AccessDenied") {
		t.Fatalf("anonymous GET: %d %s", code, body)
	}
	if code, body := httpGet(t, e.url+"/public/open"); code != 200 || body != "open data" {
		t.Fatalf("anonymous GET of a public bucket: %d %s", code, body)
	}
	if code, body := httpGet(t, e.url+"/public?list-type=2"); code != 200 || !strings.Contains(body, "<Key>open</Key>") {
		t.Fatalf("anonymous listing of a public bucket: %d %s", code, body)
	}
	preq, _ := http.NewRequest(http.MethodPut, e.url+"/public/new", strings.NewReader("x"))
	resp, err = http.DefaultClient.Do(preq)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 403 {
		t.Fatalf("anonymous PUT to a public bucket: %d; want 403", resp.StatusCode)
	}
}

func httpGet(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}
