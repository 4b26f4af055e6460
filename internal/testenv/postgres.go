package testenv

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"syscall"
	"time"

	"github.com/ddstore/ddstore/internal/freeport"
	"github.com/ddstore/ddstore/replica/ferretpg"
)

// PostgresOptions tune the throwaway PostgreSQL cluster.
type PostgresOptions struct {
	// Durable keeps PostgreSQL's defaults (fsync on, synchronous commit),
	// as in production; otherwise fsync is off, which tests do not need.
	Durable bool
	// IDIndexPlanning sets, on the whole server from its start, the
	// settings the GIN indexes IndexIDs creates need to be used reliably
	// (ferretpg.Settings): FerretDB's prepared statements (`_jsonb->$1 @>
	// $2`) planned with their parameters, so that they match the indexes'
	// expression, and no sequential scan where an index serves (the planner
	// does not count the cost of detoasting every document a scan filters
	// on, so it prefers a scan of a collection of a few hundred large
	// documents, at seconds a lookup). IndexIDs also sets them on the
	// database, as in production, but FerretDB's connections opened before
	// would keep the defaults.
	IDIndexPlanning bool
}

// Postgres is a throwaway PostgreSQL cluster: initdb in a temporary
// directory, the postmaster on a free loopback port with trust
// authentication, and a database "ferretdb".
type Postgres struct {
	// URL is the database "ferretdb" as user postgres, over TCP on loopback.
	URL  string
	Addr string
	bin  string // the directory of initdb, postgres and psql
	dir  string
	cred *syscall.Credential // nil: run as this process's user
	cmd  *exec.Cmd
	done chan error
}

// postgresBinDir finds Debian's PostgreSQL server programs: the newest
// /usr/lib/postgresql/<version>/bin (the package does not put initdb and
// postgres on PATH), else the directory of initdb on PATH.
func postgresBinDir() (string, error) {
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	sort.Slice(dirs, func(i, j int) bool {
		vi, _ := strconv.Atoi(filepath.Base(filepath.Dir(dirs[i])))
		vj, _ := strconv.Atoi(filepath.Base(filepath.Dir(dirs[j])))
		return vi > vj
	})
	for _, d := range dirs {
		if st, err := os.Stat(filepath.Join(d, "postgres")); err == nil && st.Mode()&0o111 != 0 {
			return d, nil
		}
	}
	if p, err := exec.LookPath("initdb"); err == nil {
		if real, err := filepath.EvalSymlinks(p); err == nil {
			p = real
		}
		return filepath.Dir(p), nil
	}
	return "", errors.New("testenv: PostgreSQL is not installed (no /usr/lib/postgresql/*/bin/postgres, no initdb on PATH): run `make test-deps` (apt-get install postgresql)")
}

// postgresCredential is the user PostgreSQL runs as: itself refuses to run
// as root, so a root test process runs it as Debian's postgres user.
func postgresCredential() (*syscall.Credential, error) {
	if os.Geteuid() != 0 {
		return nil, nil
	}
	u, err := user.Lookup("postgres")
	if err != nil {
		return nil, fmt.Errorf("testenv: PostgreSQL cannot run as root and there is no postgres user (the postgresql package creates it: run `make test-deps`): %w", err)
	}
	uid, err := strconv.Atoi(u.Uid)
	if err != nil {
		return nil, fmt.Errorf("testenv: postgres uid %q: %w", u.Uid, err)
	}
	gid, err := strconv.Atoi(u.Gid)
	if err != nil {
		return nil, fmt.Errorf("testenv: postgres gid %q: %w", u.Gid, err)
	}
	return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}, nil
}

