package server

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/ddstore/ddstore/catalog"
	"github.com/ddstore/ddstore/consensus"
	pb "github.com/ddstore/ddstore/proto/ddstore/v1"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// leaderWait bounds how long a write or linearizable read waits for a leader
// (an election, a leader change) before answering Unavailable.
const leaderWait = 15 * time.Second

// propose applies cmd through the leader: here if this node leads, otherwise
// forwarded over the Node service. While there is no leader it retries until
// ctx ends or leaderWait passes.
func (n *Node) propose(ctx context.Context, cmd *pb.Command) (*pb.FileManifest, error) {
	data, err := catalog.EncodeCommand(cmd)
	if err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "%v", err)
	}
	var m *pb.FileManifest
	err = n.withLeader(ctx, func(ctx context.Context) error {
		if n.raft.IsLeader() {
			resp, err := n.raft.Apply(ctx, data)
			if err != nil {
				return err
			}
			res, ok := resp.(catalog.Result)
			if !ok {
				return status.Errorf(codes.Internal, "catalog returned %T", resp)
			}
			m = res.Manifest
			return res.Err
		}
		conn, err := n.leaderConn()
		if err != nil {
			return err
		}
		resp, err := pb.NewNodeClient(conn).Propose(ctx, &pb.ProposeRequest{Command: data})
		if err != nil {
			return err
		}
		m = resp.GetManifest()
		return nil
	})
	return m, err
}

// readBarrier makes a catalog read linearizable: it waits until this node has
// applied every command committed before the call. Stale reads skip it.
func (n *Node) readBarrier(ctx context.Context, c pb.Consistency) error {
	if c == pb.Consistency_CONSISTENCY_STALE {
		return nil
	}
	var index uint64
	err := n.withLeader(ctx, func(ctx context.Context) error {
		if n.raft.IsLeader() {
			var err error
			index, err = n.raft.ReadIndex(ctx)
			return err
		}
		conn, err := n.leaderConn()
		if err != nil {
			return err
		}
		resp, err := pb.NewNodeClient(conn).ReadIndex(ctx, &pb.ReadIndexRequest{})
		if err != nil {
			return err
		}
		index = resp.GetIndex()
		return nil
	})
	if err != nil {
		return err
	}
	return n.raft.WaitApplied(ctx, index)
}

// withLeader runs fn, retrying with backoff while the cluster has no leader or
// the leader moved, until ctx ends or leaderWait passes. Any other error is
// returned at once.
func (n *Node) withLeader(ctx context.Context, fn func(context.Context) error) error {
	deadline := time.Now().Add(leaderWait)
	backoff := 25 * time.Millisecond
	for {
		err := fn(ctx)
		if err == nil || !leaderless(err) {
			return err
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%w: gave up after %s: %w", consensus.ErrNoLeader, leaderWait, err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-n.stop:
			return consensus.ErrShutdown
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, time.Second)
	}
}

// leaderless reports errors that mean "try again once a leader is known".
func leaderless(err error) bool {
	if errors.Is(err, consensus.ErrNotLeader) || errors.Is(err, consensus.ErrNoLeader) {
		return true
	}
	if st, ok := status.FromError(err); ok && st.Code() == codes.Unavailable {
		return true
	}
	return false
}
