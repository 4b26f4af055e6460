package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"fmt"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/ddstore/ddstore/client"
	"github.com/ddstore/ddstore/internal/localcluster"
)

// TestHungNode stops one node with SIGSTOP — alive to the kernel, which
// still accepts its connections, but silent — and checks that it does not
// stall the others (3 nodes, R=2):
//   - a follower: puts and gets through the two other nodes complete within
//     10 s of the stop, and keep completing while it stays stopped;
//   - the leader: once the others elect a new leader, the first put through
//     one of them completes within 5 s;
//   - a client that knows every node, the stopped one among the sources of
//     its downloads, gets a file within 5 s (an extra source's manifest
//     deadline is at most 3 s), and within 2 s once it has left the node;
//   - a new client that lists the stopped node first puts and gets a file
//     within 4 s (its first call waits 1 s for that node's connection).
func TestHungNode(t *testing.T) {
	if testing.Short() {
		t.Skip("starts clusters of child processes")
	}
	t.Run("follower", func(t *testing.T) { hungNode(t, false) })
	t.Run("leader", func(t *testing.T) { hungNode(t, true) })
}

func hungNode(t *testing.T, leader bool) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cl, all := childCluster(ctx, t, 2)

	// Files stored before the stop: about a third of their chunks have a
	// copy on the node that will hang.
	before := map[string][]byte{}
	for i := range 3 {
		name := fmt.Sprintf("before-%d", i)
		before[name] = randomBytes(t, 3<<20)
		if _, err := all.Put(ctx, name, bytes.NewReader(before[name]), client.PutOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	lead := leaderOf(ctx, t, cl)
	hung := lead
	if !leader {
		hung = (lead + 1) % len(cl.Members)
	}
	var healthy []string
	for i, m := range cl.Members {
		if i != hung {
			healthy = append(healthy, m.APIAddr)
		}
	}
	c, err := client.New(healthy, cl.ClientOptions()...)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()

	if err := cl.Pause(hung); err != nil {
		t.Fatal(err)
	}
	stopped := time.Now()
	defer cl.Resume(hung)
	t.Logf("node %s (leader: %v) stopped with SIGSTOP", cl.Members[hung].ID, leader)

	start := stopped
	if leader {
		// Wait for the others to elect a new leader.
		for {
			st, err := statusWithin(ctx, c, 3*time.Second)
			if err == nil && st.GetLeaderId() != "" && st.GetLeaderId() != cl.Members[hung].ID {
				break
			}
			if time.Since(stopped) > 20*time.Second {
				t.Fatalf("no new leader 20 s after the leader stopped (last: %v, %v)", st.GetLeaderId(), err)
			}
			time.Sleep(20 * time.Millisecond)
		}
		start = time.Now()
		t.Logf("new leader elected %.2fs after the stop", start.Sub(stopped).Seconds())
	}
	deadline := 10 * time.Second
	if leader {
		deadline = 5 * time.Second
	}
	// The first round must end within the deadline of the stop (or the
	// election); later rounds, while the node stays stopped, as fast.
	var slowest time.Duration
	rounds := 0
	for round := 0; time.Since(stopped) < 20*time.Second; round++ {
		roundStart := time.Now()
		name := fmt.Sprintf("during-%d", round)
		data := randomBytes(t, 3<<20)
		if _, err := c.Put(ctx, name, bytes.NewReader(data), client.PutOptions{}); err != nil {
			t.Fatalf("round %d: put through healthy nodes: %v", round, err)
		}
		put := time.Since(roundStart)
		getBack(ctx, t, c, name, data)
		for n, want := range before {
			getBack(ctx, t, c, n, want)
		}
		took := time.Since(roundStart)
		slowest = max(slowest, took)
		rounds++
		ref, what := roundStart, "its start"
		if round == 0 {
			ref, what = start, "the stop"
			if leader {
				what = "the election"
			}
			t.Logf("round 0: put %.2fs, put and %d gets %.2fs (%.2fs after the stop)", put.Seconds(), len(before)+1, took.Seconds(), time.Since(stopped).Seconds())
		}
		if end := time.Since(ref); end > deadline {
			t.Fatalf("round %d (put %.2fs) ended %.1fs after %s; want within %s", round, put.Seconds(), end.Seconds(), what, deadline)
		}
		if leader {
			break
		}
	}
	t.Logf("%d rounds of a put and %d gets while the node was stopped; slowest %.2fs", rounds, len(before)+1, slowest.Seconds())

	// A client that knows every node, the stopped one last: it is one of
	// the three sources of each download but never the first. The first
	// get leaves it when it sends no manifest within 20 times the first
	// node's manifest time (0.5 to 3 s); the client then avoids it, so the
	// next gets do not wait for it.
	every, err := client.New(append(append([]string{}, healthy...), cl.Members[hung].APIAddr), cl.ClientOptions()...)
	if err != nil {
		t.Fatal(err)
	}
	defer every.Close()
	for i := range 2 {
		for n, want := range before {
			t0 := time.Now()
			var got bytes.Buffer
			if _, err := every.Get(ctx, n, &got, client.GetOptions{Sources: 3}); err != nil || !bytes.Equal(got.Bytes(), want) {
				t.Fatalf("get %s from three sources: %v (%d bytes, want %d)", n, err, got.Len(), len(want))
			}
			took := time.Since(t0)
			t.Logf("get %s from a client that knows the stopped node: %.2fs", n, took.Seconds())
			if limit := 2 * time.Second; i > 0 && took > limit {
				t.Fatalf("get %s took %.2fs after the stopped node was left once; want under %s", n, took.Seconds(), limit)
			}
			if limit := 5 * time.Second; took > limit {
				t.Fatalf("get %s took %.2fs with a stopped node among its sources; want under %s", n, took.Seconds(), limit)
			}
		}
	}
	// A client that lists the stopped node first (a CLI command given it
	// first in --addr): its first call starts on a node whose connection
	// is ready once the stopped one's is not, after 1 s, instead of
	// waiting a call timeout (10 s) for each command.
	for i := range 2 {
		t0 := time.Now()
		first, err := client.New(append([]string{cl.Members[hung].APIAddr}, healthy...), cl.ClientOptions()...)
		if err != nil {
			t.Fatal(err)
		}
		name := fmt.Sprintf("first-%d", i)
		data := randomBytes(t, 1<<20)
		if _, err := first.Put(ctx, name, bytes.NewReader(data), client.PutOptions{}); err != nil {
			t.Fatalf("put through a client that lists the stopped node first: %v", err)
		}
		getBack(ctx, t, first, name, data)
		first.Close()
		took := time.Since(t0)
		t.Logf("a new client with the stopped node first: put and get %.2fs", took.Seconds())
		if limit := 4 * time.Second; took > limit {
			t.Fatalf("a new client with the stopped node first took %.2fs for a put and a get; want under %s", took.Seconds(), limit)
		}
	}
	if err := cl.Resume(hung); err != nil {
		t.Fatal(err)
	}
	// The resumed node catches up and serves again.
	if err := cl.WaitReady(ctx, len(cl.Members)); err != nil {
		t.Fatalf("after SIGCONT: %v", err)
	}
	only, err := client.New([]string{cl.Members[hung].APIAddr}, cl.ClientOptions()...)
	if err != nil {
		t.Fatal(err)
	}
	defer only.Close()
	for n, want := range before {
		getBack(ctx, t, only, n, want)
	}
}

func statusWithin(ctx context.Context, c *client.Client, d time.Duration) (st interface{ GetLeaderId() string }, err error) {
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	return c.Status(ctx)
}

func getBack(ctx context.Context, t *testing.T, c *client.Client, name string, want []byte) {
	t.Helper()
	var got bytes.Buffer
	if _, err := c.Get(ctx, name, &got, client.GetOptions{}); err != nil {
		t.Fatalf("get %s: %v", name, err)
	}
	if !bytes.Equal(got.Bytes(), want) {
		t.Fatalf("get %s: %d bytes differ from the %d stored", name, got.Len(), len(want))
	}
}

// childCluster starts 3 nodes as child processes with R=replicas and no
// cache tier, and a client of all of them; both close when t ends.
func childCluster(ctx context.Context, t *testing.T, replicas int) (*localcluster.Cluster, *client.Client) {
	t.Helper()
	cl, err := localcluster.Start(ctx, localcluster.Options{
		Dir: filepath.Join(t.TempDir(), "cluster"), Exe: exe, Replicas: replicas,
		Args: []string{"--cache-size", "0"},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cl.Close() })
	all, err := cl.Client()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { all.Close() })
	return cl, all
}

