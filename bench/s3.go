package bench

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
	"github.com/ddstore/ddstore/client"
	"github.com/ddstore/ddstore/server/auth"
	"github.com/ddstore/ddstore/server/s3"
)

// S3 scenario names: the same fresh incompressible bytes put and got
// through the S3 gateway and through the gRPC client, interleaved.
const (
	s3Upload     = "S3 gateway upload (PutObject)"
	s3Download   = "S3 gateway download (GetObject)"
	grpcUpload   = "S3 scenario: gRPC client upload"
	grpcDownload = "S3 scenario: gRPC client download"
)

// s3Scenario measures PutObject and GetObject through an S3 gateway running
// in this process (a client of the cluster, as ddstore s3 is) against the
// Go client's put and get of bytes of the same kind and size, in the same
// run: each run uploads fresh pseudo-random bytes each way (so nothing is
// deduplicated) and downloads what it uploaded (a first read each way).
func (r *runner) s3Scenario(ctx context.Context) error {
	if r.cl == nil || r.cl.CA() == nil {
		r.say("S3 scenario skipped: it needs a local cluster (a token of its CA for the gateway's key)")
		return nil
	}
	size := r.middleSize()
	tok, err := r.cl.Token(auth.RoleAdmin, "", time.Hour)
	if err != nil {
		return err
	}
	key, err := s3.NewKey(tok, "bench")
	if err != nil {
		return err
	}
	gw, err := s3.New(s3.Config{Addrs: r.cl.Addrs(), ClientOptions: r.cl.ClientOptions(), TLS: true, Keys: []s3.Key{key}})
	if err != nil {
		return err
	}
	defer gw.Close()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: gw, ReadHeaderTimeout: 30 * time.Second}
	go srv.Serve(ln)
	defer srv.Close()
	url := "http://" + ln.Addr().String()
	creds := aws.Credentials{AccessKeyID: key.AccessKeyID, SecretAccessKey: key.Secret}
	hc := &http.Client{Transport: &http.Transport{DisableCompression: true}}
	if err := s3Call(ctx, hc, creds, http.MethodPut, url+"/bench", nil, 0, io.Discard); err != nil {
		return fmt.Errorf("S3 scenario: create bucket: %w", err)
	}
	r.say("S3 scenario: %s each way through the gateway and the gRPC client, %d runs", human(size), r.runsFor(size))
	for run := 0; run < r.runsFor(size); run++ {
		seed := r.seed + 1000 + uint64(run)*2
		// gRPC first, then S3, each on fresh bytes.
		start := time.Now()
		name := fmt.Sprintf("bench-s3/grpc-%d", run)
		if _, err := r.c.Put(ctx, name, newRandReader(seed, size), client.PutOptions{Overwrite: true}); err != nil {
			return fmt.Errorf("S3 scenario: gRPC put: %w", err)
		}
		r.add(grpcUpload, Random, size, mbps(size, time.Since(start)))
		start = time.Now()
		if err := s3Call(ctx, hc, creds, http.MethodPut, fmt.Sprintf("%s/bench/s3-%d", url, run), newRandReader(seed+1, size), size, io.Discard); err != nil {
			return fmt.Errorf("S3 scenario: PutObject: %w", err)
		}
		r.add(s3Upload, Random, size, mbps(size, time.Since(start)))
		start = time.Now()
		if _, err := r.c.Get(ctx, name, io.Discard, client.GetOptions{}); err != nil {
			return fmt.Errorf("S3 scenario: gRPC get: %w", err)
		}
		r.add(grpcDownload, Random, size, mbps(size, time.Since(start)))
		start = time.Now()
		cw := &countWriter{}
		if err := s3Call(ctx, hc, creds, http.MethodGet, fmt.Sprintf("%s/bench/s3-%d", url, run), nil, 0, cw); err != nil {
			return fmt.Errorf("S3 scenario: GetObject: %w", err)
		}
		if cw.n != size {
			return fmt.Errorf("S3 scenario: GetObject returned %d bytes, want %d", cw.n, size)
		}
		r.add(s3Download, Random, size, mbps(size, time.Since(start)))
	}
	return nil
}

// s3Call makes one signed S3 request (UNSIGNED-PAYLOAD) and copies the
// answer's body to w.
func s3Call(ctx context.Context, hc *http.Client, creds aws.Credentials, method, url string, body io.Reader, size int64, w io.Writer) error {
	req, err := http.NewRequestWithContext(ctx, method, url, body)
	if err != nil {
		return err
	}
	req.ContentLength = size
	req.Header.Set("X-Amz-Content-Sha256", "UNSIGNED-PAYLOAD")
	signer := v4.NewSigner(func(o *v4.SignerOptions) { o.DisableURIPathEscaping = true })
	if err := signer.SignHTTP(ctx, creds, req, "UNSIGNED-PAYLOAD", "s3", "us-east-1", time.Now()); err != nil {
		return err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		return fmt.Errorf("%s %s: %s %s", method, url, resp.Status, msg)
	}
	_, err = io.CopyBuffer(w, resp.Body, make([]byte, 1<<20)) // large reads, as S3 clients make
	return err
}

// randReader is size pseudo-random (incompressible) bytes, made as read.
type randReader struct {
	r    *rand.ChaCha8
	left int64
}

func newRandReader(seed uint64, size int64) *randReader {
	var s [32]byte
	for i := range 8 {
		s[i] = byte(seed >> (8 * i))
	}
	return &randReader{r: rand.NewChaCha8(s), left: size}
}

func (r *randReader) Read(p []byte) (int, error) {
	if r.left == 0 {
		return 0, io.EOF
	}
	if int64(len(p)) > r.left {
		p = p[:r.left]
	}
	r.r.Read(p)
	r.left -= int64(len(p))
	return len(p), nil
}

type countWriter struct{ n int64 }

func (c *countWriter) Write(p []byte) (int, error) { c.n += int64(len(p)); return len(p), nil }
