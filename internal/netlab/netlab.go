// Package netlab builds throwaway Linux network topologies for tests: a
// private network of namespaces joined by a bridge, with veth links from
// chosen namespaces to the host. It needs root and iproute2.
//
// Each PrivateNet reserves a 10.A.B.0/23 block on the host with an
// "unreachable" route: 10.A.B.0/24 holds the internal addresses, and
// 10.A.B+1.0/24 is cut into the /30 links between the host and the gateways.
// The reservation is what keeps concurrent labs apart (adding the same route
// twice fails, so two labs can never take the same block), and it makes the
// host fail at once ("no route to host") when it dials an internal address,
// instead of sending the packet out of its default route.
package netlab

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"sync"
	"time"
)

// maxPrefix is the longest prefix New accepts: prefix, a 5-character suffix,
// "g" and a 4-digit link number must fit in a 15-character interface name.
const maxPrefix = 5

// Lab owns the namespaces, host-side links and address reservations it
// creates. Its methods are safe for concurrent use.
type Lab struct {
	name string // prefix + random suffix; starts every name the lab makes
	ip   string // path of the ip binary

	mu     sync.Mutex
	nets   int      // PrivateNets made so far
	links  int      // host-side links made so far
	nss    []string // namespaces to delete
	hosts  []string // host-side links to delete
	blocks []string // reserved route prefixes to delete
}

// New returns a Lab whose names start with prefix (1 to 5 lower-case letters
// or digits) followed by a random suffix, so concurrent runs never collide.
// It creates nothing yet. It fails if the process is not root or iproute2's
// ip is missing.
func New(prefix string) (*Lab, error) {
	if prefix == "" || len(prefix) > maxPrefix {
		return nil, fmt.Errorf("netlab: prefix %q must be 1 to %d characters", prefix, maxPrefix)
	}
	for _, c := range prefix {
		if (c < 'a' || c > 'z') && (c < '0' || c > '9') {
			return nil, fmt.Errorf("netlab: prefix %q may hold only a-z and 0-9", prefix)
		}
	}
	if os.Geteuid() != 0 {
		return nil, fmt.Errorf("netlab: must run as root to create network namespaces (euid is %d)", os.Geteuid())
	}
	ip, err := exec.LookPath("ip")
	if err != nil {
		for _, p := range []string{"/usr/sbin/ip", "/sbin/ip", "/usr/bin/ip", "/bin/ip"} {
			if _, serr := os.Stat(p); serr == nil {
				ip, err = p, nil
				break
			}
		}
	}
	if err != nil {
		return nil, fmt.Errorf("netlab: iproute2 is not installed (apt-get install iproute2): %w", err)
	}
	const alphabet = "abcdefghijklmnopqrstuvwxyz0123456789"
	suffix := make([]byte, 5)
	for i := range suffix {
		suffix[i] = alphabet[rand.IntN(len(alphabet))]
	}
	return &Lab{name: prefix + string(suffix), ip: ip}, nil
}

// PrivateNet is a network made by Lab.PrivateNet.
type PrivateNet struct {
	// Namespaces names node i's network namespace.
	Namespaces []string
	// Internal is node i's IPv4 address (no port) on the private /24 that
	// only the namespaces share.
	Internal []string
	// Public maps a gateway's index to its IPv4 address (no port) on its /30
	// link to the host; the host can reach it, and the host side of the link
	// is the address one below it.
	Public map[int]string
}

