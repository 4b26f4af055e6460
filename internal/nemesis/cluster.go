package nemesis

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/ddstore/ddstore/client"
	"github.com/ddstore/ddstore/internal/localcluster"
)

// errNoNetwork: the cluster runs on loopback and cannot be partitioned.
var errNoNetwork = errors.New("nemesis: this cluster runs on loopback; partitions need network namespaces")

// cluster is a running three-node cluster whose nodes are child processes
// the harness can kill, restart, stop and (in namespaces) cut apart.
type cluster interface {
	// Addrs are the API addresses clients use, node i's at index i.
	Addrs() []string
	ClientOptions() []client.Option
	// Kill kills node i with SIGKILL and waits for it to exit.
	Kill(i int) error
	// Start starts node i again after Kill.
	Start(ctx context.Context, i int) error
	// Signal sends sig to node i's process.
	Signal(i int, sig syscall.Signal) error
	// Cut drops every packet between nodes a and b, both ways.
	Cut(a, b int) error
	// HealNetwork removes every cut.
	HealNetwork() error
	// LogPath is node i's log file.
	LogPath(i int) string
	Close() error
}

// nodeID is the ID of node i, as localcluster names it.
func nodeID(i int) string { return fmt.Sprintf("node%d", i+1) }

// nodeIndex is the index of the node with ID id, or -1.
func nodeIndex(id string) int {
	n, err := strconv.Atoi(strings.TrimPrefix(id, "node"))
	if err != nil || !strings.HasPrefix(id, "node") || n < 1 {
		return -1
	}
	return n - 1
}

// serverArgs are the `ddstore server` flags every node gets: two copies of
// each chunk (so that uploads go on while one node is down), and garbage
// collection and repair often enough to run during a short schedule.
func serverArgs() []string {
	return []string{"--gc-interval", "20s", "--gc-grace", "1m", "--repair-interval", "15s",
		"--cache-size", "33554432", "--log-level", "info"}
}

// loopback is a localcluster of child processes on 127.0.0.1.
type loopback struct {
	lc  *localcluster.Cluster
	exe string
	pid []int // 0: not running (or not yet looked up)
}

func startLoopback(ctx context.Context, exe, dir string) (*loopback, error) {
	lc, err := localcluster.Start(ctx, localcluster.Options{Dir: dir, Exe: exe, Replicas: 2, Args: serverArgs()})
	if err != nil {
		return nil, fmt.Errorf("nemesis: start loopback cluster: %w", err)
	}
	return &loopback{lc: lc, exe: exe, pid: make([]int, len(lc.Members))}, nil
}

func (l *loopback) Addrs() []string                { return l.lc.Addrs() }
func (l *loopback) ClientOptions() []client.Option { return l.lc.ClientOptions() }
func (l *loopback) LogPath(i int) string {
	return filepath.Join(filepath.Dir(l.lc.Members[i].DataDir), l.lc.Members[i].ID+".log")
}
func (l *loopback) Cut(a, b int) error { return errNoNetwork }
func (l *loopback) HealNetwork() error { return nil }
func (l *loopback) Close() error {
	for i := range l.pid {
		l.Signal(i, syscall.SIGCONT)
	}
	return l.lc.Close()
}

func (l *loopback) Kill(i int) error {
	l.pid[i] = 0
	return l.lc.StopNode(i, true)
}

func (l *loopback) Start(ctx context.Context, i int) error {
	l.pid[i] = 0
	return l.lc.StartNode(ctx, i)
}

// Signal finds node i's process (localcluster does not export it) by its
// command line: a child of this process running the binary with node i's
// data directory.
func (l *loopback) Signal(i int, sig syscall.Signal) error {
	if l.pid[i] == 0 {
		pid, err := childByArgs(l.exe, "--data-dir", l.lc.Members[i].DataDir)
		if err != nil {
			return err
		}
		l.pid[i] = pid
	}
	if err := syscall.Kill(l.pid[i], sig); err != nil {
		return fmt.Errorf("nemesis: signal %v to %s (pid %d): %w", sig, nodeID(i), l.pid[i], err)
	}
	return nil
}

// childByArgs returns the pid of a child of this process whose command line
// runs exe with flag followed by value.
func childByArgs(exe, flag, value string) (int, error) {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return 0, fmt.Errorf("nemesis: %w", err)
	}
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		raw, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil {
			continue
		}
		args := strings.Split(string(bytes.TrimRight(raw, "\x00")), "\x00")
		if len(args) == 0 || args[0] != exe {
			continue
		}
		match := false
		for j := 1; j+1 < len(args); j++ {
			if args[j] == flag && args[j+1] == value {
				match = true
			}
		}
		if match && parentOf(pid) == os.Getpid() {
			return pid, nil
		}
	}
	return 0, fmt.Errorf("nemesis: no child process runs %s %s %s", exe, flag, value)
}

// parentOf reads a process's parent pid from /proc, or -1.
func parentOf(pid int) int {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return -1
	}
	// "pid (comm) state ppid ...": comm may hold spaces, so read after ')'.
	rest := raw[bytes.LastIndexByte(raw, ')')+1:]
	f := strings.Fields(string(rest))
	if len(f) < 2 {
		return -1
	}
	ppid, err := strconv.Atoi(f[1])
	if err != nil {
		return -1
	}
	return ppid
}

// leaderOf asks each node in turn who leads, and returns the leader's index
// (-1: no node named one within the deadlines).
func leaderOf(ctx context.Context, c cluster) int {
	for _, addr := range c.Addrs() {
		cl, err := client.New([]string{addr}, c.ClientOptions()...)
		if err != nil {
			continue
		}
		sctx, cancel := context.WithTimeout(ctx, 1500*time.Millisecond)
		st, err := cl.Status(sctx)
		cancel()
		cl.Close()
		if err == nil && st.GetLeaderId() != "" {
			return nodeIndex(st.GetLeaderId())
		}
	}
	return -1
}

// waitHealthy waits until every node answers, all name the same leader, and
// every member is a leader or follower.
func waitHealthy(ctx context.Context, c cluster, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	clients := make([]*client.Client, len(c.Addrs()))
	for i, addr := range c.Addrs() {
		cl, err := client.New([]string{addr}, c.ClientOptions()...)
		if err != nil {
			return err
		}
		defer cl.Close()
		clients[i] = cl
	}
	var last string
	for {
		leaders := map[string]bool{}
		ok := true
		for i, cl := range clients {
			sctx, scancel := context.WithTimeout(ctx, 2*time.Second)
			st, err := cl.Status(sctx)
			scancel()
			if err != nil {
				ok, last = false, fmt.Sprintf("%s: %v", nodeID(i), err)
				break
			}
			leaders[st.GetLeaderId()] = true
			live := 0
			for _, n := range st.GetNodes() {
				if n.GetState() == "Leader" || n.GetState() == "Follower" {
					live++
				}
			}
			if st.GetLeaderId() == "" || live < len(clients) {
				ok, last = false, fmt.Sprintf("%s: leader %q, %d of %d members live", nodeID(i), st.GetLeaderId(), live, len(clients))
				break
			}
		}
		if ok && len(leaders) == 1 {
			return nil
		}
		if ok {
			last = fmt.Sprintf("nodes name different leaders: %v", leaders)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("nemesis: cluster not healthy after %s: %s", timeout, last)
		case <-time.After(250 * time.Millisecond):
		}
	}
}
