package server

import (
	"sync"
	"time"

	"github.com/ddstore/ddstore/internal/grpcpool"
	"github.com/ddstore/ddstore/proto/codec"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/experimental"
	"google.golang.org/grpc/keepalive"
)

// connPool keeps one gRPC connection per (cluster, address). A connection
// to another node of this cluster proves itself with the node's certificate
// and accepts only a node of this cluster; one to a peer cluster accepts only
// a node whose certificate names that cluster, whatever address the peer
// reported.
type connPool struct {
	// creds returns the transport credentials for dialling a node of
	// cluster ("" for this cluster); nil: plain text.
	creds func(cluster string) (credentials.TransportCredentials, error)
	// bufs are gRPC's buffers for every connection (see grpcpool).
	bufs *grpcpool.Pool

	mu    sync.Mutex
	conns map[connKey]*grpc.ClientConn
}

type connKey struct{ cluster, addr string }

func newConnPool(creds func(cluster string) (credentials.TransportCredentials, error), bufs *grpcpool.Pool) *connPool {
	return &connPool{creds: creds, bufs: bufs, conns: map[connKey]*grpc.ClientConn{}}
}

// dialOptions are the options a node uses to reach another node: message
// limits that fit the largest chunk, flow-control windows large enough for
// chunk streams, keepalive, and gRPC's buffers from bufs.
func dialOptions(creds credentials.TransportCredentials, bufs *grpcpool.Pool) []grpc.DialOption {
	return []grpc.DialOption{
		grpc.WithTransportCredentials(creds),
		experimental.WithBufferPool(bufs),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(MaxMessageSize), grpc.MaxCallSendMsgSize(MaxMessageSize), grpc.ForceCodecV2(codec.New())),
		grpc.WithInitialWindowSize(8 << 20),
		grpc.WithInitialConnWindowSize(32 << 20),
		grpc.WithReadBufferSize(256 << 10),
		grpc.WithWriteBufferSize(256 << 10),
		// A peer that stops answering is noticed within seconds, not when
		// the kernel gives up on the connection.
		// (gRPC allows no shorter ping interval than 10 s; calls carry
		// their own deadlines for faster verdicts.)
		grpc.WithKeepaliveParams(keepalive.ClientParameters{Time: 10 * time.Second, Timeout: 3 * time.Second, PermitWithoutStream: true}),
		// A hung node accepts TCP connections (the kernel does) but never
		// completes the handshake: give a connection attempt 5 s, not 20.
		grpc.WithConnectParams(grpc.ConnectParams{Backoff: backoff.Config{BaseDelay: 200 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: 5 * time.Second}, MinConnectTimeout: 5 * time.Second}),
	}
}

// Get returns the connection to a node of this cluster at addr.
func (p *connPool) Get(addr string) *grpc.ClientConn { return p.get("", addr) }

// Peer returns the connection to a node of peer cluster name at addr.
func (p *connPool) Peer(name, addr string) *grpc.ClientConn { return p.get(name, addr) }

// get creates connections on first use. grpc.NewClient connects lazily, so
// this never blocks and never fails for a well-formed address; calls on an
// unreachable (or unproven) node fail with Unavailable.
func (p *connPool) get(cluster, addr string) *grpc.ClientConn {
	p.mu.Lock()
	defer p.mu.Unlock()
	k := connKey{cluster, addr}
	if c, ok := p.conns[k]; ok {
		return c
	}
	creds, err := p.creds(cluster)
	target := "passthrough:///" + addr
	if err != nil {
		// An unknown peer cluster has no trust: keep a client that can
		// reach nothing.
		creds, target = insecure.NewCredentials(), "passthrough:///invalid.invalid:1"
	}
	c, err := grpc.NewClient(target, dialOptions(creds, p.bufs)...)
	if err != nil {
		// Only malformed options fail here; keep a closed-over error client.
		c, _ = grpc.NewClient("passthrough:///invalid.invalid:1", dialOptions(insecure.NewCredentials(), p.bufs)...)
	}
	p.conns[k] = c
	return c
}

func (p *connPool) Close() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for k, c := range p.conns {
		c.Close()
		delete(p.conns, k)
	}
}
