// Package replica stores chunk bytes. A Store holds content-addressed,
// encoded chunks on one node; the local disk store is the embedded default and
// the GridFS store keeps them in MongoDB. Copies between the nodes of a
// cluster travel over gRPC streams (see Peers), never through Raft.
package replica

import (
	"context"
	"errors"
	"fmt"
	"syscall"

	"github.com/ddstore/ddstore/chunker"
)

// Errors a caller can test with errors.Is.
var (
	// ErrNotFound: the store does not hold the chunk.
	ErrNotFound = errors.New("replica: chunk not found")
	// ErrClosed: the store was closed.
	ErrClosed = errors.New("replica: store closed")
	// ErrNoSpace: a write failed for want of space: the disk or a quota is
	// full (ENOSPC, EDQUOT), or the database behind the store says so.
	// Nodes answer it with codes.ResourceExhausted.
	ErrNoSpace = errors.New("disk full")
)

// UnverifiedGetter is a Store that can return a chunk without checking it
// against its ID: no decompression, no hash. A node serves a download from it
// when the client verifies every chunk itself (and asks again, verified, for
// one it finds bad), while scrub checks the data at rest: each byte is then
// hashed once on the way out, by the client. Damage the header shows (bad
// magic, impossible sizes) is still reported as chunker.ErrCorrupt.
type UnverifiedGetter interface {
	GetUnverified(ctx context.Context, id chunker.ID) (chunker.Encoded, error)
}

// BatchDeleter is a Store that deletes many chunks at once more cheaply than
// one by one (the pack store: one sync for all their tombstones). It
// returns how many of ids it deleted before any error.
type BatchDeleter interface {
	DeleteBatch(ctx context.Context, ids []chunker.ID) (int, error)
}

// DeleteAll deletes ids from s, in one batch when s can.
func DeleteAll(ctx context.Context, s Store, ids []chunker.ID) (int, error) {
	if b, ok := s.(BatchDeleter); ok {
		return b.DeleteBatch(ctx, ids)
	}
	for i, id := range ids {
		if err := s.Delete(ctx, id); err != nil {
			return i, err
		}
	}
	return len(ids), nil
}

// SpaceChecker is a Store that can tell, without storing a chunk, whether it
// has room for one more of the largest chunks. CheckSpace returns an error
// wrapping ErrNoSpace when it has not, nil when it has.
type SpaceChecker interface {
	CheckSpace(ctx context.Context) error
}

// noSpace wraps ErrNoSpace around an error that says a disk or quota is
// full; any other error is returned as it is.
func noSpace(err error) error {
	if err == nil || errors.Is(err, ErrNoSpace) {
		return err
	}
	if errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT) {
		return fmt.Errorf("%w: %w", ErrNoSpace, err)
	}
	return err
}

// Store holds encoded chunks by ID. Implementations are safe for concurrent
// use. Put is durable when it returns: the chunk survives a crash of the
// process or the machine. Get verifies what it read against the ID and never
// returns corrupt bytes: a copy found corrupt is reported with
// chunker.ErrCorrupt (and may be removed by the store).
type Store interface {
	// Has reports whether the store holds the chunk.
	Has(ctx context.Context, id chunker.ID) (bool, error)
	// Put stores c under c.ID. Storing a chunk already present is a no-op
	// reporting written=false. The caller has verified c; stores trust it.
	Put(ctx context.Context, c chunker.Encoded) (written bool, err error)
	// Get returns the chunk, verified against id.
	Get(ctx context.Context, id chunker.ID) (chunker.Encoded, error)
	// Delete removes the chunk; deleting a missing chunk is not an error.
	Delete(ctx context.Context, id chunker.ID) error
	// Walk calls fn for every chunk held, with its stored size, in no
	// particular order, until fn returns an error (which Walk returns).
	Walk(ctx context.Context, fn func(id chunker.ID, storedSize int64) error) error
	// Usage reports how many chunks and stored bytes the store holds.
	Usage(ctx context.Context) (Usage, error)
	// Kind names the backend: "local", "gridfs", ...
	Kind() string
	Close() error
}

// Usage is a store's size.
type Usage struct {
	Chunks uint64
	Bytes  uint64
}
