// Package testenv gives tests the real servers they need. MongoDB tests run
// against FerretDB: the one named by DDSTORE_TEST_MONGO_URI, or else one this
// package starts from the binary that scripts/ferretdb-build.sh builds, on
// its SQLite backend (StartMongo) or on its PostgreSQL backend in front of a
// throwaway PostgreSQL cluster from Debian's postgresql package
// (StartMongoPostgres). Tests never skip because a server is missing: they
// fail and say how to get it.
package testenv

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"time"

	"github.com/ddstore/ddstore/internal/freeport"
)

// MongoURIEnv names the variable that points tests at a running server.
const MongoURIEnv = "DDSTORE_TEST_MONGO_URI"

// MongoPostgresURIEnv names the variable that points the tests of FerretDB's
// PostgreSQL backend at a running server.
const MongoPostgresURIEnv = "DDSTORE_TEST_MONGO_POSTGRES_URI"

// Mongo is a MongoDB-wire server for tests.
type Mongo struct {
	URI string
	// Postgres is the PostgreSQL cluster under a FerretDB that
	// StartMongoPostgres started (nil otherwise).
	Postgres *Postgres
	cmd      *exec.Cmd
	dir      string
	done     chan error
}

// StartMongo returns the server named by DDSTORE_TEST_MONGO_URI, or starts
// FerretDB on its SQLite backend on a free loopback port. Call Stop when the
// tests are done.
func StartMongo() (*Mongo, error) {
	if uri := os.Getenv(MongoURIEnv); uri != "" {
		return &Mongo{URI: uri}, nil
	}
	dir, err := os.MkdirTemp("", "ddstore-ferretdb-")
	if err != nil {
		return nil, err
	}
	return startFerretDB(dir, nil, "--handler=sqlite", "--sqlite-url=file:"+dir+"/")
}

// StartMongoPostgres returns the server named by
// DDSTORE_TEST_MONGO_POSTGRES_URI, or starts a throwaway PostgreSQL cluster
// (StartPostgres) and FerretDB on its PostgreSQL backend in front of it, as
// FerretDB is run in production. Stop stops both.
func StartMongoPostgres(ctx context.Context, opts PostgresOptions) (*Mongo, error) {
	if uri := os.Getenv(MongoPostgresURIEnv); uri != "" {
		return &Mongo{URI: uri}, nil
	}
	pg, err := StartPostgres(ctx, opts)
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "ddstore-ferretdb-")
	if err != nil {
		pg.Stop()
		return nil, err
	}
	return startFerretDB(dir, pg, "--handler=postgresql", "--postgresql-url="+pg.URL)
}

// startFerretDB starts FerretDB with the backend flags given, its state and
// log in dir, on a free loopback port. pg, if not nil, is stopped with it.
func startFerretDB(dir string, pg *Postgres, backend ...string) (*Mongo, error) {
	fail := func(err error) (*Mongo, error) {
		pg.Stop()
		os.RemoveAll(dir)
		return nil, err
	}
	bin, err := ferretdbBinary()
	if err != nil {
		return fail(err)
	}
	addr, err := freeport.Addr()
	if err != nil {
		return fail(err)
	}
	args := append(backend, "--state-dir="+dir,
		"--listen-addr="+addr, "--debug-addr=-", "--telemetry=disable", "--log-level=warn")
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), "DO_NOT_TRACK=1")
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	logf, err := os.Create(filepath.Join(dir, "ferretdb.log"))
	if err != nil {
		return fail(err)
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		logf.Close()
		return fail(fmt.Errorf("testenv: start FerretDB: %w", err))
	}
	m := &Mongo{URI: "mongodb://" + addr + "/", Postgres: pg, cmd: cmd, dir: dir, done: make(chan error, 1)}
	go func() { m.done <- cmd.Wait(); logf.Close() }()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
			c.Close()
			return m, nil
		}
		select {
		case err := <-m.done:
			m.done <- err
			log, _ := os.ReadFile(filepath.Join(dir, "ferretdb.log"))
			m.Stop()
			return nil, fmt.Errorf("testenv: FerretDB exited at start (%v): %s", err, log)
		case <-time.After(100 * time.Millisecond):
		}
	}
	m.Stop()
	return nil, errors.New("testenv: FerretDB did not accept connections within 30s")
}

// Stop stops a server this package started, and the PostgreSQL cluster
// under it.
func (m *Mongo) Stop() {
	if m == nil || m.cmd == nil {
		return
	}
	m.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-m.done:
	case <-time.After(10 * time.Second):
		m.cmd.Process.Kill()
		<-m.done
	}
	m.cmd = nil
	os.RemoveAll(m.dir)
	m.Postgres.Stop()
}

func ferretdbBinary() (string, error) {
	var tried []string
	if d := os.Getenv("TOOLS_DIR"); d != "" {
		tried = append(tried, filepath.Join(d, "ferretdb"))
	}
	if root, err := moduleRoot(); err == nil {
		tried = append(tried, filepath.Join(root, ".cache", "tools", "ferretdb"))
	}
	for _, p := range tried {
		if st, err := os.Stat(p); err == nil && !st.IsDir() {
			return p, nil
		}
	}
	if p, err := exec.LookPath("ferretdb"); err == nil {
		return p, nil
	}
	return "", fmt.Errorf("testenv: no FerretDB binary (looked in %v and PATH) and %s is not set: run `make test-deps` (or `make test`, which builds and starts it)", tried, MongoURIEnv)
}

func moduleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("no go.mod above the working directory")
		}
		dir = parent
	}
}

// Context returns a context for one test step, bounded by d.
func Context(d time.Duration) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), d)
}
