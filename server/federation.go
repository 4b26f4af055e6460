package server

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/ddstore/ddstore/catalog"
	"github.com/ddstore/ddstore/chunker"
	pb "github.com/ddstore/ddstore/proto/ddstore/v1"
	"github.com/ddstore/ddstore/replica"
	"github.com/ddstore/ddstore/server/auth"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// federationService is what peer clusters call.
type federationService struct {
	pb.UnimplementedFederationServer
	n *Node
}

// Filters returns this cluster's Bloom filters, or only their version when
// the caller holds them already, with where the cluster can be reached.
//
// A call carrying mdFiltersChanged is a peer's notice that it committed a
// file (taken only from that peer itself) and is answered with the version
// only. One carrying mdFiltersFresh first brings this node up to date with
// its leader, within half the caller's deadline (else it answers with what
// it has).
func (s *federationService) Filters(ctx context.Context, req *pb.FiltersRequest) (*pb.FiltersResponse, error) {
	n := s.n
	md, _ := metadata.FromIncomingContext(ctx)
	if mdFirst(md, mdFiltersChanged) != "" {
		if callerIsCluster(ctx, req.GetFromCluster()) {
			n.peers.noticeFrom(req.GetFromCluster())
		}
		return &pb.FiltersResponse{Cluster: n.cfg.Cluster, Version: n.fsm.FilesVersion(), FpRate: n.cfg.FilterFPRate}, nil
	}
	if mdFirst(md, mdFiltersFresh) != "" {
		wait := n.cfg.PeerTimeout / 2
		if dl, ok := ctx.Deadline(); ok {
			wait = min(wait, time.Until(dl)/2)
		}
		bctx, cancel := context.WithTimeout(ctx, wait)
		err := n.readBarrier(bctx, pb.Consistency_CONSISTENCY_LINEARIZABLE)
		cancel()
		if err != nil {
			n.log.Debug("filters asked fresh sent as they are", "for", req.GetFromCluster(), "err", err)
		}
	}
	data, version, err := n.peers.encodedFilters()
	if err != nil {
		return nil, status.Errorf(codes.Internal, "encode filters: %v", err)
	}
	resp := &pb.FiltersResponse{Cluster: n.cfg.Cluster, Version: version, FpRate: n.cfg.FilterFPRate, Beyond: n.peers.beyondFor(req)}
	if req.GetHaveVersion() == 0 || req.GetHaveVersion() != version {
		resp.Filters = data
	}
	resp.LeaderId, _ = n.raft.Leader()
	n.fsm.Read(func(st *catalog.State) {
		for _, info := range st.Nodes() {
			if info.GetPublicAddr() == "" {
				continue
			}
			resp.Gateways = append(resp.Gateways, info.GetPublicAddr())
			if info.GetId() == resp.LeaderId {
				resp.LeaderAddr = info.GetPublicAddr()
			}
		}
	})
	return resp, nil
}

// GetChunk returns a chunk from wherever this cluster holds it, or, within
// the request's hop limit, from a cluster beyond it that may.
func (s *federationService) GetChunk(ctx context.Context, req *pb.GetChunkRequest) (*pb.GetChunkResponse, error) {
	n := s.n
	r, err := n.route(ctx)
	if err != nil {
		return nil, err
	}
	id, err := chunker.IDFromBytes(req.GetId())
	if err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "id: %v", err)
	}
	peers, _ := n.placement()
	c, err := n.fetchChunk(ctx, r, peers, nil, id)
	if err != nil {
		return nil, toStatus(err)
	}
	n.metrics.ChunksServed("peer", 1)
	return &pb.GetChunkResponse{Chunk: replica.ToWire(c)}, nil
}

