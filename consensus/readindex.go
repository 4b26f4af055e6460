package consensus

import (
	"context"
	"sync"
	"time"

	"github.com/hashicorp/raft"
)

// readBatcher serves read indexes on the leader. A read index must come from a
// barrier that started after the read arrived; concurrent readers share one
// barrier so that a burst of reads costs one Raft round trip.
type readBatcher struct {
	r    *raft.Raft
	fsm  FSM
	mu   sync.Mutex
	wait []chan readResult // readers waiting for the next barrier
	busy bool              // a barrier is running
	done chan struct{}
	once sync.Once
}

type readResult struct {
	index uint64
	err   error
}

func newReadBatcher(r *raft.Raft, fsm FSM) *readBatcher {
	return &readBatcher{r: r, fsm: fsm, done: make(chan struct{})}
}

func (b *readBatcher) close() { b.once.Do(func() { close(b.done) }) }

func (b *readBatcher) readIndex(ctx context.Context) (uint64, error) {
	ch := make(chan readResult, 1)
	b.mu.Lock()
	b.wait = append(b.wait, ch)
	if !b.busy {
		b.busy = true
		go b.run()
	}
	b.mu.Unlock()
	select {
	case res := <-ch:
		return res.index, res.err
	case <-ctx.Done():
		return 0, ctx.Err()
	case <-b.done:
		return 0, ErrShutdown
	}
}

// run starts barriers while readers are waiting. Readers that arrive while a
// barrier runs wait for the next one.
func (b *readBatcher) run() {
	for {
		b.mu.Lock()
		batch := b.wait
		b.wait = nil
		if len(batch) == 0 {
			b.busy = false
			b.mu.Unlock()
			return
		}
		b.mu.Unlock()
		// After the barrier, the leader's FSM has applied every command
		// committed before it; its last applied index is the read index.
		err := mapErr(b.r.Barrier(10 * time.Second).Error())
		res := readResult{err: err}
		if err == nil {
			res.index = b.fsm.LastApplied()
		}
		for _, ch := range batch {
			ch <- res
		}
	}
}
