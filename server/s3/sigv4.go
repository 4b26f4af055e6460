package s3

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"time"
)

// AWS Signature Version 4, as S3 checks it. The gateway rebuilds the
// canonical request from exactly the headers the client says it signed
// (SignedHeaders) and recomputes the signature with the access key's secret.
// An SDK's signer is a client's tool: it picks which headers to sign itself
// (it adds Content-Length, leaves out User-Agent and Expect), so it cannot
// recompute a signature over another client's choice of headers; the
// published algorithm below can, and the tests check it against the
// aws-sdk-go-v2 signer and against awscli, rclone and s3cmd.

const (
	algorithm    = "AWS4-HMAC-SHA256"
	timeFormat   = "20060102T150405Z"
	dateFormat   = "20060102"
	unsignedBody = "UNSIGNED-PAYLOAD"
	// streamingBody: the body is aws-chunked, each chunk signed.
	streamingBody = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD"
	// streamingBodyTrailer: signed chunks, then signed trailing headers.
	streamingBodyTrailer = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER"
	// streamingUnsignedTrailer: aws-chunked, chunks unsigned, trailing
	// headers (a checksum).
	streamingUnsignedTrailer = "STREAMING-UNSIGNED-PAYLOAD-TRAILER"
	emptySHA256              = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"

	// MaxSkew is how far a request's time may be from the gateway's clock.
	MaxSkew = 15 * time.Minute
	// maxPresignExpiry is the longest X-Amz-Expires S3 accepts: 7 days.
	maxPresignExpiry = 7 * 24 * time.Hour
)

// sigRequest is what a request's signature says: who signed it, when, for
// which scope, which headers, and the signature.
type sigRequest struct {
	AccessKey     string
	Date          time.Time // X-Amz-Date
	Scope         string    // date/region/service/aws4_request
	Region        string
	SignedHeaders []string
	Signature     string
	Presigned     bool
	Expires       time.Duration // presigned only
	PayloadHash   string        // x-amz-content-sha256, or UNSIGNED-PAYLOAD for presigned
}

// hasAuth reports whether the request carries any credentials.
func hasAuth(r *http.Request) bool {
	return r.Header.Get("Authorization") != "" || r.URL.Query().Has("X-Amz-Signature") || r.URL.Query().Has("X-Amz-Credential") || r.URL.Query().Has("AWSAccessKeyId")
}

// parseAuth reads the signature of a request: an Authorization header, or
// a presigned URL's query.
func parseAuth(r *http.Request, now time.Time) (*sigRequest, *Error) {
	if h := r.Header.Get("Authorization"); h != "" {
		return parseAuthHeader(r, h, now)
	}
	q := r.URL.Query()
	if q.Has("X-Amz-Signature") || q.Has("X-Amz-Credential") {
		return parsePresigned(q, now)
	}
	if q.Has("AWSAccessKeyId") {
		return nil, errorf("AccessDenied", "Signature Version 2 is not supported; sign with AWS Signature Version 4")
	}
	return nil, errorf("AccessDenied", "Anonymous access is forbidden for this operation")
}

func parseAuthHeader(r *http.Request, h string, now time.Time) (*sigRequest, *Error) {
	rest, ok := strings.CutPrefix(h, algorithm+" ")
	if !ok {
		if strings.HasPrefix(h, "AWS ") {
			return nil, errorf("AccessDenied", "Signature Version 2 is not supported; sign with AWS Signature Version 4")
		}
		return nil, errorf("AuthorizationHeaderMalformed", "the authorization header must start with %s", algorithm)
	}
	s := &sigRequest{}
	var cred, signed string
	for _, part := range strings.Split(rest, ",") {
		k, v, _ := strings.Cut(strings.TrimSpace(part), "=")
		switch k {
		case "Credential":
			cred = v
		case "SignedHeaders":
			signed = v
		case "Signature":
			s.Signature = v
		}
	}
	if cred == "" || signed == "" || s.Signature == "" {
		return nil, errorf("AuthorizationHeaderMalformed", "the authorization header needs Credential, SignedHeaders and Signature")
	}
	if err := s.setCredential(cred); err != nil {
		return nil, err
	}
	s.SignedHeaders = strings.Split(signed, ";")
	if !contains(s.SignedHeaders, "host") {
		return nil, errorf("AuthorizationHeaderMalformed", "the signed headers must include host")
	}
	date := r.Header.Get("X-Amz-Date")
	layout := timeFormat
	if date == "" {
		date, layout = r.Header.Get("Date"), http.TimeFormat
	}
	t, err := time.Parse(layout, date)
	if err != nil {
		return nil, errorf("AccessDenied", "AWS authentication requires a valid Date or x-amz-date header")
	}
	s.Date = t
	if d := now.Sub(t); d > MaxSkew || d < -MaxSkew {
		return nil, errorf("RequestTimeTooSkewed", "the difference between the request time (%s) and the server's time (%s) is too large", t.UTC().Format(timeFormat), now.UTC().Format(timeFormat))
	}
	s.PayloadHash = r.Header.Get("X-Amz-Content-Sha256")
	if s.PayloadHash == "" {
		return nil, errorf("InvalidRequest", "missing required header for this request: x-amz-content-sha256")
	}
	if err := s.checkScopeDate(); err != nil {
		return nil, err
	}
	return s, nil
}