// fetchChunk reads a chunk of a file: from this cluster's nodes (peers, as
// placement gives them), or, when the file was found through the peer
// cluster via, from that cluster; failing that, from any peer cluster that
// may hold it.
func (n *Node) fetchChunk(ctx context.Context, r route, peers []replica.Peer, via *peerCluster, id chunker.ID) (chunker.Encoded, error) {
	var (
		c   chunker.Encoded
		err error
	)
	switch {
	case via == nil:
		c, err = n.repl.Fetch(ctx, peers, id)
	case n.cached != nil:
		var ok bool
		if c, ok = n.cached.Peek(ctx, id); ok {
			return c, nil
		}
		fallthrough
	default:
		n.peers.peerCalls.Add(1)
		c, err = n.chunkFrom(ctx, r, via, id)
	}
	if err == nil || ctx.Err() != nil || !(errors.Is(err, replica.ErrNotFound) || errors.Is(err, chunker.ErrCorrupt) || via != nil) {
		return c, err
	}
	pc, perr := n.fetchFromPeers(ctx, r, id)
	if perr != nil {
		return c, fmt.Errorf("%w; %w", err, perr)
	}
	return pc, nil
}

// askPeers calls ask on each candidate peer whose filters pass test, in
// name order, until one answers with found. Peers that fail other than with
// NotFound are noted. It reports whether any peer was asked.
func (n *Node) askPeers(ctx context.Context, r route, test func(*catalog.Filters) bool, ask func(context.Context, *peerCluster) (found bool, err error)) (found bool, notes []string) {
	cands := n.candidates(r)
	if len(cands) > 0 {
		n.peers.lookups.Add(1)
	}
	for _, p := range cands {
		if yes, err := n.mayAsk(ctx, r, p, test); !yes {
			if err != nil {
				notes = append(notes, peerNote(p.name, err))
			}
			continue
		}
		ok, err := ask(n.outgoing(ctx, r), p)
		switch {
		case err == nil && ok:
			return true, notes
		case err != nil && status.Code(err) != codes.NotFound:
			if ctx.Err() != nil {
				return false, append(notes, fmt.Sprintf("stopped before cluster %s answered: %v", p.name, ctx.Err()))
			}
			notes = append(notes, peerNote(p.name, err))
		}
	}
	return false, notes
}

// mayAsk decides whether a request goes to peer p: not when the filters of
// p (and of the clusters beyond it) rule out what test asks about, nor while
// p is down (the error says why). Filters that rule it out but may be stale
// are checked with p first (checkStale). It counts the skip or the call.
func (n *Node) mayAsk(ctx context.Context, r route, p *peerCluster, test func(*catalog.Filters) bool) (bool, error) {
	if !n.peers.ignore.Load() && !p.mayHave(test, n.askedElsewhere(r)) &&
		(!n.peers.checkStale(ctx, p) || !p.mayHave(test, n.askedElsewhere(r))) {
		n.peers.filterSkips.Add(1)
		return false, nil
	}
	if err := p.down(); err != nil {
		return false, err
	}
	n.peers.peerCalls.Add(1)
	return true, nil
}

// askedElsewhere reports the clusters beyond a peer that a request need not
// reach through it: those already visited, this one, and this cluster's own
// peers (asked directly, or ruled out by their own filters).
func (n *Node) askedElsewhere(r route) func(string) bool {
	return func(name string) bool {
		return name == n.cfg.Cluster || name == r.origin || slices.Contains(r.visited, name) || n.peers.get(name) != nil
	}
}

// notFound is the answer when neither this cluster nor any peer asked holds
// name: NotFound when every peer that may hold it answered, Unavailable
// (naming the peers that did not) when the file may be in one of those.
func (n *Node) notFound(name string, notes []string) error {
	msg := fmt.Sprintf("no file named %q in cluster %s", name, n.cfg.Cluster)
	if len(notes) == 0 {
		if len(n.peers.peers) > 0 {
			msg += " or the peer clusters that may hold it"
		}
		return status.Error(codes.NotFound, msg)
	}
	st := status.New(codes.Unavailable, msg+"; it may be in a peer cluster that did not answer: "+strings.Join(notes, "; "))
	if d, err := st.WithDetails(&errdetails.ErrorInfo{Reason: pb.ReasonPeerClusterUnavailable, Domain: pb.ErrorDomain}); err == nil {
		st = d
	}
	return st.Err()
}

