// Package limits keeps any one caller from exhausting a node: a cap on each
// principal's concurrent streams and heavy operations, and an idle deadline on
// every stream.
//
// A Limiter hands out two gRPC server interceptors. Install both:
//
//	l := limits.New(limits.Config{}, callerOf, isHeavy)
//	srv := grpc.NewServer(
//		grpc.ChainUnaryInterceptor(authn, l.UnaryInterceptor()),
//		grpc.ChainStreamInterceptor(authn, l.StreamInterceptor()),
//	)
//
// Put the limiter after whatever interceptor establishes the caller's
// identity, so that the caller function can read it from the context.
//
// Refusals happen before the handler runs and carry codes.ResourceExhausted.
// Every slot a call takes is given back exactly once when its handler returns,
// also when it panics.
package limits

import (
	"context"
	"fmt"
	"net"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
)

// Defaults for the zero values of Config's fields.
const (
	DefaultIdleTimeout      = 60 * time.Second
	DefaultStreamsPerCaller = 64
	DefaultStreams          = 1024
	DefaultHeavyPerCaller   = 1
)

// Config sets the limits. The zero value means the defaults.
type Config struct {
	// IdleTimeout: a stream whose RecvMsg or SendMsg waits this long for
	// the peer, while no other RecvMsg or SendMsg on it completes, is
	// cancelled. Only waiting on the peer counts; time the handler spends
	// between calls does not. 0 means 60s; <0 disables.
	IdleTimeout time.Duration
	// StreamsPerCaller is how many streams one caller may hold open at
	// once. 0 means 64; <0 means unlimited.
	StreamsPerCaller int
	// Streams is how many streams the whole node holds open at once.
	// 0 means 1024; <0 means unlimited.
	Streams int
	// HeavyPerCaller is how many heavy calls (gc, repair, ...) one caller
	// may run at once, counted over all heavy methods together, unary or
	// streaming. 0 means 1; <0 means unlimited.
	HeavyPerCaller int
	// Exempt, if set, names callers held only to the node-wide cap, not to
	// the per-caller ones nor to the idle deadline (a cluster's own nodes,
	// whose streams carry every client's replication and may wait on a
	// slow client; keepalive finds a dead one).
	Exempt func(ctx context.Context) bool
}

// Limiter enforces a Config. It is safe for concurrent use; create it with
// New.
type Limiter struct {
	idle             time.Duration // <=0: no idle deadline
	streamsPerCaller int           // <=0: unlimited
	streams          int           // <=0: unlimited
	heavyPerCaller   int           // <=0: unlimited
	caller           func(ctx context.Context) string
	exempt           func(ctx context.Context) bool
	heavy            func(fullMethod string) bool

	mu             sync.Mutex
	callers        map[string]*callerState // only callers holding something
	open           int                     // streams open now
	runningHeavy   int                     // heavy calls running now
	peak           uint64
	admitted       uint64
	refusedStreams uint64
	refusedHeavy   uint64

	idleClosed atomic.Uint64
}

// callerState is what one caller holds now.
type callerState struct {
	streams int
	heavy   []string // full method of each heavy call running now
}

// New returns a Limiter for cfg.
//
// caller names who a call acts for, e.g. the authenticated principal, or the
// remote IP when there is none. When caller is nil, or returns "", the remote
// IP of the connection (PeerIP) is used.
//
// heavy says whether a full method name ("/pkg.Service/Method") is a heavy
// operation; nil means none is.
func New(cfg Config, caller func(ctx context.Context) string, heavy func(fullMethod string) bool) *Limiter {
	l := &Limiter{
		idle:             orDefault(cfg.IdleTimeout, DefaultIdleTimeout),
		streamsPerCaller: orDefault(cfg.StreamsPerCaller, DefaultStreamsPerCaller),
		streams:          orDefault(cfg.Streams, DefaultStreams),
		heavyPerCaller:   orDefault(cfg.HeavyPerCaller, DefaultHeavyPerCaller),
		caller:           caller,
		heavy:            heavy,
		exempt:           cfg.Exempt,
		callers:          make(map[string]*callerState),
	}
	if l.caller == nil {
		l.caller = PeerIP
	}
	if l.heavy == nil {
		l.heavy = func(string) bool { return false }
	}
	return l
}

func orDefault[T int | time.Duration](v, def T) T {
	if v == 0 {
		return def
	}
	return v
}

// PeerIP returns the remote IP address of the connection a call came in on,
// or "" when the context carries no peer. It is the caller function New uses
// when it is given none.
func PeerIP(ctx context.Context) string {
	p, ok := peer.FromContext(ctx)
	if !ok || p.Addr == nil {
		return ""
	}
	if a, ok := p.Addr.(*net.TCPAddr); ok {
		return a.IP.String()
	}
	s := p.Addr.String()
	if host, _, err := net.SplitHostPort(s); err == nil {
		return host
	}
	return s
}

// exemptCaller is the key under which exempt callers' streams are counted.
const exemptCaller = "\x00exempt"

func (l *Limiter) who(ctx context.Context) string {
	if w := l.caller(ctx); w != "" {
		return w
	}
	if w := PeerIP(ctx); w != "" {
		return w
	}
	return "unknown"
}

// UnaryInterceptor refuses a heavy unary call with codes.ResourceExhausted
// when its caller already runs HeavyPerCaller heavy calls. Other unary calls
// pass untouched.
func (l *Limiter) UnaryInterceptor() grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		if !l.heavy(info.FullMethod) || (l.exempt != nil && l.exempt(ctx)) {
			return handler(ctx, req)
		}
		who := l.who(ctx)
		if err := l.acquire(who, info.FullMethod, false, true); err != nil {
			return nil, err
		}
		defer l.release(who, info.FullMethod, false, true)
		return handler(ctx, req)
	}
}

