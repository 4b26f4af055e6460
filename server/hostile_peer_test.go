package server_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/binary"
	"log/slog"
	"net"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ddstore/ddstore/catalog"
	"github.com/ddstore/ddstore/client"
	"github.com/ddstore/ddstore/internal/localcluster"
	pb "github.com/ddstore/ddstore/proto/ddstore/v1"
	"github.com/ddstore/ddstore/server"
	"github.com/ddstore/ddstore/server/auth"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"
)

// hostilePeer is a peer cluster "B" that answers with whatever the test
// says: bad filters, or good ones that report someone else's address as
// its leader.
type hostilePeer struct {
	pb.UnimplementedFederationServer
	pb.UnimplementedFilesServer
	addr string

	mu      sync.Mutex
	filters []byte            // what Filters sends next
	beyond  *pb.BeyondFilters // passed on as a cluster beyond B
	leader  string            // the leader address B reports
	asked   atomic.Int64      // Filters calls answered
	stats   atomic.Int64      // Files/Stat calls answered
}

func (h *hostilePeer) Filters(context.Context, *pb.FiltersRequest) (*pb.FiltersResponse, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.asked.Add(1)
	resp := &pb.FiltersResponse{Cluster: "B", Version: 7, Filters: h.filters, LeaderId: "b1", LeaderAddr: h.leader, Gateways: []string{h.leader}}
	if h.beyond != nil {
		resp.Beyond = []*pb.BeyondFilters{h.beyond}
	}
	return resp, nil
}

func (h *hostilePeer) Stat(context.Context, *pb.StatRequest) (*pb.StatResponse, error) {
	h.stats.Add(1)
	return nil, status.Error(codes.Unavailable, "b1 is shutting down")
}

func (h *hostilePeer) set(filters []byte, beyond *pb.BeyondFilters, leader string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.filters, h.beyond, h.leader = filters, beyond, leader
}

// startHostilePeer serves B with a node certificate of ca naming cluster
// B, trusting callers of cluster A (aCA).
func startHostilePeer(t *testing.T, ca *auth.CA, aCA *x509.Certificate) *hostilePeer {
	t.Helper()
	certPEM, keyPEM, err := ca.IssueNode(auth.NodeCert{Cluster: "B", NodeID: "b1", Hosts: []string{"127.0.0.1"}})
	if err != nil {
		t.Fatal(err)
	}
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	trust := &auth.Trust{Cluster: "B", CA: ca.Cert, Cert: pair, Peers: map[string][]*x509.Certificate{"A": {aCA}}}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	h := &hostilePeer{addr: lis.Addr().String()}
	s := grpc.NewServer(grpc.Creds(credentials.NewTLS(trust.ServerTLS())))
	pb.RegisterFederationServer(s, h)
	pb.RegisterFilesServer(s, h)
	go s.Serve(lis)
	t.Cleanup(s.Stop)
	return h
}

// badFilters are encodings a hostile or broken peer may send, each of
// which once crashed or hung a node, or would be nonsense to use.
func badFilters(t *testing.T) map[string][]byte {
	good, err := catalog.BuildFilters(catalog.NewState(), 1, 0.01).MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	// Layout: "DDBF1", version, fp rate, then per filter a 4-byte length
	// and bloom's encoding: m, k, the bitset's length in bits, its words.
	const first = 5 + 8 + 8 + 4
	patch := func(at int, v uint64) []byte {
		b := bytes.Clone(good)
		binary.BigEndian.PutUint64(b[first+at:], v)
		return b
	}
	random := make([]byte, 4096)
	rand.Read(random)
	return map[string][]byte{
		"m=0":                  patch(0, 0),
		"k=2^31":               patch(8, 1<<31),
		"bitset length 2^40":   patch(16, 1<<40),
		"truncated":            good[:len(good)/2],
		"random bytes":         random,
		"random after a magic": append([]byte("DDBF1"), random...),
	}
}

