// Package localcluster starts a ddstore cluster on loopback, for tests, the
// demo and the benchmarks: its nodes run in this process (server.Start) or, to
// measure them apart, as child processes of the ddstore binary.
package localcluster

import (
	"bufio"
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/ddstore/ddstore/client"
	"github.com/ddstore/ddstore/internal/freeport"
	pb "github.com/ddstore/ddstore/proto/ddstore/v1"
	"github.com/ddstore/ddstore/server"
)

// Options describe the cluster to start.
type Options struct {
	Nodes    int    // default 3
	Dir      string // data directories go under it (required)
	Replicas int    // R; default 3
	Store    string // "pack" (default), "local" or "gridfs"
	MongoURI string // for gridfs: each node gets its own database
	// Exe, when set, is a ddstore binary: nodes run as child processes
	// ("Exe server ...") logging to Dir/<id>.log. Otherwise they run here.
	Exe    string
	Logger *slog.Logger // in-process nodes; default: discard
	// Fast shortens Raft's timeouts so tests see elections sooner.
	Fast bool
	// Tune, if set, adjusts each in-process node's config (cache tiers,
	// healing intervals, ...) before it starts.
	Tune func(*server.Config)
	// Args are extra `ddstore server` flags for child-process nodes.
	Args []string

	// Cluster is the cluster's name; default "ddstore".
	Cluster string
	// Insecure runs the cluster in plain text. By default it gets a
	// throwaway CA (Dir/certs) and every link is mutual TLS; clients from
	// Client, ClientOptions and CLIArgs hold an admin certificate.
	Insecure bool
	// PeerCA returns the CA certificate of a peer cluster the nodes name
	// (Config.Peers, set by Tune): the CA of that cluster's Cluster.
	PeerCA func(cluster string) *x509.Certificate
	// Callers names clusters that are not peers (this cluster does not call
	// them) but whose nodes may call this one: their CA is trusted too.
	Callers []string
}

// Member is one node of the cluster.
type Member struct {
	ID, APIAddr, RaftAddr, DataDir string

	Node *server.Node // in-process nodes, while running
	cmd  *exec.Cmd    // child processes, while running
	exit chan error
}

// Cluster is a running local cluster.
type Cluster struct {
	opts     Options
	sec      *security // nil: insecure
	dbPrefix string    // GridFS databases: <dbPrefix>_<id>, fresh for each cluster
	Members  []*Member
}

// Start starts the nodes: the first bootstraps, the others join through it.
// It returns once every node is a registered member and a leader is known.
// A node that could not listen on a port it was given (another socket took
// it between planning and binding) has the cluster planned again on other
// ports, up to three times.
func Start(ctx context.Context, opts Options) (*Cluster, error) {
	for attempt := 1; ; attempt++ {
		c, err := New(opts)
		if err != nil {
			return nil, err
		}
		err = c.Launch(ctx)
		if err == nil {
			return c, nil
		}
		if attempt == 3 || !PortTaken(err, opts.Dir) {
			return nil, err
		}
		for _, m := range c.Members {
			os.RemoveAll(m.DataDir)
			os.Remove(filepath.Join(opts.Dir, m.ID+".log"))
		}
	}
}

// PortTaken says whether a cluster failed to start because a port was in
// use: the error says so (nodes in this process), or a node's log in dir
// does (child processes, whose failure shows as a cluster never ready).
func PortTaken(err error, dir string) bool {
	const inUse = "address already in use"
	if strings.Contains(err.Error(), inUse) {
		return true
	}
	if dir == "" {
		return false
	}
	logs, _ := filepath.Glob(filepath.Join(dir, "*.log"))
	for _, l := range logs {
		if b, err := os.ReadFile(l); err == nil && strings.Contains(string(b), inUse) {
			return true
		}
	}
	return false
}

