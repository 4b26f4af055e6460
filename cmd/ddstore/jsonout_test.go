package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ddstore/ddstore/internal/localcluster"
)

// runEnv runs the CLI with extra environment variables.
func runEnv(t *testing.T, env map[string]string, args ...string) result {
	t.Helper()
	for k, v := range env {
		t.Setenv(k, v)
	}
	return run(t, args...)
}

// TestJSONOutput runs every command that talks JSON with --json, against
// real clusters (two one-node clusters that are each other's peers, and a
// plain-text three-node cluster for join and leave), and checks each
// output against its definition in docs/json-schema.json: one object,
// hex hashes, numbers as numbers, every field present, RFC 3339 UTC times.
// (gridfs index --json is checked the same way by TestGridFSIndex, which
// starts the PostgreSQL and FerretDB it needs.)
func TestJSONOutput(t *testing.T) {
	schema := loadSchema(t)
	fed := startMesh(t, "A", "B")
	for k, v := range fed["A"].CLIEnv() {
		t.Setenv(k, v)
	}
	addr := fed["A"].Addrs()[0]
	dir := t.TempDir()
	data := make([]byte, 3<<20+123)
	rand.Read(data)
	in := filepath.Join(dir, "in.bin")
	if err := os.WriteFile(in, data, 0o644); err != nil {
		t.Fatal(err)
	}
	csv := filepath.Join(dir, "obs.csv")
	os.WriteFile(csv, []byte("time,temp\n2018-04-13T00:00:00Z,1\n2018-04-13T06:30:00Z,2\n"), 0o644)

	type step struct {
		def  string   // the schema definition
		args []string // after --addr A --json
		// check looks at the decoded output beyond the schema.
		check func(t *testing.T, v map[string]any)
	}
	num := func(v any) float64 { f, _ := v.(json.Number).Float64(); return f }
	steps := []step{
		{"version", []string{"version"}, nil},
		{"put", []string{"put", "--meta", "owner=ops", "--date", "2026-11-01", in, "data/in.bin"}, func(t *testing.T, v map[string]any) {
			if num(v["size"]) != float64(len(data)) || v["date"] != "2026-11-01" || v["time_from"] != "2026-11-01T00:00:00Z" || num(v["retries"]) != 0 {
				t.Errorf("put: %v", v)
			}
		}},
		{"put", []string{"put", csv, "wx/obs.csv"}, func(t *testing.T, v map[string]any) {
			if v["time_from"] != "2018-04-13T00:00:00Z" || v["time_to"] != "2018-04-13T06:30:00Z" || v["time_source"] != "data: csv column time" {
				t.Errorf("put of a CSV: %v", v)
			}
		}},
		{"put", []string{"put", in, "data/again.bin"}, func(t *testing.T, v map[string]any) {
			if num(v["chunks_sent"]) != 0 || num(v["chunks_known"]) != num(v["chunks"]) || num(v["bytes_sent"]) != 0 {
				t.Errorf("re-put of the same bytes sent some: %v", v)
			}
		}},
		{"get", []string{"get", "data/in.bin", filepath.Join(dir, "out.bin")}, func(t *testing.T, v map[string]any) {
			if num(v["size"]) != float64(len(data)) || num(v["kept_bytes"]) != 0 {
				t.Errorf("get: %v", v)
			}
		}},
		{"get_range", []string{"get", "--from", "2018-04-13", "--to", "2018-04-13T23:00Z", filepath.Join(dir, "range")}, func(t *testing.T, v map[string]any) {
			if num(v["files"]) != 1 || num(v["fetched"]) != 1 || len(v["failures"].([]any)) != 0 {
				t.Errorf("get --from --to: %v", v)
			}
		}},
		{"ls", []string{"ls", "data/"}, func(t *testing.T, v map[string]any) {
			if files := v["files"].([]any); len(files) != 2 || files[0].(map[string]any)["cluster"] != "A" {
				t.Errorf("ls: %v", v)
			}
		}},
		{"ls", []string{"ls", "no/such/prefix"}, func(t *testing.T, v map[string]any) {
			if files := v["files"].([]any); len(files) != 0 {
				t.Errorf("ls of nothing: %v", v)
			}
		}},
		{"stat", []string{"stat", "data/in.bin"}, func(t *testing.T, v map[string]any) {
			if v["metadata"].(map[string]any)["owner"] != "ops" || len(v["chunk_list"].([]any)) != int(num(v["chunks"])) {
				t.Errorf("stat: %v", v)
			}
		}},
		{"status", []string{"status"}, func(t *testing.T, v map[string]any) {
			if v["cluster"] != "A" || len(v["nodes"].([]any)) != 1 || len(v["peers"].([]any)) != 1 || num(v["files"]) != 3 {
				t.Errorf("status: %v", v)
			}
		}},
		{"replicate", []string{"replicate", "data/in.bin", "--to", "B"}, func(t *testing.T, v map[string]any) {
			if num(v["sent_chunks"]) == 0 || v["file"].(map[string]any)["cluster"] != "B" {
				t.Errorf("replicate: %v", v)
			}
		}},
		{"rm", []string{"rm", "data/again.bin", "wx/obs.csv"}, func(t *testing.T, v map[string]any) {
			if len(v["removed"].([]any)) != 2 || len(v["not_found"].([]any)) != 0 {
				t.Errorf("rm: %v", v)
			}
		}},
		{"gc", []string{"gc", "--dry-run"}, nil},
		{"gc", []string{"gc", "--now"}, nil},
		{"repair", []string{"repair"}, nil},
		{"snapshot", []string{"snapshot", "save", filepath.Join(dir, "a.snap")}, func(t *testing.T, v map[string]any) {
			if v["cluster"] != "A" || num(v["files"]) != 1 {
				t.Errorf("snapshot save: %v", v)
			}
		}},
		{"snapshot", []string{"snapshot", "inspect", filepath.Join(dir, "a.snap")}, nil},
		{"snapshot_restore", []string{"snapshot", "restore", "--force", filepath.Join(dir, "a.snap")}, nil},
		{"token_create", []string{"token", "create", "--cluster", "A", "--role", "read", "--prefix", "wx/", "--ttl", "1h", "--ca-dir", filepath.Join(dir, "certs")}, nil},
		{"cert", []string{"cert", "client", "--cluster", "A", "--name", "alice", "--role", "write", "--ca-dir", filepath.Join(dir, "certs"), "--out", filepath.Join(dir, "alice")}, nil},
	}
	// Commands that write files of their own: a CA first, and a token for
	// the S3 key.
	for _, pre := range []step{
		{"cert", []string{"cert", "ca", "--cluster", "A", "--dir", filepath.Join(dir, "certs")}, nil},
		{"cert", []string{"cert", "node", "--cluster", "A", "--id", "n9", "--host", "127.0.0.1", "--ca-dir", filepath.Join(dir, "certs"), "--out", filepath.Join(dir, "n9")}, nil},
	} {
		steps = append([]step{pre}, steps...)
	}
	steps[0], steps[1] = steps[1], steps[0] // the CA before the node certificate
	for _, st := range steps {
		r := run(t, append([]string{"--addr", addr, "--json"}, st.args...)...)
		if r.code != 0 {
			t.Fatalf("%v: exit %d: %s", st.args, r.code, r.stderr)
		}
		v, err := schema.check(st.def, r.stdout)
		if err != nil {
			t.Fatalf("%v --json: %v\n%s", st.args, err, r.stdout)
		}
		if st.check != nil {
			st.check(t, v.(map[string]any))
		}
		t.Logf("%s: %d fields, valid", strings.Join(st.args[:1], " "), len(v.(map[string]any)))
	}

	// s3 key create binds a key to a token.
	r := run(t, "--json", "token", "create", "--cluster", "A", "--role", "read", "--ttl", "1h", "--ca-dir", filepath.Join(dir, "certs"))
	var tok struct{ Token string }
	if json.Unmarshal([]byte(r.stdout), &tok); tok.Token == "" {
		t.Fatalf("token create --json: %+v", r)
	}
	os.WriteFile(filepath.Join(dir, "tok"), []byte(tok.Token), 0o600)
	r = run(t, "--json", "s3", "key", "create", "--token-file", filepath.Join(dir, "tok"), "--keys", filepath.Join(dir, "keys.json"))
	if _, err := schema.check("s3_key_create", r.stdout); r.code != 0 || err != nil {
		t.Fatalf("s3 key create --json: %v %+v", err, r)
	}

	// rm of a name that is not there: the object lists it, exit 1.
	r = run(t, "--addr", addr, "--json", "rm", "data/in.bin", "nothing/here")
	v, err := schema.check("rm", r.stdout)
	if r.code != 1 || err != nil || len(v.(map[string]any)["not_found"].([]any)) != 1 || strings.Count(r.stderr, "\n") != 1 {
		t.Fatalf("rm with a missing name: %v %+v", err, r)
	}

	// join and leave, on a plain-text cluster of three.
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cl, err := localcluster.Start(ctx, localcluster.Options{Dir: filepath.Join(dir, "plain"), Insecure: true, Fast: true})
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	for _, k := range []string{"DDSTORE_CA", "DDSTORE_CERT", "DDSTORE_KEY", "DDSTORE_TOKEN"} {
		t.Setenv(k, "")
	}
	third := cl.Members[2]
	plain := strings.Join(cl.Addrs()[:2], ",")
	for _, st := range []step{
		{"leave", []string{"leave", third.ID}, nil},
		{"join", []string{"join", third.ID, third.APIAddr, third.RaftAddr}, nil},
	} {
		r := run(t, append([]string{"--addr", plain, "--json"}, st.args...)...)
		if _, err := schema.check(st.def, r.stdout); r.code != 0 || err != nil {
			t.Fatalf("%v --json: %v %+v", st.args, err, r)
		}
	}
}

