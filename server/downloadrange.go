package server

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/ddstore/ddstore/catalog"
	pb "github.com/ddstore/ddstore/proto/ddstore/v1"
	"github.com/ddstore/ddstore/server/auth"
	"github.com/ddstore/ddstore/timerange"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// DownloadRange lists every file whose time range overlaps the asked one,
// as List does (this cluster and the peers that may hold matches, every
// page), then streams each file as Download does, one after the other,
// each message wrapped with the file's place in the listing. A file gone
// by its turn is skipped; any other failure ends the stream.
func (f *filesService) DownloadRange(req *pb.DownloadRangeRequest, stream pb.Files_DownloadRangeServer) error {
	n := f.n
	ctx := stream.Context()
	if req.TimeFromUnixNano == nil && req.TimeToUnixNano == nil {
		return status.Error(codes.InvalidArgument, "download range: no time range: give time_from_unix_nano, time_to_unix_nano or both (List lists without one; Download fetches one file)")
	}
	if _, err := catalog.QueryRange("", "", req.TimeFromUnixNano, req.TimeToUnixNano); err != nil {
		return toStatus(fmt.Errorf("download range: %w", err))
	}
	r, err := n.route(ctx)
	if err != nil {
		return err
	}
	files, notes, err := n.listRange(ctx, r, req)
	if err != nil {
		return err
	}
	// The guard narrowed the prefix to the caller's; a name outside it
	// (from a peer that ignored the prefix) is not sent.
	caller, _ := auth.FromContext(ctx)
	out := &rangeSink{stream: stream, notes: notes}
	for i, fi := range files {
		name := fi.GetName()
		if !strings.HasPrefix(name, req.GetPrefix()) || !caller.Covers(name) {
			continue
		}
		out.start(uint32(i), fi.GetCluster())
		err := n.downloadListed(ctx, r, fi.GetCluster(), &pb.DownloadRequest{
			Name: name, Consistency: req.GetConsistency(), Verify: req.GetVerify(),
		}, out)
		switch {
		case err == nil:
		case !out.sentFile && status.Code(err) == codes.NotFound:
			// Deleted since it was listed.
			n.log.Debug("download range: a listed file is gone; skipped", "file", name, "cluster", fi.GetCluster(), "err", err)
		case errors.Is(err, errOtherCluster):
			return status.Errorf(codes.FailedPrecondition,
				"download range: file %d, %q of cluster %s: cluster %s answered for that name instead (it holds a file of that name too, and cluster %s is more than one cluster away from %s); download it with Download and ddstore-cluster %s from a peer of that cluster",
				i, name, fi.GetCluster(), out.got, fi.GetCluster(), n.cfg.Cluster, fi.GetCluster())
		default:
			return prefixStatus(err, fmt.Sprintf("download range: file %d, %q of cluster %s: ", i, name, fi.GetCluster()))
		}
	}
	if !out.sentAny && len(notes) > 0 {
		return stream.Send(&pb.DownloadRangeResponse{Unanswered: notes})
	}
	return toStatus(ctx.Err())
}

// listRange lists the whole range, page after page, with the peers that
// did not answer any page.
func (n *Node) listRange(ctx context.Context, r route, req *pb.DownloadRangeRequest) ([]*pb.FileInfo, []*pb.ClusterNote, error) {
	lreq := &pb.ListRequest{
		Prefix: req.GetPrefix(), Limit: listMax, Consistency: req.GetConsistency(),
		TimeFromUnixNano: req.TimeFromUnixNano, TimeToUnixNano: req.TimeToUnixNano,
	}
	// For peers older than time ranges, which list by days.
	if req.TimeFromUnixNano != nil {
		lreq.DateFrom = timerange.DayOf(req.GetTimeFromUnixNano())
	}
	if req.TimeToUnixNano != nil {
		lreq.DateTo = timerange.DayOf(req.GetTimeToUnixNano())
	}
	var (
		files []*pb.FileInfo
		notes []*pb.ClusterNote
	)
	for {
		resp, err := n.list(ctx, r, lreq)
		if err != nil {
			return nil, nil, err
		}
		for _, note := range resp.GetUnanswered() {
			if !slices.ContainsFunc(notes, func(n *pb.ClusterNote) bool { return n.GetCluster() == note.GetCluster() }) {
				notes = append(notes, note)
			}
		}
		page := resp.GetFiles()
		if !resp.GetTruncated() || len(page) == 0 {
			return append(files, page...), notes, nil
		}
		// A page may end inside the entries of one name (several clusters
		// hold it): the next page starts after the name before it, so that
		// it brings all of them.
		last := page[len(page)-1].GetName()
		cut := len(page)
		for cut > 0 && page[cut-1].GetName() == last {
			cut--
		}
		if cut == 0 {
			cut = len(page) // a page of one name only
		}
		files = append(files, page[:cut]...)
		lreq.StartAfter = page[cut-1].GetName()
	}
}

