package server_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/ddstore/ddstore/client"
	"github.com/ddstore/ddstore/internal/blake3"
	"github.com/ddstore/ddstore/internal/localcluster"
	pb "github.com/ddstore/ddstore/proto/ddstore/v1"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// randomReader yields n pseudo-random bytes from seed.
func randomReader(seed byte, n int64) io.Reader {
	return io.LimitReader(rand.NewChaCha8([32]byte{seed}), n)
}

// hashOf returns the BLAKE3 of what r yields.
func hashOf(t testing.TB, r io.Reader) []byte {
	t.Helper()
	h := blake3.New()
	if _, err := io.Copy(h, r); err != nil {
		t.Fatal(err)
	}
	return h.Sum(nil)
}

func startCluster(t testing.TB, opts localcluster.Options) *localcluster.Cluster {
	t.Helper()
	if opts.Dir == "" {
		opts.Dir = t.TempDir()
	}
	opts.Fast = true
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cl, err := localcluster.Start(ctx, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cl.Close() })
	return cl
}

// newClient returns an admin client of cl talking to addrs (default: every
// member).
func newClient(t testing.TB, cl *localcluster.Cluster, addrs ...string) *client.Client {
	t.Helper()
	if len(addrs) == 0 {
		addrs = cl.Addrs()
	}
	c, err := client.New(addrs, cl.ClientOptions()...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// download fetches name and returns the BLAKE3 of its bytes.
func download(t testing.TB, c *client.Client, name string) []byte {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	h := blake3.New()
	if _, err := c.Get(ctx, name, h, client.GetOptions{}); err != nil {
		t.Fatalf("get %s: %v", name, err)
	}
	return h.Sum(nil)
}

// TestLargeFileRoundTrip: a 1 GiB file streams up and down a 3-node
// cluster byte-identical, every node holds a copy of every chunk (R=3), and
// a second upload sends no chunk bytes.
func TestLargeFileRoundTrip(t *testing.T) {
	const size = 1 << 30
	cl := startCluster(t, localcluster.Options{})
	c := newClient(t, cl)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()

	res, err := c.Put(ctx, "big.bin", randomReader(1, size), client.PutOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("upload: %d chunks, %.0f MB/s", res.Chunks, float64(size)/1e6/res.Duration.Seconds())
	if res.Size != size || res.ChunksSent != res.Chunks {
		t.Fatalf("put result %+v", res)
	}
	want := hashOf(t, randomReader(1, size))
	if !bytes.Equal(res.Manifest.GetBlake3(), want) {
		t.Fatalf("manifest hash %x, want %x", res.Manifest.GetBlake3(), want)
	}
	start := time.Now()
	if got := download(t, c, "big.bin"); !bytes.Equal(got, want) {
		t.Fatalf("downloaded hash %x, want %x", got, want)
	}
	t.Logf("download: %.0f MB/s", float64(size)/1e6/time.Since(start).Seconds())

	for _, m := range cl.Members {
		u, err := m.Node.Store().Usage(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if int(u.Chunks) != res.Chunks {
			t.Errorf("%s holds %d chunks, want %d (R=3 on 3 nodes)", m.ID, u.Chunks, res.Chunks)
		}
	}

	again, err := c.Put(ctx, "big.bin", randomReader(1, size), client.PutOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if again.BytesSent != 0 || again.ChunksSent != 0 {
		t.Fatalf("second upload sent %d chunks (%d bytes), want none", again.ChunksSent, again.BytesSent)
	}
}

// TestLeaderFailover: the leader dies during an upload; a new leader is
// elected; the retried upload sends only what is missing; files committed
// before are listed and intact; a full restart keeps catalog and chunks.
func TestLeaderFailover(t *testing.T) {
	cl := startCluster(t, localcluster.Options{Replicas: 2})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	all := newClient(t, cl)

	before := map[string][]byte{}
	for i := range 3 {
		name := fmt.Sprintf("before-%d", i)
		if _, err := all.Put(ctx, name, randomReader(byte(10+i), 8<<20), client.PutOptions{}); err != nil {
			t.Fatal(err)
		}
		before[name] = hashOf(t, randomReader(byte(10+i), 8<<20))
	}

	leader := cl.Leader(ctx)
	if leader < 0 {
		t.Fatal("no leader")
	}
	const size = 384 << 20
	viaLeader := newClient(t, cl, cl.Members[leader].APIAddr)
	killed := make(chan struct{})
	_, err := viaLeader.Put(ctx, "during.bin", randomReader(7, size), client.PutOptions{
		Progress: func(done int64) {
			select {
			case <-killed:
			default:
				if done > size/3 {
					close(killed)
					go cl.StopNode(leader, true)
				}
			}
		},
	})
	if err == nil {
		t.Fatal("upload through the killed leader succeeded")
	}
	t.Logf("upload through the leader failed as expected: %v", err)
	<-killed

	var others []string
	for i, m := range cl.Members {
		if i != leader {
			others = append(others, m.APIAddr)
		}
	}
	rest := newClient(t, cl, others...)
	deadline := time.Now().Add(30 * time.Second)
	for {
		st, err := rest.Status(ctx)
		if err == nil && st.GetLeaderId() != "" && st.GetLeaderId() != cl.Members[leader].ID {
			t.Logf("new leader %s in term %d", st.GetLeaderId(), st.GetTerm())
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no new leader after 30s: %v %v", st, err)
		}
		time.Sleep(100 * time.Millisecond)
	}

	res, err := rest.Put(ctx, "during.bin", randomReader(7, size), client.PutOptions{})
	if err != nil {
		t.Fatalf("retried upload: %v", err)
	}
	t.Logf("retry: %d of %d chunks already stored; sent %d chunks, %d bytes", res.ChunksKnown, res.Chunks, res.ChunksSent, res.BytesSent)
	if res.ChunksKnown == 0 || res.BytesSent >= size*9/10 {
		t.Fatalf("retry resent what was stored: known %d, sent %d bytes of %d", res.ChunksKnown, res.BytesSent, size)
	}
	before["during.bin"] = hashOf(t, randomReader(7, size))

	check := func(c *client.Client, when string) {
		t.Helper()
		listing, err := c.List(ctx, client.ListOptions{})
		files := listing.GetFiles()
		if err != nil {
			t.Fatalf("%s: list: %v", when, err)
		}
		if len(files) != len(before) {
			t.Fatalf("%s: %d files listed, want %d", when, len(files), len(before))
		}
		for name, want := range before {
			if got := download(t, c, name); !bytes.Equal(got, want) {
				t.Fatalf("%s: %s downloads with hash %x, want %x", when, name, got, want)
			}
		}
	}
	check(rest, "after failover")

	// The old leader comes back and catches up.
	if err := cl.StartNode(ctx, leader); err != nil {
		t.Fatal(err)
	}
	if err := cl.WaitReady(ctx, 3); err != nil {
		t.Fatal(err)
	}
	check(newClient(t, cl, cl.Members[leader].APIAddr), "old leader back")

	// Full restart of every node.
	if err := cl.Close(); err != nil {
		t.Fatalf("stop all: %v", err)
	}
	for i := range cl.Members {
		if err := cl.StartNode(ctx, i); err != nil {
			t.Fatalf("restart %d: %v", i, err)
		}
	}
	if err := cl.WaitReady(ctx, 3); err != nil {
		t.Fatal(err)
	}
	check(newClient(t, cl), "after full restart")
}

// TestLinearizableReads: a commit that returned is visible at once on every
// node.
func TestLinearizableReads(t *testing.T) {
	cl := startCluster(t, localcluster.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	clients := make([]*client.Client, len(cl.Members))
	for i, m := range cl.Members {
		clients[i] = newClient(t, cl, m.APIAddr)
	}
	for i := range 30 {
		name := fmt.Sprintf("lin/%03d", i)
		if _, err := clients[i%3].Put(ctx, name, randomReader(byte(i), 4096), client.PutOptions{}); err != nil {
			t.Fatal(err)
		}
		for j, c := range clients {
			if _, err := c.Stat(ctx, name, pb.Consistency_CONSISTENCY_LINEARIZABLE); err != nil {
				t.Fatalf("%s committed via node %d, stat on node %d: %v", name, i%3, j, err)
			}
		}
	}
	listing, err := clients[2].List(ctx, client.ListOptions{Prefix: "lin/", PageSize: 7})
	files := listing.GetFiles()
	if err != nil || len(files) != 30 {
		t.Fatalf("list: %d files, %v", len(files), err)
	}
}

// TestResumeDownload: an interrupted download resumes from the first missing
// chunk and the result is intact.
func TestResumeDownload(t *testing.T) {
	cl := startCluster(t, localcluster.Options{})
	c := newClient(t, cl)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	const size = 96 << 20
	if _, err := c.Put(ctx, "r.bin", randomReader(3, size), client.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	path := t.TempDir() + "/r.bin"
	cut, stop := context.WithCancel(ctx)
	_, err := c.GetFile(cut, "r.bin", path, false, client.GetOptions{Progress: func(done, total int64) {
		if done > total/2 {
			stop()
		}
	}})
	stop()
	// The cancellation surfaces as the context's error or as gRPC's
	// Canceled status of the stream it cut; nothing else will do (a nil error
	// would mean the download finished before the cut).
	if !errors.Is(err, context.Canceled) && status.Code(err) != codes.Canceled {
		t.Fatalf("interrupted download ended with %v, want the cancellation", err)
	}
	res, err := c.GetFile(ctx, "r.bin", path, true, client.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if res.ResumedAt == 0 || res.KeptBytes < size/2-(8<<20) {
		t.Fatalf("resume kept %d bytes from chunk %d; want about half", res.KeptBytes, res.ResumedAt)
	}
	if res.BytesReceived > size/2+(8<<20) {
		t.Fatalf("resume received %d bytes; want only the missing half", res.BytesReceived)
	}
	// A corrupted byte in the kept part is found and fetched again.
	if err := corruptAt(path, size/4); err != nil {
		t.Fatal(err)
	}
	res, err = c.GetFile(ctx, "r.bin", path, true, client.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if res.KeptBytes >= size/4+1 || res.KeptBytes == 0 {
		t.Fatalf("after corrupting byte %d, resume kept %d bytes", size/4, res.KeptBytes)
	}
}

// TestLeaveUnknownNode: leaving a node that is not a member fails with
// NotFound naming it and the members, whichever node is asked, and changes
// nothing; a member leaves, and asking again says it is gone.
func TestLeaveUnknownNode(t *testing.T) {
	cl := startCluster(t, localcluster.Options{Replicas: 2})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	leader := cl.Leader(ctx)
	if leader < 0 {
		t.Fatal("no leader")
	}
	follower := (leader + 1) % len(cl.Members)
	wantNotFound := func(c *client.Client, id string, members ...string) {
		t.Helper()
		err := c.Leave(ctx, id)
		if status.Code(err) != codes.NotFound {
			t.Fatalf("leave %s: %v, want NotFound", id, err)
		}
		msg := status.Convert(err).Message()
		for _, want := range append([]string{`"` + id + `"`}, members...) {
			if !strings.Contains(msg, want) {
				t.Fatalf("leave %s: %q does not name %s", id, msg, want)
			}
		}
	}
	var ids []string
	for _, m := range cl.Members {
		ids = append(ids, m.ID)
	}
	for _, via := range []int{leader, follower} {
		wantNotFound(newClient(t, cl, cl.Members[via].APIAddr), "no-such-node", ids...)
	}
	c := newClient(t, cl, cl.Members[leader].APIAddr)
	st, err := c.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(st.GetNodes()) != len(cl.Members) {
		t.Fatalf("after leaving an unknown node, status lists %d nodes, want %d", len(st.GetNodes()), len(cl.Members))
	}

	gone := (leader + 2) % len(cl.Members)
	if err := c.Leave(ctx, cl.Members[gone].ID); err != nil {
		t.Fatalf("leave of member %s: %v", cl.Members[gone].ID, err)
	}
	var rest []string
	for i, id := range ids {
		if i != gone {
			rest = append(rest, id)
		}
	}
	wantNotFound(c, cl.Members[gone].ID, rest...)
}
