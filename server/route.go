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

	// On a Filters call: the calling cluster has committed a file (a
	// notice, answered with versions only), or the caller wants filters
	// holding every file committed before the call.
	mdFiltersChanged = "ddstore-filters-changed"
	mdFiltersFresh   = "ddstore-filters-fresh"
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

// Bounds on the routing metadata of federated calls, which come from other
// clusters. ddstore-visited grows by a cluster and its peers at each hop.
const (
	maxRouteVisited   = 256 // names in ddstore-visited
	maxRouteHops      = 255 // the largest ddstore-hops accepted
	maxClusterNameLen = 64  // a cluster name's bytes (validClusterName)
	maxRouteQuoteLen  = 32  // bytes of a bad value an error message quotes
)

// route reads a call's routing metadata. Malformed metadata, or a call
// naming a cluster that is neither this one nor a peer, fails with
// InvalidArgument.
func (n *Node) route(ctx context.Context) (route, error) {
	md, _ := metadata.FromIncomingContext(ctx)
	if mdFirst(md, mdOrigin) != "" {
		n.peers.served.Add(1)
	}
	r, target, err := parseRoute(md, n.cfg.Cluster, n.cfg.HopLimit)
	if err != nil || target == "" {
		return r, err
	}
	if r.peer = n.peers.get(target); r.peer == nil {
		return r, status.Errorf(codes.InvalidArgument, "%v %q: this is cluster %q, its peers are %v", ErrUnknownCluster, target, n.cfg.Cluster, n.peers.names())
	}
	if r.origin != "" && slices.Contains(r.visited, target) {
		return r, status.Errorf(codes.FailedPrecondition, "call for cluster %q came back to cluster %q (visited %v): the clusters' peer lists loop", target, n.cfg.Cluster, r.visited)
	}
	return r, nil
}

// parseRoute reads and checks the routing metadata of a call to cluster
// self, without looking at its peers: r has no peer, and target is the
// other cluster the call names ("" if none, or if it names self, which
// sets r.local). A call from a peer cluster (ddstore-origin set) must name
// a valid origin, hops as a decimal of 0 to maxRouteHops (capped at hopLimit),
// and at most maxRouteVisited valid cluster names, comma-separated, as visited;
// a named cluster must be a valid name. Anything else is an InvalidArgument
// status whose message quotes at most maxRouteQuoteLen bytes of the bad value.
func parseRoute(md metadata.MD, self string, hopLimit int) (r route, target string, err error) {
	r.hops = hopLimit
	if origin := mdFirst(md, mdOrigin); origin != "" {
		if err := checkClusterName(mdOrigin, origin); err != nil {
			return route{}, "", err
		}
		r.origin = origin
		hops := mdFirst(md, mdHops)
		h, ok := parseHops(hops)
		if !ok {
			return route{}, "", status.Errorf(codes.InvalidArgument, "bad %s metadata %s: want a number of 0 to %d", mdHops, quoteClip(hops), maxRouteHops)
		}
		r.hops = min(h, hopLimit)
		if v := mdFirst(md, mdVisited); v != "" {
			if len(v) > maxRouteVisited*(maxClusterNameLen+1) || strings.Count(v, ",") >= maxRouteVisited {
				return route{}, "", status.Errorf(codes.InvalidArgument, "bad %s metadata: more than %d cluster names", mdVisited, maxRouteVisited)
			}
			r.visited = strings.Split(v, ",")
			for _, name := range r.visited {
				if err := checkClusterName(mdVisited, name); err != nil {
					return route{}, "", err
				}
			}
		}
	}
	switch target = mdFirst(md, mdCluster); target {
	case "":
	case self:
		r.local, target = true, ""
	default:
		if err := checkClusterName(mdCluster, target); err != nil {
			return route{}, "", err
		}
	}
	return r, target, nil
}

// mdFirst returns the first value of a metadata key, or "".
func mdFirst(md metadata.MD, key string) string {
	if v := md.Get(key); len(v) > 0 {
		return v[0]
	}
	return ""
}

// parseHops parses a hop count: 1 to 3 decimal digits, at most maxRouteHops.
func parseHops(s string) (int, bool) {
	if len(s) == 0 || len(s) > 3 {
		return 0, false
	}
	h := 0
	for _, c := range []byte(s) {
		if c < '0' || c > '9' {
			return 0, false
		}
		h = 10*h + int(c-'0')
	}
	return h, h <= maxRouteHops
}

// checkClusterName checks a cluster name read from metadata key. The
// message is its own, not validClusterName's, which quotes the whole name
// (up to four bytes of message per byte of name).
func checkClusterName(key, name string) error {
	if len(name) > maxClusterNameLen {
		return status.Errorf(codes.InvalidArgument, "bad %s metadata: cluster name %s is %d bytes long; the limit is %d", key, quoteClip(name), len(name), maxClusterNameLen)
	}
	if validClusterName(name) != nil {
		return status.Errorf(codes.InvalidArgument, "bad %s metadata: cluster name %s: want 1 to %d letters, digits, '.', '_' or '-'", key, quoteClip(name), maxClusterNameLen)
	}
	return nil
}

// quoteClip quotes s, cut to maxRouteQuoteLen bytes.
func quoteClip(s string) string {
	if len(s) > maxRouteQuoteLen {
		return strconv.Quote(s[:maxRouteQuoteLen]) + "..."
	}
	return strconv.Quote(s)
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
	hops := min(maxRouteHops, max(0, r.hops-1)) // what peers accept, whatever the hop limit
	md := metadata.Pairs(mdOrigin, origin, mdVisited, strings.Join(visited, ","), mdHops, strconv.Itoa(hops))
	if r.peer != nil {
		md.Set(mdCluster, r.peer.name)
	}
	return metadata.NewOutgoingContext(ctx, md)
}

// peerNote describes a peer cluster that did not answer.
func peerNote(name string, err error) string {
	return fmt.Sprintf("cluster %s did not answer: %s", name, status.Convert(err).Message())
}
