package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net/http"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ddstore/ddstore/internal/freeport"
	"github.com/ddstore/ddstore/internal/localcluster"
	"github.com/ddstore/ddstore/internal/testenv"
)

// TestServerMetricsFlag runs `ddstore server --metrics ADDR --pprof` as a
// process with the cluster's certificates: its listener speaks HTTPS to a
// client that holds only the CA, /readyz turns 200 once the node leads,
// /metrics passes promtool, pprof answers. Without certificates a
// non-loopback --metrics address is refused, and --pprof needs --metrics.
func TestServerMetricsFlag(t *testing.T) {
	port, err := freeport.Get(1)
	if err != nil {
		t.Fatal(err)
	}
	addr := fmt.Sprintf("127.0.0.1:%d", port[0])
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	dir := t.TempDir()
	cl, err := localcluster.Start(ctx, localcluster.Options{Nodes: 1, Replicas: 1, Dir: filepath.Join(dir, "cluster"), Exe: exe,
		Args: []string{"--metrics", addr, "--pprof"}})
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	pool := x509.NewCertPool()
	pool.AddCert(cl.CA().Cert)
	hc := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	get := func(path string) (int, string) {
		t.Helper()
		resp, err := hc.Get("https://" + addr + path)
		if err != nil {
			t.Fatalf("GET %s: %v", path, err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	for start := time.Now(); ; time.Sleep(50 * time.Millisecond) {
		code, body := get("/readyz")
		if code == http.StatusOK {
			break
		}
		if time.Since(start) > 20*time.Second {
			t.Fatalf("/readyz: %d %s", code, body)
		}
	}
	if code, body := get("/healthz"); code != http.StatusOK {
		t.Errorf("/healthz: %d %s", code, body)
	}
	code, text := get("/metrics")
	if code != http.StatusOK || !strings.Contains(text, "ddstore_raft_is_leader 1") {
		t.Fatalf("/metrics: %d, no ddstore_raft_is_leader 1 in:\n%.2000s", code, text)
	}
	promtool, err := testenv.Tool("promtool")
	if err != nil {
		t.Fatal(err)
	}
	check := exec.Command(promtool, "check", "metrics")
	check.Stdin = strings.NewReader(text)
	if out, err := check.CombinedOutput(); err != nil {
		t.Fatalf("promtool check metrics: %v\n%s", err, out)
	}
	if code, body := get("/debug/pprof/cmdline"); code != http.StatusOK || !strings.Contains(body, "--metrics") {
		t.Errorf("/debug/pprof/cmdline: %d %q", code, body)
	}

	ports, err := freeport.Get(3)
	if err != nil {
		t.Fatal(err)
	}
	base := []string{"server", "--id", "x1", "--listen", fmt.Sprintf("127.0.0.1:%d", ports[0]), "--raft-addr", fmt.Sprintf("127.0.0.1:%d", ports[1]),
		"--data-dir", filepath.Join(dir, "x1"), "--bootstrap"}
	res := run(t, append(base, "--metrics", fmt.Sprintf("0.0.0.0:%d", ports[2]))...)
	if res.code == 0 || !strings.Contains(res.stderr, "is not a loopback address and no TLS is configured") {
		t.Errorf("plain-text --metrics on 0.0.0.0: exit %d, stderr %q", res.code, res.stderr)
	}
	res = run(t, append(base, "--pprof")...)
	if res.code == 0 || !strings.Contains(res.stderr, "--metrics") {
		t.Errorf("--pprof without --metrics: exit %d, stderr %q", res.code, res.stderr)
	}
}
