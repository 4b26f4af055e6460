package server

import (
	"context"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync"

	"github.com/ddstore/ddstore/catalog"
	"github.com/ddstore/ddstore/chunker"
	"github.com/ddstore/ddstore/consensus"
	pb "github.com/ddstore/ddstore/proto/ddstore/v1"
	"github.com/ddstore/ddstore/replica"
	"github.com/ddstore/ddstore/server/auth"
	"github.com/hashicorp/raft"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

type clusterService struct {
	pb.UnimplementedClusterServer
	n *Node
}

// Status reports the cluster as this node sees it, asking every member for
// its own state (members that do not answer within NodeTimeout — a quarter
// of it for a member that failed to answer lately — are marked so).
func (c *clusterService) Status(ctx context.Context, _ *pb.StatusRequest) (*pb.StatusResponse, error) {
	n := c.n
	servers, err := n.raft.Servers()
	if err != nil {
		return nil, toStatus(err)
	}
	leaderID, _ := n.raft.Leader()
	_, copies := n.placement()
	resp := &pb.StatusResponse{LeaderId: leaderID, Term: n.raft.Status().Term, Replicas: uint32(copies), Cluster: n.cfg.Cluster, Peers: n.peers.status()}
	infos := map[string]*pb.NodeInfo{}
	n.fsm.Read(func(s *catalog.State) {
		resp.Files, resp.Bytes = s.Totals()
		for _, srv := range servers {
			if info, ok := s.Node(string(srv.ID)); ok {
				infos[string(srv.ID)] = info
			}
		}
	})
	resp.Nodes = make([]*pb.NodeStatus, len(servers))
	var wg sync.WaitGroup
	for i, srv := range servers {
		id := string(srv.ID)
		wg.Go(func() {
			var st *pb.NodeStatus
			if id == n.cfg.ID {
				st = n.localStatus(ctx)
			} else if info := infos[id]; info != nil {
				timeout := n.cfg.NodeTimeout
				if n.avoid.Avoided(id) {
					timeout /= 4
				}
				cctx, cancel := context.WithTimeout(ctx, timeout)
				defer cancel()
				var err error
				st, err = pb.NewNodeClient(n.conns.Get(info.GetApiAddr())).LocalStatus(cctx, &pb.LocalStatusRequest{})
				if err == nil {
					n.avoid.Succeeded(id)
				} else if ctx.Err() == nil && replica.Unhealthy(err) {
					n.avoid.Failed(id)
				}
				if err != nil {
					st = &pb.NodeStatus{Id: id, ApiAddr: info.GetApiAddr(), State: "unreachable", Error: status.Convert(err).Message()}
				}
			} else {
				st = &pb.NodeStatus{Id: id, State: "unknown", Error: "address not registered yet"}
			}
			st.RaftAddr = string(srv.Address)
			st.Voter = srv.Suffrage == raft.Voter
			resp.Nodes[i] = st
		})
	}
	wg.Wait()
	if !isAdmin(ctx) {
		// Internal addresses are for operators: the API and Raft addresses
		// of a private network stay private.
		for _, st := range resp.Nodes {
			st.ApiAddr, st.RaftAddr = "", ""
		}
	}
	return resp, nil
}

func (n *Node) localStatus(ctx context.Context) *pb.NodeStatus {
	rs := n.raft.Status()
	st := &pb.NodeStatus{
		Id: n.cfg.ID, ApiAddr: n.cfg.Advertise, RaftAddr: n.cfg.RaftAddr, State: rs.State,
		Term: rs.Term, AppliedIndex: rs.AppliedIndex, CommitIndex: rs.CommitIndex, Store: n.store.Kind(),
		PublicAddr: n.pubAddr, Federation: n.peers.counters(),
	}
	st.Heal = n.healed.status()
	ls := n.limits.Stats()
	st.Limits = &pb.LimitStatus{
		OpenStreams: ls.OpenStreams, PeakStreams: ls.PeakStreams, RefusedStreams: ls.RefusedStreams, IdleClosed: ls.IdleClosed,
		RefusedHeavy: ls.RefusedHeavy, Denied: n.guard.denied.Load(), StreamMemoryBytes: uint64(n.cfg.StreamMemory),
		RefusedMemory: n.streamMem.refused.Load(),
	}
	if n.cached != nil {
		for _, t := range n.cached.TierStats() {
			st.Cache = append(st.Cache, &pb.CacheTierStatus{
				Tier: t.Tier, Hits: t.Hits, Misses: t.Misses, BytesServed: t.BytesServed, Entries: t.Entries,
				Bytes: t.Bytes, Evictions: t.Evictions, Skipped: t.Skipped, Errors: t.Errors, Corrupt: t.Corrupt,
			})
		}
	}
	if u, err := n.base.Usage(ctx); err == nil {
		st.Chunks, st.StoredBytes = u.Chunks, u.Bytes
	} else {
		st.Error = err.Error()
	}
	st.NotServing = n.notServing()
	return st
}

// TransferLeadership hands leadership to another member (on the leader;
// otherwise it fails with consensus.ErrNotLeader) and returns once it has.
func (n *Node) TransferLeadership() error {
	if !n.raft.IsLeader() {
		return consensus.ErrNotLeader
	}
	return n.raft.TransferLeadership()
}

// leaderDoes runs local on the leader, or passes the call on to it through
// remote, retrying while the cluster has no leader or the leader moves.
func (n *Node) leaderDoes(ctx context.Context, remote func(context.Context, pb.ClusterClient) error, local func(context.Context) error) error {
	return n.withLeader(ctx, func(ctx context.Context) error {
		if n.raft.IsLeader() {
			return local(ctx)
		}
		conn, err := n.leaderConn()
		if err != nil {
			return err
		}
		return remote(ctx, pb.NewClusterClient(conn))
	})
}

// Join adds a node to the cluster. Any member accepts it and passes it to
// the leader.
func (c *clusterService) Join(ctx context.Context, req *pb.JoinRequest) (*pb.JoinResponse, error) {
	if req.GetId() == "" || req.GetApiAddr() == "" || req.GetRaftAddr() == "" {
		return nil, status.Error(codes.InvalidArgument, "join needs the node's id, api_addr and raft_addr")
	}
	n := c.n
	// A node joins as itself: its certificate names the ID it asks for. A
	// member passing a join on to the leader acts for the joining node.
	if p, ok := auth.FromContext(ctx); ok && p.Kind == auth.KindNode && p.Name != req.GetId() && !n.hasMember(p.Name) {
		return nil, status.Errorf(codes.PermissionDenied, "node %s may join only as itself, not as %q", p.Name, req.GetId())
	}
	err := n.leaderDoes(ctx, func(ctx context.Context, cc pb.ClusterClient) error {
		_, err := cc.Join(ctx, req)
		return err
	}, func(ctx context.Context) error {
		if err := n.raft.AddVoter(ctx, req.GetId(), req.GetRaftAddr()); err != nil {
			return err
		}
		_, err := n.propose(ctx, &pb.Command{Op: &pb.Command_SetNode{SetNode: &pb.SetNode{Node: &pb.NodeInfo{
			Id: req.GetId(), ApiAddr: req.GetApiAddr(), RaftAddr: req.GetRaftAddr(),
		}}}})
		return err
	})
	if err != nil {
		return nil, toStatus(err)
	}
	n.log.Info("node joined", "id", req.GetId(), "api", req.GetApiAddr(), "raft", req.GetRaftAddr())
	// Files stored while the cluster had fewer than R voters have fewer
	// copies: a repair pass brings them up now, not at the next interval.
	select {
	case n.repairKick <- struct{}{}:
	default:
	}
	return &pb.JoinResponse{}, nil
}

// Leave removes a node from the cluster. A leader asked to remove itself
// hands leadership over first.
func (c *clusterService) Leave(ctx context.Context, req *pb.LeaveRequest) (*pb.LeaveResponse, error) {
	if req.GetId() == "" {
		return nil, status.Error(codes.InvalidArgument, "leave needs the node's id")
	}
	n := c.n
	err := n.leaderDoes(ctx, func(ctx context.Context, cc pb.ClusterClient) error {
		_, err := cc.Leave(ctx, req)
		return err
	}, func(ctx context.Context) error {
		if err := n.knownNode(req.GetId()); err != nil {
			return err
		}
		if req.GetId() == n.cfg.ID {
			if err := n.raft.TransferLeadership(); err != nil {
				return fmt.Errorf("hand leadership over before leaving: %w", err)
			}
			return consensus.ErrNotLeader // retried against the new leader
		}
		if err := n.raft.RemoveServer(ctx, req.GetId()); err != nil {
			return err
		}
		_, err := n.propose(ctx, &pb.Command{Op: &pb.Command_RemoveNode{RemoveNode: &pb.RemoveNode{Id: req.GetId()}}})
		return err
	})
	if err != nil {
		return nil, toStatus(err)
	}
	n.log.Info("node left", "id", req.GetId())
	return &pb.LeaveResponse{}, nil
}

// knownNode answers NotFound, naming the members, unless id is a voter or
// has a node record in the catalog (a node half removed by an interrupted
// leave may be left with one only). It runs on the leader, whose view of
// both is current.
func (n *Node) knownNode(id string) error {
	servers, err := n.raft.Servers()
	if err != nil {
		return err
	}
	var members []string
	for _, s := range servers {
		members = append(members, string(s.ID))
	}
	var recorded bool
	n.fsm.Read(func(s *catalog.State) { _, recorded = s.Node(id) })
	if recorded || slices.Contains(members, id) {
		return nil
	}
	slices.Sort(members)
	return status.Errorf(codes.NotFound, "node %q is not a member of cluster %s; its members are %s", id, n.cfg.Cluster, strings.Join(members, ", "))
}

// nodeService is the node-to-node API.
type nodeService struct {
	pb.UnimplementedNodeServer
	n      *Node
	chunks *replica.ChunkService
}

// Propose applies a command on the leader. A node that is not the leader
// answers Unavailable, and the sender retries once it knows the new one.
func (s *nodeService) Propose(ctx context.Context, req *pb.ProposeRequest) (*pb.ProposeResponse, error) {
	return s.apply(ctx, req.GetCommand())
}

// maxCommand bounds a command sent over ProposeParts: the manifest of the
// largest file (maxManifestChunks chunks) and then some.
const maxCommand = 512 << 20

// ProposeParts is Propose for a command sent in pieces.
func (s *nodeService) ProposeParts(stream pb.Node_ProposePartsServer) error {
	var data []byte
	for {
		req, err := stream.Recv()
		if err == io.EOF {
			break
		}
		if err != nil {
			return err
		}
		if len(data)+len(req.GetCommand()) > maxCommand {
			return status.Errorf(codes.InvalidArgument, "command of more than %d bytes", maxCommand)
		}
		data = append(data, req.GetCommand()...)
	}
	resp, err := s.apply(stream.Context(), data)
	if err != nil {
		return err
	}
	return stream.SendAndClose(resp)
}

// apply applies a command on the leader. The manifest answered is without
// its chunk list when that would not fit in one message.
func (s *nodeService) apply(ctx context.Context, command []byte) (*pb.ProposeResponse, error) {
	if !s.n.raft.IsLeader() {
		return nil, status.Error(codes.Unavailable, consensus.ErrNotLeader.Error())
	}
	resp, err := s.n.raft.Apply(ctx, command)
	if err != nil {
		return nil, toStatus(err)
	}
	res, ok := resp.(catalog.Result)
	if !ok {
		return nil, status.Errorf(codes.Internal, "catalog returned %T", resp)
	}
	if res.Err != nil {
		return nil, toStatus(res.Err)
	}
	return &pb.ProposeResponse{Manifest: pageless(res.Manifest)}, nil
}

func (s *nodeService) ReadIndex(ctx context.Context, _ *pb.ReadIndexRequest) (*pb.ReadIndexResponse, error) {
	idx, err := s.n.raft.ReadIndex(ctx)
	if err != nil {
		return nil, toStatus(err)
	}
	return &pb.ReadIndexResponse{Index: idx}, nil
}

func (s *nodeService) Term(context.Context, *pb.TermRequest) (*pb.TermResponse, error) {
	return &pb.TermResponse{Term: s.n.raft.Term()}, nil
}

func (s *nodeService) LocalStatus(ctx context.Context, _ *pb.LocalStatusRequest) (*pb.NodeStatus, error) {
	return s.n.localStatus(ctx), nil
}

func (s *nodeService) HasChunks(ctx context.Context, req *pb.HasChunksRequest) (*pb.HasChunksResponse, error) {
	return s.chunks.HasChunks(ctx, req)
}

func (s *nodeService) GetChunk(ctx context.Context, req *pb.GetChunkRequest) (*pb.GetChunkResponse, error) {
	resp, err := s.chunks.GetChunk(ctx, req)
	if err == nil {
		s.n.metrics.ChunksServed("node", 1)
	}
	return resp, err
}

func (s *nodeService) PutChunks(stream pb.Node_PutChunksServer) error {
	return s.chunks.PutChunks(stream)
}

func (s *nodeService) PutChunk(ctx context.Context, req *pb.PutChunksRequest) (*pb.PutChunksResponse, error) {
	return s.chunks.PutChunk(ctx, req)
}

func (s *nodeService) ListChunks(_ *pb.ListChunksRequest, stream pb.Node_ListChunksServer) error {
	resp := &pb.ListChunksResponse{}
	flush := func() error {
		if len(resp.Ids) == 0 {
			return nil
		}
		err := stream.Send(resp)
		resp = &pb.ListChunksResponse{}
		return err
	}
	err := s.n.base.Walk(stream.Context(), func(id chunker.ID, size int64) error {
		resp.Ids = append(resp.Ids, id[:])
		resp.StoredSizes = append(resp.StoredSizes, uint64(size))
		if len(resp.Ids) == 4096 {
			return flush()
		}
		return nil
	})
	if err == nil {
		err = flush()
	}
	if err == nil {
		// The pins, after the listing: a chunk stored during the walk and
		// pinned is spared even if the walk missed it.
		for batch := range slices.Chunk(idsWire(s.n.pins.list()), 100_000) {
			if err = stream.Send(&pb.ListChunksResponse{Pinned: batch}); err != nil {
				break
			}
		}
	}
	return toStatus(err)
}

func (s *nodeService) DeleteChunks(ctx context.Context, req *pb.DeleteChunksRequest) (*pb.DeleteChunksResponse, error) {
	ids := make([]chunker.ID, len(req.GetIds()))
	for i, b := range req.GetIds() {
		id, err := chunker.IDFromBytes(b)
		if err != nil {
			return &pb.DeleteChunksResponse{}, status.Errorf(codes.InvalidArgument, "id %d: %v", i, err)
		}
		ids[i] = id
	}
	n, err := replica.DeleteAll(ctx, s.n.store, ids)
	return &pb.DeleteChunksResponse{Deleted: uint64(n)}, toStatus(err)
}

// onLeader runs local on the leader, or forwards the call to it through
// remote. Failures of a pass itself are Aborted: nothing was half-done that
// the next pass does not finish.
func onLeader[T any](ctx context.Context, n *Node, local func(context.Context) (T, error), remote func(pb.ClusterClient) (T, error)) (T, error) {
	if !n.raft.IsLeader() {
		conn, err := n.leaderConn()
		if err != nil {
			var zero T
			return zero, toStatus(err)
		}
		return remote(pb.NewClusterClient(conn))
	}
	resp, err := local(ctx)
	if err != nil {
		return resp, status.Error(codes.Aborted, err.Error())
	}
	return resp, nil
}

// Collect runs a garbage-collection sweep on the leader.
func (c *clusterService) Collect(ctx context.Context, req *pb.CollectRequest) (*pb.CollectResponse, error) {
	return onLeader(ctx, c.n,
		func(ctx context.Context) (*pb.CollectResponse, error) {
			return c.n.Collect(ctx, req.GetDryRun(), req.GetNow())
		},
		func(cc pb.ClusterClient) (*pb.CollectResponse, error) { return cc.Collect(ctx, req) })
}

// Repair runs a repair pass on the leader.
func (c *clusterService) Repair(ctx context.Context, req *pb.RepairRequest) (*pb.RepairResponse, error) {
	return onLeader(ctx, c.n, c.n.Repair,
		func(cc pb.ClusterClient) (*pb.RepairResponse, error) { return cc.Repair(ctx, req) })
}

// Replicate copies a file of this cluster to a peer cluster.
func (c *clusterService) Replicate(ctx context.Context, req *pb.ReplicateRequest) (*pb.ReplicateResponse, error) {
	return c.n.Replicate(ctx, req)
}
