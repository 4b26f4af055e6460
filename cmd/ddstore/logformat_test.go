package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os/exec"
	"testing"
	"time"

	"github.com/ddstore/ddstore/internal/freeport"
)

// TestLogFormatJSON: `ddstore server --log-format json` writes one JSON
// object per line, Raft's lines among them at their own level with one
// timestamp; a bad format or level is a usage error.
func TestLogFormatJSON(t *testing.T) {
	wantFail(t, run(t, "server", "--log-format", "xml"), 2, "--log-format")
	wantFail(t, run(t, "server", "--log-level", "loud"), 2, "--log-level")

	ports, err := freeport.Get(2)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, exe, "server", "--id", "j1", "--bootstrap", "--data-dir", t.TempDir(),
		"--listen", fmt.Sprintf("127.0.0.1:%d", ports[0]), "--raft-addr", fmt.Sprintf("127.0.0.1:%d", ports[1]), "--log-format", "json")
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	sc := bufio.NewScanner(stderr)
	lines := 0
	for sc.Scan() {
		lines++
		var m map[string]any
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			t.Fatalf("line %d is not JSON: %q", lines, sc.Text())
		}
		if _, ok := m["time"]; !ok || m["level"] == nil || m["msg"] == nil {
			t.Fatalf("line %d lacks time, level or msg: %q", lines, sc.Text())
		}
		if m["component"] == "raft" && m["msg"] == "entering leader state" {
			if m["level"] != "INFO" || m["@timestamp"] != nil {
				t.Fatalf("Raft's line: %q", sc.Text())
			}
			return
		}
	}
	t.Fatalf("no Raft line 'entering leader state' in %d lines", lines)
}