// forwardStat asks the peers that may hold name, in turn, and returns the
// first answer and the peer that gave it (the file may be in a cluster
// beyond it).
func (n *Node) forwardStat(ctx context.Context, r route, req *pb.StatRequest) (*pb.StatResponse, *peerCluster, error) {
	var (
		resp *pb.StatResponse
		via  *peerCluster
	)
	found, notes := n.askPeers(ctx, r, func(f *catalog.Filters) bool { return f.MayHaveName(req.GetName()) },
		func(ctx context.Context, p *peerCluster) (bool, error) {
			err := n.peers.call(ctx, p, func(ctx context.Context, cc *grpc.ClientConn) error {
				var err error
				resp, err = statAll(ctx, pb.NewFilesClient(cc), req)
				return err
			})
			if err == nil && resp.Cluster == "" {
				resp.Cluster = p.name
			}
			via = p
			return err == nil, err
		})
	if !found {
		return nil, nil, n.notFound(req.GetName(), notes)
	}
	if err := catalog.ValidateManifest(resp.GetManifest()); err != nil {
		return nil, nil, status.Errorf(codes.DataLoss, "cluster %s sent a bad manifest for %q: %v", resp.GetCluster(), req.GetName(), err)
	}
	return resp, via, nil
}

// statAll asks for a file's whole manifest, page after page when its chunk
// list is longer than one message holds (the pages must be of one version
// of the file).
func statAll(ctx context.Context, fc pb.FilesClient, req *pb.StatRequest) (*pb.StatResponse, error) {
	req = &pb.StatRequest{Name: req.GetName(), Consistency: req.GetConsistency()}
	resp, err := fc.Stat(ctx, req)
	if err != nil {
		return nil, err
	}
	m := resp.GetManifest()
	for len(m.GetChunks()) < int(resp.GetChunksTotal()) {
		req.ChunksFrom = uint32(len(m.GetChunks()))
		page, err := fc.Stat(ctx, req)
		if err != nil {
			return nil, err
		}
		pm := page.GetManifest()
		if pm.GetCreatedUnixNano() != m.GetCreatedUnixNano() || !bytes.Equal(pm.GetBlake3(), m.GetBlake3()) || len(pm.GetChunks()) == 0 {
			return nil, status.Errorf(codes.Aborted, "%q changed while its manifest was read; try again", m.GetName())
		}
		m.Chunks = append(m.Chunks, pm.GetChunks()...)
	}
	resp.ChunksTotal = uint32(len(m.GetChunks()))
	return resp, nil
}

// peerDownload is a download stream opened on a peer and its first message.
type peerDownload struct {
	s     pb.Files_DownloadClient
	first *pb.DownloadResponse
}

// openPeerDownload starts a download on a peer. The manifest must arrive
// within the peer timeout; the rest of the stream lives as long as ctx.
func (n *Node) openPeerDownload(ctx context.Context, p *peerCluster, req *pb.DownloadRequest) (peerDownload, error) {
	return peerStream(ctx, n.peers, p, func(cc *grpc.ClientConn) (peerDownload, error) {
		sctx, cancel := context.WithCancel(ctx)
		timer := time.AfterFunc(n.peers.timeout(ctx), cancel)
		s, err := pb.NewFilesClient(cc).Download(sctx, req)
		var first *pb.DownloadResponse
		if err == nil {
			first, err = s.Recv()
		}
		if !timer.Stop() && ctx.Err() == nil {
			return peerDownload{}, status.Errorf(codes.DeadlineExceeded, "no answer within %s", n.peers.timeout(ctx))
		}
		if err != nil {
			cancel()
			return peerDownload{}, err
		}
		if first.GetManifest() == nil {
			return peerDownload{}, status.Errorf(codes.Internal, "cluster %s: download did not start with the manifest", p.name)
		}
		if first.Cluster == "" {
			first.Cluster = p.name
		}
		return peerDownload{s, first}, nil
	})
}