// New plans a cluster, choosing its members' addresses, without starting
// it; Launch starts it. Several clusters that name each other as peers are
// planned first, then launched.
func New(opts Options) (*Cluster, error) {
	if opts.Dir == "" {
		return nil, errors.New("localcluster: Dir is required")
	}
	if opts.Nodes == 0 {
		opts.Nodes = 3
	}
	if opts.Replicas == 0 {
		opts.Replicas = 3
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Cluster == "" {
		opts.Cluster = "ddstore"
	}
	c := &Cluster{opts: opts, dbPrefix: "ddstore_" + strconv.FormatInt(time.Now().UnixNano(), 36)}
	if !opts.Insecure {
		sec, err := newSecurity(opts.Cluster, opts.Dir)
		if err != nil {
			return nil, fmt.Errorf("localcluster: certificates: %w", err)
		}
		c.sec = sec
	}
	for i := range opts.Nodes {
		ports, err := FreePorts(2)
		if err != nil {
			return nil, err
		}
		id := fmt.Sprintf("node%d", i+1)
		c.Members = append(c.Members, &Member{
			ID:       id,
			APIAddr:  fmt.Sprintf("127.0.0.1:%d", ports[0]),
			RaftAddr: fmt.Sprintf("127.0.0.1:%d", ports[1]),
			DataDir:  filepath.Join(opts.Dir, id),
		})
	}
	return c, nil
}

// Launch starts a planned cluster and waits until it is ready.
func (c *Cluster) Launch(ctx context.Context) error {
	opts := c.opts
	for i := range c.Members {
		if err := c.StartNode(ctx, i); err != nil {
			c.Close()
			return err
		}
	}
	if err := c.WaitReady(ctx, opts.Nodes); err != nil {
		c.Close()
		return err
	}
	return nil
}

// Addrs lists the API addresses of all members.
func (c *Cluster) Addrs() []string {
	out := make([]string, len(c.Members))
	for i, m := range c.Members {
		out[i] = m.APIAddr
	}
	return out
}

// Client returns a client that knows every member.
func (c *Cluster) Client(opts ...client.Option) (*client.Client, error) {
	return client.New(c.Addrs(), append(c.ClientOptions(), opts...)...)
}

// StartNode starts member i (again): the first member bootstraps, the others
// join through it; a member with state simply rejoins.
func (c *Cluster) StartNode(ctx context.Context, i int) error {
	m := c.Members[i]
	cfg := server.Config{
		ID: m.ID, APIAddr: m.APIAddr, RaftAddr: m.RaftAddr, DataDir: m.DataDir,
		Bootstrap: i == 0, Store: c.opts.Store, MongoURI: c.opts.MongoURI,
		Replicas: c.opts.Replicas, Logger: c.opts.Logger, ShutdownGrace: 5 * time.Second, Cluster: c.opts.Cluster,
	}
	if c.opts.Store == "gridfs" {
		cfg.MongoDB = c.dbPrefix + "_" + m.ID
	}
	if i > 0 {
		cfg.Join = []string{c.Members[0].APIAddr}
		for _, o := range c.Members[1:] {
			if o != m {
				cfg.Join = append(cfg.Join, o.APIAddr)
			}
		}
	}
	if c.opts.Fast {
		cfg.HeartbeatTimeout = 300 * time.Millisecond
		cfg.ElectionTimeout = 300 * time.Millisecond
		cfg.LeaderLeaseTimeout = 150 * time.Millisecond
	}
	if c.opts.Exe == "" {
		if c.opts.Tune != nil {
			c.opts.Tune(&cfg)
		}
		if c.sec != nil && cfg.TLS == nil {
			trust, err := c.sec.nodeTrust(m.ID, c.trusted(cfg.Peers), c.opts.PeerCA)
			if err != nil {
				return err
			}
			cfg.TLS = trust
		}
		n, err := server.Start(ctx, cfg)
		if err != nil {
			return err
		}
		m.Node = n
		return nil
	}
	args := []string{"server", "--id", cfg.ID, "--listen", cfg.APIAddr, "--raft-addr", cfg.RaftAddr,
		"--data-dir", cfg.DataDir, "--replicas", strconv.Itoa(cfg.Replicas), "--store", orDefault(cfg.Store, "pack"),
		"--shutdown-grace", cfg.ShutdownGrace.String()}
	if cfg.Bootstrap {
		args = append(args, "--bootstrap")
	}
	if len(cfg.Join) > 0 {
		args = append(args, "--join", strings.Join(cfg.Join, ","))
	}
	if cfg.MongoURI != "" {
		args = append(args, "--mongo-uri", cfg.MongoURI, "--mongo-db", cfg.MongoDB)
	}
	if c.sec != nil {
		tlsArgs, err := c.sec.args(m.ID, c.trusted(peersIn(c.opts.Args)), c.opts.PeerCA)
		if err != nil {
			return err
		}
		args = append(args, tlsArgs...)
	}
	args = append(args, c.opts.Args...)
	if err := os.MkdirAll(c.opts.Dir, 0o755); err != nil {
		return err
	}
	logf, err := os.OpenFile(filepath.Join(c.opts.Dir, m.ID+".log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	cmd := exec.Command(c.opts.Exe, args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return fmt.Errorf("localcluster: start %s: %w", m.ID, err)
	}
	m.cmd, m.exit = cmd, make(chan error, 1)
	go func() { m.exit <- cmd.Wait(); logf.Close() }()
	return nil
}

func orDefault(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

// WaitReady waits until the cluster reports a leader and want members, each
// with a registered address, answering.
func (c *Cluster) WaitReady(ctx context.Context, want int) error {
	cl, err := client.New(c.runningAddrs(), c.ClientOptions()...)
	if err != nil {
		return err
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	var last error
	for {
		sctx, scancel := context.WithTimeout(ctx, 2*time.Second)
		st, err := cl.Status(sctx)
		scancel()
		if err == nil {
			ok := st.GetLeaderId() != "" && len(st.GetNodes()) >= want
			for _, n := range st.GetNodes() {
				if n.GetApiAddr() == "" || n.GetState() == "unreachable" || n.GetState() == "unknown" {
					ok = false
				}
			}
			if ok {
				return nil
			}
			last = fmt.Errorf("leader %q, %d nodes", st.GetLeaderId(), len(st.GetNodes()))
		} else {
			last = err
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("localcluster: cluster not ready: %v: %w", last, ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func (c *Cluster) runningAddrs() []string {
	var out []string
	for _, m := range c.Members {
		if m.Node != nil || m.cmd != nil {
			out = append(out, m.APIAddr)
		}
	}
	return out
}

// Leader returns the index of the member that leads now, or -1.
func (c *Cluster) Leader(ctx context.Context) int {
	cl, err := client.New(c.runningAddrs(), c.ClientOptions()...)
	if err != nil {
		return -1
	}
	defer cl.Close()
	st, err := cl.Status(ctx)
	if err != nil {
		return -1
	}
	for i, m := range c.Members {
		if m.ID == st.GetLeaderId() {
			return i
		}
	}
	return -1
}

// StopNode stops member i: cleanly (SIGTERM / Close), or at once when kill is
// set (SIGKILL / Kill).
func (c *Cluster) StopNode(i int, kill bool) error {
	m := c.Members[i]
	switch {
	case m.Node != nil:
		var err error
		if kill {
			err = m.Node.Kill()
		} else {
			err = m.Node.Close()
		}
		m.Node = nil
		return err
	case m.cmd != nil:
		sig := syscall.SIGTERM
		if kill {
			sig = syscall.SIGKILL
		}
		m.cmd.Process.Signal(sig)
		m.cmd.Process.Signal(syscall.SIGCONT) // a paused member handles nothing else
		var err error
		select {
		case err = <-m.exit:
		case <-time.After(30 * time.Second):
			m.cmd.Process.Kill()
			err = <-m.exit
		}
		m.cmd = nil
		if kill {
			return nil
		}
		return err
	}
	return nil
}

// Pause freezes child-process member i with SIGSTOP: it holds its sockets
// and answers nothing, as a hung process does. Resume undoes it.
func (c *Cluster) Pause(i int) error { return c.signal(i, syscall.SIGSTOP) }

// Resume lets a paused member run again (SIGCONT).
func (c *Cluster) Resume(i int) error { return c.signal(i, syscall.SIGCONT) }

func (c *Cluster) signal(i int, sig syscall.Signal) error {
	m := c.Members[i]
	if m.cmd == nil || m.cmd.Process == nil {
		return fmt.Errorf("localcluster: member %s is not a running child process", m.ID)
	}
	return m.cmd.Process.Signal(sig)
}

// Pid returns the process ID of child-process member i, 0 if it is not one.
func (c *Cluster) Pid(i int) int {
	if m := c.Members[i]; m.cmd != nil && m.cmd.Process != nil {
		return m.cmd.Process.Pid
	}
	return 0
}

// Close stops every running member cleanly.
func (c *Cluster) Close() error {
	var errs []error
	for i := len(c.Members) - 1; i >= 0; i-- {
		errs = append(errs, c.StopNode(i, false))
	}
	return errors.Join(errs...)
}

// PeakRSS returns the peak resident set size (VmHWM) of a child-process
// member, in bytes.
func (c *Cluster) PeakRSS(i int) (int64, error) {
	m := c.Members[i]
	if m.cmd == nil {
		return 0, errors.New("localcluster: peak RSS needs a child-process member")
	}
	return PeakRSS(m.cmd.Process.Pid)
}

// PeakRSS reads a process's peak resident set size (VmHWM) from /proc.
func PeakRSS(pid int) (int64, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	defer f.Close()
	return parseHWM(f)
}

func parseHWM(r io.Reader) (int64, error) {
	s := bufio.NewScanner(r)
	for s.Scan() {
		if rest, ok := strings.CutPrefix(s.Text(), "VmHWM:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			return kb << 10, err
		}
	}
	return 0, errors.New("localcluster: no VmHWM line")
}

// FreePorts returns n distinct free TCP ports on 127.0.0.1 (freeport.Get).
func FreePorts(n int) ([]int, error) { return freeport.Get(n) }

// WaitPeerFilters waits until every running node of clusters[of] holds the
// current Bloom filters of every other cluster in clusters (its peers), as
// they answer a peer's Filters call now.
func WaitPeerFilters(ctx context.Context, clusters map[string]*Cluster, of string) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	for _, addr := range clusters[of].runningAddrs() {
		c, err := client.New([]string{addr}, clusters[of].ClientOptions()...)
		if err != nil {
			return err
		}
		for {
			// Asked again each time: the node asked may be a follower
			// that has not yet applied the peer's last commit, and answer
			// an older version than its peers already hold.
			want, err := peerFilterVersions(ctx, clusters, of)
			if err != nil {
				c.Close()
				return err
			}
			st, err := c.Status(ctx)
			current := 0
			for _, p := range st.GetPeers() {
				if v, ok := want[p.GetName()]; ok && p.GetFilterVersion() == v && p.GetReachable() {
					current++
				}
			}
			if err == nil && current == len(want) {
				break
			}
			select {
			case <-ctx.Done():
				c.Close()
				return fmt.Errorf("localcluster: cluster %s node %s does not hold its peers' current filters %v: %v %v", of, addr, want, st.GetPeers(), err)
			case <-time.After(50 * time.Millisecond):
			}
		}
		c.Close()
	}
	return nil
}

// peersIn reads the peer clusters named by --peer NAME=ADDR flags.
func peersIn(args []string) map[string][]string {
	out := map[string][]string{}
	for i, a := range args {
		v, ok := strings.CutPrefix(a, "--peer=")
		if !ok && a == "--peer" && i+1 < len(args) {
			v, ok = args[i+1], true
		}
		if !ok {
			continue
		}
		for _, e := range strings.Split(v, ",") {
			if name, addr, ok := strings.Cut(e, "="); ok {
				out[name] = append(out[name], addr)
			}
		}
	}
	return out
}

// trusted lists the clusters whose CA the nodes trust: their peers and the
// clusters that call them.
func (c *Cluster) trusted(peers map[string][]string) []string {
	out := slices.Sorted(maps.Keys(peers))
	for _, name := range c.opts.Callers {
		if !slices.Contains(out, name) {
			out = append(out, name)
		}
	}
	return out
}

// peerFilterVersions asks each cluster other than of for its Bloom filters'
// version, as it answers a peer's Filters call now.
func peerFilterVersions(ctx context.Context, clusters map[string]*Cluster, of string) (map[string]uint64, error) {
	want := map[string]uint64{}
	for name, cl := range clusters {
		if name == of {
			continue
		}
		conn, err := cl.Dial(cl.runningAddrs()[0], true)
		if err != nil {
			return nil, err
		}
		resp, err := pb.NewFederationClient(conn).Filters(ctx, &pb.FiltersRequest{FromCluster: "localcluster"})
		conn.Close()
		if err != nil {
			return nil, fmt.Errorf("localcluster: filters of %s: %w", name, err)
		}
		want[name] = resp.GetVersion()
	}
	return want, nil
}
