package nemesis

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/ddstore/ddstore/client"
	"github.com/ddstore/ddstore/internal/localcluster"
	"github.com/ddstore/ddstore/internal/netlab"
	"github.com/ddstore/ddstore/server/auth"
)

// namespaced is a cluster whose nodes run in network namespaces on a
// private bridge (internal/netlab), each also a gateway with a public
// address the host's clients use. Raft and node-to-node calls go over the
// bridge, so blackhole routes between two namespaces cut them apart while
// clients still reach both.
type namespaced struct {
	lab *netlab.Lab
	pn  *netlab.PrivateNet
	lc  *localcluster.Cluster // planned only: its CA and admin client credentials
	exe string
	dir string
	ip  string

	args  [][]string
	procs []*exec.Cmd
	exits []chan error

	mu   sync.Mutex
	cuts map[[2]int]bool
}

// startNamespaced builds the network and starts the nodes.
func startNamespaced(ctx context.Context, exe, dir string) (_ *namespaced, err error) {
	ip, err := ipPath()
	if err != nil {
		return nil, err
	}
	lab, err := netlab.New("nem")
	if err != nil {
		return nil, fmt.Errorf("nemesis: partitions need network namespaces: %w", err)
	}
	n := &namespaced{lab: lab, exe: exe, dir: dir, ip: ip, cuts: map[[2]int]bool{}}
	defer func() {
		if err != nil {
			n.Close()
		}
	}()
	if n.pn, err = lab.PrivateNet(3, []int{0, 1, 2}); err != nil {
		return nil, fmt.Errorf("nemesis: %w", err)
	}
	// A planned localcluster makes the throwaway CA and an admin client
	// certificate; the nodes' certificates name their namespace addresses.
	if n.lc, err = localcluster.New(localcluster.Options{Dir: filepath.Join(dir, "plan"), Exe: exe}); err != nil {
		return nil, fmt.Errorf("nemesis: %w", err)
	}
	pki := filepath.Join(dir, "pki")
	if err := os.MkdirAll(pki, 0o755); err != nil {
		return nil, fmt.Errorf("nemesis: %w", err)
	}
	n.procs, n.exits = make([]*exec.Cmd, 3), make([]chan error, 3)
	for i := range 3 {
		id := nodeID(i)
		certPEM, keyPEM, err := n.lc.CA().IssueNode(auth.NodeCert{Cluster: "ddstore", NodeID: id, Hosts: []string{n.pn.Internal[i], n.pn.Public[i]}})
		if err != nil {
			return nil, fmt.Errorf("nemesis: certificate of %s: %w", id, err)
		}
		crt, key := filepath.Join(pki, id+".crt"), filepath.Join(pki, id+".key")
		if err := auth.WriteNewFiles(crt, certPEM, key, keyPEM); err != nil {
			return nil, fmt.Errorf("nemesis: %w", err)
		}
		args := []string{"server", "--id", id, "--cluster", "ddstore",
			"--listen", n.pn.Internal[i] + ":7400", "--raft-addr", n.pn.Internal[i] + ":7401", "--public", n.pn.Public[i] + ":7402",
			"--data-dir", filepath.Join(dir, id), "--replicas", "2", "--shutdown-grace", "1s",
			"--tls-ca", n.lc.CAFile(), "--tls-cert", crt, "--tls-key", key}
		if i == 0 {
			args = append(args, "--bootstrap")
		} else {
			args = append(args, "--join", n.pn.Internal[0]+":7400")
		}
		n.args = append(n.args, append(args, serverArgs()...))
	}
	for i := range 3 {
		if err := n.Start(ctx, i); err != nil {
			return nil, err
		}
	}
	if err := waitHealthy(ctx, n, 90*time.Second); err != nil {
		return nil, err
	}
	return n, nil
}

// ipPath finds iproute2's ip.
func ipPath() (string, error) {
	if p, err := exec.LookPath("ip"); err == nil {
		return p, nil
	}
	for _, p := range []string{"/usr/sbin/ip", "/sbin/ip", "/usr/bin/ip", "/bin/ip"} {
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
	}
	return "", errors.New("nemesis: iproute2's ip is not installed (apt-get install iproute2; scripts/test-deps.sh does it)")
}

func (n *namespaced) Addrs() []string {
	out := make([]string, 3)
	for i := range out {
		out[i] = n.pn.Public[i] + ":7402"
	}
	return out
}

func (n *namespaced) ClientOptions() []client.Option { return n.lc.ClientOptions() }
func (n *namespaced) LogPath(i int) string           { return filepath.Join(n.dir, nodeID(i)+".log") }

func (n *namespaced) Start(ctx context.Context, i int) error {
	if n.procs[i] != nil {
		return fmt.Errorf("nemesis: %s is running", nodeID(i))
	}
	logf, err := os.OpenFile(n.LogPath(i), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("nemesis: %w", err)
	}
	// Not tied to ctx: the harness stops nodes itself, and a node must
	// outlive the context of the fault that restarted it.
	cmd := n.lab.Command(context.WithoutCancel(ctx), n.pn.Namespaces[i], n.exe, n.args[i]...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return fmt.Errorf("nemesis: start %s: %w", nodeID(i), err)
	}
	exit := make(chan error, 1)
	go func() { exit <- cmd.Wait(); logf.Close() }()
	n.procs[i], n.exits[i] = cmd, exit
	return nil
}

func (n *namespaced) Kill(i int) error {
	cmd := n.procs[i]
	if cmd == nil {
		return nil
	}
	cmd.Process.Kill()
	<-n.exits[i]
	n.procs[i], n.exits[i] = nil, nil
	return nil
}

func (n *namespaced) Signal(i int, sig syscall.Signal) error {
	if n.procs[i] == nil {
		return fmt.Errorf("nemesis: %s is not running", nodeID(i))
	}
	if err := n.procs[i].Process.Signal(sig); err != nil {
		return fmt.Errorf("nemesis: signal %v to %s: %w", sig, nodeID(i), err)
	}
	return nil
}

// Cut adds a blackhole route to b's internal address in a's namespace and
// one to a's in b's: packets between them vanish (TCP stalls, dials fail),
// while both keep their links to the host.
func (n *namespaced) Cut(a, b int) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	for _, p := range [][2]int{{a, b}, {b, a}} {
		if n.cuts[p] {
			continue
		}
		if err := n.route("add", p[0], p[1]); err != nil {
			return err
		}
		n.cuts[p] = true
	}
	return nil
}

func (n *namespaced) HealNetwork() error {
	n.mu.Lock()
	defer n.mu.Unlock()
	var errs []error
	for p := range n.cuts {
		if err := n.route("del", p[0], p[1]); err != nil {
			errs = append(errs, err)
			continue
		}
		delete(n.cuts, p)
	}
	return errors.Join(errs...)
}

func (n *namespaced) route(verb string, from, to int) error {
	args := []string{"-n", n.pn.Namespaces[from], "route", verb, "blackhole", n.pn.Internal[to] + "/32"}
	out, err := exec.Command(n.ip, args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("nemesis: ip %s: %w: %s", strings.Join(args, " "), err, bytes.TrimSpace(out))
	}
	return nil
}

func (n *namespaced) Close() error {
	var errs []error
	for i, cmd := range n.procs {
		if cmd != nil {
			cmd.Process.Signal(syscall.SIGCONT)
			errs = append(errs, n.Kill(i))
		}
	}
	if n.pn != nil {
		errs = append(errs, n.HealNetwork())
	}
	errs = append(errs, n.lab.Close())
	return errors.Join(errs...)
}
