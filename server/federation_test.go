package server_test

import (
	"bytes"
	"context"
	"crypto/x509"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ddstore/ddstore/catalog"
	"github.com/ddstore/ddstore/chunker"
	"github.com/ddstore/ddstore/client"
	"github.com/ddstore/ddstore/internal/localcluster"
	pb "github.com/ddstore/ddstore/proto/ddstore/v1"
	"github.com/ddstore/ddstore/server"
	"github.com/ddstore/ddstore/server/auth"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// startFederation plans clusters of three nodes named names, each listing
// all the others as peers, and launches them.
func startFederation(t *testing.T, names ...string) map[string]*localcluster.Cluster {
	peers := map[string][]string{}
	for _, name := range names {
		for _, other := range names {
			if other != name {
				peers[name] = append(peers[name], other)
			}
		}
	}
	return startClusters(t, 3, names, peers)
}

// startClusters plans clusters of n nodes named names, cluster X listing the
// clusters peers[X] as its peers, and launches them.
func startClusters(t *testing.T, n int, names []string, peers map[string][]string) map[string]*localcluster.Cluster {
	t.Helper()
	return startClustersTuned(t, n, names, peers, nil)
}

// startClustersTuned is startClusters with tune applied last to every
// node's configuration.
func startClustersTuned(t *testing.T, n int, names []string, peers map[string][]string, tune func(*server.Config)) map[string]*localcluster.Cluster {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	out := map[string]*localcluster.Cluster{}
	callers := map[string][]string{} // who names each cluster as a peer
	for name, ps := range peers {
		for _, p := range ps {
			callers[p] = append(callers[p], name)
		}
	}
	for _, name := range names {
		cl, err := localcluster.New(localcluster.Options{
			Nodes: n, Dir: filepath.Join(t.TempDir(), name), Fast: true, Cluster: name, Callers: callers[name],
			PeerCA: func(peer string) *x509.Certificate { return out[peer].CA().Cert },
			Tune: func(c *server.Config) {
				c.Peers = map[string][]string{}
				c.PeerPolicies = map[string]server.PeerPolicy{}
				for _, other := range peers[name] {
					c.Peers[other] = out[other].Addrs()
				}
				// Puts and replicas pass between these clusters.
				for _, other := range append(slices.Clone(peers[name]), callers[name]...) {
					c.PeerPolicies[other] = server.PeerPolicy{Role: auth.RoleWrite}
				}
				c.FilterRefresh = 100 * time.Millisecond
				c.PeerTimeout = time.Second
				c.CacheSize = 128 << 20 // its FIFO (a quarter) holds a test file whole
				c.RepairInterval, c.ScrubInterval, c.GCInterval = -1, -1, -1
				if tune != nil {
					tune(c)
				}
			}})
		if err != nil {
			t.Fatal(err)
		}
		out[name] = cl
	}
	for _, name := range names {
		if err := out[name].Launch(ctx); err != nil {
			t.Fatalf("cluster %s: %v", name, err)
		}
		t.Cleanup(func() { out[name].Close() })
	}
	return out
}

// clusterFilters fetches a cluster's filters the way a peer does.
func clusterFilters(t *testing.T, cl *localcluster.Cluster, addr string) *catalog.Filters {
	t.Helper()
	conn, err := cl.Dial(addr, true)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	resp, err := pb.NewFederationClient(conn).Filters(ctx, &pb.FiltersRequest{FromCluster: "test"})
	if err != nil {
		t.Fatal(err)
	}
	f, err := catalog.UnmarshalFilters(resp.GetFilters())
	if err != nil {
		t.Fatal(err)
	}
	return f
}

// waitFilters waits until every node of fed[of] holds the current filters
// of the other clusters in fed.
func waitFilters(t *testing.T, fed map[string]*localcluster.Cluster, of string) {
	t.Helper()
	if err := localcluster.WaitPeerFilters(context.Background(), fed, of); err != nil {
		t.Fatal(err)
	}
}

// served sums, over a cluster's nodes, the calls they answered for peers.
func served(cl *localcluster.Cluster) (n uint64) {
	for _, m := range cl.Members {
		if m.Node != nil {
			n += m.Node.Federation().GetServedForwarded()
		}
	}
	return n
}

type counters struct{ Lookups, PeerCalls, FilterSkips uint64 }

func fedCounters(cl *localcluster.Cluster) (f counters) {
	for _, m := range cl.Members {
		if m.Node != nil {
			c := m.Node.Federation()
			f.Lookups += c.GetLookups()
			f.PeerCalls += c.GetPeerCalls()
			f.FilterSkips += c.GetFilterSkips()
		}
	}
	return f
}

func leaderAddr(t *testing.T, cl *localcluster.Cluster) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	i := cl.Leader(ctx)
	if i < 0 {
		t.Fatal("no leader")
	}
	return cl.Members[i].APIAddr
}

