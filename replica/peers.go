package replica

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ddstore/ddstore/chunker"
	pb "github.com/ddstore/ddstore/proto/ddstore/v1"
)

// Errors a caller can test with errors.Is.
var (
	// ErrTooFewCopies: a chunk could not be stored on R nodes.
	ErrTooFewCopies = errors.New("replica: too few copies")
	// ErrNoProgress: a node stopped answering in the middle of a copy
	// stream (it acknowledged nothing for Replicator.AckTimeout).
	ErrNoProgress = errors.New("replica: node stopped answering")
)

// Defaults of the Replicator's timeouts.
const (
	DefaultCallTimeout = 2 * time.Second
	DefaultAckTimeout  = 10 * time.Second
)

// Peer is another node of the cluster, reached over gRPC.
type Peer struct {
	ID     string
	Client pb.NodeClient
}

// Replicator keeps R copies of each chunk: one in the local store and R-1 on
// peers chosen by Rank. No call to a peer waits without bound: a peer that
// does not answer a read within CallTimeout gets company (the next copy is
// asked too), one that acknowledges nothing of a copy stream for AckTimeout
// is dropped from it, and either is avoided for a while (Health).
type Replicator struct {
	Local  Store
	Codecs *chunker.Codecs
	Logger *slog.Logger
	Health *Health // nil: every peer is tried in rank order

	// CallTimeout bounds a single call to a peer before the next one is
	// tried; 0: DefaultCallTimeout. A call still running then may finish
	// first, but not after 4 × CallTimeout.
	CallTimeout time.Duration
	// AckTimeout is how long a copy stream may go with chunks in flight and
	// no acknowledgement before the peer is given up; 0: DefaultAckTimeout.
	AckTimeout time.Duration
}

func (r *Replicator) callTimeout() time.Duration {
	if r.CallTimeout > 0 {
		return r.CallTimeout
	}
	return DefaultCallTimeout
}

func (r *Replicator) ackTimeout() time.Duration {
	if r.AckTimeout > 0 {
		return r.AckTimeout
	}
	return DefaultAckTimeout
}

// Fetch returns a verified copy of a chunk: from the local store if it holds a
// good one, else from the first peer (in Rank order) that does.
func (r *Replicator) Fetch(ctx context.Context, peers []Peer, id chunker.ID) (chunker.Encoded, error) {
	c, err := r.Local.Get(ctx, id)
	if err == nil {
		return c, nil
	}
	if !errors.Is(err, ErrNotFound) && !errors.Is(err, chunker.ErrCorrupt) {
		r.logger().Warn("local store failed to read a chunk; trying peers", "chunk", id, "err", err)
	}
	return r.fetchPeers(ctx, r.Health.Order(Rank(id, peers)), id, err)
}

// fetchPeers asks peers for a chunk, in order, one at a time while they
// answer: a peer silent for CallTimeout is marked failed and the next one is
// asked alongside (a hedged read); the first verified copy wins.
func (r *Replicator) fetchPeers(ctx context.Context, peers []Peer, id chunker.ID, lastErr error) (chunker.Encoded, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	type answer struct {
		c    chunker.Encoded
		err  error
		peer Peer
	}
	answers := make(chan answer, len(peers))
	next, running := 0, 0
	ask := func() {
		p := peers[next]
		next++
		running++
		go func() {
			c, err := r.fetchFrom(ctx, p, id)
			answers <- answer{c, err, p}
		}()
	}
	hedge := time.NewTimer(time.Hour)
	defer hedge.Stop()
	for next < len(peers) || running > 0 {
		if running == 0 {
			ask()
			hedge.Reset(r.callTimeout())
		}
		select {
		case a := <-answers:
			running--
			if a.err == nil {
				r.Health.Succeeded(a.peer.ID)
				return a.c, nil
			}
			if Unhealthy(a.err) && ctx.Err() == nil {
				r.Health.Failed(a.peer.ID)
			}
			lastErr = fmt.Errorf("peer %s: %w", a.peer.ID, a.err)
		case <-hedge.C:
			// The peer asked last is slow or hung: avoid it for a while
			// and ask the next one too.
			r.Health.Failed(peers[next-1].ID)
			r.logger().Warn("a node did not answer in time; asking another for the chunk", "node", peers[next-1].ID, "chunk", id, "after", r.callTimeout())
			if next < len(peers) {
				ask()
				hedge.Reset(r.callTimeout())
			}
		case <-ctx.Done():
			return chunker.Encoded{}, ctx.Err()
		}
	}
	if ctx.Err() != nil {
		return chunker.Encoded{}, ctx.Err()
	}
	return chunker.Encoded{}, fmt.Errorf("%w: chunk %s is on none of %d nodes (last error: %v)", ErrNotFound, id, len(peers)+1, lastErr)
}

