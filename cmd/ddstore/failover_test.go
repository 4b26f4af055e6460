package main

import (
	"bytes"
	"context"
	"fmt"
	"path/filepath"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ddstore/ddstore/client"
	"github.com/ddstore/ddstore/internal/localcluster"
)

// failoverTarget is the median time from a leader's kill -9 to the first
// put that succeeds after it, with the default Raft timing.
const failoverTarget = 1500 * time.Millisecond

// TestLeaderKillFailover kills the leader of a 3-node cluster (R=2, so that
// puts can succeed on the two left) with SIGKILL
// five times while a client puts a 1 KiB file every 50 ms, and reports the
// time from each kill to the first put that succeeds after it; the median
// must be within failoverTarget. Before that, a full-speed 256 MiB upload
// must not cost the cluster an election (the term stays the same): the
// default timing holds on two busy cores.
func TestLeaderKillFailover(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a cluster of child processes")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	cl, err := localcluster.Start(ctx, localcluster.Options{
		Dir: filepath.Join(t.TempDir(), "cluster"), Exe: exe, Replicas: 2, Args: []string{"--cache-size", "0"},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	c, err := cl.Client(client.WithCallTimeout(time.Second))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()

	st0, err := c.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Put(ctx, "full-speed.bin", bytes.NewReader(randomBytes(t, 256<<20)), client.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	st1, err := c.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st1.GetTerm() != st0.GetTerm() || st1.GetLeaderId() != st0.GetLeaderId() {
		t.Errorf("a full-speed upload cost an election: term %d → %d, leader %s → %s", st0.GetTerm(), st1.GetTerm(), st0.GetLeaderId(), st1.GetLeaderId())
	}

	var took []time.Duration
	for round := range 5 {
		lead := leaderOf(ctx, t, cl)
		var (
			killed   atomic.Int64 // unix nanos of the kill; 0 before
			failures atomic.Int64 // puts failed after the kill
			firstOK  = make(chan time.Time, 1)
			stop     = make(chan struct{})
			done     = make(chan struct{})
		)
		go func() {
			defer close(done)
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				case <-time.After(50 * time.Millisecond):
				}
				start := time.Now()
				pctx, pcancel := context.WithTimeout(ctx, 5*time.Second)
				_, err := c.Put(pctx, fmt.Sprintf("loop-%d-%d", round, i), bytes.NewReader(randomBytes(t, 1<<10)), client.PutOptions{})
				pcancel()
				if k := killed.Load(); err != nil && k != 0 && failures.Add(1) <= 3 {
					t.Logf("put %.2fs after the kill: %v", time.Since(time.Unix(0, k)).Seconds(), err)
				}
				if k := killed.Load(); err == nil && k != 0 && start.UnixNano() > k {
					select {
					case firstOK <- time.Now():
					default:
					}
				}
			}
		}()
		time.Sleep(500 * time.Millisecond) // the loop runs
		if err := cl.StopNode(lead, true); err != nil {
			t.Fatal(err)
		}
		kill := time.Now()
		killed.Store(kill.UnixNano())
		select {
		case ok := <-firstOK:
			took = append(took, ok.Sub(kill))
			t.Logf("round %d: leader %s killed; first put after it succeeded %.2fs later", round, cl.Members[lead].ID, ok.Sub(kill).Seconds())
		case <-time.After(30 * time.Second):
			t.Fatalf("round %d: no put succeeded within 30 s of the leader's kill", round)
		}
		close(stop)
		<-done
		if err := cl.StartNode(ctx, lead); err != nil {
			t.Fatal(err)
		}
		if err := cl.WaitReady(ctx, len(cl.Members)); err != nil {
			t.Fatal(err)
		}
	}
	slices.Sort(took)
	median := took[len(took)/2]
	t.Logf("leader kill -9 → first successful put: median %.2fs of %d (min %.2fs, max %.2fs)", median.Seconds(), len(took), took[0].Seconds(), took[len(took)-1].Seconds())
	if median > failoverTarget {
		t.Errorf("median %.2fs from a leader's kill to the first successful put; want within %s", median.Seconds(), failoverTarget)
	}
}

// leaderOf returns the index of the member that leads, waiting up to 15 s
// for one: just after a restart the cluster may still be settling.
func leaderOf(ctx context.Context, t *testing.T, cl *localcluster.Cluster) int {
	t.Helper()
	for deadline := time.Now().Add(15 * time.Second); ; {
		if lead := cl.Leader(ctx); lead >= 0 {
			return lead
		}
		if time.Now().After(deadline) {
			t.Fatal("no leader within 15 s")
		}
		time.Sleep(50 * time.Millisecond)
	}
}
