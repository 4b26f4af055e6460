package main

import (
	"bytes"
	"context"
	"crypto/x509"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ddstore/ddstore/client"
	"github.com/ddstore/ddstore/internal/localcluster"
	"github.com/ddstore/ddstore/server"
	"github.com/ddstore/ddstore/server/auth"
	"github.com/ddstore/ddstore/timerange"
)

// startMesh starts one-node clusters named names in this process, each a
// peer of all the others.
func startMesh(t *testing.T, names ...string) map[string]*localcluster.Cluster {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	out := map[string]*localcluster.Cluster{}
	for _, name := range names {
		var others []string
		for _, o := range names {
			if o != name {
				others = append(others, o)
			}
		}
		cl, err := localcluster.New(localcluster.Options{
			Nodes: 1, Dir: filepath.Join(t.TempDir(), name), Fast: true, Cluster: name, Callers: others,
			PeerCA: func(peer string) *x509.Certificate { return out[peer].CA().Cert },
			Tune: func(c *server.Config) {
				c.Peers = map[string][]string{}
				c.PeerPolicies = map[string]server.PeerPolicy{}
				for _, o := range others {
					c.Peers[o] = out[o].Addrs()
					c.PeerPolicies[o] = server.PeerPolicy{Role: auth.RoleWrite}
				}
				c.FilterRefresh = 100 * time.Millisecond
				c.RepairInterval, c.ScrubInterval, c.GCInterval = -1, -1, -1
			},
		})
		if err != nil {
			t.Fatal(err)
		}
		out[name] = cl
	}
	for _, name := range names {
		if err := out[name].Launch(ctx); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { out[name].Close() })
	}
	for _, name := range names {
		if err := localcluster.WaitPeerFilters(ctx, out, name); err != nil {
			t.Fatal(err)
		}
	}
	return out
}

