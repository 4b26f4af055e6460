package server

import (
	"sync"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

// connPool keeps one gRPC connection per peer address.
type connPool struct {
	mu    sync.Mutex
	conns map[string]*grpc.ClientConn
}

func newConnPool() *connPool { return &connPool{conns: map[string]*grpc.ClientConn{}} }

// DialOptions are the options nodes and clients use to reach a node: message
// limits that fit the largest chunk, and flow-control windows large enough
// for chunk streams.
func DialOptions() []grpc.DialOption {
	return []grpc.DialOption{
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(MaxMessageSize), grpc.MaxCallSendMsgSize(MaxMessageSize)),
		grpc.WithInitialWindowSize(8 << 20),
		grpc.WithInitialConnWindowSize(32 << 20),
		grpc.WithReadBufferSize(256 << 10),
		grpc.WithWriteBufferSize(256 << 10),
	}
}

// Get returns the connection to addr, creating it on first use. grpc.NewClient
// connects lazily, so this never blocks and never fails for a well-formed
// address; calls on an unreachable peer fail with Unavailable.
func (p *connPool) Get(addr string) *grpc.ClientConn {
	p.mu.Lock()
	defer p.mu.Unlock()
	if c, ok := p.conns[addr]; ok {
		return c
	}
	c, err := grpc.NewClient("passthrough:///"+addr, DialOptions()...)
	if err != nil {
		// Only malformed options fail here; keep a closed-over error client.
		c, _ = grpc.NewClient("passthrough:///invalid.invalid:1", DialOptions()...)
	}
	p.conns[addr] = c
	return c
}

func (p *connPool) Close() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for addr, c := range p.conns {
		c.Close()
		delete(p.conns, addr)
	}
}