// relayDownload passes a peer's download on, message by message, checking
// each chunk against its ID and its place in the manifest, so that nothing
// corrupt is passed on and nothing is held whole.
func (n *Node) relayDownload(pd peerDownload, req *pb.DownloadRequest, out downloadSink) error {
	m := pd.first.GetManifest()
	for len(m.GetChunks()) < int(pd.first.GetChunksTotal()) {
		page, err := pd.s.Recv()
		if err != nil {
			return err
		}
		if page.GetChunk() != nil || len(page.GetManifest().GetChunks()) == 0 {
			return status.Errorf(codes.DataLoss, "cluster %s sent %d of the %d chunks of the manifest of %q", pd.first.GetCluster(), len(m.GetChunks()), pd.first.GetChunksTotal(), m.GetName())
		}
		m.Chunks = append(m.Chunks, page.GetManifest().GetChunks()...)
	}
	if err := catalog.ValidateManifest(m); err != nil {
		return status.Errorf(codes.DataLoss, "cluster %s sent a bad manifest: %v", pd.first.GetCluster(), err)
	}
	start, step := int(req.GetStartIndex()), downloadStep(req)
	if err := sendManifest(out, m, pd.first.GetCluster(), step); err != nil {
		return err
	}
	// A peer that predates steps sends every chunk: those of this stream
	// are passed on, the others dropped.
	next, peerStep := start, max(1, int(pd.first.GetStep()))
	if peerStep != step {
		peerStep = 1
	}
	for {
		msg, err := pd.s.Recv()
		if err == io.EOF {
			if next < len(m.GetChunks()) {
				return status.Errorf(codes.Unavailable, "cluster %s ended the download of %q at chunk %d of %d", pd.first.GetCluster(), m.GetName(), next, len(m.GetChunks()))
			}
			return nil
		}
		if err != nil {
			return err
		}
		if int(msg.GetIndex()) != next || next >= len(m.GetChunks()) {
			return status.Errorf(codes.DataLoss, "cluster %s sent chunk %d of %q, expected %d", pd.first.GetCluster(), msg.GetIndex(), m.GetName(), next)
		}
		if (next-start)%step != 0 {
			next += peerStep // not this stream's
			continue
		}
		c, err := replica.FromWire(msg.GetChunk())
		if err == nil && c.ID != chunker.ID(m.GetChunks()[next].GetId()) {
			err = fmt.Errorf("%w: chunk %s is not the manifest's %x", chunker.ErrCorrupt, c.ID, m.GetChunks()[next].GetId())
		}
		if err == nil {
			err = n.codecs.Verify(c)
		}
		if err != nil {
			return status.Errorf(codes.DataLoss, "cluster %s, file %q, chunk %d: %v", pd.first.GetCluster(), m.GetName(), next, err)
		}
		if err := out.Send(msg); err != nil {
			return err
		}
		n.metrics.ChunksServed("download", 1)
		next += peerStep
	}
}

// chunkFrom gets a chunk from a peer cluster (which may pass the request on
// to one beyond it), verifies it and keeps it in this node's cache tiers, so
// that a chunk of another cluster read here again comes from the cache.
func (n *Node) chunkFrom(ctx context.Context, r route, p *peerCluster, id chunker.ID) (chunker.Encoded, error) {
	var resp *pb.GetChunkResponse
	err := n.peers.call(n.outgoing(ctx, r), p, func(ctx context.Context, cc *grpc.ClientConn) error {
		var err error
		resp, err = pb.NewFederationClient(cc).GetChunk(ctx, &pb.GetChunkRequest{Id: id[:]})
		return err
	})
	if err != nil {
		return chunker.Encoded{}, err
	}
	c, err := replica.FromWire(resp.GetChunk())
	if err == nil && c.ID != id {
		err = fmt.Errorf("%w: asked for chunk %s, got %s", chunker.ErrCorrupt, id, c.ID)
	}
	if err == nil {
		err = n.codecs.Verify(c)
	}
	if err != nil {
		n.log.Warn("peer cluster sent a bad chunk", "cluster", p.name, "chunk", id, "err", err)
		return chunker.Encoded{}, status.Errorf(codes.DataLoss, "cluster %s sent a bad chunk: %v", p.name, err)
	}
	if n.cached != nil {
		n.cached.Keep(ctx, c)
	}
	return c, nil
}

