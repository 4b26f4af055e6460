package testenv

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"syscall"
	"time"

	"github.com/ddstore/ddstore/internal/freeport"
)

// Memcached is a memcached server for tests.
type Memcached struct {
	Addr string
	cmd  *exec.Cmd
	done chan error
}

// StartMemcached starts Debian's memcached on a free loopback port with
// memMiB of memory and the given item-size limit (0: memcached's default of
// 1 MiB). Call Stop when done; Kill simulates a crash.
func StartMemcached(memMiB, maxItem int) (*Memcached, error) {
	bin, err := exec.LookPath("memcached")
	if err != nil {
		for _, p := range []string{"/usr/bin/memcached", "/usr/local/bin/memcached"} {
			if _, serr := os.Stat(p); serr == nil {
				bin, err = p, nil
			}
		}
	}
	if err != nil {
		return nil, errors.New("testenv: memcached is not installed: run `make test-deps` (apt-get install memcached)")
	}
	ports, err := freeport.Get(1)
	if err != nil {
		return nil, err
	}
	args := []string{"-l", "127.0.0.1", "-p", fmt.Sprint(ports[0]), "-U", "0", "-m", fmt.Sprint(memMiB)}
	if maxItem > 0 {
		args = append(args, "-I", fmt.Sprint(maxItem))
	}
	if os.Geteuid() == 0 { // memcached refuses to run as root without -u
		u := "memcache"
		if _, err := user.Lookup(u); err != nil {
			u = "nobody"
		}
		args = append(args, "-u", u)
	}
	cmd := exec.Command(bin, args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("testenv: start memcached: %w", err)
	}
	m := &Memcached{Addr: fmt.Sprintf("127.0.0.1:%d", ports[0]), cmd: cmd, done: make(chan error, 1)}
	go func() { m.done <- cmd.Wait() }()
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); {
		if c, err := net.DialTimeout("tcp", m.Addr, time.Second); err == nil {
			c.Close()
			return m, nil
		}
		select {
		case err := <-m.done:
			return nil, fmt.Errorf("testenv: memcached exited at start: %v", err)
		case <-time.After(50 * time.Millisecond):
		}
	}
	m.Kill()
	return nil, errors.New("testenv: memcached did not accept connections within 10s")
}

// Kill stops the server at once.
func (m *Memcached) Kill() {
	if m == nil || m.cmd == nil {
		return
	}
	m.cmd.Process.Kill()
	<-m.done
	m.cmd = nil
}

// Stop stops the server.
func (m *Memcached) Stop() { m.Kill() }
