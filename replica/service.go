package replica

import (
	"context"
	"errors"
	"io"

	"github.com/ddstore/ddstore/chunker"
	pb "github.com/ddstore/ddstore/proto/ddstore/v1"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// MaxHasBatch is the most IDs one HasChunks call may ask about.
const MaxHasBatch = 100_000

// putWindow is how many chunk copies one PutChunks stream verifies and
// writes at once; acknowledgements still go back in order.
const putWindow = 8

// ChunkService serves the chunk half of the Node gRPC service (HasChunks,
// PutChunks, GetChunk) from a local store.
type ChunkService struct {
	Store  Store
	Codecs *chunker.Codecs
}

// HasChunks says which of the IDs the local store holds.
func (s *ChunkService) HasChunks(ctx context.Context, req *pb.HasChunksRequest) (*pb.HasChunksResponse, error) {
	if len(req.GetIds()) > MaxHasBatch {
		return nil, status.Errorf(codes.InvalidArgument, "asked about %d chunks; at most %d per call", len(req.GetIds()), MaxHasBatch)
	}
	has := make([]bool, len(req.GetIds()))
	for i, b := range req.GetIds() {
		id, err := chunker.IDFromBytes(b)
		if err != nil {
			return nil, status.Errorf(codes.InvalidArgument, "id %d: %v", i, err)
		}
		if has[i], err = s.Store.Has(ctx, id); err != nil {
			return nil, Status(err)
		}
	}
	return &pb.HasChunksResponse{Has: has}, nil
}

// GetChunk returns a verified chunk from the local store.
func (s *ChunkService) GetChunk(ctx context.Context, req *pb.GetChunkRequest) (*pb.GetChunkResponse, error) {
	id, err := chunker.IDFromBytes(req.GetId())
	if err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	c, err := s.Store.Get(ctx, id)
	if err != nil {
		return nil, Status(err)
	}
	return &pb.GetChunkResponse{Chunk: ToWire(c)}, nil
}

// PutChunks verifies and stores each chunk the stream carries, putWindow at a
// time, and acknowledges each once it is durable, in order. The first bad or
// failed chunk ends the stream with its status.
func (s *ChunkService) PutChunks(stream pb.Node_PutChunksServer) error {
	ctx, cancel := context.WithCancel(stream.Context())
	defer cancel()
	type job struct {
		id   chunker.ID
		done chan putResult
	}
	jobs := make(chan job, putWindow)
	ackErr := make(chan error, 1)
	go func() {
		for j := range jobs {
			r := <-j.done
			if r.err == nil {
				r.err = stream.Send(&pb.PutChunksResponse{Id: j.id[:], Written: r.written})
			}
			if r.err != nil {
				// Workers left running write to buffered channels and
				// stop on the cancelled context.
				cancel()
				ackErr <- r.err
				return
			}
		}
		ackErr <- nil
	}()
	recvErr := make(chan error, 1)
	go func() {
		defer close(jobs)
		for {
			req, err := stream.Recv()
			if err == io.EOF {
				recvErr <- nil
				return
			}
			if err != nil {
				recvErr <- err
				return
			}
			c, err := FromWire(req.GetChunk())
			if err != nil {
				recvErr <- status.Error(codes.InvalidArgument, err.Error())
				return
			}
			done := make(chan putResult, 1)
			select {
			case jobs <- job{id: c.ID, done: done}:
			case <-ctx.Done():
				recvErr <- ctx.Err()
				return
			}
			go func() { done <- s.verifyAndPut(ctx, c) }()
		}
	}()
	// A failed chunk ends the stream at once, with its status: the sender
	// is not left waiting for acknowledgements that will not come (its
	// next Recv gets the status; the receive loop above ends with it).
	if err := <-ackErr; err != nil {
		return Status(err)
	}
	return Status(<-recvErr)
}

type putResult struct {
	written bool
	err     error
}

// PutChunk stores one chunk copy, verified, as one message of PutChunks
// would.
func (s *ChunkService) PutChunk(ctx context.Context, req *pb.PutChunksRequest) (*pb.PutChunksResponse, error) {
	c, err := FromWire(req.GetChunk())
	if err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	r := s.verifyAndPut(ctx, c)
	if r.err != nil {
		return nil, Status(r.err)
	}
	return &pb.PutChunksResponse{Id: c.ID[:], Written: r.written}, nil
}

func (s *ChunkService) verifyAndPut(ctx context.Context, c chunker.Encoded) putResult {
	if ok, err := s.Store.Has(ctx, c.ID); err == nil && ok {
		return putResult{}
	}
	if err := s.Codecs.Verify(c); err != nil {
		return putResult{err: err}
	}
	w, err := s.Store.Put(ctx, c)
	return putResult{written: w, err: err}
}

// Status turns a store or chunk error into a gRPC status with the right
// code; statuses pass through unchanged.
func Status(err error) error {
	if err == nil {
		return nil
	}
	if _, ok := status.FromError(err); ok {
		return err
	}
	code := codes.Internal
	switch {
	case errors.Is(err, context.Canceled):
		code = codes.Canceled
	case errors.Is(err, context.DeadlineExceeded):
		code = codes.DeadlineExceeded
	case errors.Is(err, ErrNotFound):
		code = codes.NotFound
	case errors.Is(err, ErrNoSpace):
		code = codes.ResourceExhausted
	case errors.Is(err, chunker.ErrCorrupt), errors.Is(err, chunker.ErrBadEncoded), errors.Is(err, ErrBadChunk), errors.Is(err, chunker.ErrBadID):
		code = codes.InvalidArgument
	case errors.Is(err, ErrTooFewCopies), errors.Is(err, ErrClosed):
		code = codes.Unavailable
	}
	return status.Error(code, err.Error())
}