// fetchFromPeers gets a chunk no local node holds intact (or that the peer
// holding its file could not send) from a peer cluster whose chunk filter
// says it may hold it.
func (n *Node) fetchFromPeers(ctx context.Context, r route, id chunker.ID) (chunker.Encoded, error) {
	var c chunker.Encoded
	r.local = false // the file is known; only a copy of its chunk comes from elsewhere
	found, notes := n.askPeers(ctx, r, func(f *catalog.Filters) bool { return f.MayHaveChunk(id) },
		func(ctx context.Context, p *peerCluster) (bool, error) {
			var err error
			c, err = n.chunkFrom(ctx, r, p, id)
			return err == nil, err
		})
	if !found {
		msg := "no peer cluster holds it"
		if len(notes) > 0 {
			msg += " (" + strings.Join(notes, "; ") + ")"
		}
		return c, fmt.Errorf("%w: chunk %s: %s", replica.ErrNotFound, id, msg)
	}
	return c, nil
}

// forwardList asks, at once, every peer whose date filter says it may hold
// files whose time range overlaps the asked one (every day of it), and
// merges their answers with the local one. Stale filters are checked with
// their peers at once too.
// Peers that do not answer within the peer timeout are named in the answer.
func (n *Node) forwardList(ctx context.Context, r route, req *pb.ListRequest, local *pb.ListResponse, limit int) *pb.ListResponse {
	cands := n.candidates(r)
	if len(cands) == 0 {
		return local
	}
	n.peers.lookups.Add(1)
	var (
		mu      sync.Mutex
		wg      sync.WaitGroup
		answers = []*pb.ListResponse{local}
		notes   = slices.Clone(local.GetUnanswered())
	)
	octx := n.outgoing(ctx, r)
	want, err := catalog.QueryRange(req.GetDateFrom(), req.GetDateTo(), req.TimeFromUnixNano, req.TimeToUnixNano)
	if err != nil {
		want = catalog.Everything // List checked it; ask everyone rather than no one
	}
	dates := func(f *catalog.Filters) bool { return f.MayHaveRange(want) }
	for _, p := range cands {
		wg.Go(func() {
			if yes, err := n.mayAsk(ctx, r, p, dates); !yes {
				if err != nil {
					mu.Lock()
					notes = append(notes, &pb.ClusterNote{Cluster: p.name, Error: status.Convert(err).Message()})
					mu.Unlock()
				}
				return
			}
			var resp *pb.ListResponse
			err := n.peers.call(octx, p, func(ctx context.Context, cc *grpc.ClientConn) error {
				var err error
				resp, err = pb.NewFilesClient(cc).List(ctx, req)
				return err
			})
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				notes = append(notes, &pb.ClusterNote{Cluster: p.name, Error: status.Convert(err).Message()})
				return
			}
			for _, fi := range resp.GetFiles() {
				if fi.Cluster == "" {
					fi.Cluster = p.name
				}
			}
			answers = append(answers, resp)
			notes = append(notes, resp.GetUnanswered()...)
		})
	}
	wg.Wait()
	merged := mergeLists(limit, answers...)
	slices.SortFunc(notes, func(a, b *pb.ClusterNote) int { return strings.Compare(a.Cluster, b.Cluster) })
	merged.Unanswered = slices.CompactFunc(notes, func(a, b *pb.ClusterNote) bool { return a.Cluster == b.Cluster })
	return merged
}