// PrivateNet creates n namespaces (1 to 254), each with lo up and an
// interface eth0 on a bridge that lives in a namespace of its own, holding
// an internal IPv4 address in a private /24. For each index in gateways it
// also makes a veth pair from a host interface to the namespace's pub0, with
// a /30 holding the host-side and public addresses (at most 64 gateways).
// Nothing routes or forwards between the host and the private /24: the host
// can reach only the gateways' public addresses, and the namespaces only
// each other and their own /30 peer. If PrivateNet fails, Close still
// removes whatever it made.
func (l *Lab) PrivateNet(n int, gateways []int) (*PrivateNet, error) {
	if n < 1 || n > 254 {
		return nil, fmt.Errorf("netlab: PrivateNet(%d): need 1 to 254 namespaces", n)
	}
	if len(gateways) > 64 {
		return nil, fmt.Errorf("netlab: PrivateNet: %d gateways, at most 64 fit", len(gateways))
	}
	seen := map[int]bool{}
	for _, g := range gateways {
		if g < 0 || g >= n || seen[g] {
			return nil, fmt.Errorf("netlab: PrivateNet: gateway %d is out of range or repeated (n=%d)", g, n)
		}
		seen[g] = true
	}

	l.mu.Lock()
	defer l.mu.Unlock()
	if l.links+len(gateways) > 9999 {
		return nil, errors.New("netlab: PrivateNet: the lab has used up its host link names")
	}
	base := fmt.Sprintf("%s-%d", l.name, l.nets)
	l.nets++

	block, err := l.reserve()
	if err != nil {
		return nil, err
	}
	a := block.Addr().As4()
	internal := func(i int) string { return netip.AddrFrom4([4]byte{a[0], a[1], a[2], byte(i)}).String() }
	link := func(i int) string { return netip.AddrFrom4([4]byte{a[0], a[1], a[2] + 1, byte(i)}).String() }

	br := base + "-br"
	if err := l.addNS(br); err != nil {
		return nil, err
	}
	if err := l.run("-n", br, "link", "add", "br0", "type", "bridge"); err != nil {
		return nil, err
	}
	if err := l.run("-n", br, "link", "set", "br0", "up"); err != nil {
		return nil, err
	}

	pn := &PrivateNet{Public: map[int]string{}}
	for i := 0; i < n; i++ {
		ns := fmt.Sprintf("%s-%d", base, i)
		port := fmt.Sprintf("p%d", i)
		addr := internal(i + 1)
		if err := l.addNS(ns); err != nil {
			return nil, err
		}
		for _, args := range [][]string{
			{"-n", ns, "link", "set", "lo", "up"},
			{"-n", br, "link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", ns},
			{"-n", br, "link", "set", port, "master", "br0", "up"},
			{"-n", ns, "addr", "add", addr + "/24", "dev", "eth0"},
			{"-n", ns, "link", "set", "eth0", "up"},
		} {
			if err := l.run(args...); err != nil {
				return nil, err
			}
		}
		pn.Namespaces = append(pn.Namespaces, ns)
		pn.Internal = append(pn.Internal, addr)
	}

	for k, g := range gateways {
		ns := pn.Namespaces[g]
		host := fmt.Sprintf("%sg%d", l.name, l.links)
		hostAddr, public := link(4*k+1), link(4*k+2)
		if err := l.run("link", "add", host, "type", "veth", "peer", "name", "pub0", "netns", ns); err != nil {
			return nil, err
		}
		l.links++
		l.hosts = append(l.hosts, host)
		for _, args := range [][]string{
			{"addr", "add", hostAddr + "/30", "dev", host},
			{"link", "set", host, "up"},
			{"-n", ns, "addr", "add", public + "/30", "dev", "pub0"},
			{"-n", ns, "link", "set", "pub0", "up"},
		} {
			if err := l.run(args...); err != nil {
				return nil, err
			}
		}
		pn.Public[g] = public
	}
	return pn, nil
}

// reserve picks a free 10.A.B.0/23 that overlaps no address or route on the
// host (the default route aside) and claims it with an unreachable route.
func (l *Lab) reserve() (netip.Prefix, error) {
	var lastErr error
	for range 64 {
		used, err := l.hostPrefixes()
		if err != nil {
			return netip.Prefix{}, err
		}
		cand := netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(rand.IntN(256)), byte(2 * rand.IntN(128)), 0}), 23)
		if overlapsAny(cand, used) {
			continue
		}
		out, err := l.output("route", "add", "unreachable", cand.String())
		if err != nil {
			if bytes.Contains(out, []byte("File exists")) {
				lastErr = err // another lab took it between our look and our claim
				continue
			}
			return netip.Prefix{}, err
		}
		l.blocks = append(l.blocks, cand.String())
		return cand, nil
	}
	return netip.Prefix{}, fmt.Errorf("netlab: found no free 10.x.y.0/23 on the host after 64 tries (last: %v)", lastErr)
}

// hostPrefixes lists the IPv4 prefixes of the host's addresses and routes in
// every table, without default routes.
func (l *Lab) hostPrefixes() ([]netip.Prefix, error) {
	var ps []netip.Prefix
	out, err := l.output("-4", "-o", "addr", "show")
	if err != nil {
		return nil, err
	}
	for _, line := range strings.Split(string(out), "\n") {
		f := strings.Fields(line)
		for i := 0; i+1 < len(f); i++ {
			if f[i] == "inet" {
				if p, err := netip.ParsePrefix(f[i+1]); err == nil {
					ps = append(ps, p.Masked())
				}
			}
		}
	}
	out, err = l.output("-4", "route", "show", "table", "all")
	if err != nil {
		return nil, err
	}
	for _, line := range strings.Split(string(out), "\n") {
		for _, tok := range strings.Fields(line) {
			if tok == "default" {
				break
			}
			if p, err := netip.ParsePrefix(tok); err == nil {
				ps = append(ps, p.Masked())
				break
			}
			if a, err := netip.ParseAddr(tok); err == nil {
				ps = append(ps, netip.PrefixFrom(a, a.BitLen()))
				break
			}
			// Otherwise a route type (local, broadcast, unreachable, ...).
		}
	}
	return ps, nil
}

