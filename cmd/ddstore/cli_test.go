package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ddstore/ddstore/internal/localcluster"
)

// exe is the ddstore binary built for these tests.
var exe string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "ddstore-cli")
	if err != nil {
		panic(err)
	}
	exe = filepath.Join(dir, "ddstore")
	if out, err := exec.Command("go", "build", "-o", exe, ".").CombinedOutput(); err != nil {
		panic("build ddstore: " + err.Error() + "\n" + string(out))
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

type result struct {
	code           int
	stdout, stderr string
}

// run runs the CLI with no standard input.
func run(t *testing.T, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, exe, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	res := result{stdout: stdout.String(), stderr: stderr.String()}
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		res.code = ee.ExitCode()
	case err != nil:
		t.Fatalf("run %v: %v", args, err)
	}
	return res
}

// wantFail checks an exit code and a single stderr line mentioning want.
func wantFail(t *testing.T, r result, code int, want string) {
	t.Helper()
	lines := strings.Split(strings.TrimRight(r.stderr, "\n"), "\n")
	if r.code != code || len(lines) != 1 || !strings.Contains(strings.ToLower(r.stderr), want) {
		t.Fatalf("exit %d, stderr %q; want exit %d and one line mentioning %q", r.code, r.stderr, code, want)
	}
}

func TestUsageErrors(t *testing.T) {
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"unknown flag", []string{"ls", "--bogus"}, "unknown flag"},
		{"unknown command", []string{"frobnicate"}, "unknown command"},
		{"missing argument", []string{"put"}, "arg"},
		{"bad size", []string{"demo", "--size", "lots"}, "size"},
		{"bad date", []string{"put", "--date", "2026-13-01", "/dev/null", "x"}, "date"},
		{"bad metadata", []string{"put", "--meta", "novalue", "/dev/null", "x"}, "meta"},
		{"server with unknown store", []string{"server", "--store", "s3"}, "store"},
		{"gridfs without a URI", []string{"server", "--store", "gridfs"}, "mongo-uri"},
		{"server with no replicas", []string{"server", "--replicas", "0"}, "replicas"},
		{"bad config file", []string{"server", "--config", "/nonexistent.yaml"}, "config"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			wantFail(t, run(t, tt.args...), 2, tt.want)
		})
	}
	t.Run("plain text off loopback", func(t *testing.T) {
		// Without certificates a node listens on loopback only, unless told
		// --insecure.
		wantFail(t, run(t, "server", "--id", "x", "--listen", "10.9.9.9:7400", "--raft-addr", "127.0.0.1:0", "--data-dir", t.TempDir()), 1, "--insecure")
		wantFail(t, run(t, "server", "--id", "x", "--tls-ca", "ca.crt"), 2, "all three")
	})
	t.Run("no server", func(t *testing.T) {
		wantFail(t, run(t, "--addr", "127.0.0.1:1", "--timeout", "3s", "stat", "x"), 1, "no node answered at 127.0.0.1:1 (connection refused): is the cluster running? check --addr / ddstore_addr")
	})
}

