package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ddstore/ddstore/internal/localcluster"
	"github.com/ddstore/ddstore/server/auth"
)

// TestSnapshotCLI runs ddstore snapshot save, inspect and restore against
// clusters of ddstore server processes: the catalog of a 3-node cluster with
// three files (one of many chunks) is saved, restored into a new cluster
// whose nodes got copies of the old chunk directories, and every file
// downloads byte-identical; a corrupted file, a non-empty catalog without
// --force and a read token are refused (the same snapshot again is a no-op), changing nothing.
func TestSnapshotCLI(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	dir := t.TempDir()
	old, err := localcluster.Start(ctx, localcluster.Options{Dir: filepath.Join(dir, "old"), Exe: exe, Cluster: "old"})
	if err != nil {
		t.Fatal(err)
	}
	defer old.Close()
	for k, v := range old.CLIEnv() {
		t.Setenv(k, v)
	}
	t.Setenv("DDSTORE_ADDR", strings.Join(old.Addrs(), ","))

	rng := rand.New(rand.NewPCG(14, 6))
	want := map[string][]byte{}
	for i, size := range []int{10 << 20, 5000, 1} {
		data := make([]byte, size)
		for j := range data {
			data[j] = byte(rng.Uint32())
		}
		in := filepath.Join(dir, fmt.Sprintf("in%d", i))
		if err := os.WriteFile(in, data, 0o644); err != nil {
			t.Fatal(err)
		}
		name := fmt.Sprintf("obs/f%d.bin", i)
		if r := run(t, "put", in, name); r.code != 0 {
			t.Fatalf("put: %+v", r)
		}
		want[name] = data
	}
	snap := filepath.Join(dir, "backup", "catalog.snap")
	if err := os.MkdirAll(filepath.Dir(snap), 0o755); err != nil {
		t.Fatal(err)
	}
	r := run(t, "--json", "snapshot", "save", snap)
	if r.code != 0 {
		t.Fatalf("snapshot save: %+v", r)
	}
	var saved snapshotSaveJSON
	if err := json.Unmarshal([]byte(r.stdout), &saved); err != nil {
		t.Fatalf("snapshot save --json: %v: %q", err, r.stdout)
	}
	t.Logf("snapshot save --json: %s", r.stdout)
	if saved.Files != 3 || saved.Index == 0 || saved.Term == 0 || saved.Cluster != "old" || saved.Size == 0 || saved.File != snap {
		t.Fatalf("saved %+v", saved)
	}
	r = run(t, "snapshot", "save", snap+".2")
	if r.code != 0 || !strings.Contains(r.stdout, "3 files") || !strings.Contains(r.stdout, "index") {
		t.Fatalf("snapshot save: %+v", r)
	}
	t.Logf("snapshot save: %s", r.stdout)
	if r = run(t, "snapshot", "inspect", snap); r.code != 0 || !strings.Contains(r.stdout, "good snapshot of cluster old") {
		t.Fatalf("snapshot inspect: %+v", r)
	}

	// A read token may not save.
	tok, err := old.Token(auth.RoleRead, "", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	tokFile := filepath.Join(dir, "read.token")
	if err := os.WriteFile(tokFile, []byte(tok), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("DDSTORE_CERT", "")
	t.Setenv("DDSTORE_KEY", "")
	r = run(t, "--token-file", tokFile, "snapshot", "save", filepath.Join(dir, "denied.snap"))
	t.Logf("read token: exit %d: %s", r.code, r.stderr)
	wantFail(t, r, 1, "permission denied")

	// The new cluster: copies of the old nodes' chunk stores, then the
	// restore.
	if err := old.Close(); err != nil {
		t.Fatal(err)
	}
	nc, err := localcluster.New(localcluster.Options{Dir: filepath.Join(dir, "new"), Exe: exe, Cluster: "new"})
	if err != nil {
		t.Fatal(err)
	}
	for i, m := range nc.Members {
		if err := os.CopyFS(filepath.Join(m.DataDir, "chunks"), os.DirFS(filepath.Join(old.Members[i].DataDir, "chunks"))); err != nil {
			t.Fatal(err)
		}
	}
	if err := nc.Launch(ctx); err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	for k, v := range nc.CLIEnv() {
		t.Setenv(k, v)
	}
	t.Setenv("DDSTORE_ADDR", strings.Join(nc.Addrs(), ","))
	filesNow := func() float64 {
		t.Helper()
		r := run(t, "--json", "status")
		var st map[string]any
		if err := json.Unmarshal([]byte(r.stdout), &st); r.code != 0 || err != nil {
			t.Fatalf("status --json: %v %+v", err, r)
		}
		f, _ := st["files"].(float64)
		return f
	}

	bad := filepath.Join(dir, "bad.snap")
	data, err := os.ReadFile(snap)
	if err != nil {
		t.Fatal(err)
	}
	data[len(data)/2] ^= 0x40
	if err := os.WriteFile(bad, data, 0o644); err != nil {
		t.Fatal(err)
	}
	r = run(t, "snapshot", "restore", bad)
	t.Logf("corrupted: exit %d: %s", r.code, r.stderr)
	wantFail(t, r, 1, "checksum")
	wantFail(t, run(t, "snapshot", "inspect", bad), 1, "checksum")
	if err := os.WriteFile(bad, data[:len(data)/3], 0o644); err != nil {
		t.Fatal(err)
	}
	r = run(t, "snapshot", "restore", bad)
	t.Logf("truncated: exit %d: %s", r.code, r.stderr)
	wantFail(t, r, 1, "truncated")
	if n := filesNow(); n != 0 {
		t.Fatalf("refused restores left %v files", n)
	}

	r = run(t, "snapshot", "restore", snap)
	if r.code != 0 || !strings.Contains(r.stdout, "3 files") {
		t.Fatalf("snapshot restore: %+v", r)
	}
	t.Logf("snapshot restore: %s", r.stdout)
	for name, data := range want {
		out := filepath.Join(dir, "out-"+filepath.Base(name))
		if r := run(t, "get", name, out); r.code != 0 {
			t.Fatalf("get %s: %+v", name, r)
		}
		got, err := os.ReadFile(out)
		if err != nil || !bytes.Equal(got, data) {
			t.Fatalf("%s: %d bytes (%v); want %d, identical", name, len(got), err, len(data))
		}
	}

	r = run(t, "snapshot", "restore", snap)
	if r.code != 0 || !strings.Contains(r.stdout, "nothing to do") {
		t.Fatalf("snapshot restore of the same snapshot again: %+v", r)
	}
	if r := run(t, "put", filepath.Join(dir, "in2"), "later"); r.code != 0 {
		t.Fatalf("put after the restore: %+v", r)
	}
	r = run(t, "snapshot", "restore", snap)
	t.Logf("non-empty: exit %d: %s", r.code, r.stderr)
	wantFail(t, r, 1, "--force")
	r = run(t, "--json", "snapshot", "restore", "--force", snap)
	var restored snapshotRestoreJSON
	if err := json.Unmarshal([]byte(r.stdout), &restored); r.code != 0 || err != nil {
		t.Fatalf("snapshot restore --force --json: %v %+v", err, r)
	}
	if restored.ReplacedFiles != 4 || restored.Files != 3 || restored.Already || restored.FromCluster != "old" || restored.FromIndex != saved.Index {
		t.Fatalf("restored %+v", restored)
	}
	if n := filesNow(); n != 3 {
		t.Fatalf("%v files after the forced restore", n)
	}
}

// TestSnapshotUsage: a snapshot command without its one FILE is a usage
// error (exit 2) naming the command; a file that is not a snapshot fails
// inspect (exit 1).
func TestSnapshotUsage(t *testing.T) {
	wantFail(t, run(t, "snapshot", "save"), 2, "snapshot save: want one file")
	wantFail(t, run(t, "snapshot", "restore", "a", "b"), 2, "snapshot restore: want one file")
	wantFail(t, run(t, "snapshot", "restore", "--bogus", "a"), 2, "unknown flag")
	notSnap := filepath.Join(t.TempDir(), "not.snap")
	if err := os.WriteFile(notSnap, []byte("DDSNAP1\nnot really"), 0o644); err != nil {
		t.Fatal(err)
	}
	wantFail(t, run(t, "snapshot", "inspect", notSnap), 1, "invalid snapshot")
}