// fetchFrom gets a chunk from one peer and verifies it.
func (r *Replicator) fetchFrom(ctx context.Context, p Peer, id chunker.ID) (chunker.Encoded, error) {
	ctx, cancel := context.WithTimeout(ctx, 4*r.callTimeout())
	defer cancel()
	resp, err := p.Client.GetChunk(ctx, &pb.GetChunkRequest{Id: id[:]})
	if err != nil {
		return chunker.Encoded{}, err
	}
	c, err := FromWire(resp.GetChunk())
	if err == nil && c.ID != id {
		err = fmt.Errorf("%w: asked for %s, got %s", ErrBadChunk, id, c.ID)
	}
	if err == nil {
		err = r.Codecs.Verify(c)
	}
	if err != nil {
		r.logger().Warn("peer sent a bad copy", "peer", p.ID, "chunk", id, "err", err)
		return chunker.Encoded{}, err
	}
	return c, nil
}

func (r *Replicator) logger() *slog.Logger {
	if r.Logger != nil {
		return r.Logger
	}
	return slog.Default()
}

// Session stores the chunks of one upload on R nodes each, over one
// PutChunks stream per peer, opened on first use. Store may be called
// concurrently.
type Session struct {
	r       *Replicator
	ctx     context.Context
	cancel  context.CancelFunc
	self    string // this node's ID, ranked with the peers
	peers   []Peer
	copies  int  // R
	unary   bool // each copy in one PutChunk call, no streams
	mu      sync.Mutex
	streams map[string]*peerStream
}

// NewSession starts a session storing each chunk on copies nodes chosen
// among this node (ID self) and peers by rendezvous hashing: the node an
// upload enters through keeps a copy only of the chunks that rank it among
// the first R, so copies spread evenly whichever node clients talk to.
func (r *Replicator) NewSession(ctx context.Context, self string, peers []Peer, copies int) *Session {
	ctx, cancel := context.WithCancel(ctx)
	return &Session{r: r, ctx: ctx, cancel: cancel, self: self, peers: peers, copies: copies, streams: map[string]*peerStream{}}
}

// NewCommitSession is NewSession for the few chunks a commit carries: each
// copy travels in one PutChunk call instead of on a stream, which saves a
// small file's put the opening and the close of a stream per peer.
func (r *Replicator) NewCommitSession(ctx context.Context, self string, peers []Peer, copies int) *Session {
	s := r.NewSession(ctx, self, peers, copies)
	s.unary = true
	return s
}

// Store writes c to the first R nodes of its rendezvous order (nodes that
// failed lately last), at the same time; when one fails it moves on to the
// next node in that order. It returns whether some node wrote a new copy
// (rather than already holding one). When fewer than R nodes hold the chunk
// at the end it returns ErrTooFewCopies.
func (s *Session) Store(ctx context.Context, c chunker.Encoded) (written bool, err error) {
	all := append(slices.Clone(s.peers), Peer{ID: s.self})
	candidates := s.r.Health.Order(Rank(c.ID, all))
	need := min(s.copies, len(candidates))
	var errs []error
	for need > 0 && len(candidates) > 0 {
		n := min(need, len(candidates))
		round := candidates[:n]
		candidates = candidates[n:]
		type result struct {
			written bool
			err     error
		}
		results := make([]result, n)
		var wg sync.WaitGroup
		for i, p := range round {
			wg.Go(func() {
				if p.ID == s.self {
					w, err := s.r.Local.Put(ctx, c)
					if err != nil {
						err = fmt.Errorf("local store: %w", err)
					}
					results[i] = result{w, err}
					return
				}
				w, err := s.put(ctx, p, c)
				results[i] = result{w, err}
			})
		}
		wg.Wait()
		for i, r := range results {
			if r.err == nil {
				need--
				written = written || r.written
				continue
			}
			if ctx.Err() != nil {
				return written, ctx.Err()
			}
			if round[i].ID != s.self && Unhealthy(r.err) {
				s.r.Health.Failed(round[i].ID)
			}
			errs = append(errs, fmt.Errorf("node %s: %w", round[i].ID, r.err))
		}
	}
	if need > 0 {
		return written, fmt.Errorf("%w: chunk %s is on %d of %d nodes: %w", ErrTooFewCopies, c.ID, s.copies-need, s.copies, errors.Join(errs...))
	}
	return written, nil
}

