package server

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/ddstore/ddstore/chunker"
	pb "github.com/ddstore/ddstore/proto/ddstore/v1"
	"github.com/ddstore/ddstore/replica"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

// writable tracks whether the node can do its job: write chunks to its
// store and entries to its Raft log. While either fails its gRPC health is
// NOT_SERVING and `ddstore status` says why (NodeStatus.not_serving); it
// turns SERVING again by itself once both can be written.
type writable struct {
	mu          sync.Mutex
	store       error // why the chunk store cannot be written; nil: it can
	storeSince  time.Time
	unreachable error  // why the chunk store does not answer; nil: it does
	notServing  string // what health last said: "" while SERVING
}

// watchedStore is the node's chunk store as the rest of the node sees it: a
// write that finds no space names this node and marks the store full at
// once (health NOT_SERVING) instead of at the next check.
type watchedStore struct {
	replica.Store
	n *Node
}

// Put stores c; see replica.Store.
func (w watchedStore) Put(ctx context.Context, c chunker.Encoded) (bool, error) {
	written, err := w.Store.Put(ctx, c)
	if written {
		w.n.metrics.ChunkStored()
	}
	switch {
	case errors.Is(err, replica.ErrNoSpace):
		err = fmt.Errorf("node %s: %w", w.n.cfg.ID, err)
		w.n.storeFull(err)
	case err == nil && w.n.space == nil:
		// A store that cannot check its space is writable again once a
		// write succeeds.
		w.n.storeWritable()
	}
	return written, err
}

// GetUnverified reads a chunk without checking it when the store can (see
// replica.UnverifiedGetter), else checked.
func (w watchedStore) GetUnverified(ctx context.Context, id chunker.ID) (chunker.Encoded, error) {
	if u, ok := w.Store.(replica.UnverifiedGetter); ok {
		return u.GetUnverified(ctx, id)
	}
	return w.Store.Get(ctx, id)
}

// DeleteBatch deletes ids, in one batch when the store can (see
// replica.BatchDeleter).
func (w watchedStore) DeleteBatch(ctx context.Context, ids []chunker.ID) (int, error) {
	return replica.DeleteAll(ctx, w.Store, ids)
}

// storeFull records that the chunk store could not be written.
func (n *Node) storeFull(err error) {
	n.writable.mu.Lock()
	if n.writable.store == nil {
		n.writable.storeSince = time.Now()
		n.log.Error("chunk store is full; this node stores no chunks until space returns", "err", err)
	}
	n.writable.store = err
	n.writable.mu.Unlock()
	n.updateServing()
}

// storeWritable records that the chunk store can be written.
func (n *Node) storeWritable() {
	n.writable.mu.Lock()
	if n.writable.store != nil {
		n.log.Info("chunk store writable again", "after", time.Since(n.writable.storeSince).Round(time.Millisecond))
	}
	n.writable.store = nil
	n.writable.mu.Unlock()
	n.updateServing()
}

// storeReachable records whether the chunk store answered (err nil) or
// not.
func (n *Node) storeReachable(err error) {
	n.writable.mu.Lock()
	switch was := n.writable.unreachable; {
	case was == nil && err != nil:
		n.log.Error("chunk store does not answer", "err", err)
	case was != nil && err == nil:
		n.log.Info("chunk store answers again")
	}
	n.writable.unreachable = err
	n.writable.mu.Unlock()
	n.updateServing()
}

// serving says what the node can do now.
type serving struct {
	quorum, storeOK, logOK bool
	why                    string // "" when all three are true
}

// servingState checks whether the node can do its job now: it has a leader
// it heard from within the election timeout (or leads), its chunk store
// answers and has room, its Raft log takes entries.
func (n *Node) servingState() serving {
	s := serving{quorum: true, storeOK: true, logOK: true}
	var why []string
	if ok, reason := n.raft.HasQuorum(n.contactLimit()); !ok {
		s.quorum = false
		why = append(why, "no quorum: "+reason)
	}
	n.writable.mu.Lock()
	if err := n.writable.unreachable; err != nil {
		s.storeOK = false
		why = append(why, "chunk store does not answer: "+err.Error())
	}
	if err := n.writable.store; err != nil {
		s.storeOK = false
		why = append(why, "chunk store cannot be written: "+err.Error())
	}
	n.writable.mu.Unlock()
	if err, since := n.raft.LogFailure(); err != nil {
		s.logOK = false
		why = append(why, fmt.Sprintf("%v (for %s)", err, time.Since(since).Round(time.Second)))
	}
	s.why = strings.Join(why, "; ")
	return s
}

// notServing says why the node cannot do its job now, or "" if it can.
func (n *Node) notServing() string { return n.servingState().why }

// updateServing sets the health status from what can be written now.
func (n *Node) updateServing() {
	why := n.notServing()
	n.writable.mu.Lock()
	defer n.writable.mu.Unlock()
	was := n.writable.notServing
	n.writable.notServing = why
	if (was == "") == (why == "") {
		return
	}
	st := healthpb.HealthCheckResponse_SERVING
	if why != "" {
		st = healthpb.HealthCheckResponse_NOT_SERVING
		n.log.Warn("health: NOT_SERVING", "why", why)
	} else {
		n.log.Info("health: SERVING", "was", was)
	}
	n.health.SetServingStatus("", st)
	n.health.SetServingStatus(pb.Files_ServiceDesc.ServiceName, st)
}

// writableLoop checks every WriteCheckInterval that the store has room for
// a largest chunk (stores that can tell) and reads the Raft log's state,
// and updates health.
func (n *Node) writableLoop() {
	if n.cfg.WriteCheckInterval < 0 {
		return
	}
	t := time.NewTicker(n.cfg.WriteCheckInterval)
	defer t.Stop()
	for {
		select {
		case <-n.stop:
			return
		case <-t.C:
		}
		// Any store answers Has; one that does not answer within the
		// node timeout cannot serve reads or take copies.
		ctx, cancel := context.WithTimeout(context.Background(), n.cfg.NodeTimeout)
		_, err := n.base.Has(ctx, chunker.ID{})
		cancel()
		if err != nil {
			err = fmt.Errorf("node %s: %w", n.cfg.ID, err)
		}
		n.storeReachable(err)
		if n.space != nil {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			err := n.space.CheckSpace(ctx)
			cancel()
			switch {
			case errors.Is(err, replica.ErrNoSpace):
				n.storeFull(fmt.Errorf("node %s: %w", n.cfg.ID, err))
			case err == nil:
				n.storeWritable()
			default:
				n.log.Warn("could not check the chunk store's space", "err", err)
			}
		}
		n.updateServing()
	}
}

// contactLimit is how long a follower may go without hearing from its
// leader and still count itself in a quorum: two thirds of the election
// timeout (the leader sends a heartbeat every tenth of the heartbeat
// timeout, so that is many missed heartbeats), so that with quorumLoop's
// checks a lost quorum shows within the election timeout.
func (n *Node) contactLimit() time.Duration { return n.cfg.ElectionTimeout * 2 / 3 }

// quorumLoop re-checks health every twentieth of the election timeout, so
// that a node that loses its quorum (no leader heard from within
// contactLimit) turns NOT_SERVING within the election timeout, and SERVING
// again as soon as it hears from a leader. A check reads a few fields of
// Raft's state; it costs next to nothing.
func (n *Node) quorumLoop() {
	t := time.NewTicker(max(n.cfg.ElectionTimeout/20, 5*time.Millisecond))
	defer t.Stop()
	for {
		select {
		case <-n.stop:
			return
		case <-t.C:
		}
		n.updateServing()
	}
}
