package consensus

import (
	"context"
	"sync"
	"time"

	"github.com/hashicorp/raft"
)

// readBatcher serves read indexes on the leader, as the Raft thesis's
// ReadIndex (section 6.4) does. Once the leader has applied an entry of its
// own term (a barrier, the first read of each term), its FSM holds every
// write acknowledged so far; a read then takes the leader's applied index
// and confirms with a heartbeat round that a majority still follows it
// (VerifyLeader, as Consul's consistent reads do), with no log entry
// written. VerifyLeader may count the answer to a heartbeat already in
// flight when the round began, so a leader cut off a moment before can
// still answer one round: for a read to miss a write, a new leader would
// have to be elected and commit while that answer was on its way.
// Concurrent readers share one round, so a burst of reads costs one round
// trip; a read that arrives while a round runs waits for the next one,
// which starts after it.
type readBatcher struct {
	r        *raft.Raft
	fsm      FSM
	verified uint64 // term in which a barrier succeeded; only run touches it
	mu       sync.Mutex
	wait     []chan readResult // readers waiting for the next barrier
	busy     bool              // a barrier is running
	done     chan struct{}
	once     sync.Once
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

// run starts rounds while readers are waiting. Readers that arrive while a
// round runs wait for the next one.
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
		res := b.round()
		for _, ch := range batch {
			ch <- res
		}
	}
}

// round finds one read index.
func (b *readBatcher) round() readResult {
	term := b.r.CurrentTerm()
	if term == b.verified {
		// Taken after every waiting read arrived: the writes they must see
		// were applied here before they were acknowledged.
		index := b.fsm.LastApplied()
		if err := mapErr(b.r.VerifyLeader().Error()); err != nil {
			return readResult{err: err}
		}
		return readResult{index: index}
	}
	// After the barrier, the leader's FSM has applied every command
	// committed before it; its last applied index is the read index.
	if err := mapErr(b.r.Barrier(10 * time.Second).Error()); err != nil {
		return readResult{err: err}
	}
	if b.r.CurrentTerm() == term {
		b.verified = term
	}
	return readResult{index: b.fsm.LastApplied()}
}
