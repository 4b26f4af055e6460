package main

import (
	"bytes"
	"context"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// readmeBlock returns the shell block of README.md that follows the marker
// comment "<!-- test: NAME".
func readmeBlock(t *testing.T, name string) string {
	t.Helper()
	raw, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, after, ok := strings.Cut(string(raw), "<!-- test: "+name)
	if !ok {
		t.Fatalf("README.md has no block marked %q", name)
	}
	_, after, _ = strings.Cut(after, "```sh\n")
	block, _, ok := strings.Cut(after, "```")
	if !ok {
		t.Fatalf("README.md block %q is not closed", name)
	}
	return block
}

// runScript runs script with bash in dir, the ddstore under test first in
// PATH, within timeout, and returns its stdout and stderr. Whatever it
// started in the background is stopped when it ends.
func runScript(t *testing.T, dir, script string, timeout time.Duration) (stdout, stderr string, err error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, "bash", "-c", script)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "PATH="+filepath.Dir(exe)+":"+os.Getenv("PATH"))
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	var outb, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &outb, &errb
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	waited := false
	select {
	case err = <-done:
		waited = true
	case <-ctx.Done():
		err = ctx.Err()
	}
	// The servers started with & are in the script's process group.
	syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM)
	time.Sleep(500 * time.Millisecond)
	syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	if !waited {
		<-done
	}
	return outb.String(), errb.String(), err
}

// TestReadmeSecureCluster runs the README's secure three-machine example as
// written (three loopback addresses stand for the machines): certificates
// made with the CLI, nodes with mutual TLS, an admin certificate and a
// scoped write token. Its last command must be refused.
func TestReadmeSecureCluster(t *testing.T) {
	block := strings.TrimRight(readmeBlock(t, "secure-cluster"), "\n")
	lines := strings.Split(block, "\n")
	last := lines[len(lines)-1]
	body := strings.Join(lines[:len(lines)-1], "\n")
	// The servers it starts in the background stop when the script ends.
	script := "trap 'kill $(jobs -p) 2>/dev/null; wait' EXIT\nset -e\n" + body + "\nset +e\n" + last + "\necho \"last exit: $?\"\n"

	dir := t.TempDir()
	readme, _ := os.ReadFile("../../README.md")
	if err := os.WriteFile(filepath.Join(dir, "README.md"), readme, 0o644); err != nil {
		t.Fatal(err)
	}
	out, errs, err := runScript(t, dir, script, 2*time.Minute)
	if err != nil || !strings.Contains(out, "last exit: 1") {
		t.Fatalf("the README block failed: %v\nstdout:\n%s\nstderr:\n%s", err, out, tail(errs, 4000))
	}
	if got, _ := os.ReadFile(filepath.Join(dir, "copy.md")); !bytes.Equal(got, readme) {
		t.Fatalf("copy.md differs from README.md (%d vs %d bytes)", len(got), len(readme))
	}
	var refusal []string
	for _, l := range strings.Split(errs, "\n") {
		if strings.HasPrefix(l, "ddstore: ") {
			refusal = append(refusal, l)
		}
	}
	if len(refusal) != 1 || !strings.Contains(refusal[0], "permission denied") || !strings.Contains(refusal[0], "weather/") {
		t.Fatalf("want exactly one CLI error, the refused put outside weather/; got %q", refusal)
	}
	if !strings.Contains(out, "n1") || !strings.Contains(out, "n3") {
		t.Errorf("status printed no members:\n%s", out)
	}
}

// TestReadmeTwoClusters runs the README's two-cluster example straight
// through, as a pasted script would (set -e: every command must succeed),
// on free loopback ports instead of 7500-7601, with bin/ddstore the binary
// under test: the file put into oslo is fetched through lyon at once, listed
// through lyon, and lyon's status shows oslo reachable.
func TestReadmeTwoClusters(t *testing.T) {
	block := readmeBlock(t, "two-clusters")
	dir := t.TempDir()
	if err := os.Mkdir(filepath.Join(dir, "bin"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(exe, filepath.Join(dir, "bin", "ddstore")); err != nil {
		t.Fatal(err)
	}
	for _, port := range []string{"7500", "7501", "7600", "7601"} {
		addr := "127.0.0.1:" + port
		if !strings.Contains(block, addr) {
			t.Fatalf("the README block no longer uses %s; update the test's port substitution:\n%s", addr, block)
		}
		block = strings.ReplaceAll(block, addr, freeLoopback(t))
	}
	script := "trap 'kill $(jobs -p) 2>/dev/null; wait' EXIT\nset -e\n" + block
	start := time.Now()
	out, errs, err := runScript(t, dir, script, time.Minute)
	took := time.Since(start)
	if err != nil {
		t.Fatalf("the README block failed after %s: %v\nscript:\n%s\nstdout:\n%s\nstderr:\n%s", took, err, script, out, tail(errs, 4000))
	}
	t.Logf("the two-cluster example ran in %s", took.Round(time.Millisecond))
	want, err := os.ReadFile(filepath.Join(dir, "results.tar"))
	if err != nil || len(want) == 0 {
		t.Fatalf("results.tar: %d bytes, %v", len(want), err)
	}
	if got, _ := os.ReadFile(filepath.Join(dir, "out.tar")); !bytes.Equal(got, want) {
		t.Fatalf("out.tar (fetched from oslo through lyon) differs from results.tar: %d vs %d bytes", len(got), len(want))
	}
	line := func(what string, words ...string) {
		t.Helper()
		for _, l := range strings.Split(out+"\n"+errs, "\n") {
			ok := true
			for _, w := range words {
				ok = ok && strings.Contains(l, w)
			}
			if ok {
				return
			}
		}
		t.Errorf("%s: no line with %q\nstdout:\n%s\nstderr:\n%s", what, words, out, tail(errs, 4000))
	}
	line("ls through lyon lists oslo's file of January", "results.tar", "oslo", "2026-01-15")
	line("put --cluster oslo through lyon", "stored data.bin")
	line("replicate to lyon", "replicated results.tar", "lyon")
	for _, l := range strings.Split(out, "\n") {
		if f := strings.Fields(l); len(f) > 1 && f[0] == "oslo" {
			if f[1] != "true" {
				t.Errorf("lyon's status shows oslo unreachable: %q", l)
			}
			return
		}
	}
	t.Errorf("lyon's status has no row for peer cluster oslo:\n%s", out)
}

// freeLoopback returns a loopback address with a port free at the moment.
func freeLoopback(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}
