package server

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ddstore/ddstore/chunker"
	"golang.org/x/sync/semaphore"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// memBudget bounds the chunk bytes a node holds for all its open client
// streams together (uploads being verified and stored, downloads read ahead
// and queued for sending), so that memory stays bounded whatever clients do.
// One caller may hold at most its share, so that one client cannot starve
// the others; a stream that cannot get memory within the wait fails with
// ResourceExhausted instead of waiting without end (and holding what it
// has, which could leave every stream waiting on the others).
type memBudget struct {
	total *semaphore.Weighted
	size  int64
	share int64         // most one caller may hold
	wait  time.Duration // longest a stream waits for memory

	refused atomic.Uint64 // holds that gave up waiting

	mu      sync.Mutex
	callers map[string]*callerMem
}

type callerMem struct {
	sem   *semaphore.Weighted
	users int // holds and waits in progress
}

func newMemBudget(size, share int64, wait time.Duration) *memBudget {
	return &memBudget{total: semaphore.NewWeighted(size), size: size, share: min(share, size), wait: wait, callers: map[string]*callerMem{}}
}

// hold takes n bytes of the budget (at least 1, at most a largest chunk)
// for the caller of ctx, waiting while others hold it; the returned func
// gives them back.
func (b *memBudget) hold(ctx context.Context, n int) (release func(), err error) {
	w := int64(min(max(n, 1), chunker.MaxRawSize))
	who := callerKey(ctx)
	b.mu.Lock()
	c := b.callers[who]
	if c == nil {
		c = &callerMem{sem: semaphore.NewWeighted(b.share)}
		b.callers[who] = c
	}
	c.users++
	b.mu.Unlock()
	done := func() {
		b.mu.Lock()
		if c.users--; c.users == 0 {
			delete(b.callers, who)
		}
		b.mu.Unlock()
	}
	wctx, cancel := context.WithTimeout(ctx, b.wait)
	defer cancel()
	if err := c.sem.Acquire(wctx, w); err != nil {
		done()
		return nil, b.refusal(ctx, err, fmt.Sprintf("%s already holds its share, %d bytes", who, b.share))
	}
	if err := b.total.Acquire(wctx, w); err != nil {
		c.sem.Release(w)
		done()
		return nil, b.refusal(ctx, err, fmt.Sprintf("the node's %d bytes are held by open streams", b.size))
	}
	var once sync.Once
	return func() {
		once.Do(func() {
			b.total.Release(w)
			c.sem.Release(w)
			done()
		})
	}, nil
}

func (b *memBudget) refusal(ctx context.Context, err error, why string) error {
	if ctx.Err() != nil || !errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	b.refused.Add(1)
	return status.Errorf(codes.ResourceExhausted, "no stream memory for %s: %s; try again later", b.wait, why)
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
// size(i) bytes of budget; if it cannot, its slot yields that error and no
// more slots follow. The channel closes after the last slot, or early when
// ctx ends; a caller that stops reading must cancel ctx and drain.
func readAhead(ctx context.Context, from, to, window int, budget *memBudget, size func(i int) int, fetch func(i int) (chunker.Encoded, error)) <-chan chan fetched {
	slots := make(chan chan fetched, window)
	go func() {
		defer close(slots)
		for i := from; i < to; i++ {
			slot := make(chan fetched, 1)
			release, err := budget.hold(ctx, size(i))
			if err != nil {
				slot <- fetched{err: err, release: func() {}}
			}
			select {
			case slots <- slot:
			case <-ctx.Done():
				if release != nil {
					release()
				}
				return
			}
			if err != nil {
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
