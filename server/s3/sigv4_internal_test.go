package s3

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"hash/crc32"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
)

var testCreds = aws.Credentials{AccessKeyID: "DDSTESTKEY0000000000", SecretAccessKey: "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"}

// serverSide turns a signed client request into the request a Go HTTP
// server hands the gateway.
func serverSide(t *testing.T, c *http.Request, body []byte) *http.Request {
	t.Helper()
	r := httptest.NewRequest(c.Method, c.URL.String(), bytes.NewReader(body))
	for k, v := range c.Header {
		r.Header[k] = v
	}
	if c.Host != "" {
		r.Host = c.Host
	}
	r.ContentLength = int64(len(body))
	return r
}

func sdkSigner() *v4.Signer {
	return v4.NewSigner(func(o *v4.SignerOptions) { o.DisableURIPathEscaping = true })
}

// TestVerifyAgainstSDKSigner: requests signed by aws-sdk-go-v2's signer
// verify, and any change to what was signed does not.
func TestVerifyAgainstSDKSigner(t *testing.T) {
	now := time.Now().UTC()
	for _, tc := range []struct {
		name, method, url string
		headers           map[string]string
		body              string
		payload           string // "" : the body's SHA-256
	}{
		{name: "list buckets", method: "GET", url: "http://127.0.0.1:9000/"},
		{name: "get object", method: "GET", url: "http://127.0.0.1:9000/bucket/dir/key.txt", headers: map[string]string{"Range": "bytes=0-9"}},
		{name: "key with spaces and unicode", method: "GET", url: "http://127.0.0.1:9000/bucket/a%20b/%C3%A9t%C3%A9%2Bplus~tilde", payload: unsignedBody},
		{name: "list v2 query", method: "GET", url: "http://localhost:9000/bucket?list-type=2&prefix=a%2Fb&delimiter=%2F&max-keys=2&continuation-token=abc%3D%3D"},
		{name: "create upload", method: "POST", url: "http://127.0.0.1:9000/bucket/key?uploads", headers: map[string]string{"Content-Type": "video/mp4", "X-Amz-Meta-Color": "blue"}},
		{name: "put with md5", method: "PUT", url: "http://127.0.0.1:9000/bucket/key", body: "hello", headers: map[string]string{"Content-MD5": "XUFAKrxLKna5cZ2REBfFkg==", "Content-Type": "text/plain"}},
		{name: "upload part unsigned", method: "PUT", url: "http://127.0.0.1:9000/bucket/key?partNumber=3&uploadId=00ff", body: "part", payload: unsignedBody},
		{name: "header with runs of spaces", method: "PUT", url: "http://127.0.0.1:9000/b/k", headers: map[string]string{"X-Amz-Meta-Note": "  a   b  c "}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			payload := tc.payload
			if payload == "" {
				payload = sha256Hex([]byte(tc.body))
			}
			c, _ := http.NewRequest(tc.method, tc.url, strings.NewReader(tc.body))
			for k, v := range tc.headers {
				c.Header.Set(k, v)
			}
			c.Header.Set("X-Amz-Content-Sha256", payload)
			if err := sdkSigner().SignHTTP(context.Background(), testCreds, c, payload, "s3", "us-east-1", now); err != nil {
				t.Fatal(err)
			}
			r := serverSide(t, c, []byte(tc.body))
			s, err := parseAuth(r, now)
			if err != nil {
				t.Fatalf("parse: %v", err)
			}
			if s.AccessKey != testCreds.AccessKeyID || s.Region != "us-east-1" {
				t.Fatalf("parsed %+v", s)
			}
			if err := s.verify(r, testCreds.SecretAccessKey); err != nil {
				t.Fatalf("verify: %v", err)
			}
			if err := s.verify(r, "another secret"); err == nil || err.Code != "SignatureDoesNotMatch" {
				t.Fatalf("verify with another secret: %v", err)
			}
			// Change what was signed: the method, the path, a header.
			r2 := serverSide(t, c, []byte(tc.body))
			r2.URL.Path += "x"
			r2.URL.RawPath = ""
			if err := s.verify(r2, testCreds.SecretAccessKey); err == nil {
				t.Fatal("a changed path verified")
			}
			r3 := serverSide(t, c, []byte(tc.body))
			r3.Header.Set("X-Amz-Date", now.Add(time.Second).Format(timeFormat))
			s3, perr := parseAuth(r3, now)
			if perr == nil {
				if err := s3.verify(r3, testCreds.SecretAccessKey); err == nil {
					t.Fatal("a changed date verified")
				}
			}
		})
	}
}