// TestHostilePeer: a peer cluster that sends absurd filters, or passes on
// absurd filters of clusters beyond it, is refused and logged; every node
// keeps serving; nothing of it is passed on. A leader address it reports
// whose certificate names another cluster (from the same CA) is never
// used for it.
func TestHostilePeer(t *testing.T) {
	// C is an honest cluster whose CA also signs B's certificates (a
	// company CA shared by two clusters): its nodes' certificates verify for
	// B's CA but name C.
	c := startCluster(t, localcluster.Options{Nodes: 1, Cluster: "C", Replicas: 1})
	var logs syncBuffer
	var b *hostilePeer
	a, err := localcluster.New(localcluster.Options{
		Dir: filepath.Join(t.TempDir(), "A"), Cluster: "A", Fast: true,
		Logger: slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelWarn})),
		PeerCA: func(string) *x509.Certificate { return c.CA().Cert },
		Tune: func(cfg *server.Config) {
			cfg.Peers = map[string][]string{"B": {b.addr}}
			cfg.FilterRefresh = 50 * time.Millisecond
			cfg.PeerTimeout = time.Second
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	b = startHostilePeer(t, c.CA(), a.CA().Cert)
	b.set([]byte("nothing yet"), nil, "")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := a.Launch(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close() })
	ca := newClient(t, a)
	waitAsked := func() {
		t.Helper()
		for n := b.asked.Load() + 3*int64(len(a.Members)); b.asked.Load() < n; time.Sleep(10 * time.Millisecond) {
			if ctx.Err() != nil {
				t.Fatal("B is not asked for its filters")
			}
		}
	}

	good, _ := catalog.BuildFilters(catalog.NewState(), 1, 0.01).MarshalBinary()
	for name, bad := range badFilters(t) {
		b.set(bad, nil, "")
		waitAsked()
		// Passed on as the filters of a cluster beyond B: refused too.
		b.set(good, &pb.BeyondFilters{Cluster: "D", Version: 3, Hops: 1, Filters: bad}, "")
		waitAsked()
		// A keeps serving: a put and a get through every node.
		payload := "still serving after " + name
		if _, err := ca.Put(ctx, "a/"+strings.ReplaceAll(name, " ", "-"), strings.NewReader(payload), client.PutOptions{}); err != nil {
			t.Fatalf("put after %s filters: %v", name, err)
		}
		var got bytes.Buffer
		if _, err := ca.Get(ctx, "a/"+strings.ReplaceAll(name, " ", "-"), &got, client.GetOptions{}); err != nil || got.String() != payload {
			t.Fatalf("get after %s filters: %q, %v", name, got.String(), err)
		}
	}
	if n := strings.Count(logs.String(), "peer cluster's filters refused"); n < 2*len(badFilters(t)) {
		t.Errorf("%d refusals logged, want at least %d (one per kind, for B and beyond it):\n%s", n, 2*len(badFilters(t)), logs.String())
	}
	for _, m := range a.Members {
		if m.Node == nil {
			t.Fatalf("node %s stopped", m.ID)
		}
	}
	// Nothing of B's is held or passed on: a peer asking A for the filters
	// it holds of clusters beyond it hears of neither B nor D.
	conn, err := a.Dial(a.Addrs()[0], true)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	resp, err := pb.NewFederationClient(conn).Filters(ctx, &pb.FiltersRequest{FromCluster: "C"})
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.GetBeyond()) != 0 {
		t.Errorf("A passes on filters it refused: %v", resp.GetBeyond())
	}

	// Good filters, but B reports C's node as its leader and gateway. A
	// asks B (which now fails over); C's address is tried for B, but its
	// certificate names C, so A never sends it a call meant for B.
	cAddr := c.Addrs()[0]
	b.set(good, nil, cAddr)
	waitAsked()
	st, err := ca.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.GetPeers()[0].GetLeaderAddr() != cAddr {
		t.Fatalf("A did not take B's report: %v", st.GetPeers()[0])
	}
	toB, err := a.Client(client.WithCluster("B"))
	if err != nil {
		t.Fatal(err)
	}
	defer toB.Close()
	_, err = toB.Stat(ctx, "b/anything", 0)
	if status.Code(err) != codes.Unavailable || b.stats.Load() == 0 {
		t.Fatalf("stat in B: %v (B answered %d stats)", err, b.stats.Load())
	}
	if served := c.Members[0].Node.Federation().GetServedForwarded(); served != 0 {
		t.Errorf("C served %d calls meant for B", served)
	}
	if !strings.Contains(err.Error(), "not a node of cluster B") {
		t.Errorf("the error does not say C's address failed B's identity check: %v", err)
	}
}

// syncBuffer is a bytes.Buffer safe for concurrent writers (loggers).
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
