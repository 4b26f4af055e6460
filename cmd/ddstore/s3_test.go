package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
	"github.com/ddstore/ddstore/client"
	"github.com/ddstore/ddstore/internal/freeport"
	"github.com/ddstore/ddstore/internal/localcluster"
	"github.com/ddstore/ddstore/server/auth"
)

// TestS3Gateway runs "ddstore s3" as its own process in front of a 3-node
// mTLS cluster: a key made with "ddstore s3 key create", Debian's awscli
// copying a multipart file up and down, the gateway's /metrics accepted by
// promtool, and the listen address check. With DDSTORE_S3_RSS=SIZE (say
// 4GiB) it also streams one PutObject of that size and reports the
// gateway's peak RSS, and S3 against gRPC throughput.
func TestS3Gateway(t *testing.T) {
	if s3RaceEnabled {
		t.Skip("a cluster and a gateway process are too slow under the race detector")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	dir := t.TempDir()
	cl, err := localcluster.Start(ctx, localcluster.Options{Dir: filepath.Join(dir, "cluster"), Fast: true})
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	env := cl.CLIEnv()
	addr := strings.Join(cl.Addrs(), ",")

	wantFail(t, run(t, "s3", "--listen", "10.9.9.9:9000", "--addr", addr), 2, "--insecure")
	wantFail(t, run(t, "s3", "key", "create"), 2, "--token-file")

	tok, err := cl.Token(auth.RoleWrite, "", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	tokFile, keys := filepath.Join(dir, "token"), filepath.Join(dir, "keys.json")
	os.WriteFile(tokFile, []byte(tok+"\n"), 0o600)
	r := run(t, "s3", "key", "create", "--token-file", tokFile, "--keys", keys)
	if r.code != 0 || !strings.Contains(r.stdout, "AWS_ACCESS_KEY_ID=") {
		t.Fatalf("s3 key create: %+v", r)
	}
	if fi, err := os.Stat(keys); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("keys file: %v %v", err, fi)
	}
	creds := map[string]string{}
	for _, line := range strings.Split(strings.TrimSpace(r.stdout), "\n") {
		k, v, _ := strings.Cut(line, "=")
		creds[k] = v
	}

	ports, err := freeport.Get(2)
	if err != nil {
		t.Fatal(err)
	}
	listen, metrics := fmt.Sprintf("127.0.0.1:%d", ports[0]), fmt.Sprintf("127.0.0.1:%d", ports[1])
	gw := exec.Command(exe, "--addr", addr, "--ca", env["DDSTORE_CA"], "--cert", env["DDSTORE_CERT"], "--key", env["DDSTORE_KEY"],
		"s3", "--listen", listen, "--keys", keys, "--metrics", metrics)
	gwLog, _ := os.Create(filepath.Join(dir, "gateway.log"))
	defer gwLog.Close()
	gw.Stdout, gw.Stderr = gwLog, gwLog
	if err := gw.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { gw.Process.Kill(); gw.Wait() }()
	waitListening(t, listen)
	url := "http://" + listen

	home := t.TempDir()
	aws := func(args ...string) string {
		t.Helper()
		cmd := exec.CommandContext(ctx, "/usr/bin/aws", append([]string{"--endpoint-url", url}, args...)...)
		cmd.Env = []string{"HOME=" + home, "PATH=/usr/bin:/bin", "AWS_ACCESS_KEY_ID=" + creds["AWS_ACCESS_KEY_ID"],
			"AWS_SECRET_ACCESS_KEY=" + creds["AWS_SECRET_ACCESS_KEY"], "AWS_DEFAULT_REGION=us-east-1", "AWS_PAGER=", "AWS_EC2_METADATA_DISABLED=true"}
		out, err := cmd.CombinedOutput()
		if err != nil {
			logs, _ := os.ReadFile(filepath.Join(dir, "gateway.log"))
			t.Fatalf("aws %v: %v\n%s\ngateway log:\n%s", args, err, out, logs)
		}
		return string(out)
	}
	aws("s3", "mb", "s3://gwb")
	data := make([]byte, 40<<20+3)
	for i := range data {
		data[i] = byte(i * 7 / 3)
	}
	in := filepath.Join(dir, "in.bin")
	os.WriteFile(in, data, 0o644)
	aws("s3", "cp", in, "s3://gwb/in.bin")
	aws("s3", "cp", "s3://gwb/in.bin", filepath.Join(dir, "out.bin"))
	out, _ := os.ReadFile(filepath.Join(dir, "out.bin"))
	if !bytes.Equal(out, data) {
		t.Fatal("the object came back different")
	}
	if ls := aws("s3", "ls", "s3://gwb/"); !strings.Contains(ls, strconv.Itoa(len(data))+" in.bin") {
		t.Fatalf("aws s3 ls:\n%s", ls)
	}
	// The object is the ddstore file gwb/in.bin.
	if r := run(t, "--addr", addr, "--ca", env["DDSTORE_CA"], "--cert", env["DDSTORE_CERT"], "--key", env["DDSTORE_KEY"], "stat", "gwb/in.bin"); r.code != 0 {
		t.Fatalf("ddstore stat gwb/in.bin: %+v", r)
	}

	// Metrics: the S3 request counters, accepted by promtool.
	resp, err := http.Get("http://" + metrics + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{`ddstore_s3_requests_total{code="200",operation="UploadPart"}`, `ddstore_s3_requests_total{code="200",operation="CompleteMultipartUpload"}`,
		"ddstore_s3_request_duration_seconds_bucket", "ddstore_s3_bytes_received_total", "ddstore_s3_bytes_sent_total"} {
		if !strings.Contains(string(body), want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
	check := exec.Command("/usr/bin/promtool", "check", "metrics")
	check.Stdin = bytes.NewReader(body)
	if out, err := check.CombinedOutput(); err != nil {
		t.Errorf("promtool check metrics: %v\n%s", err, out)
	}

	// HTTPS: a second gateway with a certificate (one the cluster's CA
	// issued for 127.0.0.1), which awscli verifies with --ca-bundle.
	certPEM, keyPEM, err := cl.CA().IssueNode(auth.NodeCert{Cluster: "ddstore", NodeID: "s3-gateway"})
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile := filepath.Join(dir, "s3.crt"), filepath.Join(dir, "s3.key")
	os.WriteFile(certFile, certPEM, 0o644)
	os.WriteFile(keyFile, keyPEM, 0o600)
	ports, err = freeport.Get(1)
	if err != nil {
		t.Fatal(err)
	}
	tlsListen := fmt.Sprintf("127.0.0.1:%d", ports[0])
	gwTLS := exec.Command(exe, "--addr", addr, "--ca", env["DDSTORE_CA"], "--cert", env["DDSTORE_CERT"], "--key", env["DDSTORE_KEY"],
		"s3", "--listen", tlsListen, "--keys", keys, "--tls-cert", certFile, "--tls-key", keyFile)
	gwTLS.Stdout, gwTLS.Stderr = gwLog, gwLog
	if err := gwTLS.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { gwTLS.Process.Kill(); gwTLS.Wait() }()
	waitListening(t, tlsListen)
	url = "https://" + tlsListen
	if ls := aws("--ca-bundle", env["DDSTORE_CA"], "s3", "ls", "s3://gwb/"); !strings.Contains(ls, " in.bin") {
		t.Fatalf("aws s3 ls over HTTPS:\n%s", ls)
	}
	url = "http://" + listen

	if v := os.Getenv("DDSTORE_S3_RSS"); v != "" {
		size, err := ParseSize(v)
		if err != nil {
			t.Fatal(err)
		}
		measureS3(t, ctx, cl, url, creds["AWS_ACCESS_KEY_ID"], creds["AWS_SECRET_ACCESS_KEY"], gw.Process.Pid, size)
	}
}

func waitListening(t *testing.T, addr string) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		if c, err := net.Dial("tcp", addr); err == nil {
			c.Close()
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("nothing listens on %s", addr)
}

// randReader is size pseudo-random bytes, made as read.
type randReader struct {
	r    *rand.ChaCha8
	left int64
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

// measureS3 streams one PutObject of size bytes through the gateway (an
// UNSIGNED-PAYLOAD body made as it is sent), reads it back, reports the
// gateway's peak RSS, then puts and gets the same bytes over gRPC with the
// Go client for the throughput ratio.
func measureS3(t *testing.T, ctx context.Context, cl *localcluster.Cluster, url, ak, sk string, pid int, size int64) {
	signer := v4.NewSigner(func(o *v4.SignerOptions) { o.DisableURIPathEscaping = true })
	creds := aws.Credentials{AccessKeyID: ak, SecretAccessKey: sk}
	seed := [32]byte{1}
	req, _ := http.NewRequestWithContext(ctx, http.MethodPut, url+"/gwb/huge.bin", &randReader{r: rand.NewChaCha8(seed), left: size})
	req.ContentLength = size
	req.Header.Set("X-Amz-Content-Sha256", "UNSIGNED-PAYLOAD")
	if err := signer.SignHTTP(ctx, creds, req, "UNSIGNED-PAYLOAD", "s3", "us-east-1", time.Now()); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("PutObject of %d bytes: %d %s", size, resp.StatusCode, b)
	}
	s3Up := time.Since(start)
	get, _ := http.NewRequestWithContext(ctx, http.MethodGet, url+"/gwb/huge.bin", nil)
	get.Header.Set("X-Amz-Content-Sha256", emptySHA)
	signer.SignHTTP(ctx, creds, get, emptySHA, "s3", "us-east-1", time.Now())
	start = time.Now()
	resp, err = http.DefaultClient.Do(get)
	if err != nil {
		t.Fatal(err)
	}
	// Read as an S3 client does, in large blocks (io.Copy to io.Discard
	// would read 8 KiB at a time).
	n, err := io.CopyBuffer(struct{ io.Writer }{io.Discard}, resp.Body, make([]byte, 1<<20))
	resp.Body.Close()
	if err != nil || n != size {
		t.Fatalf("GetObject: %d bytes, %v", n, err)
	}
	s3Down := time.Since(start)
	rss, err := localcluster.PeakRSS(pid)
	if err != nil {
		t.Fatal(err)
	}

	c, err := cl.Client()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	start = time.Now()
	if _, err := c.Put(ctx, "grpc/huge.bin", &randReader{r: rand.NewChaCha8([32]byte{2}), left: size}, client.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	grpcUp := time.Since(start)
	start = time.Now()
	if _, err := c.Get(ctx, "grpc/huge.bin", io.Discard, client.GetOptions{}); err != nil {
		t.Fatal(err)
	}
	grpcDown := time.Since(start)
	mbps := func(d time.Duration) float64 { return float64(size) / d.Seconds() / 1e6 }
	t.Logf("%d MiB: gateway peak RSS %d MiB; S3 up %.0f MB/s, down %.0f MB/s; gRPC up %.0f MB/s, down %.0f MB/s; S3/gRPC up %.2f, down %.2f",
		size>>20, rss>>20, mbps(s3Up), mbps(s3Down), mbps(grpcUp), mbps(grpcDown), grpcUp.Seconds()/s3Up.Seconds(), grpcDown.Seconds()/s3Down.Seconds())
	if rss >= 256<<20 {
		t.Errorf("the gateway's peak RSS is %d MiB; the budget is 256 MiB", rss>>20)
	}
}

const emptySHA = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