func TestPresigned(t *testing.T) {
	now := time.Now().UTC()
	presign := func(url string, at time.Time) *http.Request {
		c, _ := http.NewRequest("GET", url, nil)
		u, _, err := sdkSigner().PresignHTTP(context.Background(), testCreds, c, unsignedBody, "s3", "eu-west-1", at)
		if err != nil {
			t.Fatal(err)
		}
		return httptest.NewRequest("GET", u, nil)
	}
	for _, tc := range []struct {
		name string
		url  string
		at   time.Time
		code string // "" : valid
	}{
		{"valid", "http://127.0.0.1:9000/b/k?X-Amz-Expires=300", now.Add(-time.Minute), ""},
		{"valid with a query", "http://127.0.0.1:9000/b/k?X-Amz-Expires=300&response-content-type=text%2Fplain", now, ""},
		{"expired", "http://127.0.0.1:9000/b/k?X-Amz-Expires=60", now.Add(-2 * time.Minute), "AccessDenied"},
		{"expiry over a week", "http://127.0.0.1:9000/b/k?X-Amz-Expires=604801", now, "AuthorizationQueryParametersError"},
		{"not yet valid", "http://127.0.0.1:9000/b/k?X-Amz-Expires=60", now.Add(time.Hour), "AccessDenied"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := presign(tc.url, tc.at)
			s, err := parseAuth(r, now)
			if err == nil {
				err = s.verify(r, testCreds.SecretAccessKey)
			}
			switch {
			case tc.code == "" && err != nil:
				t.Fatalf("refused: %v", err)
			case tc.code != "" && (err == nil || err.Code != tc.code):
				t.Fatalf("got %v; want %s", err, tc.code)
			}
		})
	}
	r := presign("http://127.0.0.1:9000/b/k?X-Amz-Expires=300", now)
	r.URL.RawQuery = strings.Replace(r.URL.RawQuery, "X-Amz-Expires=300", "X-Amz-Expires=301", 1)
	if s, err := parseAuth(r, now); err != nil || s.verify(r, testCreds.SecretAccessKey) == nil {
		t.Fatal("a presigned URL with a changed expiry verified")
	}
}

func TestParseAuthErrors(t *testing.T) {
	now := time.Now().UTC()
	date := now.Format(timeFormat)
	scope := now.Format(dateFormat) + "/us-east-1/s3/aws4_request"
	for _, tc := range []struct {
		name    string
		headers map[string]string
		query   string
		code    string
	}{
		{"anonymous", nil, "", "AccessDenied"},
		{"signature v2", map[string]string{"Authorization": "AWS AKID:c2ln"}, "", "AccessDenied"},
		{"other algorithm", map[string]string{"Authorization": "AWS4-HMAC-SHA512 Credential=x"}, "", "AuthorizationHeaderMalformed"},
		{"no signature", map[string]string{"Authorization": "AWS4-HMAC-SHA256 Credential=AK/" + scope + ", SignedHeaders=host", "X-Amz-Date": date, "X-Amz-Content-Sha256": emptySHA256}, "", "AuthorizationHeaderMalformed"},
		{"bad credential", map[string]string{"Authorization": "AWS4-HMAC-SHA256 Credential=AK/x/y, SignedHeaders=host, Signature=00", "X-Amz-Date": date, "X-Amz-Content-Sha256": emptySHA256}, "", "AuthorizationHeaderMalformed"},
		{"host not signed", map[string]string{"Authorization": "AWS4-HMAC-SHA256 Credential=AK/" + scope + ", SignedHeaders=x-amz-date, Signature=00", "X-Amz-Date": date, "X-Amz-Content-Sha256": emptySHA256}, "", "AuthorizationHeaderMalformed"},
		{"skewed", map[string]string{"Authorization": "AWS4-HMAC-SHA256 Credential=AK/" + now.Add(-time.Hour).Format(dateFormat) + "/us-east-1/s3/aws4_request, SignedHeaders=host, Signature=00", "X-Amz-Date": now.Add(-time.Hour).Format(timeFormat), "X-Amz-Content-Sha256": emptySHA256}, "", "RequestTimeTooSkewed"},
		{"no payload hash", map[string]string{"Authorization": "AWS4-HMAC-SHA256 Credential=AK/" + scope + ", SignedHeaders=host, Signature=00", "X-Amz-Date": date}, "", "InvalidRequest"},
		{"scope of another day", map[string]string{"Authorization": "AWS4-HMAC-SHA256 Credential=AK/19990101/us-east-1/s3/aws4_request, SignedHeaders=host, Signature=00", "X-Amz-Date": date, "X-Amz-Content-Sha256": emptySHA256}, "", "AuthorizationHeaderMalformed"},
		{"presigned bad algorithm", nil, "X-Amz-Algorithm=x&X-Amz-Credential=AK%2F" + strings.ReplaceAll(scope, "/", "%2F") + "&X-Amz-Signature=00", "AuthorizationQueryParametersError"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := httptest.NewRequest("GET", "http://127.0.0.1:9000/b/k?"+tc.query, nil)
			for k, v := range tc.headers {
				r.Header.Set(k, v)
			}
			_, err := parseAuth(r, now)
			if err == nil || err.Code != tc.code {
				t.Fatalf("got %v; want %s", err, tc.code)
			}
			if err.Status != codeStatus(tc.code) || err.Status == 0 {
				t.Fatalf("status %d for %s", err.Status, err.Code)
			}
		})
	}
}