// TestDailyUse: rm of several names, get refusing to overwrite, Ctrl-C
// during get, and error messages that say a thing once, against a one-node
// cluster run as a child process.
func TestDailyUse(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	dir := t.TempDir()
	cl, err := localcluster.Start(ctx, localcluster.Options{Nodes: 1, Replicas: 1, Dir: filepath.Join(dir, "cluster"), Exe: exe, Insecure: true, Fast: true})
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	addr := cl.Addrs()[0]
	small := filepath.Join(dir, "small")
	os.WriteFile(small, []byte("a few bytes"), 0o644)
	for _, n := range []string{"a", "b", "c", "d"} {
		if r := run(t, "--addr", addr, "put", small, n); r.code != 0 {
			t.Fatalf("put %s: %+v", n, r)
		}
	}

	t.Run("rm several", func(t *testing.T) {
		r := run(t, "--addr", addr, "rm", "a", "b")
		if r.code != 0 || r.stdout != "removed a\nremoved b\n" || r.stderr != "" {
			t.Fatalf("rm a b: %+v", r)
		}
		r = run(t, "--addr", addr, "rm", "c", "a", "ghost")
		lines := strings.Split(strings.TrimRight(r.stderr, "\n"), "\n")
		if r.code != 1 || r.stdout != "removed c\n" || len(lines) != 2 || !strings.HasPrefix(lines[0], "ddstore: rm a: not found") || !strings.HasPrefix(lines[1], "ddstore: rm ghost: not found") {
			t.Fatalf("rm c a ghost: %+v", r)
		}
		r = run(t, "--addr", addr, "--json", "rm", "d", "ghost")
		var out rmJSON
		if err := json.Unmarshal([]byte(r.stdout), &out); err != nil || r.code != 1 || len(out.Removed) != 1 || out.Removed[0] != "d" || len(out.NotFound) != 1 || out.NotFound[0] != "ghost" || len(out.Failed) != 0 {
			t.Fatalf("rm --json d ghost: %v %+v", err, r)
		}
		wantFail(t, run(t, "--addr", addr, "rm"), 2, "at least 1 arg")
	})

	data := make([]byte, 96<<20)
	rand.Read(data)
	big := filepath.Join(dir, "big")
	os.WriteFile(big, data, 0o644)
	if r := run(t, "--addr", addr, "put", big, "big"); r.code != 0 {
		t.Fatalf("put big: %+v", r)
	}

	t.Run("get refuses to overwrite", func(t *testing.T) {
		out := filepath.Join(dir, "exists")
		os.WriteFile(out, []byte("keep me"), 0o644)
		r := run(t, "--addr", addr, "get", "d-gone-or-not", out)
		wantFail(t, r, 2, "--force")
		if !strings.Contains(r.stderr, "--resume") {
			t.Fatalf("the refusal does not name --resume: %q", r.stderr)
		}
		if got, _ := os.ReadFile(out); string(got) != "keep me" {
			t.Fatal("the refused get touched the file")
		}
		if r := run(t, "--addr", addr, "put", small, "s"); r.code != 0 {
			t.Fatal(r.stderr)
		}
		if r := run(t, "--addr", addr, "get", "--force", "s", out); r.code != 0 {
			t.Fatalf("get --force: %+v", r)
		}
		if got, _ := os.ReadFile(out); string(got) != "a few bytes" {
			t.Fatal("get --force did not overwrite")
		}
	})

	t.Run("ctrl-c during get", func(t *testing.T) {
		// Stop the node once the download has begun, so that the get is
		// mid-file when it is interrupted.
		out := filepath.Join(dir, "big.out")
		var (
			r       result
			stopped bool
		)
		for attempt := 0; attempt < 3 && !stopped; attempt++ {
			os.Remove(out)
			cmd := exec.Command(exe, "--addr", addr, "get", "big", out)
			var stdout, stderr bytes.Buffer
			cmd.Stdout, cmd.Stderr = &stdout, &stderr
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(time.Millisecond) {
				if st, err := os.Stat(out); err == nil && st.Size() >= 16<<20 {
					break
				}
			}
			cl.Pause(0)
			if st, err := os.Stat(out); err == nil && st.Size() > 0 && st.Size() < int64(len(data)) {
				stopped = true
			}
			time.Sleep(200 * time.Millisecond)
			cmd.Process.Signal(syscall.SIGINT)
			err := cmd.Wait()
			cl.Resume(0)
			r = result{stdout: stdout.String(), stderr: stderr.String()}
			if ee, ok := err.(*exec.ExitError); ok {
				r.code = ee.ExitCode()
			}
		}
		if !stopped {
			t.Skip("the download finished before the node could be stopped, three times")
		}
		wantFail(t, r, 130, "interrupted")
		if !strings.Contains(r.stderr, "resume with ddstore get --resume big "+out+"\n") {
			t.Fatalf("after Ctrl-C: %q does not say how to resume", r.stderr)
		}
		t.Logf("after Ctrl-C: exit %d, %s", r.code, strings.TrimSpace(r.stderr))
		wantFail(t, run(t, "--addr", addr, "get", "big", out), 2, "--resume")
		r = run(t, "--addr", addr, "get", "--resume", "big", out)
		if got, _ := os.ReadFile(out); r.code != 0 || !bytes.Equal(got, data) {
			t.Fatalf("get --resume after Ctrl-C: %+v", r)
		}
		if !strings.Contains(r.stderr, "resumed at chunk") {
			t.Errorf("the resumed get kept nothing: %q", r.stderr)
		}
	})

	t.Run("errors said once", func(t *testing.T) {
		r := run(t, "--addr", addr, "stat", "nothing")
		wantFail(t, r, 1, "stat nothing: not found: no file named")
		if strings.Count(r.stderr, "not found") != 1 || strings.Contains(r.stderr, "catalog:") {
			t.Fatalf("stat of a missing name: %q", r.stderr)
		}
		other := filepath.Join(dir, "other")
		os.WriteFile(other, []byte("other bytes"), 0o644)
		r = run(t, "--addr", addr, "put", other, "s") // s holds different bytes
		wantFail(t, r, 1, "(give --overwrite to replace it)")
		if strings.Count(r.stderr, "exists") != 1 || strings.Contains(r.stderr, "catalog:") {
			t.Fatalf("put of a name taken: %q", r.stderr)
		}
	})
}

