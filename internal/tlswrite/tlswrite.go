// Package tlswrite makes TLS connections write in large pieces. crypto/tls
// writes every record (at most 16 KiB of data) with its own write system
// call, so gRPC's 256 KiB buffered writes become 16 or more writes each;
// over loopback each costs a few microseconds of kernel time that plain
// text does not pay. Credentials wraps gRPC's TLS credentials so that the
// records of one Write are gathered and written together, in the order
// crypto/tls produced them. The handshake is written as it comes, and so is
// anything crypto/tls writes outside a Write (an alert, a key update): only
// a Write's own records wait, and only until that Write returns.
package tlswrite

import (
	"context"
	"net"
	"sync"
	"syscall"

	"google.golang.org/grpc/credentials"
)

// maxGather is the most bytes held before they are written anyway.
const maxGather = 512 << 10

// Credentials returns creds (TLS credentials) with writes gathered.
func Credentials(creds credentials.TransportCredentials) credentials.TransportCredentials {
	return &gathering{TransportCredentials: creds, bufs: &sync.Pool{}}
}

type gathering struct {
	credentials.TransportCredentials
	// bufs are gathering buffers, held by a connection only during a
	// Write: idle connections hold none.
	bufs *sync.Pool
}

func (g *gathering) ClientHandshake(ctx context.Context, authority string, raw net.Conn) (net.Conn, credentials.AuthInfo, error) {
	under := &gatherConn{Conn: raw, bufs: g.bufs}
	c, info, err := g.TransportCredentials.ClientHandshake(ctx, authority, under)
	if err != nil {
		return nil, nil, err
	}
	return wrap(c, under), info, nil
}

func (g *gathering) ServerHandshake(raw net.Conn) (net.Conn, credentials.AuthInfo, error) {
	under := &gatherConn{Conn: raw, bufs: g.bufs}
	c, info, err := g.TransportCredentials.ServerHandshake(under)
	if err != nil {
		return nil, nil, err
	}
	return wrap(c, under), info, nil
}

func (g *gathering) Clone() credentials.TransportCredentials {
	return &gathering{TransportCredentials: g.TransportCredentials.Clone(), bufs: g.bufs}
}

// wrap returns the connection gRPC uses: writes gathered below, and the raw
// connection's file descriptor reachable as gRPC's own TLS credentials
// make it (syscall.Conn), for its TCP keepalive settings.
func wrap(c net.Conn, under *gatherConn) net.Conn {
	w := &writeConn{Conn: c, under: under}
	if sc, ok := under.Conn.(syscall.Conn); ok {
		return &syscallWriteConn{writeConn: w, sc: sc}
	}
	return w
}

// writeConn is the TLS connection; each Write's records are gathered
// below it and written when it returns.
type writeConn struct {
	net.Conn
	under *gatherConn
}

func (c *writeConn) Write(p []byte) (int, error) {
	c.under.gather()
	n, err := c.Conn.Write(p)
	if ferr := c.under.flush(); err == nil && ferr != nil {
		// crypto/tls counted the bytes written; they were not.
		return 0, ferr
	}
	return n, err
}

type syscallWriteConn struct {
	*writeConn
	sc syscall.Conn
}

func (c *syscallWriteConn) SyscallConn() (syscall.RawConn, error) { return c.sc.SyscallConn() }

// gatherConn is the raw connection under TLS. While gathering, writes are
// appended to a buffer (written out when it passes maxGather, and at
// flush); otherwise they go straight through.
type gatherConn struct {
	net.Conn
	bufs *sync.Pool

	mu        sync.Mutex
	gathering int
	buf       []byte
	err       error // a failed write: every later one fails with it
}

func (c *gatherConn) gather() {
	c.mu.Lock()
	if c.gathering++; c.buf == nil {
		if b, ok := c.bufs.Get().(*[]byte); ok {
			c.buf = (*b)[:0]
		} else {
			c.buf = make([]byte, 0, maxGather+32<<10)
		}
	}
	c.mu.Unlock()
}

func (c *gatherConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.err != nil {
		return 0, c.err
	}
	if c.gathering == 0 {
		return c.writeLocked(p)
	}
	c.buf = append(c.buf, p...)
	if len(c.buf) >= maxGather {
		if _, err := c.writeLocked(nil); err != nil {
			return 0, err
		}
	}
	return len(p), nil
}

// flush ends one gathering Write: what it gathered is written.
func (c *gatherConn) flush() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.gathering--
	err := c.err
	if err == nil {
		_, err = c.writeLocked(nil)
	}
	if c.gathering == 0 && c.buf != nil {
		b := c.buf[:0]
		c.bufs.Put(&b)
		c.buf = nil
	}
	return err
}

// writeLocked writes the gathered bytes, then p.
func (c *gatherConn) writeLocked(p []byte) (int, error) {
	if len(c.buf) > 0 {
		_, err := c.Conn.Write(c.buf)
		c.buf = c.buf[:0]
		if err != nil {
			c.err = err
			return 0, err
		}
	}
	if len(p) == 0 {
		return 0, nil
	}
	n, err := c.Conn.Write(p)
	if err != nil {
		c.err = err
	}
	return n, err
}
