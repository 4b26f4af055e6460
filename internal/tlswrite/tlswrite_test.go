package tlswrite

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"io"
	"math/big"
	"net"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc/credentials"
)

// countingConn counts the writes that reach the socket.
type countingConn struct {
	net.Conn
	writes atomic.Int64
}

func (c *countingConn) SyscallConn() (syscall.RawConn, error) {
	return c.Conn.(syscall.Conn).SyscallConn()
}

func (c *countingConn) Write(p []byte) (int, error) {
	c.writes.Add(1)
	return c.Conn.Write(p)
}

func selfSigned(t *testing.T) (*tls.Config, *tls.Config) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "node"},
		DNSNames: []string{"node"}, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}},
		&tls.Config{RootCAs: pool, ServerName: "node"}
}

// pair makes a TLS connection over loopback, both ends through
// Credentials; the server's socket writes are counted.
func pair(t *testing.T) (client, server net.Conn, counted *countingConn) {
	t.Helper()
	srvCfg, cliCfg := selfSigned(t)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer lis.Close()
	type result struct {
		c   net.Conn
		err error
	}
	done := make(chan result, 1)
	counted = &countingConn{}
	go func() {
		raw, err := lis.Accept()
		if err != nil {
			done <- result{nil, err}
			return
		}
		counted.Conn = raw
		c, _, err := Credentials(credentials.NewTLS(srvCfg)).ServerHandshake(counted)
		done <- result{c, err}
	}()
	raw, err := net.Dial("tcp", lis.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	client, _, err = Credentials(credentials.NewTLS(cliCfg)).ClientHandshake(context.Background(), "node", raw)
	if err != nil {
		t.Fatal(err)
	}
	r := <-done
	if r.err != nil {
		t.Fatal(r.err)
	}
	t.Cleanup(func() { client.Close(); r.c.Close() })
	return client, r.c, counted
}

// TestGathers: a 256 KiB write (16 or more TLS records) reaches the socket
// as one write, and arrives intact.
func TestGathers(t *testing.T) {
	client, server, counted := pair(t)
	msg := make([]byte, 256<<10)
	rand.Read(msg)
	before := counted.writes.Load()
	got := make(chan []byte, 1)
	go func() {
		b := make([]byte, len(msg))
		io.ReadFull(client, b)
		got <- b
	}()
	if n, err := server.Write(msg); err != nil || n != len(msg) {
		t.Fatalf("write: %d, %v", n, err)
	}
	if w := counted.writes.Load() - before; w != 1 {
		t.Errorf("a 256 KiB write reached the socket in %d writes, want 1", w)
	}
	if b := <-got; !bytes.Equal(b, msg) {
		t.Fatal("data arrived changed")
	}
	if _, ok := server.(syscall.Conn); !ok {
		t.Error("the connection hides the socket's file descriptor from gRPC")
	}
}

// TestLargeWrite: a write larger than the gathering buffer goes out in
// pieces, in order, both ways at once.
func TestLargeWrite(t *testing.T) {
	client, server, _ := pair(t)
	msg := make([]byte, 3<<20+12345)
	rand.Read(msg)
	errs := make(chan error, 2)
	for _, w := range []net.Conn{client, server} {
		go func() {
			_, err := w.Write(msg)
			errs <- err
		}()
	}
	for _, r := range []net.Conn{client, server} {
		b := make([]byte, len(msg))
		if _, err := io.ReadFull(r, b); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(b, msg) {
			t.Fatal("data arrived changed")
		}
	}
	for range 2 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
}

// TestWriteError: a write to a closed connection fails, and so does every
// later one.
func TestWriteError(t *testing.T) {
	client, server, counted := pair(t)
	client.Close()
	counted.Conn.Close()
	var err error
	for range 3 {
		if _, err = server.Write(make([]byte, 64<<10)); err != nil {
			break
		}
	}
	if err == nil {
		t.Fatal("writes to a closed connection succeeded")
	}
	if _, err2 := server.Write([]byte("x")); err2 == nil {
		t.Fatalf("a write after the failure (%v) succeeded", err)
	} else if !errors.Is(err2, err) && err2.Error() != err.Error() {
		t.Logf("first failure %v, later %v", err, err2)
	}
}