// TestNoNodeAnswers: when nothing listens at --addr, or the name does not
// resolve, the one line says so and what to check.
func TestNoNodeAnswers(t *testing.T) {
	tests := []struct {
		name, addr, cause string
		args              []string
	}{
		{"refused", "127.0.0.1:1", "connection refused", []string{"ls"}},
		{"several refused", "127.0.0.1:1,127.0.0.1:2", "connection refused", []string{"rm", "x", "y"}},
		{"no such host", "no-such-host.invalid:7400", "no such host", []string{"status"}},
		{"get", "127.0.0.1:1", "connection refused", []string{"get", "x", filepath.Join(t.TempDir(), "x")}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := runEnv(t, map[string]string{"DDSTORE_CA": "", "DDSTORE_TOKEN": ""}, append([]string{"--addr", tt.addr, "--timeout", "5s"}, tt.args...)...)
			wantFail(t, r, 1, "no node answered at "+tt.addr+" ("+tt.cause+"): is the cluster running? check --addr / ddstore_addr")
		})
	}
}

// TestPutRetryLines: a put whose every attempt finds no node retries three
// times (250 ms, 500 ms, 1 s apart at least) and says so in at most one
// line a second, then fails with the no-node hint.
func TestPutRetryLines(t *testing.T) {
	f := filepath.Join(t.TempDir(), "f")
	os.WriteFile(f, []byte("some bytes"), 0o644)
	t.Setenv("DDSTORE_CA", "")
	t.Setenv("DDSTORE_TOKEN", "")
	start := time.Now()
	r := run(t, "--addr", "127.0.0.1:1", "put", "--retries", "3", f, "f")
	took := time.Since(start)
	lines := strings.Split(strings.TrimRight(r.stderr, "\n"), "\n")
	notices := lines[:len(lines)-1]
	if r.code != 1 || !strings.Contains(lines[len(lines)-1], "no node answered at 127.0.0.1:1 (connection refused): is the cluster running?") {
		t.Fatalf("put with no node: %+v", r)
	}
	if took < 1750*time.Millisecond || len(notices) < 1 || len(notices) > 1+int(took/time.Second) {
		t.Fatalf("%d notice lines for 3 retries in %v:\n%s", len(notices), took, r.stderr)
	}
	for _, l := range notices {
		if !strings.HasPrefix(l, "ddstore: put interrupted (no node answered at 127.0.0.1:1 (connection refused)); retrying (") && !strings.HasPrefix(l, "ddstore: put: retried ") {
			t.Errorf("notice %q", l)
		}
	}
	t.Logf("3 retries in %v: %d lines\n%s", took.Round(time.Millisecond), len(lines), r.stderr)
}

