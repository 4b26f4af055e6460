package main

import (
	"bytes"
	"context"
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
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "bash", "-c", script)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "PATH="+filepath.Dir(exe)+":"+os.Getenv("PATH"))
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Start()
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err = <-done:
	case <-ctx.Done():
		err = ctx.Err()
	}
	// The servers started with & are in the script's process group.
	syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM)
	time.Sleep(500 * time.Millisecond)
	syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)

	out, errs := stdout.String(), stderr.String()
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
