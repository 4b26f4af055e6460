package netlab

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// The test binary doubles as the programs run inside namespaces: with
// helperEnv set, TestMain runs that helper instead of the tests.
const (
	helperEnv = "NETLAB_TEST_HELPER" // "echo" or "dial"
	addrsEnv  = "NETLAB_TEST_ADDRS"  // comma-separated host:port list
)

// dialFailed is the dial helper's exit code when it cannot connect.
const dialFailed = 2

func TestMain(m *testing.M) {
	switch os.Getenv(helperEnv) {
	case "":
		os.Exit(m.Run())
	case "echo":
		echoServer(strings.Split(os.Getenv(addrsEnv), ","))
	case "dial":
		os.Exit(dialEcho(os.Getenv(addrsEnv)))
	default:
		fmt.Fprintf(os.Stderr, "unknown %s=%q\n", helperEnv, os.Getenv(helperEnv))
		os.Exit(1)
	}
}

// echoServer listens on every addr, prints "ready" and echoes lines until
// killed.
func echoServer(addrs []string) {
	for _, a := range addrs {
		ln, err := net.Listen("tcp", a)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		go func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				go func() {
					defer c.Close()
					io.Copy(c, c)
				}()
			}
		}()
	}
	fmt.Println("ready")
	select {}
}

// dialEcho checks that addr echoes a line; it returns dialFailed if it cannot
// connect at all.
func dialEcho(addr string) int {
	if err := echoOnce(addr); err != nil {
		fmt.Fprintln(os.Stderr, err)
		var d *dialError
		if errors.As(err, &d) {
			return dialFailed
		}
		return 1
	}
	return 0
}

type dialError struct{ err error }

func (e *dialError) Error() string { return e.err.Error() }
func (e *dialError) Unwrap() error { return e.err }

func echoOnce(addr string) error {
	c, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		return &dialError{err}
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(2 * time.Second))
	msg := "hello " + addr + "\n"
	if _, err := io.WriteString(c, msg); err != nil {
		return err
	}
	got, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return fmt.Errorf("read echo from %s: %w", addr, err)
	}
	if got != msg {
		return fmt.Errorf("echo from %s: got %q, want %q", addr, got, msg)
	}
	return nil
}

