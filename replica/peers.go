package replica

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"

	"github.com/ddstore/ddstore/chunker"
	pb "github.com/ddstore/ddstore/proto/ddstore/v1"
)

// ErrTooFewCopies: a chunk could not be stored on R nodes.
var ErrTooFewCopies = errors.New("replica: too few copies")

// Peer is another node of the cluster, reached over gRPC.
type Peer struct {
	ID     string
	Client pb.NodeClient
}

// Replicator keeps R copies of each chunk: one in the local store and R-1 on
// peers chosen by Rank.
type Replicator struct {
	Local  Store
	Codecs *chunker.Codecs
	Logger *slog.Logger
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
	lastErr := err
	for _, p := range Rank(id, peers) {
		resp, err := p.Client.GetChunk(ctx, &pb.GetChunkRequest{Id: id[:]})
		if err != nil {
			lastErr = fmt.Errorf("peer %s: %w", p.ID, err)
			continue
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
			lastErr = fmt.Errorf("peer %s: %w", p.ID, err)
			continue
		}
		return c, nil
	}
	if ctx.Err() != nil {
		return chunker.Encoded{}, ctx.Err()
	}
	return chunker.Encoded{}, fmt.Errorf("%w: chunk %s is on none of %d nodes (last error: %v)", ErrNotFound, id, len(peers)+1, lastErr)
}

func (r *Replicator) logger() *slog.Logger {
	if r.Logger != nil {
		return r.Logger
	}
	return slog.Default()
}

// Session copies the chunks of one upload to peers over one PutChunks stream
// per peer, opened on first use. Store may be called concurrently.
type Session struct {
	r       *Replicator
	ctx     context.Context
	cancel  context.CancelFunc
	peers   []Peer
	copies  int // R
	mu      sync.Mutex
	streams map[string]*peerStream
}

// NewSession starts a session storing each chunk on copies nodes: this one and
// copies-1 of peers.
func (r *Replicator) NewSession(ctx context.Context, peers []Peer, copies int) *Session {
	ctx, cancel := context.WithCancel(ctx)
	return &Session{r: r, ctx: ctx, cancel: cancel, peers: peers, copies: copies, streams: map[string]*peerStream{}}
}

// Store writes c to the local store and to R-1 peers, in Rank order, moving
// on to the next peer when one fails. The local write and the copies to peers
// run at the same time. It returns whether the local store wrote a new copy.
// When fewer than R nodes hold the chunk at the end it returns
// ErrTooFewCopies.
func (s *Session) Store(ctx context.Context, c chunker.Encoded) (written bool, err error) {
	type localResult struct {
		written bool
		err     error
	}
	local := make(chan localResult, 1)
	go func() {
		w, err := s.r.Local.Put(ctx, c)
		local <- localResult{w, err}
	}()
	peerErr := s.copyToPeers(ctx, c)
	lr := <-local
	if lr.err != nil {
		return false, fmt.Errorf("replica: local store: chunk %s: %w", c.ID, lr.err)
	}
	return lr.written, peerErr
}

// copyToPeers stores c on copies-1 peers, in Rank order, moving on to the
// next peer when one fails.
func (s *Session) copyToPeers(ctx context.Context, c chunker.Encoded) error {
	need := s.copies - 1
	var errs []error
	candidates := Rank(c.ID, s.peers)
	for need > 0 && len(candidates) > 0 {
		n := min(need, len(candidates))
		round := candidates[:n]
		candidates = candidates[n:]
		results := make([]error, n)
		var wg sync.WaitGroup
		for i, p := range round {
			wg.Go(func() { results[i] = s.put(ctx, p, c) })
		}
		wg.Wait()
		for i, err := range results {
			if err == nil {
				need--
				continue
			}
			if ctx.Err() != nil {
				return ctx.Err()
			}
			errs = append(errs, fmt.Errorf("node %s: %w", round[i].ID, err))
		}
	}
	if need > 0 {
		return fmt.Errorf("%w: chunk %s is on %d of %d nodes: %w", ErrTooFewCopies, c.ID, s.copies-need, s.copies, errors.Join(errs...))
	}
	return nil
}

func (s *Session) put(ctx context.Context, p Peer, c chunker.Encoded) error {
	s.mu.Lock()
	ps := s.streams[p.ID]
	if ps == nil {
		var err error
		ps, err = openPeerStream(s.ctx, p)
		if err != nil {
			s.mu.Unlock()
			return err
		}
		s.streams[p.ID] = ps
	}
	s.mu.Unlock()
	return ps.put(ctx, c)
}

// Close ends the session's streams, waiting for outstanding copies.
func (s *Session) Close() error {
	s.mu.Lock()
	streams := s.streams
	s.streams = map[string]*peerStream{}
	s.mu.Unlock()
	var errs []error
	for id, ps := range streams {
		if err := ps.close(); err != nil {
			errs = append(errs, fmt.Errorf("node %s: %w", id, err))
		}
	}
	s.cancel()
	return errors.Join(errs...)
}

// errStreamEnded: the peer closed a PutChunks stream.
var errStreamEnded = errors.New("peer closed the copy stream")

// peerStream is one PutChunks stream. Acks come back in send order, so a FIFO
// of waiters pairs them with their chunks.
type peerStream struct {
	stream  pb.Node_PutChunksClient
	mu      sync.Mutex
	pending []chan error
	err     error // sticky: once the stream fails, every put fails
	done    chan struct{}
}

func openPeerStream(ctx context.Context, p Peer) (*peerStream, error) {
	stream, err := p.Client.PutChunks(ctx)
	if err != nil {
		return nil, err
	}
	ps := &peerStream{stream: stream, done: make(chan struct{})}
	go ps.receive()
	return ps, nil
}

func (ps *peerStream) receive() {
	defer close(ps.done)
	for {
		_, err := ps.stream.Recv()
		ps.mu.Lock()
		if err != nil {
			if err == io.EOF {
				err = errStreamEnded
			}
			if ps.err == nil {
				ps.err = err
			}
			for _, ch := range ps.pending {
				ch <- ps.err
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
		ps.mu.Unlock()
		ch <- nil
	}
}

func (ps *peerStream) put(ctx context.Context, c chunker.Encoded) error {
	ch := make(chan error, 1)
	ps.mu.Lock()
	if ps.err != nil {
		ps.mu.Unlock()
		return ps.err
	}
	ps.pending = append(ps.pending, ch)
	// Sending under the lock keeps the FIFO in send order.
	err := ps.stream.Send(&pb.PutChunksRequest{Chunk: ToWire(c)})
	ps.mu.Unlock()
	if err != nil {
		// The receiver will fail the pending waiters with the real status.
		return <-ch
	}
	select {
	case err := <-ch:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (ps *peerStream) close() error {
	ps.mu.Lock()
	ps.stream.CloseSend()
	ps.mu.Unlock()
	<-ps.done
	ps.mu.Lock()
	defer ps.mu.Unlock()
	if ps.err == errStreamEnded {
		return nil
	}
	return ps.err
}