// mergeLists merges list answers of several clusters into one page of at
// most limit files, by name and then cluster. The page is truncated when
// any answer was, or when the merge had to cut it.
func mergeLists(limit int, answers ...*pb.ListResponse) *pb.ListResponse {
	out := &pb.ListResponse{}
	for _, a := range answers {
		out.Files = append(out.Files, a.GetFiles()...)
	}
	slices.SortFunc(out.Files, func(a, b *pb.FileInfo) int {
		if c := strings.Compare(a.GetName(), b.GetName()); c != 0 {
			return c
		}
		return strings.Compare(a.GetCluster(), b.GetCluster())
	})
	out.Files = slices.CompactFunc(out.Files, func(a, b *pb.FileInfo) bool {
		return a.GetName() == b.GetName() && a.GetCluster() == b.GetCluster()
	})
	// A truncated answer stops at its last name; past it, names of that
	// cluster are unknown, so the merged page must stop there too.
	cut := len(out.Files)
	for _, a := range answers {
		if a.GetTruncated() && len(a.GetFiles()) > 0 {
			last := a.GetFiles()[len(a.GetFiles())-1].GetName()
			i, _ := slices.BinarySearchFunc(out.Files, last, func(f *pb.FileInfo, name string) int {
				if f.GetName() <= name {
					return -1
				}
				return 1
			})
			cut = min(cut, i)
			out.Truncated = true
		}
	}
	if cut > limit {
		cut, out.Truncated = limit, true
	}
	out.Files = out.Files[:cut]
	return out
}

// proxyUnary passes a Files call meant for another cluster on to it.
func proxyUnary[T any](ctx context.Context, n *Node, r route, call func(context.Context, pb.FilesClient) (T, error)) (T, error) {
	var resp T
	err := n.peers.call(n.outgoing(ctx, r), r.peer, func(ctx context.Context, cc *grpc.ClientConn) error {
		var err error
		resp, err = call(ctx, pb.NewFilesClient(cc))
		return err
	})
	return resp, err
}

// proxyUpload passes an upload meant for another cluster on to it, chunk by
// chunk.
func (n *Node) proxyUpload(r route, in pb.Files_UploadServer) error {
	ctx, cancel := context.WithCancel(in.Context())
	defer cancel()
	up, err := peerStream(ctx, n.peers, r.peer, func(cc *grpc.ClientConn) (pb.Files_UploadClient, error) {
		return pb.NewFilesClient(cc).Upload(n.outgoing(ctx, r))
	})
	if err != nil {
		return err
	}
	for {
		req, err := in.Recv()
		if err == io.EOF {
			break
		}
		if err != nil {
			return err
		}
		if err := up.Send(req); err != nil {
			_, err = up.CloseAndRecv() // the peer's reason
			return err
		}
	}
	resp, err := up.CloseAndRecv()
	if err != nil {
		return err
	}
	return in.SendAndClose(resp)
}

// Replicate copies a file of this cluster to a peer cluster: the chunks the
// peer's filter says it lacks are sent at once; those it may hold are
// checked exactly first; then the manifest is committed there.
func (n *Node) Replicate(ctx context.Context, req *pb.ReplicateRequest) (*pb.ReplicateResponse, error) {
	p := n.peers.get(req.GetTo())
	if p == nil {
		return nil, status.Errorf(codes.InvalidArgument, "%v %q: cluster %s's peers are %v", ErrUnknownCluster, req.GetTo(), n.cfg.Cluster, n.peers.names())
	}
	m, err := n.lookup(ctx, req.GetName(), 0)
	if err != nil {
		return nil, toStatus(err)
	}
	if err := n.peers.refresh(ctx, p); err != nil {
		return nil, status.Errorf(codes.Unavailable, "cluster %s: %v", p.name, status.Convert(err).Message())
	}
	ids, _ := distinctChunks(m)
	resp := &pb.ReplicateResponse{Chunks: uint64(len(ids))}
	var send, maybe []chunker.ID
	for _, id := range ids {
		if p.mayHave(func(f *catalog.Filters) bool { return f.MayHaveChunk(id) }, func(string) bool { return true }) {
			maybe = append(maybe, id)
		} else {
			send = append(send, id)
		}
	}
	resp.FilterAbsent, resp.Checked = uint64(len(send)), uint64(len(maybe))
	r := route{peer: p, hops: 1}
	for batch := range slices.Chunk(maybe, replica.MaxHasBatch) {
		req := &pb.MissingChunksRequest{}
		for _, id := range batch {
			req.Ids = append(req.Ids, id[:])
		}
		missing, err := proxyUnary(ctx, n, r, func(ctx context.Context, fc pb.FilesClient) (*pb.MissingChunksResponse, error) {
			return fc.MissingChunks(ctx, req)
		})
		if err != nil {
			return nil, err
		}
		for _, b := range missing.GetMissing() {
			send = append(send, chunker.ID(b))
		}
	}
	if len(send) > 0 {
		if err := n.sendChunks(ctx, r, send, resp); err != nil {
			return nil, err
		}
	}
	commit, err := n.proxyCommit(ctx, r, &pb.CommitRequest{Manifest: m, Overwrite: req.GetOverwrite()})
	if err != nil {
		return nil, err
	}
	resp.Manifest = commit.GetManifest()
	n.log.Info("file replicated", "file", m.GetName(), "to", p.name, "chunks", resp.Chunks, "sent", resp.SentChunks, "bytes", resp.SentBytes)
	return resp, nil
}