// TestRetryLog: put's retry notices are one line a second at most; those in
// between are counted into the next line or the last one.
func TestRetryLog(t *testing.T) {
	ms := func(n int) time.Duration { return time.Duration(n) * time.Millisecond }
	tests := []struct {
		name  string
		at    []time.Duration // when each retry happens
		lines []string        // regexps of the lines printed, flush included
	}{
		{"one", []time.Duration{0}, []string{`^ddstore: put interrupted \(E0\); retrying \(1\), sending only what is missing$`}},
		{"three in 0.14 s", []time.Duration{0, ms(70), ms(140)}, []string{
			`retrying \(1\)`,
			`^ddstore: put: retried 2 more times \(last: E2\); 3 retries in all$`,
		}},
		{"spread out", []time.Duration{0, ms(1000), ms(2500)}, []string{`retrying \(1\)`, `retrying \(2\)`, `retrying \(3\)`}},
		{"burst then later", []time.Duration{0, ms(100), ms(200), ms(1300)}, []string{
			`retrying \(1\)`,
			`\(E3\); retrying \(4, 2 more since the last line\)`,
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var buf bytes.Buffer
			start := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
			var now time.Time
			l := newRetryLog(&buf, func() time.Time { return now })
			for i, d := range tt.at {
				now = start.Add(d)
				l.retry("E" + string(rune('0'+i)))
			}
			l.flush()
			got := strings.Split(strings.TrimRight(buf.String(), "\n"), "\n")
			if len(got) != len(tt.lines) {
				t.Fatalf("%d lines, want %d:\n%s", len(got), len(tt.lines), buf.String())
			}
			for i, re := range tt.lines {
				if !regexp.MustCompile(re).MatchString(got[i]) {
					t.Errorf("line %d %q does not match %s", i, got[i], re)
				}
			}
		})
	}
	if d := []time.Duration{retryBackoff(0), retryBackoff(1), retryBackoff(2), retryBackoff(3), retryBackoff(10)}; d[0] != ms(250) || d[2] != time.Second || d[4] != 2*time.Second {
		t.Errorf("backoff %v", d)
	}
}