func (s *Session) put(ctx context.Context, p Peer, c chunker.Encoded) (bool, error) {
	if s.unary {
		return s.putCall(ctx, p, c)
	}
	s.mu.Lock()
	ps := s.streams[p.ID]
	if ps == nil {
		var err error
		ps, err = openPeerStream(s.ctx, p, s.r.callTimeout(), s.r.ackTimeout())
		if err != nil {
			s.mu.Unlock()
			return false, err
		}
		s.streams[p.ID] = ps
	}
	s.mu.Unlock()
	w, err := ps.put(ctx, c)
	if err != nil && ctx.Err() == nil {
		// Store moves on to another node: Close need not fail for it.
		ps.failedPut.Store(true)
	}
	return w, err
}

// putCall stores one copy on p in one PutChunk call, given as long as a
// stream would have to open and acknowledge it.
func (s *Session) putCall(ctx context.Context, p Peer, c chunker.Encoded) (bool, error) {
	limit := s.r.callTimeout() + s.r.ackTimeout()
	cctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	resp, err := p.Client.PutChunk(cctx, &pb.PutChunksRequest{Chunk: ToWire(c)})
	if err != nil {
		if ctx.Err() == nil && cctx.Err() != nil {
			err = fmt.Errorf("%w: node %s did not store a copy within %s", ErrNoProgress, p.ID, limit)
		}
		return false, err
	}
	return resp.GetWritten(), nil
}

// Close ends the session's streams, waiting for outstanding copies. A
// stream that failed a put already is not reported again: Store stored that
// chunk elsewhere or returned the error.
func (s *Session) Close() error {
	s.mu.Lock()
	streams := s.streams
	s.streams = map[string]*peerStream{}
	s.mu.Unlock()
	var errs []error
	for id, ps := range streams {
		if err := ps.close(s.r.ackTimeout()); err != nil && !ps.failedPut.Load() {
			errs = append(errs, fmt.Errorf("node %s: %w", id, err))
		}
	}
	s.cancel()
	return errors.Join(errs...)
}

// ack is a peer's answer to one chunk sent on a copy stream.
type ack struct {
	written bool // the peer wrote a new copy (it did not hold one)
	err     error
}

// errStreamEnded: the peer closed a PutChunks stream.
var errStreamEnded = errors.New("peer closed the copy stream")

// peerStream is one PutChunks stream. Acks come back in send order, so a FIFO
// of waiters pairs them with their chunks. A watchdog ends the stream with
// ErrNoProgress when chunks are in flight and no ack came for ackTimeout.
type peerStream struct {
	stream  pb.Node_PutChunksClient
	cancel  context.CancelFunc
	mu      sync.Mutex
	pending []chan ack
	err     error // sticky: once the stream fails, every put fails
	done    chan struct{}

	failedPut atomic.Bool // a put failed on it (its chunk went elsewhere)
	inFlight  atomic.Int64
	progress  atomic.Int64 // unix nanoseconds of the last ack, or of the first chunk sent after none was in flight
	aborted   atomic.Pointer[error]
}