// newLab returns a Lab that is closed when the test ends; tests fail, never
// skip, without root or iproute2.
func newLab(t *testing.T, prefix string) *Lab {
	t.Helper()
	l, err := New(prefix)
	if err != nil {
		t.Fatalf("netlab tests need root and iproute2 (run them as root): %v", err)
	}
	t.Cleanup(func() {
		if err := l.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return l
}

// startEcho runs an echo server on addrs inside namespace ns and returns a
// func that stops it.
func startEcho(t *testing.T, l *Lab, ns string, addrs ...string) (stop func()) {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cmd := l.Command(ctx, ns, exe)
	cmd.Env = append(os.Environ(), helperEnv+"=echo", addrsEnv+"="+strings.Join(addrs, ","))
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		cancel()
		t.Fatalf("start echo server in %s: %v", ns, err)
	}
	stop = sync.OnceFunc(func() {
		cancel()
		cmd.Wait()
	})
	t.Cleanup(stop)
	ready := make(chan error, 1)
	go func() {
		line, err := bufio.NewReader(out).ReadString('\n')
		if err == nil && line != "ready\n" {
			err = fmt.Errorf("unexpected output %q", line)
		}
		ready <- err
	}()
	select {
	case err := <-ready:
		if err != nil {
			stop()
			t.Fatalf("echo server in %s on %v: %v; stderr: %s", ns, addrs, err, stderr.String())
		}
	case <-time.After(5 * time.Second):
		stop()
		t.Fatalf("echo server in %s on %v not ready after 5s; stderr: %s", ns, addrs, stderr.String())
	}
	return stop
}

func TestNew(t *testing.T) {
	for _, tc := range []struct {
		prefix string
		ok     bool
	}{
		{"dd", true},
		{"a1b2c", true},
		{"", false},
		{"toolong", false},
		{"Up", false},
		{"a-b", false},
		{"a/b", false},
	} {
		t.Run(fmt.Sprintf("%q", tc.prefix), func(t *testing.T) {
			l, err := New(tc.prefix)
			if !tc.ok {
				if err == nil {
					t.Fatalf("New(%q) = nil error, want one", tc.prefix)
				}
				return
			}
			if err != nil {
				t.Fatalf("netlab tests need root and iproute2 (run them as root): %v", err)
			}
			if !strings.HasPrefix(l.name, tc.prefix) || len(l.name) != len(tc.prefix)+5 {
				t.Errorf("name %q: want %q + 5 random characters", l.name, tc.prefix)
			}
			if host := fmt.Sprintf("%sg%d", l.name, 9999); len(host) > 15 {
				t.Errorf("host link name %q is longer than 15", host)
			}
			if err := l.Close(); err != nil { // made nothing: nothing to do
				t.Errorf("Close: %v", err)
			}
		})
	}
	a, b := newLab(t, "dd"), newLab(t, "dd")
	if a.name == b.name {
		t.Errorf("two labs share the name %q", a.name)
	}
}

func TestPrivateNetArgs(t *testing.T) {
	l := newLab(t, "nla")
	for _, tc := range []struct {
		n        int
		gateways []int
	}{
		{0, nil},
		{255, nil},
		{3, []int{3}},
		{3, []int{-1}},
		{3, []int{1, 1}},
	} {
		if _, err := l.PrivateNet(tc.n, tc.gateways); err == nil {
			t.Errorf("PrivateNet(%d, %v) = nil error, want one", tc.n, tc.gateways)
		}
	}
	if len(l.nss)+len(l.hosts)+len(l.blocks) > 0 {
		t.Errorf("rejected PrivateNet calls made things: %v %v %v", l.nss, l.hosts, l.blocks)
	}
	err := l.run("link", "del", "nlanosuchlink")
	if err == nil || !strings.Contains(err.Error(), "ip link del nlanosuchlink") || !strings.Contains(err.Error(), "Cannot find device") {
		t.Errorf("ip failure error %q should name the command and quote its output", err)
	}
	var ee *exec.ExitError
	if !errors.As(err, &ee) {
		t.Errorf("ip failure error %q does not wrap *exec.ExitError", err)
	}
}

func TestPrivateNet(t *testing.T) {
	start := time.Now()
	l := newLab(t, "nlt")
	pn, err := l.PrivateNet(3, []int{0, 1})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("built in %v: namespaces %v, internal %v, public %v", time.Since(start).Round(time.Millisecond), pn.Namespaces, pn.Internal, pn.Public)
	if len(pn.Namespaces) != 3 || len(pn.Internal) != 3 || len(pn.Public) != 2 || pn.Public[0] == "" || pn.Public[1] == "" {
		t.Fatalf("PrivateNet(3, {0,1}) = %+v", pn)
	}
	internalNet := netip.MustParsePrefix(pn.Internal[0] + "/24").Masked()
	for _, a := range append(slices.Clone(pn.Internal), pn.Public[0], pn.Public[1]) {
		if strings.Contains(a, ":") {
			t.Errorf("address %q has a port", a)
		}
	}
	for _, a := range pn.Internal {
		if !internalNet.Contains(netip.MustParseAddr(a)) {
			t.Errorf("internal address %s is outside %s", a, internalNet)
		}
	}
	for _, a := range pn.Public {
		if internalNet.Contains(netip.MustParseAddr(a)) {
			t.Errorf("public address %s is inside the internal %s", a, internalNet)
		}
	}
	blocks := slices.Clone(l.blocks)
	hosts := slices.Clone(l.hosts)

	const port = "7000"
	at := func(a string) string { return net.JoinHostPort(a, port) }
	stops := []func(){
		startEcho(t, l, pn.Namespaces[0], at(pn.Internal[0]), at(pn.Public[0])),
		startEcho(t, l, pn.Namespaces[1], at(pn.Internal[1]), at(pn.Public[1])),
		startEcho(t, l, pn.Namespaces[2], at(pn.Internal[2])),
	}

	const host = -1
	t.Run("reach", func(t *testing.T) {
		for _, tc := range []struct {
			name string
			from int // namespace index, or host
			to   string
			ok   bool
		}{
			{"ns0 to ns2 internal over the bridge", 0, pn.Internal[2], true},
			{"ns2 to ns1 internal over the bridge", 2, pn.Internal[1], true},
			{"ns1 to ns0 internal over the bridge", 1, pn.Internal[0], true},
			{"host to ns0 internal", host, pn.Internal[0], false},
			{"host to ns1 internal", host, pn.Internal[1], false},
			{"host to ns2 internal", host, pn.Internal[2], false},
			{"host to gateway 0 public", host, pn.Public[0], true},
			{"host to gateway 1 public", host, pn.Public[1], true},
			{"ns2 to gateway 0 public", 2, pn.Public[0], false},
		} {
			t.Run(tc.name, func(t *testing.T) {
				t.Parallel()
				addr := at(tc.to)
				t0 := time.Now()
				var err error
				if tc.from == host {
					err = echoOnce(addr)
				} else {
					err = dialFrom(l, pn.Namespaces[tc.from], addr)
				}
				took := time.Since(t0)
				switch {
				case tc.ok && err != nil:
					t.Errorf("%s: %v", addr, err)
				case !tc.ok && err == nil:
					t.Errorf("%s: reached it, want it unreachable", addr)
				case !tc.ok && !isDialError(err):
					t.Errorf("%s: want a failed connect, got %v", addr, err)
				case !tc.ok && took > 2500*time.Millisecond:
					t.Errorf("%s: took %v to fail, want a fast failure", addr, took)
				default:
					t.Logf("%s: err=%v in %v", addr, err, took.Round(time.Microsecond))
				}
			})
		}
	})

	for _, stop := range stops {
		stop()
	}
	if err := l.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := l.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	// Nothing of the lab may remain on the host.
	for _, args := range [][]string{{"netns", "list"}, {"-o", "link", "show"}, {"-4", "route", "show", "table", "all"}} {
		out, err := exec.Command(l.ip, args...).CombinedOutput()
		if err != nil {
			t.Fatalf("ip %v: %v: %s", args, err, out)
		}
		for _, leftover := range slices.Concat(pn.Namespaces, hosts, blocks, []string{l.name + "-"}) {
			if strings.Contains(string(out), leftover) {
				t.Errorf("after Close, `ip %s` still shows %s:\n%s", strings.Join(args, " "), leftover, out)
			}
		}
	}
	t.Logf("whole test took %v", time.Since(start).Round(time.Millisecond))
}

// dialFrom runs echoOnce(addr) inside namespace ns.
func dialFrom(l *Lab, ns, addr string) error {
	exe, err := os.Executable()
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cmd := l.Command(ctx, ns, exe)
	cmd.Env = append(os.Environ(), helperEnv+"=dial", addrsEnv+"="+addr)
	out, err := cmd.CombinedOutput()
	if err == nil {
		return nil
	}
	msg := fmt.Errorf("from %s: %w: %s", ns, err, strings.TrimSpace(string(out)))
	var ee *exec.ExitError
	if errors.As(err, &ee) && ee.ExitCode() == dialFailed {
		return &dialError{msg}
	}
	return msg
}

func isDialError(err error) bool {
	var d *dialError
	return errors.As(err, &d)
}

// TestConcurrentLabs builds several labs at once and checks that they took
// distinct host-side addresses.
func TestConcurrentLabs(t *testing.T) {
	const labs = 4
	var (
		wg     sync.WaitGroup
		mu     sync.Mutex
		blocks = map[string]bool{}
		public = map[string]bool{}
	)
	for range labs {
		l := newLab(t, "nlc")
		wg.Go(func() {
			pn, err := l.PrivateNet(2, []int{1})
			if err != nil {
				t.Error(err)
				return
			}
			mu.Lock()
			defer mu.Unlock()
			for _, b := range l.blocks {
				blocks[b] = true
			}
			public[pn.Public[1]] = true
		})
	}
	wg.Wait()
	if len(blocks) != labs || len(public) != labs {
		t.Errorf("%d labs took %d blocks %v and %d public addresses %v", labs, len(blocks), blocks, len(public), public)
	}
}

// TestPartialFailure checks that Close removes what a failed PrivateNet made.
func TestPartialFailure(t *testing.T) {
	l := newLab(t, "nlp")
	squatter := l.name + "-0-1" // the name PrivateNet will want for node 1
	if out, err := exec.Command(l.ip, "netns", "add", squatter).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add %s: %v: %s", squatter, err, out)
	}
	_, err := l.PrivateNet(3, []int{0})
	exec.Command(l.ip, "netns", "del", squatter).Run()
	if err == nil || !strings.Contains(err.Error(), "ip netns add "+squatter) {
		t.Fatalf("PrivateNet with node 1's namespace taken: err = %v, want one naming `ip netns add %s`", err, squatter)
	}
	t.Log(err)
	made := slices.Concat(l.nss, l.blocks)
	if len(l.nss) != 2 || len(l.blocks) != 1 {
		t.Fatalf("failed PrivateNet recorded namespaces %v, blocks %v; want bridge and node 0, and one block", l.nss, l.blocks)
	}
	if err := l.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	out, _ := exec.Command(l.ip, "netns", "list").CombinedOutput()
	routes, _ := exec.Command(l.ip, "-4", "route", "show", "table", "all").CombinedOutput()
	for _, m := range made {
		if strings.Contains(string(out), m) || strings.Contains(string(routes), m) {
			t.Errorf("%s is still there after Close", m)
		}
	}
}