// downloadListed downloads a listed file of cluster: from this cluster's
// catalog only, or from that peer only (as Download does for a call naming
// it), or, for a cluster beyond the peers, through the peer whose peer it
// is, naming it. A cluster further away is found as Download finds a name
// this cluster lacks.
func (n *Node) downloadListed(ctx context.Context, r route, cluster string, req *pb.DownloadRequest, out downloadSink) error {
	fr := r
	fr.visited = slices.Clone(r.visited)
	if cluster == n.cfg.Cluster {
		fr.local, fr.peer = true, nil
		return n.download(ctx, fr, req, out)
	}
	if p := n.peers.get(cluster); p != nil {
		fr.local, fr.peer = false, p
		return n.download(ctx, fr, req, out)
	}
	if p := n.peerBefore(r, cluster); p != nil {
		fr.local, fr.peer = false, p
		octx := n.outgoing(ctx, fr)
		md, _ := metadata.FromOutgoingContext(octx)
		md = md.Copy()
		md.Set(mdCluster, cluster)
		pd, err := n.openPeerDownload(metadata.NewOutgoingContext(octx, md), p, req)
		if err != nil {
			return err
		}
		return n.relayDownload(pd, req, out)
	}
	return n.download(ctx, r, req, out)
}

// peerBefore returns the peer a request of r may go to of which cluster is
// a peer, or nil.
func (n *Node) peerBefore(r route, cluster string) *peerCluster {
	for _, p := range n.candidates(r) {
		p.mu.Lock()
		far := p.beyond[cluster]
		p.mu.Unlock()
		if far != nil && far.hops == 1 {
			return p
		}
	}
	return nil
}

// errOtherCluster: a file's download started with another cluster's file
// of the same name than the one listed.
var errOtherCluster = errors.New("another cluster's file of that name")

// rangeSink wraps the messages of each file's download for a DownloadRange
// stream.
type rangeSink struct {
	stream   pb.Files_DownloadRangeServer
	notes    []*pb.ClusterNote // sent with the stream's first message
	index    uint32
	cluster  string // the cluster the listing says holds the file
	got      string // the cluster that answered instead (errOtherCluster)
	sentAny  bool   // of the stream
	sentFile bool   // of the current file
}

// start begins file index of the listing, held by cluster.
func (s *rangeSink) start(index uint32, cluster string) {
	s.index, s.cluster, s.sentFile = index, cluster, false
}

func (s *rangeSink) Send(m *pb.DownloadResponse) error {
	if !s.sentFile && m.GetCluster() != s.cluster {
		s.got = m.GetCluster()
		return errOtherCluster
	}
	msg := &pb.DownloadRangeResponse{FileIndex: s.index, Part: m}
	if !s.sentAny {
		msg.Unanswered, s.sentAny = s.notes, true
	}
	s.sentFile = true
	return s.stream.Send(msg)
}

// prefixStatus returns err with prefix before its message, keeping its
// code and details.
func prefixStatus(err error, prefix string) error {
	st, ok := status.FromError(err)
	if !ok {
		return toStatus(fmt.Errorf("%s%w", prefix, err))
	}
	sp := st.Proto()
	sp.Message = prefix + sp.GetMessage()
	return status.FromProto(sp).Err()
}
