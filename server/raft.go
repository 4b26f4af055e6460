package server

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
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
	m, _, err := n.proposeTried(ctx, cmd)
	return m, err
}

// proposeTried is propose that also tells whether the command was sent more
// than once: an earlier try that got no answer may have been applied, so
// the answer returned (that of the last try) may describe a state the
// command itself brought about.
func (n *Node) proposeTried(ctx context.Context, cmd *pb.Command) (m *pb.FileManifest, retried bool, err error) {
	data, err := catalog.EncodeCommand(cmd)
	if err != nil {
		return nil, false, status.Errorf(codes.InvalidArgument, "%v", err)
	}
	tries := 0
	err = n.withLeader(ctx, func(ctx context.Context) error {
		tries++
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
		// A command is applied once however often it is sent: a retried
		// PutFile finds itself already done (catalog.applyPutFile).
		return n.forward(ctx, proposeTimeout, func(ctx context.Context, nc pb.NodeClient) error {
			var resp *pb.ProposeResponse
			var err error
			if len(data) <= proposePiece {
				resp, err = nc.Propose(ctx, &pb.ProposeRequest{Command: data})
			} else {
				resp, err = proposeParts(ctx, nc, data)
			}
			m = resp.GetManifest()
			return err
		})
	})
	return m, tries > 1, err
}

// proposePiece is the most command bytes one message carries to the
// leader; a larger command (the manifest of a file of more than about
// 100,000 chunks) goes over ProposeParts in pieces.
const proposePiece = 4 << 20

// proposeParts sends a large command to the leader in pieces.
func proposeParts(ctx context.Context, nc pb.NodeClient, data []byte) (*pb.ProposeResponse, error) {
	s, err := nc.ProposeParts(ctx)
	if err != nil {
		return nil, err
	}
	for piece := range slices.Chunk(data, proposePiece) {
		if err := s.Send(&pb.ProposeRequest{Command: piece}); err != nil {
			if err == io.EOF {
				_, err = s.CloseAndRecv()
			}
			return nil, err
		}
	}
	return s.CloseAndRecv()
}

// proposeTimeout bounds one forwarded proposal: the leader appends it,
// a majority writes it to disk and the leader applies it.
const proposeTimeout = 10 * time.Second

// forward runs fn against the leader's Node service, bounded by timeout and
// cut short as soon as this node hears of another leader: the old one may
// be hung, and the call would wait for it in vain. Both end in Unavailable,
// which withLeader retries.
func (n *Node) forward(ctx context.Context, timeout time.Duration, fn func(context.Context, pb.NodeClient) error) error {
	leader, _ := n.raft.Leader()
	conn, err := n.leaderConn()
	if err != nil {
		return err
	}
	cctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	moved := make(chan struct{})
	done := make(chan struct{})
	defer close(done)
	go func() {
		t := time.NewTicker(50 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-cctx.Done():
				return
			case <-t.C:
				if id, _ := n.raft.Leader(); id != leader {
					close(moved)
					cancel()
					return
				}
			}
		}
	}()
	err = fn(cctx, pb.NewNodeClient(conn))
	if err == nil || ctx.Err() != nil {
		return err
	}
	select {
	case <-moved:
		return status.Errorf(codes.Unavailable, "the leader changed from %s while it was asked: %v", leader, err)
	default:
	}
	if cctx.Err() != nil {
		n.avoid.Failed(leader)
		return status.Errorf(codes.Unavailable, "leader %s did not answer within %s", leader, timeout)
	}
	return err
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
		return n.forward(ctx, n.cfg.NodeTimeout, func(ctx context.Context, nc pb.NodeClient) error {
			resp, err := nc.ReadIndex(ctx, &pb.ReadIndexRequest{})
			index = resp.GetIndex()
			return err
		})
	})
	if err != nil {
		return err
	}
	return n.raft.WaitApplied(ctx, index)
}

// termOf asks the cluster member id for its Raft term over its internal API
// (the leader's read rounds; see consensus.Config.TermOf).
func (n *Node) termOf(ctx context.Context, id string) (uint64, error) {
	var addr string
	n.fsm.Read(func(s *catalog.State) {
		if info, ok := s.Node(id); ok {
			addr = info.GetApiAddr()
		}
	})
	if addr == "" {
		return 0, fmt.Errorf("server: no API address known for member %s", id)
	}
	resp, err := pb.NewNodeClient(n.conns.Get(addr)).Term(ctx, &pb.TermRequest{})
	if err != nil {
		return 0, err
	}
	return resp.GetTerm(), nil
}

// withLeader runs fn, retrying with backoff while the cluster has no leader or
// the leader moved, until ctx ends or leaderWait passes. Any other error is
// returned at once.
func (n *Node) withLeader(ctx context.Context, fn func(context.Context) error) error {
	deadline := time.Now().Add(leaderWait)
	backoff := 10 * time.Millisecond
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
		backoff = min(2*backoff, 200*time.Millisecond)
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
