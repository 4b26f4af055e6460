package server

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"

	pb "github.com/ddstore/ddstore/proto/ddstore/v1"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// Metadata keys of federated calls (see proto/ddstore/v1/ddstore.proto).
const (
	mdCluster = pb.MetadataCluster // the cluster a call is meant for
	mdOrigin  = "ddstore-origin"
	mdVisited = "ddstore-visited"
	mdHops    = "ddstore-hops"
)

// route is where a Files call may go: to another cluster it is meant for,
// to this cluster only, or on to peer clusters that may hold what it asks.
type route struct {
	origin  string   // the cluster the request came from; "" for a client's own call
	visited []string // clusters already asked (or about to be)
	hops    int      // how many more times it may be forwarded
	local   bool     // the caller named this cluster: answer here, never forward
	peer    *peerCluster
}

// route reads a call's routing metadata. A call naming a cluster that is
// neither this one nor a peer fails with InvalidArgument.
func (n *Node) route(ctx context.Context) (route, error) {
	r := route{hops: n.cfg.HopLimit}
	md, _ := metadata.FromIncomingContext(ctx)
	get := func(k string) string {
		if v := md.Get(k); len(v) > 0 {
			return v[0]
		}
		return ""
	}
	if origin := get(mdOrigin); origin != "" {
		r.origin = origin
		n.peers.served.Add(1)
		h, err := strconv.Atoi(get(mdHops))
		if err != nil || h < 0 {
			return r, status.Errorf(codes.InvalidArgument, "bad %s metadata %q", mdHops, get(mdHops))
		}
		r.hops = min(h, n.cfg.HopLimit)
		if v := get(mdVisited); v != "" {
			r.visited = strings.Split(v, ",")
		}
	}
	switch target := get(mdCluster); target {
	case "":
	case n.cfg.Cluster:
		r.local = true
	default:
		if r.peer = n.peers.get(target); r.peer == nil {
			return r, status.Errorf(codes.InvalidArgument, "%v %q: this is cluster %q, its peers are %v", ErrUnknownCluster, target, n.cfg.Cluster, n.peers.names())
		}
		if r.origin != "" && slices.Contains(r.visited, target) {
			return r, status.Errorf(codes.FailedPrecondition, "call for cluster %q came back to cluster %q (visited %v): the clusters' peer lists loop", target, n.cfg.Cluster, r.visited)
		}
	}
	return r, nil
}

// candidates returns the peers a request may be forwarded to: none for a
// local-only call or one out of hops; otherwise every peer not visited.
func (n *Node) candidates(r route) []*peerCluster {
	if r.local || r.peer != nil || r.hops <= 0 {
		return nil
	}
	var out []*peerCluster
	for _, p := range n.peers.peers {
		if p.name != r.origin && !slices.Contains(r.visited, p.name) {
			out = append(out, p)
		}
	}
	return out
}

// outgoing returns ctx carrying the route for a call this node makes to a
// peer: the origin, every cluster visited plus this one and all of its
// peers (each is asked here, or known by its filters not to hold the
// answer, so no other cluster need ask it again), and one hop less.
func (n *Node) outgoing(ctx context.Context, r route) context.Context {
	origin := r.origin
	if origin == "" {
		origin = n.cfg.Cluster
	}
	visited := slices.Clone(r.visited)
	for _, name := range append([]string{n.cfg.Cluster}, n.peers.names()...) {
		if !slices.Contains(visited, name) {
			visited = append(visited, name)
		}
	}
	md := metadata.Pairs(mdOrigin, origin, mdVisited, strings.Join(visited, ","), mdHops, strconv.Itoa(max(0, r.hops-1)))
	if r.peer != nil {
		md.Set(mdCluster, r.peer.name)
	}
	return metadata.NewOutgoingContext(ctx, md)
}

// peerNote describes a peer cluster that did not answer.
func peerNote(name string, err error) string {
	return fmt.Sprintf("cluster %s did not answer: %s", name, status.Convert(err).Message())
}