func parsePresigned(q url.Values, now time.Time) (*sigRequest, *Error) {
	if q.Get("X-Amz-Algorithm") != algorithm {
		return nil, errorf("AuthorizationQueryParametersError", "X-Amz-Algorithm only supports %q", algorithm)
	}
	s := &sigRequest{Presigned: true, Signature: q.Get("X-Amz-Signature"), PayloadHash: unsignedBody}
	if v := q.Get("X-Amz-Content-Sha256"); v != "" {
		s.PayloadHash = v
	}
	if err := s.setCredential(q.Get("X-Amz-Credential")); err != nil {
		return nil, err
	}
	t, err := time.Parse(timeFormat, q.Get("X-Amz-Date"))
	if err != nil {
		return nil, errorf("AuthorizationQueryParametersError", "X-Amz-Date must be in the ISO8601 long format")
	}
	s.Date = t
	secs, err := strconv.ParseInt(q.Get("X-Amz-Expires"), 10, 64)
	switch {
	case err != nil || secs < 0:
		return nil, errorf("AuthorizationQueryParametersError", "X-Amz-Expires should be a number of seconds")
	case time.Duration(secs)*time.Second > maxPresignExpiry:
		return nil, errorf("AuthorizationQueryParametersError", "X-Amz-Expires must be less than a week (in seconds); that is, the given X-Amz-Expires must be less than 604800 seconds")
	}
	s.Expires = time.Duration(secs) * time.Second
	if t.Sub(now) > MaxSkew {
		return nil, errorf("AccessDenied", "Request is not valid yet")
	}
	if now.After(t.Add(s.Expires)) {
		return nil, errorf("AccessDenied", "Request has expired")
	}
	s.SignedHeaders = strings.Split(q.Get("X-Amz-SignedHeaders"), ";")
	if s.Signature == "" || !contains(s.SignedHeaders, "host") {
		return nil, errorf("AuthorizationQueryParametersError", "a presigned URL needs X-Amz-Signature and X-Amz-SignedHeaders including host")
	}
	if err := s.checkScopeDate(); err != nil {
		return nil, err
	}
	return s, nil
}

// setCredential parses "AKID/20060102/region/s3/aws4_request".
func (s *sigRequest) setCredential(cred string) *Error {
	parts := strings.Split(cred, "/")
	if len(parts) != 5 || parts[0] == "" || parts[3] != "s3" || parts[4] != "aws4_request" {
		return errorf("AuthorizationHeaderMalformed", "the credential %q is not ACCESSKEY/DATE/REGION/s3/aws4_request", cred)
	}
	s.AccessKey = parts[0]
	s.Region = parts[2]
	s.Scope = strings.Join(parts[1:], "/")
	return nil
}

func (s *sigRequest) checkScopeDate() *Error {
	if !strings.HasPrefix(s.Scope, s.Date.UTC().Format(dateFormat)+"/") {
		return errorf("AuthorizationHeaderMalformed", "the credential's date does not match the request's date %s", s.Date.UTC().Format(dateFormat))
	}
	return nil
}

// signingKey derives the key that signs requests of one day, region and
// service.
func signingKey(secret, scope string) []byte {
	parts := strings.Split(scope, "/")
	k := []byte("AWS4" + secret)
	for _, p := range parts {
		k = hmacSHA256(k, p)
	}
	return k
}

func hmacSHA256(key []byte, data string) []byte {
	h := hmac.New(sha256.New, key)
	h.Write([]byte(data))
	return h.Sum(nil)
}

