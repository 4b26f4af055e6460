package s3

import (
	"encoding/xml"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

func TestParseRange(t *testing.T) {
	const size = 1000
	for _, tc := range []struct {
		h             string
		start, length int64
		err           string // "", "none" (ignored), "invalid" (416)
	}{
		{"bytes=0-0", 0, 1, ""},
		{"bytes=0-999", 0, 1000, ""},
		{"bytes=10-19", 10, 10, ""},
		{"bytes=990-2000", 990, 10, ""},
		{"bytes=500-", 500, 500, ""},
		{"bytes=-100", 900, 100, ""},
		{"bytes=-5000", 0, 1000, ""},
		{"bytes=1000-", 0, 0, "invalid"},
		{"bytes=1000-1001", 0, 0, "invalid"},
		{"bytes=-0", 0, 0, "invalid"},
		{"bytes=5-1", 0, 0, "none"},
		{"bytes=0-1,5-6", 0, 0, "none"},
		{"items=0-1", 0, 0, "none"},
		{"bytes=a-b", 0, 0, "none"},
	} {
		r, err := parseRange(tc.h, size)
		var re *rangeError
		switch {
		case tc.err == "invalid":
			if !errors.As(err, &re) || re.Size != size {
				t.Errorf("%s: %v; want InvalidRange", tc.h, err)
			}
		case tc.err == "none":
			if err != errNoRange {
				t.Errorf("%s: %v; want the header ignored", tc.h, err)
			}
		case err != nil || r.Start != tc.start || r.Length != tc.length:
			t.Errorf("%s: %+v %v; want %d+%d", tc.h, r, err, tc.start, tc.length)
		}
	}
	if _, err := parseRange("bytes=0-", 0); err == nil {
		t.Error("a range of an empty object is satisfiable")
	}
}

func TestErrorXML(t *testing.T) {
	out, err := xml.Marshal(errorBody{Code: "NoSuchKey", Message: "The specified key does not exist.", Resource: "/b/k", RequestID: "ID"})
	if err != nil {
		t.Fatal(err)
	}
	want := "<Error><Code>NoSuchKey</Code><Message>The specified key does not exist.</Message><Resource>/b/k</Resource><RequestId>ID</RequestId></Error>"
	if string(out) != want {
		t.Fatalf("%s\nwant %s", out, want)
	}
	for _, tc := range []struct {
		err    error
		code   string
		status int
	}{
		{status.Error(codes.NotFound, "no such file"), "NoSuchKey", 404},
		{status.Error(codes.PermissionDenied, "outside prefix"), "AccessDenied", 403},
		{status.Error(codes.Unauthenticated, "token refused: auth: unauthenticated: token expired (token has invalid claims: token is expired)"), "ExpiredToken", 400},
		{status.Error(codes.Unauthenticated, "token refused: auth: unauthenticated: bad signature"), "AccessDenied", 403},
		{status.Error(codes.Unavailable, "no leader"), "ServiceUnavailable", 503},
		{status.Error(codes.ResourceExhausted, "too many streams"), "SlowDown", 503},
		{errorf("EntityTooSmall", "small"), "EntityTooSmall", 400},
		{errors.New("boom"), "InternalError", 500},
	} {
		e := clusterError(tc.err, "NoSuchKey")
		if e.Code != tc.code || e.Status != tc.status {
			t.Errorf("%v: %s %d; want %s %d", tc.err, e.Code, e.Status, tc.code, tc.status)
		}
	}
}

func TestRequestXML(t *testing.T) {
	var cm completeMultipartUpload
	in := `<CompleteMultipartUpload xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><Part><ETag>"a"</ETag><PartNumber>1</PartNumber></Part><Part><PartNumber>2</PartNumber><ETag>"b"</ETag><ChecksumCRC32>x</ChecksumCRC32></Part></CompleteMultipartUpload>`
	if err := xml.Unmarshal([]byte(in), &cm); err != nil || len(cm.Parts) != 2 || cm.Parts[1].PartNumber != 2 || cm.Parts[1].ETag != `"b"` {
		t.Fatalf("%+v %v", cm, err)
	}
	var dr deleteRequest
	in = `<Delete><Quiet>true</Quiet><Object><Key>a/b</Key></Object><Object><Key>c</Key><VersionId>v</VersionId></Object></Delete>`
	if err := xml.Unmarshal([]byte(in), &dr); err != nil || !dr.Quiet || len(dr.Objects) != 2 || dr.Objects[0].Key != "a/b" {
		t.Fatalf("%+v %v", dr, err)
	}
	count := 2
	out, _ := xml.Marshal(listBucketResult{Xmlns: s3NS, Name: "b", KeyCount: &count, MaxKeys: 2, IsTruncated: true,
		Contents: []objectInfo{{Key: "k", ETag: `"e"`, Size: 3}}, CommonPrefixes: []commonPrefix{{Prefix: "p/"}}})
	for _, want := range []string{`<ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">`, "<KeyCount>2</KeyCount>", "<IsTruncated>true</IsTruncated>", "<Contents><Key>k</Key>", "<CommonPrefixes><Prefix>p/</Prefix></CommonPrefixes>"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("ListBucketResult lacks %s:\n%s", want, out)
		}
	}
	if strings.Contains(string(out), "<Marker>") {
		t.Errorf("a V2 listing has a Marker:\n%s", out)
	}
}

