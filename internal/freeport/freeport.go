// Package freeport hands out TCP ports on 127.0.0.1 for servers that tests
// start and must name before they listen (cluster members, FerretDB,
// memcached).
package freeport

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"strconv"
	"sync"
)

// Ports are picked below Linux's ephemeral range (32768-60999 by default),
// where the kernel never places the source port of an outgoing connection:
// a port picked from that range and released could be taken by any client
// socket of this host before the node binds it. Picks are random, so test
// processes running side by side rarely try the same one, and the ports
// handed out by this process are not handed out again.
const (
	portLow  = 20000
	portHigh = 32768
)

var (
	portsMu   sync.Mutex
	handedOut = map[int]bool{}
)

// Get returns n distinct free TCP ports on 127.0.0.1, each one never
// returned before by this process.
func Get(n int) ([]int, error) {
	portsMu.Lock()
	defer portsMu.Unlock()
	ports := make([]int, 0, n)
	for tries := 0; len(ports) < n; tries++ {
		if tries == 10000 {
			return nil, errors.New("freeport: no free port left")
		}
		p := portLow + rand.IntN(portHigh-portLow)
		if handedOut[p] {
			continue
		}
		l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", p))
		if err != nil {
			continue
		}
		l.Close()
		handedOut[p] = true
		ports = append(ports, p)
	}
	return ports, nil
}

// Addr returns one free "127.0.0.1:port" address.
func Addr() (string, error) {
	p, err := Get(1)
	if err != nil {
		return "", err
	}
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(p[0])), nil
}