func sha256Hex(b []byte) string {
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

// stringToSign is what the signature covers.
func (s *sigRequest) stringToSign(canonical string) string {
	return algorithm + "\n" + s.Date.UTC().Format(timeFormat) + "\n" + s.Scope + "\n" + sha256Hex([]byte(canonical))
}

// verify recomputes the request's signature with secret. The canonical URI
// is tried as S3 defines it (each segment of the decoded path encoded) and,
// failing that, as the client sent it.
func (s *sigRequest) verify(r *http.Request, secret string) *Error {
	key := signingKey(secret, s.Scope)
	for _, path := range candidatePaths(r) {
		c := canonicalRequest(r, path, s)
		want := hex.EncodeToString(hmacSHA256(key, s.stringToSign(c)))
		if hmac.Equal([]byte(want), []byte(s.Signature)) {
			return nil
		}
	}
	return errorf("SignatureDoesNotMatch", "The request signature we calculated does not match the signature you provided. Check your key and signing method.")
}

// candidatePaths are the canonical URIs to try.
func candidatePaths(r *http.Request) []string {
	enc := encodePath(r.URL.Path)
	raw := r.URL.EscapedPath()
	if raw == enc {
		return []string{enc}
	}
	return []string{enc, raw}
}

// canonicalRequest builds SigV4's canonical request.
func canonicalRequest(r *http.Request, path string, s *sigRequest) string {
	var b strings.Builder
	b.WriteString(r.Method)
	b.WriteByte('\n')
	b.WriteString(path)
	b.WriteByte('\n')
	b.WriteString(canonicalQuery(r.URL.Query(), s.Presigned))
	b.WriteByte('\n')
	for _, h := range s.SignedHeaders {
		b.WriteString(h)
		b.WriteByte(':')
		b.WriteString(headerValue(r, h))
		b.WriteByte('\n')
	}
	b.WriteByte('\n')
	b.WriteString(strings.Join(s.SignedHeaders, ";"))
	b.WriteByte('\n')
	b.WriteString(s.PayloadHash)
	return b.String()
}

// headerValue is a signed header's canonical value: values trimmed, inner
// runs of spaces made one, several values joined by commas. Go's server
// moves Host, Content-Length and Transfer-Encoding out of the header map.
func headerValue(r *http.Request, name string) string {
	var vals []string
	switch name {
	case "host":
		vals = []string{r.Host}
	case "content-length":
		vals = r.Header.Values("Content-Length")
		if len(vals) == 0 {
			vals = []string{strconv.FormatInt(r.ContentLength, 10)}
		}
	case "transfer-encoding":
		vals = r.TransferEncoding
		if len(vals) == 0 {
			vals = r.Header.Values("Transfer-Encoding")
		}
	default:
		vals = r.Header.Values(name)
	}
	out := make([]string, len(vals))
	for i, v := range vals {
		out[i] = strings.Join(strings.Fields(v), " ")
	}
	return strings.Join(out, ",")
}

// canonicalQuery sorts and encodes the query; a presigned URL's own
// signature is left out.
func canonicalQuery(q url.Values, presigned bool) string {
	type kv struct{ k, v string }
	var pairs []kv
	for k, vs := range q {
		if presigned && k == "X-Amz-Signature" {
			continue
		}
		for _, v := range vs {
			pairs = append(pairs, kv{uriEncode(k, true), uriEncode(v, true)})
		}
	}
	sort.Slice(pairs, func(i, j int) bool {
		if pairs[i].k != pairs[j].k {
			return pairs[i].k < pairs[j].k
		}
		return pairs[i].v < pairs[j].v
	})
	parts := make([]string, len(pairs))
	for i, p := range pairs {
		parts[i] = p.k + "=" + p.v
	}
	return strings.Join(parts, "&")
}

// encodePath encodes a decoded path as S3's canonical URI: every byte but
// the unreserved ones and '/' percent-encoded.
func encodePath(p string) string {
	if p == "" {
		return "/"
	}
	return uriEncode(p, false)
}

// uriEncode is SigV4's UriEncode: A-Z a-z 0-9 - _ . ~ stay, everything
// else is %XX (uppercase); '/' too when encodeSlash.
func uriEncode(s string, encodeSlash bool) string {
	const hexDigits = "0123456789ABCDEF"
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case 'A' <= c && c <= 'Z', 'a' <= c && c <= 'z', '0' <= c && c <= '9', c == '-', c == '_', c == '.', c == '~':
			b.WriteByte(c)
		case c == '/' && !encodeSlash:
			b.WriteByte(c)
		default:
			b.WriteByte('%')
			b.WriteByte(hexDigits[c>>4])
			b.WriteByte(hexDigits[c&15])
		}
	}
	return b.String()
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