func put(t *testing.T, c *client.Client, name, date string, r io.Reader) {
	t.Helper()
	if _, err := c.Put(context.Background(), name, r, client.PutOptions{Date: date}); err != nil {
		t.Fatalf("put %s: %v", name, err)
	}
}

// TestFederation runs three clusters of three nodes on loopback, each a
// peer of the others.
func TestFederation(t *testing.T) {
	fed := startFederation(t, "A", "B", "C")
	ca, cb, cc := newClient(t, fed["A"]), newClient(t, fed["B"]), newClient(t, fed["C"])

	const size = 24 << 20
	put(t, ca, "a/big.bin", "2026-01-10", randomReader(1, size))
	put(t, ca, "a/march.txt", "2026-03-01", strings.NewReader("march in A"))
	put(t, cb, "b/jan.txt", "2026-01-15", strings.NewReader("january in B"))
	put(t, cc, "c/later.txt", "2027-05-01", strings.NewReader("later in C"))
	for name := range fed {
		waitFilters(t, fed, name)
	}
	want := hashOf(t, randomReader(1, size))

	t.Run("DownloadThroughPeerLeaderAndResume", func(t *testing.T) {
		viaB := newClient(t, fed["B"], leaderAddr(t, fed["B"]))
		m, err := viaB.Stat(context.Background(), "a/big.bin", 0)
		if err != nil || m.GetSize() != size {
			t.Fatalf("stat through B: %v %v", m, err)
		}
		path := filepath.Join(t.TempDir(), "big.bin")
		ctx, cancel := context.WithCancel(context.Background())
		_, err = viaB.GetFile(ctx, "a/big.bin", path, false, client.GetOptions{Progress: func(done, total int64) {
			if done >= total/2 {
				cancel()
			}
		}})
		cancel()
		if err == nil {
			t.Fatal("the interrupted download completed")
		}
		fi, _ := os.Stat(path)
		res, err := viaB.GetFile(context.Background(), "a/big.bin", path, true, client.GetOptions{})
		if err != nil {
			t.Fatalf("resume through B: %v", err)
		}
		if !bytes.Equal(hashOf(t, must(os.Open(path))), want) {
			t.Fatal("the file downloaded through B differs")
		}
		if res.ResumedAt == 0 || res.KeptBytes == 0 {
			t.Fatalf("resume kept nothing: %+v", res)
		}
		t.Logf("interrupted at %d bytes on disk; resumed at chunk %d of %d, kept %d bytes", fi.Size(), res.ResumedAt, len(res.Manifest.GetChunks()), res.KeptBytes)

		// B's node kept the chunks it fetched from A in its cache: asked
		// again, it needs only the manifest from A.
		sa := served(fed["A"])
		if got := download(t, viaB, "a/big.bin"); !bytes.Equal(got, want) {
			t.Fatal("second download through B differs")
		}
		if calls := served(fed["A"]) - sa; calls != 1 {
			t.Fatalf("second download through B made %d calls to A, want 1 (the lookup; chunks from B's cache)", calls)
		}
	})

	t.Run("DateRangeListingMergesPeers", func(t *testing.T) {
		listing, err := cc.List(context.Background(), client.ListOptions{DateFrom: "2026-01-01", DateTo: "2026-01-31"})
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, f := range listing.Files {
			got = append(got, f.GetCluster()+":"+f.GetName())
		}
		if want := []string{"A:a/big.bin", "B:b/jan.txt"}; !slices.Equal(got, want) || len(listing.Unanswered) != 0 {
			t.Fatalf("listing from C: %v (unanswered %v), want %v", got, listing.Unanswered, want)
		}
		all, err := cc.List(context.Background(), client.ListOptions{PageSize: 2})
		if err != nil || len(all.Files) != 4 {
			t.Fatalf("paged listing of every cluster: %v %v", all.GetFiles(), err)
		}
	})

	t.Run("NotFoundAsksOnlyMaybeClusters", func(t *testing.T) {
		fa, fb := clusterFilters(t, fed["A"], fed["A"].Addrs()[0]), clusterFilters(t, fed["B"], fed["B"].Addrs()[0])
		var name string
		for i := 0; name == ""; i++ {
			if n := fmt.Sprintf("nobody/has-%d", i); !fa.MayHaveName(n) && !fb.MayHaveName(n) {
				name = n
			}
		}
		sa, sb, before := served(fed["A"]), served(fed["B"]), fedCounters(fed["C"])
		_, err := cc.Stat(context.Background(), name, 0)
		if status.Code(err) != codes.NotFound {
			t.Fatalf("stat of %s: %v, want NotFound", name, err)
		}
		var h bytes.Buffer
		if _, err := cc.Get(context.Background(), name, &h, client.GetOptions{}); status.Code(err) != codes.NotFound {
			t.Fatalf("get of %s: %v, want NotFound", name, err)
		}
		after := fedCounters(fed["C"])
		if served(fed["A"]) != sa || served(fed["B"]) != sb || after.PeerCalls != before.PeerCalls {
			t.Fatalf("clusters whose filters say no were called: A %d->%d, B %d->%d, C peer calls %d->%d",
				sa, served(fed["A"]), sb, served(fed["B"]), before.PeerCalls, after.PeerCalls)
		}
		t.Logf("2 lookups: %d peer calls, %d filter skips", after.PeerCalls-before.PeerCalls, after.FilterSkips-before.FilterSkips)

		// Filters forced to "maybe": every peer is asked once per lookup, no
		// more (the visited list stops A and B from asking each other), and
		// the answers stay right.
		for _, m := range fed["C"].Members {
			m.Node.IgnorePeerFilters(true)
		}
		defer func() {
			for _, m := range fed["C"].Members {
				m.Node.IgnorePeerFilters(false)
			}
		}()
		sa, sb = served(fed["A"]), served(fed["B"])
		if _, err := cc.Stat(context.Background(), name, 0); status.Code(err) != codes.NotFound {
			t.Fatalf("stat with filters ignored: %v, want NotFound", err)
		}
		if served(fed["A"]) != sa+1 || served(fed["B"]) != sb+1 {
			t.Fatalf("with filters ignored, A answered %d calls and B %d; want 1 each", served(fed["A"])-sa, served(fed["B"])-sb)
		}
		if got := download(t, cc, "a/big.bin"); !bytes.Equal(got, want) {
			t.Fatal("download with filters ignored differs")
		}
		listing, err := cc.List(context.Background(), client.ListOptions{DateFrom: "2026-01-01", DateTo: "2026-01-31"})
		if err != nil || len(listing.Files) != 2 {
			t.Fatalf("listing with filters ignored: %v %v", listing.GetFiles(), err)
		}
	})

	t.Run("PutIntoAnotherCluster", func(t *testing.T) {
		toB, err := fed["A"].Client(client.WithCluster("B"))
		if err != nil {
			t.Fatal(err)
		}
		defer toB.Close()
		put(t, toB, "sent/via-a.bin", "2026-06-01", randomReader(2, 3<<20))
		if _, err := newClientFor(t, fed["B"], "B").Stat(context.Background(), "sent/via-a.bin", 0); err != nil {
			t.Fatalf("B does not hold the file put through A: %v", err)
		}
		if _, err := newClientFor(t, fed["A"], "A").Stat(context.Background(), "sent/via-a.bin", 0); status.Code(err) != codes.NotFound {
			t.Fatalf("A itself holds the file meant for B: %v", err)
		}
		if got := download(t, toB, "sent/via-a.bin"); !bytes.Equal(got, hashOf(t, randomReader(2, 3<<20))) {
			t.Fatal("file put into B differs")
		}
		if _, err := newClientFor(t, fed["A"], "Z").Stat(context.Background(), "x", 0); status.Code(err) != codes.InvalidArgument {
			t.Fatalf("unknown cluster: %v, want InvalidArgument", err)
		}
	})

	t.Run("ReplicateSendsOnlyMissingChunks", func(t *testing.T) {
		res, err := ca.Replicate(context.Background(), "a/big.bin", "C", false)
		if err != nil {
			t.Fatal(err)
		}
		if res.GetSentChunks() != res.GetChunks() || res.GetFilterAbsent() == 0 {
			t.Fatalf("first replication: %v", res)
		}
		// A second file sharing most of its chunks: only the new ones travel.
		put(t, ca, "a/big2.bin", "2026-01-11", io.MultiReader(randomReader(1, size), randomReader(9, 1<<20)))
		waitFilters(t, fed, "A")
		waitFilters(t, fed, "C") // C's filters now hold a/big.bin's chunks
		res2, err := ca.Replicate(context.Background(), "a/big2.bin", "C", false)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("replicate a/big.bin: %d chunks, %d filter-absent, %d sent (%d bytes); a/big2.bin: %d chunks, %d filter-absent, %d checked, %d sent (%d bytes)",
			res.GetChunks(), res.GetFilterAbsent(), res.GetSentChunks(), res.GetSentBytes(),
			res2.GetChunks(), res2.GetFilterAbsent(), res2.GetChecked(), res2.GetSentChunks(), res2.GetSentBytes())
		if res2.GetChecked() == 0 || res2.GetSentChunks() >= res2.GetChunks()/2 {
			t.Fatalf("second replication resent what C holds: %v", res2)
		}
		if got := download(t, newClientFor(t, fed["C"], "C"), "a/big2.bin"); !bytes.Equal(got, hashOf(t, io.MultiReader(randomReader(1, size), randomReader(9, 1<<20)))) {
			t.Fatal("replicated file differs in C")
		}
	})

	t.Run("MissingChunkFetchedFromPeer", func(t *testing.T) {
		// C holds a/big.bin (replicated above). Drop one of its chunks from
		// every node of C: a download from C fetches it from A.
		m, err := newClientFor(t, fed["C"], "C").Stat(context.Background(), "a/big.bin", 0)
		if err != nil {
			t.Fatal(err)
		}
		id := chunker.ID(m.GetChunks()[3].GetId())
		for _, mem := range fed["C"].Members {
			if err := mem.Node.Store().Delete(context.Background(), id); err != nil {
				t.Fatal(err)
			}
		}
		before := fedCounters(fed["C"]).PeerCalls
		if got := download(t, newClientFor(t, fed["C"], "C"), "a/big.bin"); !bytes.Equal(got, want) {
			t.Fatal("download with a chunk from A differs")
		}
		if fedCounters(fed["C"]).PeerCalls == before {
			t.Fatal("no peer was asked for the missing chunk")
		}
	})

	t.Run("StatusShowsPeers", func(t *testing.T) {
		// A peer answers with its leader as it knows it at that moment; on
		// a loaded machine a short election (300 ms timeouts here) may be
		// under way, so the status is read until it settles.
		var bad string
		for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
			st, err := ca.Status(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			if st.GetCluster() != "A" || len(st.GetPeers()) != 2 {
				t.Fatalf("status: cluster %q, peers %v", st.GetCluster(), st.GetPeers())
			}
			bad = ""
			for _, p := range st.GetPeers() {
				if !p.GetReachable() || p.GetLeaderId() == "" || p.GetLeaderAddr() == "" || p.GetFilterVersion() == 0 || p.GetFilterAgeMs() < 0 {
					bad = fmt.Sprintf("peer %s: %v", p.GetName(), p)
				}
			}
			if bad == "" {
				return
			}
		}
		t.Fatal(bad)
	})

	t.Run("FiltersTravelOnlyWhenChangedAndForgetDeletes", func(t *testing.T) {
		conn, err := fed["A"].Dial(fed["A"].Addrs()[0], true)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		fc := pb.NewFederationClient(conn)
		cur, err := fc.Filters(context.Background(), &pb.FiltersRequest{FromCluster: "test"})
		if err != nil || len(cur.GetFilters()) == 0 {
			t.Fatalf("first exchange: %v, %d bytes", err, len(cur.GetFilters()))
		}
		same, err := fc.Filters(context.Background(), &pb.FiltersRequest{FromCluster: "test", HaveVersion: cur.GetVersion()})
		if err != nil || len(same.GetFilters()) != 0 || same.GetVersion() != cur.GetVersion() {
			t.Fatalf("exchange at the current version sent %d bytes (version %d, %v)", len(same.GetFilters()), same.GetVersion(), err)
		}
		if err := ca.Delete(context.Background(), "a/march.txt"); err != nil {
			t.Fatal(err)
		}
		// The node asked may apply the delete a moment after the leader.
		var after *pb.FiltersResponse
		for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
			if after, err = fc.Filters(context.Background(), &pb.FiltersRequest{FromCluster: "test", HaveVersion: cur.GetVersion()}); err != nil || after.GetVersion() != cur.GetVersion() {
				break
			}
		}
		if err != nil || len(after.GetFilters()) == 0 || after.GetVersion() <= cur.GetVersion() {
			t.Fatalf("after a delete: version %d -> %d, %d bytes, %v", cur.GetVersion(), after.GetVersion(), len(after.GetFilters()), err)
		}
		f, err := catalog.UnmarshalFilters(after.GetFilters())
		if err != nil || f.MayHaveName("a/march.txt") || !f.MayHaveName("a/big.bin") {
			t.Fatalf("rebuilt filters: march %v, big %v, %v", f.MayHaveName("a/march.txt"), f.MayHaveName("a/big.bin"), err)
		}
		t.Logf("filters: %d bytes at version %d; unchanged: 0 bytes; after a delete: version %d, rebuilt without the name", len(cur.GetFilters()), cur.GetVersion(), after.GetVersion())
		waitFilters(t, fed, "C")
		sa := served(fed["A"])
		if _, err := cc.Stat(context.Background(), "a/march.txt", 0); status.Code(err) != codes.NotFound || served(fed["A"]) != sa {
			t.Fatalf("stat of the deleted file from C: %v; A answered %d calls", err, served(fed["A"])-sa)
		}
	})

	t.Run("StoppedPeer", func(t *testing.T) {
		for i := range fed["B"].Members {
			fed["B"].StopNode(i, true)
		}
		start := time.Now()
		ctx, cancel := context.WithTimeout(context.Background(), 4*time.Second)
		defer cancel()
		listing, err := cc.List(ctx, client.ListOptions{DateFrom: "2026-01-01", DateTo: "2026-01-31"})
		took := time.Since(start)
		if err != nil {
			t.Fatalf("listing with B down: %v", err)
		}
		var names []string
		for _, f := range listing.Files {
			names = append(names, f.GetName())
		}
		if !slices.Contains(names, "a/big.bin") || slices.Contains(names, "b/jan.txt") ||
			len(listing.Unanswered) != 1 || listing.Unanswered[0].GetCluster() != "B" {
			t.Fatalf("listing with B down: %v, unanswered %v", names, listing.Unanswered)
		}
		t.Logf("listing with B down answered in %s: %v; note: %v", took.Round(time.Millisecond), names, listing.Unanswered[0])
		_, err = cc.Stat(ctx, "b/jan.txt", 0)
		if status.Code(err) != codes.Unavailable || !strings.Contains(err.Error(), "cluster B did not answer") {
			t.Fatalf("stat of B's file with B down: %v", err)
		}
		t.Logf("stat of B's file with B down, after %s: %v", time.Since(start).Round(time.Millisecond), err)
		if got := download(t, cc, "a/big.bin"); !bytes.Equal(got, want) {
			t.Fatal("download of A's file with B down differs")
		}
		if time.Since(start) > 20*time.Second {
			t.Fatalf("answers with B down took %s", time.Since(start))
		}
	})
}