// sendChunks streams chunks of this cluster to the peer, reading a few
// ahead.
func (n *Node) sendChunks(ctx context.Context, r route, ids []chunker.ID, resp *pb.ReplicateResponse) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	up, err := peerStream(ctx, n.peers, r.peer, func(cc *grpc.ClientConn) (pb.Files_UploadClient, error) {
		return pb.NewFilesClient(cc).Upload(n.outgoing(ctx, r))
	})
	if err != nil {
		return err
	}
	peers, _ := n.placement()
	slots := readAhead(ctx, 0, len(ids), downloadWindow, n.streamMem, func(int) int { return chunker.MaxRawSize / 8 }, func(i int) (chunker.Encoded, error) {
		return n.repl.Fetch(ctx, peers, ids[i])
	})
	defer drain(slots)
	defer cancel()
	for slot := range slots {
		f := <-slot
		if f.err != nil {
			f.release()
			return toStatus(fmt.Errorf("read a chunk to send: %w", f.err))
		}
		err := up.Send(&pb.UploadRequest{Chunk: replica.ToWire(f.c)})
		f.release()
		if err != nil {
			_, err = up.CloseAndRecv()
			return err
		}
		resp.SentChunks++
		resp.SentBytes += uint64(len(f.c.Data))
	}
	if ctx.Err() != nil {
		return toStatus(ctx.Err())
	}
	_, err = up.CloseAndRecv()
	return err
}

// callerIsCluster reports whether the caller of ctx speaks for cluster
// name: a node of that peer cluster (by its certificate), or anyone on an
// insecure node.
func callerIsCluster(ctx context.Context, name string) bool {
	p, ok := auth.FromContext(ctx)
	return ok && (p.Kind == auth.KindLocal || p.Kind == auth.KindPeer && p.Cluster == name)
}

// errNotHere tells a caller that the local catalog lacks the file.
func errNotHere(err error) bool { return errors.Is(err, catalog.ErrNotFound) }

// proxyCommit passes a commit on to a peer cluster: in one message, or in
// pages (CommitParts, bounded only by ctx) when the manifest does not fit in
// one.
func (n *Node) proxyCommit(ctx context.Context, r route, req *pb.CommitRequest) (*pb.CommitResponse, error) {
	pages := pb.ManifestPages(req.GetManifest())
	if len(pages) == 1 {
		return proxyUnary(ctx, n, r, func(ctx context.Context, fc pb.FilesClient) (*pb.CommitResponse, error) {
			return fc.Commit(ctx, req)
		})
	}
	var resp *pb.CommitResponse
	err := n.peers.try(n.outgoing(ctx, r), r.peer, 0, func(ctx context.Context, cc *grpc.ClientConn) error {
		var err error
		resp, err = pb.CommitPaged(ctx, pb.NewFilesClient(cc), req)
		return err
	})
	return resp, err
}