// StartPostgres creates and starts a throwaway PostgreSQL cluster. Call Stop
// when done: it stops the server and removes its files.
func StartPostgres(ctx context.Context, opts PostgresOptions) (*Postgres, error) {
	bin, err := postgresBinDir()
	if err != nil {
		return nil, err
	}
	cred, err := postgresCredential()
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "ddstore-postgres-")
	if err != nil {
		return nil, fmt.Errorf("testenv: postgres dir: %w", err)
	}
	p := &Postgres{bin: bin, dir: dir, cred: cred}
	fail := func(err error) (*Postgres, error) {
		p.Stop()
		return nil, err
	}
	if cred != nil {
		if err := os.Chown(dir, int(cred.Uid), int(cred.Gid)); err != nil {
			return fail(fmt.Errorf("testenv: postgres dir: %w", err))
		}
	}
	data := filepath.Join(dir, "data")
	if out, err := p.run(ctx, "initdb", "-D", data, "-U", "postgres", "--auth=trust", "-E", "UTF8", "--locale=C", "--no-sync"); err != nil {
		return fail(fmt.Errorf("testenv: initdb: %w: %s", err, out))
	}
	ports, err := freeport.Get(1)
	if err != nil {
		return fail(err)
	}
	p.Addr = fmt.Sprintf("127.0.0.1:%d", ports[0])
	args := []string{"-D", data, "-p", strconv.Itoa(ports[0]), "-c", "listen_addresses=127.0.0.1",
		"-c", "unix_socket_directories=" + dir, "-c", "max_connections=200", "-c", "log_min_messages=warning"}
	if opts.IDIndexPlanning {
		for _, set := range ferretpg.Settings() {
			args = append(args, "-c", set.String())
		}
	}
	if !opts.Durable {
		args = append(args, "-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off")
	}
	p.cmd = p.command("postgres", args...)
	logf, err := os.Create(filepath.Join(dir, "postgres.log"))
	if err != nil {
		return fail(fmt.Errorf("testenv: postgres log: %w", err))
	}
	p.cmd.Stdout, p.cmd.Stderr = logf, logf
	if err := p.cmd.Start(); err != nil {
		logf.Close()
		p.cmd = nil
		return fail(fmt.Errorf("testenv: start postgres: %w", err))
	}
	p.done = make(chan error, 1)
	go func() { p.done <- p.cmd.Wait(); logf.Close() }()
	if err := p.await(ctx); err != nil {
		log, _ := os.ReadFile(filepath.Join(dir, "postgres.log"))
		return fail(fmt.Errorf("%w; its log: %s", err, log))
	}
	if out, err := p.SQL(ctx, "postgres", "CREATE DATABASE ferretdb"); err != nil {
		return fail(fmt.Errorf("testenv: create database ferretdb: %w: %s", err, out))
	}
	p.URL = "postgres://postgres@" + p.Addr + "/ferretdb"
	return p, nil
}

// await waits until the server accepts connections.
func (p *Postgres) await(ctx context.Context) error {
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		if c, err := net.DialTimeout("tcp", p.Addr, time.Second); err == nil {
			c.Close()
			if _, err := p.SQL(ctx, "postgres", "SELECT 1"); err == nil {
				return nil
			}
		}
		select {
		case err := <-p.done:
			p.done <- err
			return fmt.Errorf("testenv: postgres exited at start: %v", err)
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
	return errors.New("testenv: postgres did not accept connections within 30s")
}

// command prepares one of PostgreSQL's programs, run as the postgres user
// when this process is root, and killed if this process dies.
func (p *Postgres) command(name string, args ...string) *exec.Cmd {
	cmd := exec.Command(filepath.Join(p.bin, name), args...)
	cmd.Dir = p.dir
	cmd.Env = append(os.Environ(), "LC_ALL=C", "PGTZ=UTC")
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Credential: p.cred}
	return cmd
}

func (p *Postgres) run(ctx context.Context, name string, args ...string) ([]byte, error) {
	cmd := p.command(name, args...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	done := make(chan error, 1)
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		return out.Bytes(), err
	case <-ctx.Done():
		cmd.Process.Kill()
		<-done
		return out.Bytes(), ctx.Err()
	}
}

// SQL runs statements with psql in database db and returns what psql
// printed (unaligned, tuples only), e.g. the plan of an EXPLAIN.
func (p *Postgres) SQL(ctx context.Context, db, sql string) (string, error) {
	out, err := p.run(ctx, "psql", "-h", p.dir, "-p", portOf(p.Addr), "-U", "postgres", "-d", db,
		"-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-c", sql)
	if err != nil {
		return string(out), fmt.Errorf("testenv: psql: %w: %s", err, out)
	}
	return string(out), nil
}

// IndexIDs runs ferretpg.EnsureIndexes on database ferretdb, as `ddstore
// gridfs index` does in production: a GIN index on the expression FerretDB's
// PostgreSQL backend filters _id with (`_jsonb->'_id' @> '"..."'`, which its
// own btree index on `_jsonb->'_id'` cannot serve) on every collection table
// FerretDB made that lacks one, each table analyzed, and the database
// settings. FerretDB does not know the indexes and needs no change.
func (p *Postgres) IndexIDs(ctx context.Context) error {
	if _, err := ferretpg.EnsureIndexes(ctx, p.URL, ferretpg.Options{Analyze: true}); err != nil {
		return fmt.Errorf("testenv: %w", err)
	}
	return nil
}

func portOf(addr string) string {
	_, port, _ := net.SplitHostPort(addr)
	return port
}

// Stop stops the server (a fast shutdown) and removes its files.
func (p *Postgres) Stop() {
	if p == nil {
		return
	}
	if p.cmd != nil && p.cmd.Process != nil {
		p.cmd.Process.Signal(syscall.SIGINT)
		select {
		case <-p.done:
		case <-time.After(15 * time.Second):
			p.cmd.Process.Kill()
			<-p.done
		}
		p.cmd = nil
	}
	if p.dir != "" {
		os.RemoveAll(p.dir)
	}
}