// TestGetRange: `get --from --to DIR` asked of cluster A fetches the files
// of A, B and C whose range overlaps (a name two clusters hold goes under
// DIR/CLUSTER/), is killed half-way, and a rerun fetches the rest: every
// file byte-identical, none outside the range, nothing left partial. A
// third run fetches nothing.
func TestGetRange(t *testing.T) {
	fed := startMesh(t, "A", "B", "C")
	rng := rand.New(rand.NewChaCha8([32]byte{14}))
	type file struct {
		cluster, name, from, to string
		size                    int
		path                    string // under DIR; empty: outside the range
	}
	files := []file{
		{"A", "a/local.csv", "2018-04-13T00:00Z", "2018-04-13T23:00Z", 100 << 10, "a/local.csv"},
		{"A", "a/2019.csv", "2019-01-01", "2019-01-31", 1000, ""},
		{"C", "c/2019.csv", "2019-04-01", "2019-04-30", 1000, ""},
		{"B", "dup.csv", "2018-04-20", "2018-04-20", 3000, "B/dup.csv"},
		{"C", "dup.csv", "2018-04-21", "2018-04-21", 4000, "C/dup.csv"},
	}
	for i := range 4 {
		for _, cl := range []string{"B", "C"} {
			name := fmt.Sprintf("%s/obs-%d.bin", strings.ToLower(cl), i)
			files = append(files, file{cl, name, fmt.Sprintf("2018-04-%02dT06:00Z", 10+i), "2018-05-02", 6 << 20, name})
		}
	}
	data := map[string][]byte{}
	for _, f := range files {
		b := make([]byte, f.size)
		for i := range b {
			b[i] = byte(rng.Uint32())
		}
		data[f.cluster+"/"+f.name] = b
		r, err := timerange.Parse(f.from, f.to)
		if err != nil {
			t.Fatal(err)
		}
		c, err := fed[f.cluster].Client()
		if err != nil {
			t.Fatal(err)
		}
		if _, err := c.Put(context.Background(), f.name, bytes.NewReader(b), client.PutOptions{TimeRange: client.FixedRange(r)}); err != nil {
			t.Fatalf("put %s in %s: %v", f.name, f.cluster, err)
		}
		c.Close()
	}
	for _, name := range []string{"A", "B", "C"} {
		if err := localcluster.WaitPeerFilters(context.Background(), fed, name); err != nil {
			t.Fatal(err)
		}
	}
	for k, v := range fed["A"].CLIEnv() {
		t.Setenv(k, v)
	}
	dir := t.TempDir()
	args := []string{"--addr", fed["A"].Addrs()[0], "get", "--from", "2018-04-01", "--to", "2018-04-30T23:59Z", "--parallel", "2", dir}

	// Killed (SIGKILL) once a file is more than 4.5 MiB in.
	cmd := exec.Command(exe, args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	killed := false
wait:
	for {
		select {
		case err := <-exited:
			t.Logf("the first run ended before it was killed (%v): %s", err, stderr.String())
			break wait
		case <-time.After(2 * time.Millisecond):
		}
		parts, _ := filepath.Glob(filepath.Join(dir, "*", "*.part"))
		for _, p := range parts {
			// Past a whole chunk (at most 4 MiB), not yet the whole file
			// (6 MiB: a whole part is renamed by the rerun, not resumed).
			if st, err := os.Stat(p); err == nil && st.Size() >= 9<<19 && st.Size() < 6<<20 {
				cmd.Process.Signal(syscall.SIGKILL)
				<-exited
				killed = true
				break wait
			}
		}
	}
	parts, _ := filepath.Glob(filepath.Join(dir, "*", "*.part"))
	var sizes []string
	partial := false // a part holding a whole chunk but not the whole file
	for _, p := range parts {
		if st, err := os.Stat(p); err == nil {
			sizes = append(sizes, fmt.Sprintf("%s: %d bytes", filepath.Base(p), st.Size()))
			partial = partial || (st.Size() >= 9<<19 && st.Size() < 6<<20)
		}
	}
	t.Logf("killed: %v; partial files left: %v", killed, sizes)

	r := run(t, args...)
	if r.code != 0 {
		t.Fatalf("rerun: exit %d: %s", r.code, r.stderr)
	}
	t.Logf("rerun: %s", strings.TrimSpace(r.stderr))
	// (The file can still have been finished between the look and the
	// kill: then there is nothing to resume.)
	if killed && partial && strings.Contains(r.stderr, "(0 resumed)") {
		t.Errorf("killed with %v, the rerun resumed none", sizes)
	}
	want := 0
	for _, f := range files {
		if f.path == "" {
			continue
		}
		want++
		got, err := os.ReadFile(filepath.Join(dir, filepath.FromSlash(f.path)))
		if err != nil || !bytes.Equal(got, data[f.cluster+"/"+f.name]) {
			t.Errorf("%s (of %s): %d bytes, %v; want %d identical bytes", f.path, f.cluster, len(got), err, f.size)
		}
	}
	if !strings.Contains(r.stderr, fmt.Sprintf("got %d files", want)) {
		t.Errorf("rerun said %q; want %d files", r.stderr, want)
	}
	var found []string
	filepath.Walk(dir, func(p string, info os.FileInfo, err error) error {
		if err == nil && !info.IsDir() {
			rel, _ := filepath.Rel(dir, p)
			found = append(found, rel)
		}
		return nil
	})
	if len(found) != want {
		t.Errorf("DIR holds %v; want %d files", found, want)
	}
	r = run(t, args...)
	if r.code != 0 || !strings.Contains(r.stderr, fmt.Sprintf("0 fetched (0 resumed), %d already there and verified", want)) {
		t.Errorf("third run: exit %d: %s", r.code, r.stderr)
	}
	wantFail(t, run(t, "--addr", fed["A"].Addrs()[0], "get", "--from", "2018-05-01", "--to", "2018-04-01", dir), 2, "reversed")
	wantFail(t, run(t, "--addr", fed["A"].Addrs()[0], "get", "--from", "2018-04-01", "name", "out"), 2, "directory")
}
