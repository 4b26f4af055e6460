package server

import (
	"context"
	"strconv"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// routeMD builds incoming metadata, leaving out empty values as a peer
// cluster would.
func routeMD(origin, visited, hops, cluster string) metadata.MD {
	md := metadata.MD{}
	for _, kv := range [][2]string{{mdOrigin, origin}, {mdVisited, visited}, {mdHops, hops}, {mdCluster, cluster}} {
		if kv[1] != "" {
			md.Set(kv[0], kv[1])
		}
	}
	return md
}

func TestParseRouteRefusesHostile(t *testing.T) {
	long := strings.Repeat("x", 1<<20)
	many := strings.TrimSuffix(strings.Repeat("B,", maxRouteVisited+1), ",")
	tests := []struct {
		name                           string
		origin, visited, hops, cluster string
		want                           string // in the message
	}{
		{"origin not a name", "a b", "", "1", "", mdOrigin},
		{"origin huge", long, "", "1", "", "1048576 bytes"},
		{"origin of bytes quoted long", strings.Repeat("\xff", maxClusterNameLen), "", "1", "", mdOrigin},
		{"hops missing", "B", "", "", "", mdHops},
		{"hops negative", "B", "", "-1", "", mdHops},
		{"hops signed", "B", "", "+1", "", mdHops},
		{"hops huge", "B", "", "99999999999999999999", "", mdHops},
		{"hops over the bound", "B", "", "256", "", mdHops},
		{"hops long", "B", "", long, "", mdHops},
		{"visited empty entry", "B", "B,,A", "1", "", mdVisited},
		{"visited trailing comma", "B", "B,", "1", "", mdVisited},
		{"visited bad name", "B", "B,a b", "1", "", mdVisited},
		{"visited too many", "B", many, "1", "", "more than"},
		{"visited huge", "B", long, "1", "", "more than"},
		{"cluster not a name", "", "", "", "Z/..", mdCluster},
		{"cluster huge", "", "", "", long, mdCluster},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, _, err := parseRoute(routeMD(tt.origin, tt.visited, tt.hops, tt.cluster), "A", 3)
			if status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("parseRoute = %v, want InvalidArgument mentioning %q", err, tt.want)
			}
			if len(err.Error()) > 300 {
				t.Fatalf("error message of %d bytes", len(err.Error()))
			}
		})
	}
	max := strings.TrimSuffix(strings.Repeat("B,", maxRouteVisited), ",")
	if _, _, err := parseRoute(routeMD("B", max, "255", "C"), "A", 3); err != nil {
		t.Fatalf("metadata at the bounds refused: %v", err)
	}
}

// FuzzRouteMetadata feeds arbitrary routing metadata: parsing never panics;
// a refusal is InvalidArgument with a short message; an accepted route is
// within the bounds; the node's route never panics either; and what this
// node sends on is metadata its peers accept.
func FuzzRouteMetadata(f *testing.F) {
	f.Add("", "", "", "")
	f.Add("", "", "", "A")
	f.Add("", "", "", "B")
	f.Add("", "", "", "Z")
	f.Add("B", "B,A", "2", "")
	f.Add("C", "C,A", "99", "")
	f.Add("B", "B,A", "1", "B")
	f.Add("B", "B,,A", "1", "")
	f.Add("B", "B,A", "-1", "")
	f.Add("B", "B,A", "2147483648", "")
	f.Add("B", strings.Repeat("x,", 300), "1", "")
	f.Add("a b", "", "1", "")
	f.Add(strings.Repeat("o", 100), "", "1", "")
	f.Add("B", "B,A", "x", "\xff")
	f.Fuzz(func(t *testing.T, origin, visited, hops, cluster string) {
		md := routeMD(origin, visited, hops, cluster)
		r, target, err := parseRoute(md, "A", 3)
		if err != nil {
			if status.Code(err) != codes.InvalidArgument {
				t.Fatalf("parseRoute = %v, want InvalidArgument", err)
			}
			if len(err.Error()) > 300 {
				t.Fatalf("error message of %d bytes", len(err.Error()))
			}
		} else {
			if r.peer != nil || r.local != (cluster == "A") || (target != "" && (target != cluster || validClusterName(target) != nil)) {
				t.Fatalf("cluster %q parsed as local=%v target=%q", cluster, r.local, target)
			}
			if origin == "" {
				if r.origin != "" || r.visited != nil || r.hops != 3 {
					t.Fatalf("a client call parsed as %+v", r)
				}
			} else {
				h, herr := strconv.Atoi(hops)
				if r.origin != origin || validClusterName(origin) != nil || herr != nil || h < 0 || h > maxRouteHops || r.hops != min(h, 3) {
					t.Fatalf("accepted origin %q hops %q as %+v", origin, hops, r)
				}
				if len(r.visited) > maxRouteVisited || (visited == "") != (r.visited == nil) || strings.Join(r.visited, ",") != visited {
					t.Fatalf("visited %q parsed as %d names", visited, len(r.visited))
				}
				for _, name := range r.visited {
					if validClusterName(name) != nil {
						t.Fatalf("accepted visited name %q", name)
					}
				}
			}
		}

		n := routeNode()
		nr, nerr := n.route(metadata.NewIncomingContext(context.Background(), md))
		if (err != nil) && status.Code(nerr) != codes.InvalidArgument {
			t.Fatalf("route = %v where parseRoute = %v", nerr, err)
		}
		if nerr != nil {
			if c := status.Code(nerr); c != codes.InvalidArgument && c != codes.FailedPrecondition {
				t.Fatalf("route = %v", nerr)
			}
			return
		}
		if len(nr.visited)+3 > maxRouteVisited {
			return // too long a path to send on
		}
		out, _ := metadata.FromOutgoingContext(n.outgoing(context.Background(), nr))
		for _, peer := range []string{"B", "C"} {
			if _, _, err := parseRoute(out, peer, 3); err != nil {
				t.Fatalf("peer %s refuses what cluster A sends on (%v): %v", peer, out, err)
			}
		}
	})
}