// newClientFor returns a client for cl whose calls are meant for cluster
// name.
func newClientFor(t *testing.T, cl *localcluster.Cluster, name string) *client.Client {
	t.Helper()
	c, err := cl.Client(client.WithCluster(name))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

// TestFederationChain: A knows only B, B knows only C. A lookup asked of A
// for C's file travels A -> B -> C and back; with a hop limit of 1 it stops
// at B. A file of A asked of C is not found: C knows no peer.
func TestFederationChain(t *testing.T) {
	fed := startClusters(t, 1, []string{"A", "B", "C"}, map[string][]string{"A": {"B"}, "B": {"C"}})
	cc := newClient(t, fed["C"])
	put(t, cc, "c/deep.bin", "2026-04-01", randomReader(5, 2<<20))
	put(t, newClient(t, fed["A"]), "a/top.txt", "2026-04-02", strings.NewReader("A only"))
	waitFilters(t, map[string]*localcluster.Cluster{"B": fed["B"], "C": fed["C"]}, "B")
	waitFilters(t, map[string]*localcluster.Cluster{"A": fed["A"], "B": fed["B"]}, "A")
	waitBeyond(t, fed["A"], "B", "C")

	// C's filters reach A through B within two refreshes.
	ca := newClient(t, fed["A"])
	var (
		resp *pb.StatResponse
		err  error
	)
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if resp, err = ca.Lookup(context.Background(), "c/deep.bin", 0); err == nil {
			break
		}
	}
	if err != nil || resp.GetCluster() != "C" {
		t.Fatalf("lookup through A -> B -> C: %v %v", resp, err)
	}
	if got := download(t, ca, "c/deep.bin"); !bytes.Equal(got, hashOf(t, randomReader(5, 2<<20))) {
		t.Fatal("download through two hops differs")
	}
	listing, err := ca.List(context.Background(), client.ListOptions{DateFrom: "2026-04-01", DateTo: "2026-04-30"})
	if err != nil || len(listing.Files) != 2 {
		t.Fatalf("listing through two hops: %v %v", listing.GetFiles(), err)
	}
	if _, err := cc.Stat(context.Background(), "a/top.txt", 0); status.Code(err) != codes.NotFound {
		t.Fatalf("C found A's file without knowing A: %v", err)
	}
	// A request forwarded to B with no hops left is answered by B alone.
	conn, err := fed["B"].Dial(fed["B"].Addrs()[0], true)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	for _, tt := range []struct {
		hops string
		code codes.Code
	}{{"0", codes.NotFound}, {"1", codes.OK}} {
		ctx := metadata.AppendToOutgoingContext(context.Background(), "ddstore-origin", "A", "ddstore-visited", "A,B", "ddstore-hops", tt.hops)
		_, err := pb.NewFilesClient(conn).Stat(ctx, &pb.StatRequest{Name: "c/deep.bin"})
		if status.Code(err) != tt.code {
			t.Errorf("stat forwarded to B with %s hops left: %v, want %v", tt.hops, err, tt.code)
		}
	}
}