func randomBytes(t *testing.T, n int) []byte {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

// TestNodeStallsMidDownload stops one of the three nodes a download reads
// from (SIGSTOP) once a fifth of the file has arrived: after its manifest,
// with much of its share still to send. Its stream makes no progress; the
// download leaves it after sourceStallTimeout (5 s), not the 30 s progress
// timeout, and ends with the file whole from the other two. The stopped
// node is the first source (the one whose manifest the download starts
// from) in one case and an extra one in the other.
func TestNodeStallsMidDownload(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a cluster of child processes")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cl, all := childCluster(ctx, t, 3)
	// Big enough that the stopped node's remaining share (about 34 MiB)
	// exceeds what its stream can have in flight (an 8 MiB window and the
	// sockets' buffers).
	data := randomBytes(t, 128<<20)
	if _, err := all.Put(ctx, "big", bytes.NewReader(data), client.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	lead := leaderOf(ctx, t, cl)
	victim := (lead + 1) % len(cl.Members)
	var others []string
	for i, m := range cl.Members {
		if i != victim {
			others = append(others, m.APIAddr)
		}
	}
	for _, tc := range []struct {
		name  string
		addrs []string
	}{
		{"first source", append([]string{cl.Members[victim].APIAddr}, others...)},
		{"extra source", append(append([]string{}, others...), cl.Members[victim].APIAddr)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := client.New(tc.addrs, cl.ClientOptions()...)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			var once sync.Once
			var stoppedAt time.Duration
			start := time.Now()
			defer cl.Resume(victim)
			var got bytes.Buffer
			res, err := c.Get(ctx, "big", &got, client.GetOptions{Sources: 3, Progress: func(done, total int64) {
				if done >= total/5 {
					once.Do(func() {
						stoppedAt = time.Since(start)
						if err := cl.Pause(victim); err != nil {
							t.Error(err)
						}
					})
				}
			}})
			took := time.Since(start)
			if err != nil || !bytes.Equal(got.Bytes(), data) {
				t.Fatalf("get: %v (%d bytes, want %d)", err, got.Len(), len(data))
			}
			t.Logf("node %s stopped %.2fs into the download; the file arrived whole %.2fs after the stop, %d bytes received for %d",
				cl.Members[victim].ID, stoppedAt.Seconds(), (took - stoppedAt).Seconds(), res.BytesReceived, len(data))
			if stall := took - stoppedAt; stall < 4*time.Second || stall > 15*time.Second {
				t.Fatalf("the download ended %.2fs after the stop; want the 5 s stall timeout and the rest of the file (4-15 s)", stall.Seconds())
			}
			if err := cl.Resume(victim); err != nil {
				t.Fatal(err)
			}
		})
	}
}