func TestListQuery(t *testing.T) {
	for _, tc := range []struct {
		query     string
		v2        bool
		after     string
		afterIsCP bool
		maxKeys   int
		err       string
	}{
		{"list-type=2", true, "", false, 1000, ""},
		{"list-type=2&max-keys=5000", true, "", false, 1000, ""},
		{"list-type=2&max-keys=0", true, "", false, 0, ""},
		{"list-type=2&max-keys=-1", true, "", false, 0, "InvalidArgument"},
		{"list-type=2&start-after=x", true, "x", false, 1000, ""},
		{"list-type=2&continuation-token=" + continuationToken("a/b", false), true, "a/b", false, 1000, ""},
		{"list-type=2&start-after=z&continuation-token=" + continuationToken("a/", true), true, "a/", true, 1000, ""},
		{"list-type=2&continuation-token=%21%21", true, "", false, 0, "InvalidArgument"},
		{"marker=m", false, "m", false, 1000, ""},
		{"marker=p/&delimiter=/", false, "p/", true, 1000, ""},
	} {
		q, _ := url.ParseQuery(tc.query)
		lq, err := parseListQuery(q, tc.v2)
		if tc.err != "" {
			if e, ok := err.(*Error); !ok || e.Code != tc.err {
				t.Errorf("%s: %v; want %s", tc.query, err, tc.err)
			}
			continue
		}
		if err != nil || lq.after != tc.after || lq.afterIsCP != tc.afterIsCP || lq.maxKeys != tc.maxKeys {
			t.Errorf("%s: %+v %v", tc.query, lq, err)
		}
	}
}

func TestOperation(t *testing.T) {
	for _, tc := range []struct{ method, target, copySource, op string }{
		{"GET", "/", "", "ListBuckets"},
		{"PUT", "/b", "", "CreateBucket"},
		{"HEAD", "/b", "", "HeadBucket"},
		{"DELETE", "/b", "", "DeleteBucket"},
		{"GET", "/b?list-type=2", "", "ListObjectsV2"},
		{"GET", "/b", "", "ListObjects"},
		{"GET", "/b?location", "", "GetBucketLocation"},
		{"GET", "/b?uploads", "", "ListMultipartUploads"},
		{"POST", "/b?delete", "", "DeleteObjects"},
		{"PUT", "/b/k", "", "PutObject"},
		{"PUT", "/b/k", "/a/x", "CopyObject"},
		{"GET", "/b/k", "", "GetObject"},
		{"HEAD", "/b/k", "", "HeadObject"},
		{"DELETE", "/b/k", "", "DeleteObject"},
		{"POST", "/b/k?uploads", "", "CreateMultipartUpload"},
		{"PUT", "/b/k?partNumber=1&uploadId=u", "", "UploadPart"},
		{"POST", "/b/k?uploadId=u", "", "CompleteMultipartUpload"},
		{"DELETE", "/b/k?uploadId=u", "", "AbortMultipartUpload"},
		{"GET", "/b/k?uploadId=u", "", "ListParts"},
		{"GET", "/b?acl", "", ""},
		{"PUT", "/b/k?tagging", "", ""},
		{"POST", "/", "", ""},
	} {
		u, _ := url.Parse(tc.target)
		r := &http.Request{Method: tc.method, URL: u, Header: http.Header{}}
		if tc.copySource != "" {
			r.Header.Set("X-Amz-Copy-Source", tc.copySource)
		}
		b, k := splitPath(u.Path)
		if got := operation(r, b, k); got != tc.op {
			t.Errorf("%s %s: %q; want %q", tc.method, tc.target, got, tc.op)
		}
	}
}

func TestNames(t *testing.T) {
	for b, ok := range map[string]bool{"abc": true, "my-bucket.1": true, "ab": false, "Abc": false, "a_b": false, "-ab": false, "ab-": false, "a..b": false, strings.Repeat("a", 64): false} {
		if got := checkBucketName(b) == nil; got != ok {
			t.Errorf("bucket %q: valid %v; want %v", b, got, ok)
		}
	}
	for k, ok := range map[string]bool{"a": true, "a/b/c.txt": true, "dir/": false, "a//b": false, "../x": false, ".s3-bucket": false, ".s3-multipart/x": false, ".s3-bucketx": true} {
		if got := checkKey("b", k) == nil; got != ok {
			t.Errorf("key %q: valid %v; want %v", k, got, ok)
		}
	}
}

func TestKeepAlive(t *testing.T) {
	rec := httptest.NewRecorder()
	w := &responseWriter{ResponseWriter: rec}
	k := startKeepAlive(w, 5*time.Millisecond)
	time.Sleep(40 * time.Millisecond)
	k.stop()
	w.Write([]byte("<Done/>"))
	body := rec.Body.String()
	if rec.Code != 200 || !strings.HasPrefix(body, xml.Header) || !strings.HasSuffix(body, "<Done/>") {
		t.Fatalf("%d %q", rec.Code, body)
	}
	if spaces := strings.Count(strings.TrimPrefix(body, xml.Header), " "); spaces < 2 {
		t.Fatalf("%d spaces kept the answer alive in 40 ms at 5 ms: %q", spaces, body)
	}
	var v struct{ XMLName xml.Name }
	if err := xml.Unmarshal(rec.Body.Bytes(), &v); err != nil || v.XMLName.Local != "Done" {
		t.Fatalf("the answer does not parse: %v", err)
	}
}
