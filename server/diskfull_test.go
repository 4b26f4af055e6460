package server_test

import (
	"bytes"
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"github.com/ddstore/ddstore/client"
	"github.com/ddstore/ddstore/internal/localcluster"
	"github.com/ddstore/ddstore/internal/testenv"
	"github.com/ddstore/ddstore/server"
)

// TestDiskFull gives one node of a cluster a real 64 MiB tmpfs as its data
// directory (chunks and Raft log), fills it and frees it again, with no
// restart. While it is full the node says so (health NOT_SERVING, a note in
// status), and a put either fails at once with ResourceExhausted naming it
// (R=3 on 3 nodes: every chunk needs it) or stores its copies on the other
// nodes (R=2 on 4), through the full node as well as through the others.
// Once space is freed the node serves again by itself.
func TestDiskFull(t *testing.T) {
	for _, store := range []string{"pack", "local"} {
		for _, tc := range []struct {
			name          string
			nodes, copies int
			putsWhileFull bool // puts succeed while the node is full
		}{
			{"R=3 on 3 nodes", 3, 3, false},
			{"R=2 on 4 nodes", 4, 2, true},
		} {
			t.Run(store+"/"+tc.name, func(t *testing.T) { testDiskFull(t, store, tc.nodes, tc.copies, tc.putsWhileFull) })
		}
	}
}

func testDiskFull(t *testing.T, store string, nodes, copies int, putsWhileFull bool) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cl, err := localcluster.New(localcluster.Options{
		Nodes: nodes, Replicas: copies, Dir: t.TempDir(), Fast: true, Store: store,
		Tune: func(c *server.Config) {
			manualHealing(time.Hour)(c)
			c.CacheSize = 0
			c.RaftLogSegmentSize = 4 << 20 // 64 MiB ones would not fit
			if raceEnabled {
				// Under the race detector on a busy host a healthy node
				// can take longer than 2 s to acknowledge a copy.
				c.NodeTimeout = 5 * time.Second
			}
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	victim := cl.Members[nodes-1]
	fs, err := testenv.MountTmpfs(victim.DataDir, 64<<20)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { fs.Unmount() })
	if err := cl.Launch(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cl.Close() })
	all := newClient(t, cl)
	viaVictim := newClient(t, cl, victim.APIAddr)
	conn, err := cl.Dial(victim.APIAddr, false)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	health := healthpb.NewHealthClient(conn)
	waitHealth := func(want healthpb.HealthCheckResponse_ServingStatus) time.Duration {
		t.Helper()
		start := time.Now()
		for {
			resp, err := health.Check(ctx, &healthpb.HealthCheckRequest{})
			if err == nil && resp.GetStatus() == want {
				return time.Since(start)
			}
			if ctx.Err() != nil {
				t.Fatalf("health of %s never turned %v (last: %v, %v)", victim.ID, want, resp.GetStatus(), err)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	note := func() string {
		t.Helper()
		st, err := all.Status(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, n := range st.GetNodes() {
			if n.GetId() == victim.ID {
				return n.GetNotServing()
			}
		}
		t.Fatalf("status lists no %s", victim.ID)
		return ""
	}
	put := func(c *client.Client, name string, seed byte) (time.Duration, error) {
		start := time.Now()
		_, err := c.Put(ctx, name, randomReader(seed, 8<<20), client.PutOptions{})
		return time.Since(start), err
	}
	if _, err := put(all, "before.bin", 1); err != nil {
		t.Fatal(err)
	}
	waitHealth(healthpb.HealthCheckResponse_SERVING)
	before, err := victim.Node.Store().Usage(ctx)
	if err != nil {
		t.Fatal(err)
	}

	filled, err := fs.Fill("ballast")
	if err != nil {
		t.Fatal(err)
	}
	d := waitHealth(healthpb.HealthCheckResponse_NOT_SERVING)
	t.Logf("%s full (%d MiB of ballast): NOT_SERVING after %s", victim.ID, filled>>20, d.Round(time.Millisecond))
	if why := note(); !strings.Contains(why, "disk full") {
		t.Errorf("status note of the full node = %q, want it to say the disk is full", why)
	}
	for i, c := range []*client.Client{viaVictim, all} {
		name := fmt.Sprintf("while-full-%d.bin", i)
		d, err := put(c, name, byte(10+i))
		if putsWhileFull {
			if err != nil {
				t.Fatalf("put %s (through %s) with a node full: %v", name, map[int]string{0: victim.ID, 1: "any node"}[i], err)
			}
			t.Logf("put %s succeeded in %s with %s full", name, d.Round(time.Millisecond), victim.ID)
			if got, want := download(t, all, name), hashOf(t, randomReader(byte(10+i), 8<<20)); !bytes.Equal(got, want) {
				t.Fatalf("%s does not download intact", name)
			}
			continue
		}
		if code := status.Code(err); code != codes.ResourceExhausted || !strings.Contains(err.Error(), "node "+victim.ID+": disk full") {
			t.Fatalf("put %s with %s full: %v (%v), want ResourceExhausted naming the node", name, victim.ID, err, code)
		}
		if limit := 10 * time.Second; d > limit && !raceEnabled {
			t.Errorf("put %s took %s to fail", name, d)
		}
		t.Logf("put %s failed in %s: %v", name, d.Round(time.Millisecond), err)
	}
	// A pack store may still write into the blocks it allocated ahead
	// (4 MiB) before the disk filled: room it holds, not room it takes.
	if u, err := victim.Node.Store().Usage(ctx); err != nil || (u.Chunks != before.Chunks && store != "pack") {
		t.Errorf("the full node's store went from %d to %d chunks (%v)", before.Chunks, u.Chunks, err)
	}

	if err := fs.Shrink("ballast", 0); err != nil {
		t.Fatal(err)
	}
	d = waitHealth(healthpb.HealthCheckResponse_SERVING)
	t.Logf("space freed: SERVING after %s", d.Round(time.Millisecond))
	if why := note(); why != "" {
		t.Errorf("status note after space returned = %q, want none", why)
	}
	if d, err := put(viaVictim, "after.bin", 20); err != nil {
		t.Fatalf("put through %s after space returned: %v", victim.ID, err)
	} else {
		t.Logf("put through %s after space returned: %s", victim.ID, d.Round(time.Millisecond))
	}
	if got, want := download(t, viaVictim, "after.bin"), hashOf(t, randomReader(20, 8<<20)); !bytes.Equal(got, want) {
		t.Fatal("after.bin does not download intact")
	}
	if files, err := viaVictim.List(ctx, client.ListOptions{}); err != nil {
		t.Fatalf("ls through %s: %v", victim.ID, err)
	} else if len(files.Files) == 0 {
		t.Fatal("ls through the recovered node lists nothing")
	}
}