func TestTidy(t *testing.T) {
	for _, tt := range []struct{ in, want string }{
		{`stat x: not found: catalog: not found: no file named "x"`, `stat x: not found: no file named "x"`},
		{`rm x: not found: catalog: not found`, `rm x: not found`},
		{`put x: already exists: catalog: already exists: file "x" (use overwrite to replace it)`, `put x: already exists: file "x" (give --overwrite to replace it)`},
		{`put x: invalid argument: catalog: invalid: name "/x" is absolute`, `put x: invalid argument: name "/x" is absolute`},
		{`get x: not found: no file named "x" in cluster A`, `get x: not found: no file named "x" in cluster A`},
	} {
		if got := tidy(tt.in); got != tt.want {
			t.Errorf("tidy(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestHumanSize(t *testing.T) {
	for _, tt := range []struct {
		n    int64
		want string
	}{
		{0, "0 B"}, {1023, "1023 B"}, {1024, "1.00 KiB"}, {1536, "1.50 KiB"}, {24<<20 + 12345, "24.0 MiB"},
		{100 << 20, "100.0 MiB"}, {1 << 30, "1.00 GiB"}, {5 << 40, "5.00 TiB"}, {3 << 50, "3072.0 TiB"},
	} {
		if got := humanSize(tt.n); got != tt.want {
			t.Errorf("humanSize(%d) = %q, want %q", tt.n, got, tt.want)
		}
	}
}