// chunkedBody encodes data as aws-chunked with chunk signatures seeded by
// seed (what awscli and the SDKs send with STREAMING-AWS4-HMAC-SHA256-PAYLOAD),
// written here from the published format, independently of the reader.
func chunkedBody(data []byte, chunk int, key []byte, date, scope, seed string, trailer string) []byte {
	var b bytes.Buffer
	prev := seed
	emit := func(p []byte) {
		h := sha256.Sum256(p)
		sts := strings.Join([]string{"AWS4-HMAC-SHA256-PAYLOAD", date, scope, prev, emptySHA256, hex.EncodeToString(h[:])}, "\n")
		sig := ""
		if key != nil {
			sig = hex.EncodeToString(hmacSHA256(key, sts))
			fmt.Fprintf(&b, "%x;chunk-signature=%s\r\n", len(p), sig)
			prev = sig
		} else {
			fmt.Fprintf(&b, "%x\r\n", len(p))
		}
		b.Write(p)
		if len(p) > 0 {
			b.WriteString("\r\n")
		}
	}
	for off := 0; off < len(data); off += chunk {
		emit(data[off:min(off+chunk, len(data))])
	}
	emit(nil)
	b.WriteString(trailer)
	b.WriteString("\r\n")
	return b.Bytes()
}

func TestChunkedReader(t *testing.T) {
	now := time.Date(2026, 11, 29, 12, 0, 0, 0, time.UTC)
	s := &sigRequest{Date: now, Scope: now.Format(dateFormat) + "/us-east-1/s3/aws4_request", Signature: strings.Repeat("ab", 32)}
	key := signingKey(testCreds.SecretAccessKey, s.Scope)
	data := bytes.Repeat([]byte("0123456789abcdef"), 20000) // 320,000 bytes
	date := now.Format(timeFormat)
	crc := crc32.ChecksumIEEE(data)
	crcB64 := base64.StdEncoding.EncodeToString([]byte{byte(crc >> 24), byte(crc >> 16), byte(crc >> 8), byte(crc)})
	signed := chunkedBody(data, 65536, key, date, s.Scope, s.Signature, "")
	tampered := bytes.Clone(signed)
	tampered[len(tampered)/2] ^= 1
	for _, tc := range []struct {
		name    string
		body    []byte
		signed  bool
		trailer string
		code    string
	}{
		{"signed chunks", signed, true, "", ""},
		{"signed, one byte changed", tampered, true, "", "SignatureDoesNotMatch"},
		{"signed by another key", chunkedBody(data, 65536, signingKey("other", s.Scope), date, s.Scope, s.Signature, ""), true, "", "SignatureDoesNotMatch"},
		{"chunks out of order (another seed)", chunkedBody(data, 65536, key, date, s.Scope, strings.Repeat("cd", 32), ""), true, "", "SignatureDoesNotMatch"},
		{"unsigned with a crc32 trailer", chunkedBody(data, 8192, nil, "", "", "", "x-amz-checksum-crc32:"+crcB64+"\r\n"), false, "x-amz-checksum-crc32", ""},
		{"unsigned with a wrong crc32", chunkedBody(data, 8192, nil, "", "", "", "x-amz-checksum-crc32:AAAAAA==\r\n"), false, "x-amz-checksum-crc32", "BadDigest"},
		{"cut short", signed[:len(signed)/3], true, "", "IncompleteBody"},
		{"bad chunk header", []byte("zz;chunk-signature=00\r\n"), true, "", "IncompleteBody"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := newChunkedReader(bytes.NewReader(tc.body), s, key, tc.signed, tc.trailer)
			got, err := io.ReadAll(r)
			if tc.code == "" {
				if err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(got, data) {
					t.Fatalf("decoded %d bytes, want %d", len(got), len(data))
				}
				return
			}
			e, ok := err.(*Error)
			if !ok || e.Code != tc.code {
				t.Fatalf("got %v; want %s", err, tc.code)
			}
		})
	}
}

func TestDigestReader(t *testing.T) {
	body := []byte("hello")
	md := []byte{0x5d, 0x41, 0x40, 0x2a, 0xbc, 0x4b, 0x2a, 0x76, 0xb9, 0x71, 0x9d, 0x91, 0x10, 0x17, 0xc5, 0x92}
	for _, tc := range []struct {
		name string
		want int64
		md5  []byte
		sha  string
		code string
	}{
		{"plain", -1, nil, "", ""},
		{"right md5 and length", 5, md, "", ""},
		{"right sha256", -1, nil, sha256Hex(body), ""},
		{"wrong md5", -1, make([]byte, 16), "", "BadDigest"},
		{"short", 6, nil, "", "IncompleteBody"},
		{"long", 4, nil, "", "IncompleteBody"},
		{"wrong sha256", -1, nil, sha256Hex([]byte("other")), "XAmzContentSHA256Mismatch"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := newDigestReader(bytes.NewReader(body), tc.want, tc.md5, tc.sha)
			_, err := io.ReadAll(d)
			if tc.code == "" {
				if err != nil {
					t.Fatal(err)
				}
				if d.etag() != "5d41402abc4b2a76b9719d911017c592" {
					t.Fatalf("etag %s", d.etag())
				}
				return
			}
			if e, ok := err.(*Error); !ok || e.Code != tc.code {
				t.Fatalf("got %v; want %s", err, tc.code)
			}
		})
	}
}