// StreamInterceptor refuses a stream with codes.ResourceExhausted when its
// caller already holds StreamsPerCaller streams or the node holds Streams; a
// heavy streaming method also takes one of its caller's heavy slots. An
// admitted stream gets the idle deadline: its Context is cancelled, and
// RecvMsg or SendMsg return codes.DeadlineExceeded, when one RecvMsg or
// SendMsg waits IdleTimeout for the peer and no other call on the stream
// completes meanwhile (a RecvMsg left pending while SendMsg calls keep
// moving data does not close the stream). The call that timed out is left
// running until gRPC ends the stream after the handler returns, so a handler
// must not reuse the message of a RecvMsg that failed with DeadlineExceeded.
func (l *Limiter) StreamInterceptor() grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		who := l.who(ss.Context())
		heavy := l.heavy(info.FullMethod)
		exempt := l.exempt != nil && l.exempt(ss.Context())
		if exempt {
			who = exemptCaller
		}
		if err := l.acquire(who, info.FullMethod, true, heavy); err != nil {
			return err
		}
		defer l.release(who, info.FullMethod, true, heavy)
		if l.idle <= 0 || exempt {
			return handler(srv, ss)
		}
		is := newIdleStream(ss, l.idle, &l.idleClosed)
		defer is.end()
		return is.result(handler(srv, is))
	}
}

// acquire takes a stream slot and/or a heavy slot for who, or refuses with
// codes.ResourceExhausted and takes nothing. Each refusal is counted once,
// under the first limit it hits.
func (l *Limiter) acquire(who, method string, stream, heavy bool) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	c := l.callers[who]
	if stream {
		if l.streamsPerCaller > 0 && c != nil && c.streams >= l.streamsPerCaller && who != exemptCaller {
			l.refusedStreams++
			return status.Errorf(codes.ResourceExhausted,
				"too many open streams for caller %s (%d); close some first", who, c.streams)
		}
		if l.streams > 0 && l.open >= l.streams {
			l.refusedStreams++
			return status.Errorf(codes.ResourceExhausted,
				"node has %d open streams; try again later", l.open)
		}
	}
	if heavy && l.heavyPerCaller > 0 && c != nil && len(c.heavy) >= l.heavyPerCaller {
		l.refusedHeavy++
		return status.Error(codes.ResourceExhausted, heavyRefusal(who, c.heavy))
	}
	if c == nil {
		c = &callerState{}
		l.callers[who] = c
	}
	if stream {
		c.streams++
		l.open++
		l.admitted++
		if uint64(l.open) > l.peak {
			l.peak = uint64(l.open)
		}
	}
	if heavy {
		c.heavy = append(c.heavy, method)
		l.runningHeavy++
	}
	return nil
}

// release gives back what a successful acquire with the same arguments took.
func (l *Limiter) release(who, method string, stream, heavy bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	c := l.callers[who]
	if c == nil {
		panic("limits: release without acquire for caller " + who)
	}
	if stream {
		c.streams--
		l.open--
	}
	if heavy {
		for i, m := range c.heavy {
			if m == method {
				c.heavy = append(c.heavy[:i], c.heavy[i+1:]...)
				break
			}
		}
		l.runningHeavy--
	}
	if c.streams == 0 && len(c.heavy) == 0 {
		delete(l.callers, who)
	}
}

// heavyRefusal says which heavy calls who already runs, e.g.
// "caller alice already runs 1 /ddstore.v1.Cluster/Repair call(s); wait for it to finish".
func heavyRefusal(who string, running []string) string {
	count := make(map[string]int, len(running))
	for _, m := range running {
		count[m]++
	}
	methods := make([]string, 0, len(count))
	for m := range count {
		methods = append(methods, m)
	}
	sort.Strings(methods)
	var what string
	if len(methods) == 1 {
		what = fmt.Sprintf("%d %s", count[methods[0]], methods[0])
	} else {
		parts := make([]string, len(methods))
		for i, m := range methods {
			parts[i] = fmt.Sprintf("%d %s", count[m], m)
		}
		what = strings.Join(parts, ", ")
	}
	wait := "wait for it to finish"
	if len(running) > 1 {
		wait = "wait for one to finish"
	}
	return fmt.Sprintf("caller %s already runs %s call(s); %s", who, what, wait)
}

// Stats is a snapshot of a Limiter's counters. Gauges say what is held now;
// the other fields count since New.
type Stats struct {
	OpenStreams     uint64 // gauge: streams whose handler is running
	PeakStreams     uint64 // most streams open at once
	AdmittedStreams uint64 // streams admitted
	RefusedStreams  uint64 // streams refused by StreamsPerCaller or Streams
	IdleClosed      uint64 // streams closed by the idle deadline
	RunningHeavy    uint64 // gauge: heavy calls (unary or streaming) running
	RefusedHeavy    uint64 // heavy calls refused by HeavyPerCaller
	Callers         uint64 // gauge: callers holding a stream or a heavy call
}

// Stats returns a snapshot of the counters.
func (l *Limiter) Stats() Stats {
	l.mu.Lock()
	defer l.mu.Unlock()
	return Stats{
		OpenStreams:     uint64(l.open),
		PeakStreams:     l.peak,
		AdmittedStreams: l.admitted,
		RefusedStreams:  l.refusedStreams,
		IdleClosed:      l.idleClosed.Load(),
		RunningHeavy:    uint64(l.runningHeavy),
		RefusedHeavy:    l.refusedHeavy,
		Callers:         uint64(len(l.callers)),
	}
}
