package server

import (
	"context"

	"github.com/ddstore/ddstore/chunker"
	"golang.org/x/sync/semaphore"
)

// memBudget bounds the chunk bytes a node holds for all its open client
// streams together (uploads being verified and stored, downloads read
// ahead), so that memory stays bounded whatever clients do: a stream that
// would exceed it waits for others to send or store what they hold.
type memBudget struct{ sem *semaphore.Weighted }

func newMemBudget(bytes int64) *memBudget { return &memBudget{sem: semaphore.NewWeighted(bytes)} }

// hold takes n bytes of the budget (at least 1, at most a largest chunk),
// waiting while others hold it; the returned func gives them back.
func (b *memBudget) hold(ctx context.Context, n int) (release func(), err error) {
	w := int64(min(max(n, 1), chunker.MaxRawSize))
	if err := b.sem.Acquire(ctx, w); err != nil {
		return nil, err
	}
	return func() { b.sem.Release(w) }, nil
}

// fetched is one chunk read ahead, or why it could not be read.
type fetched struct {
	c       chunker.Encoded
	err     error
	release func() // gives its memory back to the budget; never nil
}

// readAhead fetches items from..to-1 with up to window fetches running at
// once and returns their results in order: each slot yields one result,
// whose release the caller calls once done with it. Each fetch first holds
// size(i) bytes of budget. The channel closes after the last slot, or early
// when ctx ends; a caller that stops reading must cancel ctx and drain.
func readAhead(ctx context.Context, from, to, window int, budget *memBudget, size func(i int) int, fetch func(i int) (chunker.Encoded, error)) <-chan chan fetched {
	slots := make(chan chan fetched, window)
	go func() {
		defer close(slots)
		for i := from; i < to; i++ {
			slot := make(chan fetched, 1)
			release, err := budget.hold(ctx, size(i))
			if err != nil {
				return
			}
			select {
			case slots <- slot:
			case <-ctx.Done():
				release()
				return
			}
			go func() {
				c, err := fetch(i)
				slot <- fetched{c, err, release}
			}()
		}
	}()
	return slots
}

// drain gives back the memory of every result still queued; call it (after
// cancelling ctx) when stopping early.
func drain(slots <-chan chan fetched) {
	for slot := range slots {
		(<-slot).release()
	}
}
