package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/ddstore/ddstore/internal/freeport"
	"github.com/ddstore/ddstore/internal/testenv"
	"github.com/ddstore/ddstore/replica"
)

// TestGridFSIndex runs `ddstore gridfs index` against a real PostgreSQL
// with FerretDB on it: the first run indexes the GridFS store's two tables
// and says to restart FerretDB (it set the database's settings); a second
// run, with --json (checked against docs/json-schema.json), finds them
// indexed and changes nothing. A node started with --ferretdb-postgres
// indexes its own store's tables at start and logs it. A DSN that does not
// parse is a usage error, a server that is not there an error: one line on
// stderr each.
func TestGridFSIndex(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()

	t.Run("errors", func(t *testing.T) {
		wantFail(t, run(t, "gridfs", "index"), 2, "--postgres")
		wantFail(t, run(t, "gridfs", "index", "--postgres", "postgres://u:secret@127.0.0.1:notaport/db"), 2, "bad postgresql dsn")
		r := run(t, "gridfs", "index", "--postgres", "postgres://postgres@127.0.0.1:1/ferretdb")
		wantFail(t, r, 1, "connection refused")
		if strings.Contains(r.stderr, "secret") {
			t.Errorf("the password shows: %q", r.stderr)
		}
	})

	m, err := testenv.StartMongoPostgres(ctx, testenv.PostgresOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(m.Stop)
	if m.Postgres == nil {
		t.Skipf("%s names a FerretDB whose PostgreSQL this test cannot reach", testenv.MongoPostgresURIEnv)
	}
	g, err := replica.OpenGridFS(ctx, m.URI, "ddstore_cli")
	if err != nil {
		t.Fatal(err)
	}
	g.Close()

	t0 := time.Now()
	r := run(t, "gridfs", "index", "--postgres", m.Postgres.URL)
	t.Logf("first run, %v:\n%s", time.Since(t0).Round(time.Millisecond), r.stdout)
	lines := strings.Split(strings.TrimRight(r.stdout, "\n"), "\n")
	if r.code != 0 || r.stderr != "" || len(lines) != 3 ||
		!strings.HasPrefix(lines[0], "indexed ddstore_cli.chunks_chunks_") || !strings.HasPrefix(lines[1], "indexed ddstore_cli.chunks_files_") ||
		!strings.Contains(lines[2], "2 FerretDB tables indexed now") || !strings.Contains(lines[2], "restart FerretDB") {
		t.Fatalf("first run: %+v", r)
	}

	schema := loadSchema(t)
	index := func() gridfsIndexJSON {
		t.Helper()
		r := run(t, "--json", "gridfs", "index", "--postgres", m.Postgres.URL)
		if _, err := schema.check("gridfs_index", r.stdout); r.code != 0 || err != nil {
			t.Fatalf("gridfs index --json: %v %+v", err, r)
		}
		var out gridfsIndexJSON
		if err := json.Unmarshal([]byte(r.stdout), &out); err != nil {
			t.Fatal(err)
		}
		return out
	}
	if out := index(); out.Database != "ferretdb" || len(out.Indexed) != 0 || len(out.Existing) != 2 || len(out.SettingsChanged) != 0 || out.RestartFerretDB {
		t.Fatalf("second run changed something: %+v", out)
	}

	// A node that indexes its store itself.
	ports, err := freeport.Get(2)
	if err != nil {
		t.Fatal(err)
	}
	srv := exec.CommandContext(ctx, exe, "server", "--id", "g1", "--listen", fmt.Sprintf("127.0.0.1:%d", ports[0]),
		"--raft-addr", fmt.Sprintf("127.0.0.1:%d", ports[1]), "--data-dir", filepath.Join(t.TempDir(), "g1"), "--bootstrap",
		"--replicas", "1", "--store", "gridfs", "--mongo-uri", m.URI, "--mongo-db", "ddstore_node",
		"--ferretdb-postgres", m.Postgres.URL, "--log-format", "json")
	var logs lockedBuffer
	srv.Stderr = &logs
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		srv.Process.Signal(syscall.SIGTERM)
		srv.Wait()
	}()
	var line map[string]any
	for deadline := time.Now().Add(time.Minute); line == nil; time.Sleep(50 * time.Millisecond) {
		for _, l := range strings.Split(logs.String(), "\n") {
			if strings.Contains(l, "PostgreSQL indexes") {
				json.Unmarshal([]byte(l), &line)
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("the node logged no index report within a minute:\n%s", logs.String())
		}
	}
	t.Logf("node: %v", line)
	indexed, _ := line["indexed"].([]any)
	if line["level"] != "INFO" || line["node"] != "g1" || len(indexed) != 2 || !strings.HasPrefix(fmt.Sprint(indexed[0]), "ddstore_node.chunks_chunks_") {
		t.Fatalf("the node's index report: %v", line)
	}
	if out := index(); len(out.Indexed) != 0 || len(out.Existing) != 4 {
		t.Fatalf("after the node: %+v", out)
	}
}

// lockedBuffer is a bytes.Buffer a child process writes to while the test
// reads it.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