func overlapsAny(p netip.Prefix, ps []netip.Prefix) bool {
	for _, q := range ps {
		if q.Bits() > 0 && p.Overlaps(q) {
			return true
		}
	}
	return false
}

// addNS creates namespace ns and records it for Close.
func (l *Lab) addNS(ns string) error {
	if err := l.run("netns", "add", ns); err != nil {
		return err
	}
	l.nss = append(l.nss, ns)
	return nil
}

// Command returns an exec.Cmd that runs name with args inside namespace ns,
// through `ip netns exec` (which execs name in place, so killing the Cmd's
// process kills name itself).
func (l *Lab) Command(ctx context.Context, ns, name string, args ...string) *exec.Cmd {
	return exec.CommandContext(ctx, l.ip, append([]string{"netns", "exec", ns, name}, args...)...)
}

// Close deletes every namespace, host-side link and address reservation the
// lab made, and checks that none of its links or namespaces is left. It does
// not stop processes still running in the namespaces (they keep a deleted
// namespace alive, unseen by `ip netns list`, until they exit). It is safe to
// call twice; a second call retries only what the first failed to delete.
func (l *Lab) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	var errs []error
	// Deleting the host end of a veth deletes both ends at once; deleting a
	// namespace only does so once no process is left in it.
	l.hosts = l.deleteAll(l.hosts, &errs, func(h string) []string { return []string{"link", "del", h} })
	l.nss = l.deleteAll(l.nss, &errs, func(ns string) []string { return []string{"netns", "del", ns} })
	l.blocks = l.deleteAll(l.blocks, &errs, func(b string) []string { return []string{"route", "del", "unreachable", b} })
	if len(errs) == 0 {
		if err := l.checkGone(); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// deleteAll runs del's command for each name, treating "not found" as done,
// and returns the names it failed to delete.
func (l *Lab) deleteAll(names []string, errs *[]error, del func(string) []string) []string {
	var left []string
	for _, name := range names {
		out, err := l.output(del(name)...)
		if err != nil && !notFound(out) {
			*errs = append(*errs, err)
			left = append(left, name)
		}
	}
	return left
}

func notFound(out []byte) bool {
	for _, s := range []string{"Cannot find device", "No such file or directory", "No such process", "does not exist"} {
		if bytes.Contains(out, []byte(s)) {
			return true
		}
	}
	return false
}

// checkGone waits briefly for every host interface and namespace named like
// the lab's to disappear.
func (l *Lab) checkGone() error {
	var left []string
	for deadline := time.Now().Add(3 * time.Second); ; {
		var err error
		left, err = l.leftovers()
		if err != nil || len(left) == 0 || time.Now().After(deadline) {
			if err != nil {
				return err
			}
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if len(left) > 0 {
		return fmt.Errorf("netlab: still present after Close: %s", strings.Join(left, ", "))
	}
	return nil
}

// leftovers lists host links and namespaces named like the lab's.
func (l *Lab) leftovers() ([]string, error) {
	var left []string
	for _, args := range [][]string{{"-o", "link", "show"}, {"netns", "list"}} {
		out, err := l.output(args...)
		if err != nil {
			return nil, err
		}
		for _, line := range strings.Split(string(out), "\n") {
			f := strings.Fields(line)
			if args[0] == "-o" && len(f) > 1 {
				f = f[1:] // "7: name@if2: <...>"
			}
			if len(f) == 0 {
				continue
			}
			name, _, _ := strings.Cut(strings.TrimSuffix(f[0], ":"), "@")
			if l.owns(name) {
				left = append(left, name)
			}
		}
	}
	return left, nil
}

// owns reports whether name is one the lab gives its namespaces
// (name-...) or host links (name + "g" + digits); a longer lab name that
// merely starts with this one never matches.
func (l *Lab) owns(name string) bool {
	rest, ok := strings.CutPrefix(name, l.name)
	if !ok {
		return false
	}
	if strings.HasPrefix(rest, "-") {
		return true
	}
	digits, ok := strings.CutPrefix(rest, "g")
	return ok && digits != "" && strings.Trim(digits, "0123456789") == ""
}

// run runs ip with args.
func (l *Lab) run(args ...string) error {
	_, err := l.output(args...)
	return err
}

// output runs ip with args and returns its combined output; the error names
// the command and quotes the output.
func (l *Lab) output(args ...string) ([]byte, error) {
	out, err := exec.Command(l.ip, args...).CombinedOutput()
	if err != nil {
		return out, fmt.Errorf("netlab: ip %s: %w: %s", strings.Join(args, " "), err, bytes.TrimSpace(out))
	}
	return out, nil
}