// waitBeyond waits until cl's node knows cluster far through its peer.
func waitBeyond(t *testing.T, cl *localcluster.Cluster, peer, far string) {
	t.Helper()
	c := newClient(t, cl, cl.Addrs()[0])
	deadline := time.Now().Add(20 * time.Second)
	for {
		st, err := c.Status(context.Background())
		for _, p := range st.GetPeers() {
			if p.GetName() == peer && slices.Contains(p.GetBeyond(), far) {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s never learned of %s through %s: %v %v", st.GetCluster(), far, peer, st.GetPeers(), err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// staleChecks sums, over a cluster's nodes, the lookups that checked stale
// peer filters with their peer.
func staleChecks(cl *localcluster.Cluster) (n uint64) {
	for _, m := range cl.Members {
		if m.Node != nil {
			n += m.Node.StaleFilterChecks()
		}
	}
	return n
}

// TestFederationFresh: a file committed in B is found through A at once
// (stat, get, ls), with filters refreshed only every 2 s (the default): B
// tells A's nodes of each commit before it answers, and A checks the
// filters that rule the name out with B first. A name no cluster holds is
// NotFound without a call to B, once A holds B's current filters.
func TestFederationFresh(t *testing.T) {
	fed := startClustersTuned(t, 3, []string{"A", "B"}, map[string][]string{"A": {"B"}, "B": {"A"}}, func(c *server.Config) {
		c.FilterRefresh = 2 * time.Second
	})
	ca, cb := newClient(t, fed["A"]), newClient(t, fed["B"])
	put(t, cb, "b/old.txt", "2026-02-01", strings.NewReader("before"))
	waitFilters(t, fed, "A")
	ctx := context.Background()

	checks := staleChecks(fed["A"])
	start := time.Now()
	put(t, cb, "b/stat.txt", "2026-02-02", strings.NewReader("stat me"))
	committed := time.Now()
	resp, err := ca.Lookup(ctx, "b/stat.txt", 0)
	if err != nil || resp.GetCluster() != "B" {
		t.Fatalf("stat through A right after the commit in B: %v %v", resp, err)
	}
	t.Logf("stat: put in B %s, then found through A in %s", committed.Sub(start).Round(time.Millisecond), time.Since(committed).Round(time.Millisecond))

	put(t, cb, "b/get.txt", "2026-02-03", strings.NewReader("get me"))
	committed = time.Now()
	var got bytes.Buffer
	if _, err := ca.Get(ctx, "b/get.txt", &got, client.GetOptions{}); err != nil || got.String() != "get me" {
		t.Fatalf("get through A right after the commit in B: %q %v", got.String(), err)
	}
	t.Logf("get: downloaded through A in %s", time.Since(committed).Round(time.Millisecond))

	put(t, cb, "b/ls.txt", "2026-02-04", strings.NewReader("list me"))
	committed = time.Now()
	listing, err := ca.List(ctx, client.ListOptions{DateFrom: "2026-02-04", DateTo: "2026-02-04"})
	if err != nil || len(listing.Files) != 1 || listing.Files[0].GetName() != "b/ls.txt" || listing.Files[0].GetCluster() != "B" {
		t.Fatalf("ls through A right after the commit in B: %v (unanswered %v) %v", listing.Files, listing.Unanswered, err)
	}
	t.Logf("ls: listed through A in %s", time.Since(committed).Round(time.Millisecond))
	t.Logf("%d stale-filter checks in A for 3 lookups", staleChecks(fed["A"])-checks)

	// Once A's nodes hold B's current filters again (the notices started a
	// refresh), a name B's filters rule out costs no call to B.
	waitFilters(t, fed, "A")
	fb := clusterFilters(t, fed["B"], leaderAddr(t, fed["B"]))
	name := ""
	for i := 0; name == ""; i++ {
		if n := fmt.Sprintf("nobody/has-%d", i); !fb.MayHaveName(n) {
			name = n
		}
	}
	checks, sb := staleChecks(fed["A"]), served(fed["B"])
	// A notice of a commit in B that does not come from B (here a node of A
	// itself) is answered with the version only and otherwise ignored.
	for _, addr := range fed["A"].Addrs() {
		conn, err := fed["A"].Dial(addr, true)
		if err != nil {
			t.Fatal(err)
		}
		nctx := metadata.AppendToOutgoingContext(ctx, "ddstore-filters-changed", "1")
		resp, err := pb.NewFederationClient(conn).Filters(nctx, &pb.FiltersRequest{FromCluster: "B"})
		conn.Close()
		if err != nil || len(resp.GetFilters()) != 0 || resp.GetCluster() != "A" {
			t.Fatalf("forged notice to %s: %d bytes of filters from %q, %v", addr, len(resp.GetFilters()), resp.GetCluster(), err)
		}
	}
	for _, addr := range fed["A"].Addrs() {
		c := newClient(t, fed["A"], addr)
		start := time.Now()
		_, err := c.Stat(ctx, name, 0)
		took := time.Since(start)
		if status.Code(err) != codes.NotFound {
			t.Fatalf("stat of %s through %s: %v, want NotFound", name, addr, err)
		}
		t.Logf("stat of a name no cluster holds, through %s: NotFound in %s", addr, took.Round(time.Microsecond))
		if took > time.Second {
			t.Errorf("NotFound took %s", took)
		}
	}
	if n, s := staleChecks(fed["A"])-checks, served(fed["B"])-sb; n != 0 || s != 0 {
		t.Errorf("lookups of a name B's fresh filters rule out made %d stale-filter checks and %d calls to B", n, s)
	}
}
