package consensus

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"sync"
	"time"

	"github.com/hashicorp/raft"
)

// handshakeTimeout bounds a TLS handshake on the Raft port: a caller that
// connects and says nothing is cut off instead of holding a goroutine.
const handshakeTimeout = 10 * time.Second

// tlsStreamLayer is a raft.StreamLayer over mutual TLS, as Consul and Nomad
// run their Raft ports: both ends present a certificate, and the configs
// decide whom to accept (in ddstore, only nodes of this cluster). A peer that
// fails the handshake never reaches Raft, so a stranger cannot append entries
// or install a snapshot whatever term it claims.
type tlsStreamLayer struct {
	net.Listener // a tls.Listener
	advertise    net.Addr
	dial         *tls.Config
}

func newTLSStreamLayer(bind string, server, dial *tls.Config) (*tlsStreamLayer, error) {
	lis, err := net.Listen("tcp", bind)
	if err != nil {
		return nil, err
	}
	addr, ok := lis.Addr().(*net.TCPAddr)
	if !ok || addr.IP.IsUnspecified() {
		lis.Close()
		return nil, fmt.Errorf("raft address %q must name a host others can reach", bind)
	}
	return &tlsStreamLayer{Listener: tls.NewListener(lis, server), advertise: addr, dial: dial}, nil
}

// Addr is the address Raft advertises.
func (l *tlsStreamLayer) Addr() net.Addr { return l.advertise }

// Accept returns the next connection; its handshake runs on first use,
// bounded by handshakeTimeout.
func (l *tlsStreamLayer) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &handshakingConn{Conn: c.(*tls.Conn)}, nil
}

// Dial connects to another member and completes the handshake before
// returning, so a wrong certificate fails here.
func (l *tlsStreamLayer) Dial(address raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	d := &tls.Dialer{NetDialer: &net.Dialer{Timeout: timeout}, Config: l.dial}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	return d.DialContext(ctx, "tcp", string(address))
}

// handshakingConn completes the server-side handshake on first read or
// write, within handshakeTimeout.
type handshakingConn struct {
	*tls.Conn
	once sync.Once
	err  error
}

func (c *handshakingConn) handshake() error {
	c.once.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), handshakeTimeout)
		defer cancel()
		if c.err = c.Conn.HandshakeContext(ctx); c.err != nil {
			c.Conn.Close()
		}
	})
	return c.err
}

func (c *handshakingConn) Read(p []byte) (int, error) {
	if err := c.handshake(); err != nil {
		return 0, err
	}
	return c.Conn.Read(p)
}

func (c *handshakingConn) Write(p []byte) (int, error) {
	if err := c.handshake(); err != nil {
		return 0, err
	}
	return c.Conn.Write(p)
}

// ErrTLSConfig: only one of the Raft TLS configs was given.
var ErrTLSConfig = errors.New("consensus: Raft TLS needs both a server and a dial config")
