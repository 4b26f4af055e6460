package server_test

import (
	"bytes"
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/ddstore/ddstore/client"
	"github.com/ddstore/ddstore/internal/localcluster"
	pb "github.com/ddstore/ddstore/proto/ddstore/v1"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// TestRacingOverwrite: two puts with overwrite race on one name, through
// different nodes, both past their start before either commits. Exactly one
// succeeds; the other fails with ErrReplaced (FailedPrecondition) and the
// file holds the winner's bytes. Racing puts of the same bytes both succeed,
// and a later overwrite still replaces the file.
func TestRacingOverwrite(t *testing.T) {
	cl := startCluster(t, localcluster.Options{Replicas: 2})
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	const size = 4 << 20
	clients := []*client.Client{newClient(t, cl, cl.Members[0].APIAddr), newClient(t, cl, cl.Members[1].APIAddr)}
	if _, err := clients[0].Put(ctx, "x", randomReader(90, size), client.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	// race runs two overwrites of x with the given seeds; each waits, after
	// sending its chunks, until both have.
	race := func(seeds [2]byte) [2]error {
		var arrived, wg sync.WaitGroup
		arrived.Add(2)
		release := make(chan struct{})
		go func() { arrived.Wait(); close(release) }()
		var errs [2]error
		for i := range 2 {
			wg.Go(func() {
				var once sync.Once
				_, errs[i] = clients[i].Put(ctx, "x", randomReader(seeds[i], size), client.PutOptions{Overwrite: true, Progress: func(int64) {
					once.Do(func() { arrived.Done(); <-release })
				}})
				once.Do(arrived.Done) // failed before sending
			})
		}
		wg.Wait()
		return errs
	}
	for round := range 3 {
		seeds := [2]byte{byte(100 + 2*round), byte(101 + 2*round)}
		errs := race(seeds)
		winner := -1
		for i, err := range errs {
			switch {
			case err == nil && winner < 0:
				winner = i
			case err == nil:
				t.Fatalf("round %d: both racing overwrites reported success", round)
			case !errors.Is(err, client.ErrReplaced) || status.Code(err) != codes.FailedPrecondition:
				t.Fatalf("round %d: the losing overwrite failed with %v, want ErrReplaced (FailedPrecondition)", round, err)
			default:
				t.Logf("round %d: loser %d: %v", round, i, err)
			}
		}
		if winner < 0 {
			t.Fatalf("round %d: neither racing overwrite succeeded: %v", round, errs)
		}
		want := hashOf(t, randomReader(seeds[winner], size))
		m, err := clients[1-winner].Stat(ctx, "x", pb.Consistency_CONSISTENCY_LINEARIZABLE)
		if err != nil || !bytes.Equal(m.GetBlake3(), want) {
			t.Fatalf("round %d: x is %x (%v), want the winner's %x", round, m.GetBlake3(), err, want)
		}
		if got := download(t, clients[1-winner], "x"); !bytes.Equal(got, want) {
			t.Fatalf("round %d: x downloads as %x, want the winner's %x", round, got, want)
		}
	}
	if errs := race([2]byte{120, 120}); errs[0] != nil || errs[1] != nil {
		t.Fatalf("racing overwrites of the same bytes: %v", errs)
	}
}
