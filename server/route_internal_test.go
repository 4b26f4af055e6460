package server

import (
	"context"
	"slices"
	"strings"
	"testing"

	pb "github.com/ddstore/ddstore/proto/ddstore/v1"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// routeNode is a node of cluster A whose peers are B and C.
func routeNode() *Node {
	n := &Node{cfg: Config{Cluster: "A", HopLimit: 3, Peers: map[string][]string{"B": {"b:1"}, "C": {"c:1"}}}}
	n.peers = newPeerSet(n)
	return n
}

func TestRoute(t *testing.T) {
	tests := []struct {
		name       string
		md         []string // incoming metadata pairs
		code       codes.Code
		candidates []string // peers the request may go to
		visited    string   // ddstore-visited sent on to them
		hops       string
	}{
		{name: "client call", candidates: []string{"B", "C"}, visited: "A,B,C", hops: "2"},
		{name: "own cluster named", md: []string{mdCluster, "A"}},
		{name: "unknown cluster", md: []string{mdCluster, "Z"}, code: codes.InvalidArgument},
		{name: "forwarded from B", md: []string{mdOrigin, "B", mdVisited, "B,A", mdHops, "2"}, candidates: []string{"C"}, visited: "B,A,C", hops: "1"},
		{name: "from B that already asked C", md: []string{mdOrigin, "B", mdVisited, "B,A,C", mdHops, "2"}},
		{name: "out of hops", md: []string{mdOrigin, "C", mdVisited, "C,A", mdHops, "0"}},
		{name: "hops above the local limit are capped", md: []string{mdOrigin, "C", mdVisited, "C,A", mdHops, "99"}, candidates: []string{"B"}, visited: "C,A,B", hops: "2"},
		{name: "bad hops", md: []string{mdOrigin, "C", mdHops, "x"}, code: codes.InvalidArgument},
		{name: "call for B that came back", md: []string{mdCluster, "B", mdOrigin, "B", mdVisited, "B,A", mdHops, "1"}, code: codes.FailedPrecondition},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n := routeNode()
			ctx := metadata.NewIncomingContext(context.Background(), metadata.Pairs(tt.md...))
			r, err := n.route(ctx)
			if status.Code(err) != tt.code {
				t.Fatalf("route: %v, want %v", err, tt.code)
			}
			if err != nil {
				return
			}
			var got []string
			for _, p := range n.candidates(r) {
				got = append(got, p.name)
			}
			if !slices.Equal(got, tt.candidates) {
				t.Fatalf("candidates %v, want %v", got, tt.candidates)
			}
			if len(got) == 0 {
				return
			}
			md, _ := metadata.FromOutgoingContext(n.outgoing(context.Background(), r))
			if v := strings.Join(md.Get(mdVisited), ""); v != tt.visited {
				t.Errorf("visited sent on %q, want %q", v, tt.visited)
			}
			if h := strings.Join(md.Get(mdHops), ""); h != tt.hops {
				t.Errorf("hops sent on %q, want %q", h, tt.hops)
			}
		})
	}
}

func TestMergeLists(t *testing.T) {
	fi := func(cluster string, names ...string) []*pb.FileInfo {
		var out []*pb.FileInfo
		for _, n := range names {
			out = append(out, &pb.FileInfo{Name: n, Cluster: cluster})
		}
		return out
	}
	tests := []struct {
		name      string
		limit     int
		answers   []*pb.ListResponse
		want      string
		truncated bool
	}{
		{"merged by name", 10, []*pb.ListResponse{{Files: fi("A", "a", "d")}, {Files: fi("B", "b", "c")}}, "A:a B:b B:c A:d", false},
		{"same name in two clusters", 10, []*pb.ListResponse{{Files: fi("A", "x")}, {Files: fi("B", "x")}}, "A:x B:x", false},
		{"duplicates from two paths dropped", 10, []*pb.ListResponse{{Files: fi("B", "x")}, {Files: fi("B", "x")}}, "B:x", false},
		{"cut at the limit", 2, []*pb.ListResponse{{Files: fi("A", "a", "c")}, {Files: fi("B", "b")}}, "A:a B:b", true},
		{"a truncated answer stops the page at its last name", 10,
			[]*pb.ListResponse{{Files: fi("A", "a", "b"), Truncated: true}, {Files: fi("B", "a2", "c")}}, "A:a B:a2 A:b", true},
		{"empty", 10, nil, "", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := mergeLists(tt.limit, tt.answers...)
			var s []string
			for _, f := range got.GetFiles() {
				s = append(s, f.GetCluster()+":"+f.GetName())
			}
			if strings.Join(s, " ") != tt.want || got.GetTruncated() != tt.truncated {
				t.Fatalf("got %q truncated=%v, want %q truncated=%v", strings.Join(s, " "), got.GetTruncated(), tt.want, tt.truncated)
			}
		})
	}
}