// TestCLI drives a 3-node cluster of child processes through the CLI, then
// stops one with SIGTERM and checks it shuts down cleanly.
func TestCLI(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	dir := t.TempDir()
	cl, err := localcluster.Start(ctx, localcluster.Options{Dir: filepath.Join(dir, "cluster"), Exe: exe})
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	addr := strings.Join(cl.Addrs(), ",")
	first, second := cl.Members[0].APIAddr, cl.Members[1].APIAddr

	// The cluster speaks only mutual TLS: without its CA the CLI cannot
	// talk to it, and with the CA but no credentials it is refused.
	wantFail(t, run(t, "--addr", first, "--timeout", "5s", "ls"), 1, "tls")
	wantFail(t, run(t, "--addr", first, "--ca", cl.CAFile(), "ls"), 1, "unauthenticated")
	for k, v := range cl.CLIEnv() {
		t.Setenv(k, v)
	}

	data := make([]byte, 24<<20+12345)
	rand.Read(data)
	in := filepath.Join(dir, "in.bin")
	if err := os.WriteFile(in, data, 0o644); err != nil {
		t.Fatal(err)
	}

	r := run(t, "--addr", first, "--json", "put", "--meta", "owner=ops", "--date", "2026-11-01", in, "data/in.bin")
	if r.code != 0 {
		t.Fatalf("put: %+v", r)
	}
	var put struct {
		Name   string `json:"name"`
		Size   any    `json:"size"`
		Chunks any    `json:"chunks"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &put); err != nil || put.Name != "data/in.bin" {
		t.Fatalf("put --json printed %q: %v", r.stdout, err)
	}
	if r.stderr != "" {
		t.Fatalf("put wrote to stderr when not on a terminal: %q", r.stderr)
	}

	out := filepath.Join(dir, "out.bin")
	if r := run(t, "--addr", second, "get", "data/in.bin", out); r.code != 0 {
		t.Fatalf("get: %+v", r)
	}
	if got, _ := os.ReadFile(out); !bytes.Equal(got, data) {
		t.Fatal("downloaded file differs")
	}

	// A partial, damaged output resumes from the first bad chunk.
	partial := data[:15<<20]
	partial = append(bytes.Clone(partial), 0)
	partial[3<<20] ^= 0xff
	os.WriteFile(out, partial, 0o644)
	if r := run(t, "--addr", second, "get", "--resume", "data/in.bin", out); r.code != 0 {
		t.Fatalf("get --resume: %+v", r)
	}
	if got, _ := os.ReadFile(out); !bytes.Equal(got, data) {
		t.Fatal("resumed file differs")
	}

	if r := run(t, "--addr", addr, "ls", "data/"); r.code != 0 || !strings.Contains(r.stdout, "data/in.bin") {
		t.Fatalf("ls: %+v", r)
	}
	if r := run(t, "--addr", addr, "ls", "--from", "2026-11-02"); r.code != 0 || strings.Contains(r.stdout, "data/in.bin") {
		t.Fatalf("ls --from: %+v", r)
	}
	if r := run(t, "--addr", addr, "stat", "data/in.bin"); r.code != 0 || !strings.Contains(r.stdout, "owner") || !strings.Contains(r.stdout, "2026-11-01") {
		t.Fatalf("stat: %+v", r)
	}
	if r := run(t, "--addr", addr, "status"); r.code != 0 || !strings.Contains(r.stdout, "Leader") {
		t.Fatalf("status: %+v", r)
	}

	wantFail(t, run(t, "--addr", addr, "get", "no/such/file", filepath.Join(dir, "x")), 1, "not found")
	if _, err := os.Stat(filepath.Join(dir, "x")); err == nil {
		t.Fatal("a failed get left an output file behind")
	}
	wantFail(t, run(t, "--addr", addr, "put", in, "/abs"), 1, "name")
	wantFail(t, run(t, "--addr", addr, "put", in, "data/in.bin", "--date", "2026-11-02"), 1, "exists")
	wantFail(t, run(t, "--addr", addr, "put", filepath.Join(dir, "missing"), "m"), 1, "no such file")

	if r := run(t, "--addr", addr, "put", in, "copy.bin"); r.code != 0 {
		t.Fatalf("put copy: %+v", r)
	}
	if r := run(t, "--addr", addr, "rm", "data/in.bin"); r.code != 0 {
		t.Fatalf("rm: %+v", r)
	}
	wantFail(t, run(t, "--addr", addr, "stat", "data/in.bin"), 1, "not found")
	wantFail(t, run(t, "--addr", addr, "rm", "data/in.bin"), 1, "not found")
	// copy.bin holds the same chunks: gc --now (without the grace period)
	// finds nothing to collect.
	if r := run(t, "--addr", addr, "gc", "--now"); r.code != 0 || !strings.Contains(r.stdout, "0 unreferenced chunks; 0 unreferenced for longer than 0s") {
		t.Fatalf("gc --now: %+v", r)
	}

	// SIGTERM: the node stops cleanly (exit status 0); the others still
	// serve reads, and with R=3 on three nodes an upload fails clearly
	// instead of storing fewer copies than asked.
	if err := cl.StopNode(2, false); err != nil {
		t.Fatalf("node3 after SIGTERM: %v", err)
	}
	if log, _ := os.ReadFile(filepath.Join(dir, "cluster", "node3.log")); !strings.Contains(string(log), "shutting down") {
		t.Fatalf("node3 log does not mention shutting down:\n%s", log)
	}
	if r := run(t, "--addr", first, "get", "--force", "copy.bin", out); r.code != 0 {
		t.Fatalf("get with one node stopped: %+v", r)
	}
	if got, _ := os.ReadFile(out); !bytes.Equal(got, data) {
		t.Fatal("download with one node stopped differs")
	}
	if r := run(t, "--addr", first, "status"); r.code != 0 || !strings.Contains(r.stdout, "unreachable") {
		t.Fatalf("status does not show the stopped node: %+v", r)
	}
	r = run(t, "--addr", first, "put", "--retries", "0", in, "after-stop.bin")
	lines := strings.Split(strings.TrimSpace(r.stderr), "\n")
	if r.code != 1 || !strings.Contains(lines[len(lines)-1], "too few copies") {
		t.Fatalf("put with R=3 and a node down: %+v", r)
	}
	wantFail(t, run(t, "--addr", first, "stat", "after-stop.bin"), 1, "not found")
}

// TestBenchQuick is the CI smoke run of `ddstore bench --quick`: it must
// finish, print a JSON report holding every scenario with its baseline, and
// write the chart. Its figures are not asserted.
func TestBenchQuick(t *testing.T) {
	out := t.TempDir()
	r := run(t, "bench", "--quick", "--json", "--out", out, "--dir", t.TempDir())
	if r.code != 0 {
		t.Fatalf("bench --quick: exit %d\n%s", r.code, r.stderr)
	}
	var rep struct {
		Results []struct {
			Scenario string             `json:"scenario"`
			Median   float64            `json:"median"`
			Baseline string             `json:"baseline"`
			Ratio    float64            `json:"ratio"`
			Extra    map[string]float64 `json:"extra"`
		} `json:"results"`
		Targets []struct {
			Name string `json:"name"`
		} `json:"targets"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &rep); err != nil {
		t.Fatalf("bench --json printed %q: %v", r.stdout, err)
	}
	seen := map[string]bool{}
	for _, res := range rep.Results {
		seen[res.Scenario] = true
		// Re-uploads may send nothing; with few files, the filters may let
		// no lookup through.
		if res.Median <= 0 && !strings.HasPrefix(res.Scenario, "re-upload") && !strings.HasPrefix(res.Scenario, "federation: peer calls") && !strings.Contains(res.Scenario, "false-positive") {
			t.Errorf("%s: median %v", res.Scenario, res.Median)
		}
		if (res.Scenario == "upload" || res.Scenario == "download") && (res.Baseline == "" || res.Ratio <= 0) {
			t.Errorf("%s has no baseline ratio", res.Scenario)
		}
		// What bounds a figure: its CPU cost (client and nodes) per GiB.
		if res.Scenario == "upload" || res.Scenario == "download" || res.Scenario == "upload, R=1" || res.Scenario == "baseline: chunker pipeline" {
			if c := res.Extra["cpu_s_per_GiB"]; c <= 0 || res.Extra["cpu_bound_MB/s"] <= 0 {
				t.Errorf("%s: no CPU cost (extra %v)", res.Scenario, res.Extra)
			}
		}
	}
	for _, want := range []string{"upload", "download", "re-upload unchanged", "re-upload 1% changed", "download resumed half-way",
		"baseline: disk write+fsync", "baseline: gRPC loopback, download direction", "baseline: chunker pipeline", "upload, R=1",
		"federation: download through B (forwarded)", "federation: peer calls per missing-name lookup, filters ignored", "federation: name filter false-positive rate"} {
		if !seen[want] {
			t.Errorf("no %q result", want)
		}
	}
	if len(rep.Targets) != 6 { // 6: the S3 gateway's (98ea41d)
		t.Errorf("%d targets, want 6", len(rep.Targets))
	}
	for _, f := range []string{"results.json", "throughput.svg"} {
		if st, err := os.Stat(filepath.Join(out, f)); err != nil || st.Size() == 0 {
			t.Errorf("--out did not write %s: %v", f, err)
		}
	}
}