// openPeerStream opens a copy stream to p. Opening waits for the connection,
// which to a hung node never comes: it is given up after callTimeout.
func openPeerStream(ctx context.Context, p Peer, callTimeout, ackTimeout time.Duration) (*peerStream, error) {
	ctx, cancel := context.WithCancel(ctx)
	ps := &peerStream{cancel: cancel, done: make(chan struct{})}
	opening := time.AfterFunc(callTimeout, func() {
		ps.abort(fmt.Errorf("%w: node %s did not open a copy stream within %s", ErrNoProgress, p.ID, callTimeout))
	})
	stream, err := p.Client.PutChunks(ctx)
	if !opening.Stop() {
		// Given up (or being given up) while opening: the stream is dead.
		err = fmt.Errorf("%w: node %s did not open a copy stream within %s", ErrNoProgress, p.ID, callTimeout)
	}
	if err != nil {
		cancel()
		return nil, err
	}
	ps.stream = stream
	go ps.receive()
	go ps.watch(ctx, p.ID, ackTimeout)
	return ps, nil
}

// abort ends the stream with err (the first reason given wins).
func (ps *peerStream) abort(err error) {
	ps.aborted.CompareAndSwap(nil, &err)
	ps.cancel()
}

// watch aborts the stream when it stops making progress.
func (ps *peerStream) watch(ctx context.Context, id string, ackTimeout time.Duration) {
	t := time.NewTicker(max(ackTimeout/4, 10*time.Millisecond))
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-ps.done:
			return
		case now := <-t.C:
			if ps.inFlight.Load() > 0 && now.Sub(time.Unix(0, ps.progress.Load())) > ackTimeout {
				ps.abort(fmt.Errorf("%w: node %s acknowledged nothing for %s", ErrNoProgress, id, ackTimeout))
				return
			}
		}
	}
}

func (ps *peerStream) receive() {
	defer close(ps.done)
	for {
		resp, err := ps.stream.Recv()
		ps.mu.Lock()
		if err != nil {
			if err == io.EOF {
				err = errStreamEnded
			}
			if a := ps.aborted.Load(); a != nil {
				err = *a
			}
			if ps.err == nil {
				ps.err = err
			}
			for _, ch := range ps.pending {
				ch <- ack{err: ps.err}
			}
			ps.pending = nil
			ps.mu.Unlock()
			return
		}
		if len(ps.pending) == 0 {
			ps.err = errors.New("peer acknowledged a chunk it was not sent")
			ps.mu.Unlock()
			ps.stream.CloseSend()
			continue
		}
		ch := ps.pending[0]
		ps.pending = ps.pending[1:]
		ps.progress.Store(time.Now().UnixNano())
		ps.inFlight.Add(-1)
		ps.mu.Unlock()
		ch <- ack{written: resp.GetWritten()}
	}
}

func (ps *peerStream) put(ctx context.Context, c chunker.Encoded) (written bool, err error) {
	ch := make(chan ack, 1)
	ps.mu.Lock()
	if ps.err != nil {
		ps.mu.Unlock()
		return false, ps.err
	}
	ps.pending = append(ps.pending, ch)
	if ps.inFlight.Add(1) == 1 {
		ps.progress.Store(time.Now().UnixNano())
	}
	// Sending under the lock keeps the FIFO in send order. A send blocked
	// by a hung node's flow control is freed by the watchdog's abort.
	err = ps.stream.Send(&pb.PutChunksRequest{Chunk: ToWire(c)})
	ps.mu.Unlock()
	if err != nil {
		// The receiver will fail the pending waiters with the real status.
		a := <-ch
		return false, a.err
	}
	select {
	case a := <-ch:
		return a.written, a.err
	case <-ctx.Done():
		return false, ctx.Err()
	}
}

// close half-closes the stream and waits for the peer's last
// acknowledgements and its status, at most ackTimeout after the last
// progress.
func (ps *peerStream) close(ackTimeout time.Duration) error {
	defer ps.cancel()
	ps.mu.Lock()
	ps.stream.CloseSend()
	ps.mu.Unlock()
	select {
	case <-ps.done:
	case <-time.After(ackTimeout):
		ps.abort(fmt.Errorf("%w: the node did not end a copy stream within %s", ErrNoProgress, ackTimeout))
		<-ps.done
	}
	ps.mu.Lock()
	defer ps.mu.Unlock()
	if ps.err == errStreamEnded {
		return nil
	}
	return ps.err
}
