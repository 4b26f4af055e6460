package consensus

import (
	"context"
	"sync"
	"time"

	"github.com/hashicorp/raft"
)

// TermOf asks the voter with the given ID for its current term. A leader's read rounds use the answers as proof that no newer
// leader exists; see Config.TermOf.
type TermOf func(ctx context.Context, id string) (uint64, error)

// readBatcher serves read indexes on the leader, as the Raft thesis's
// ReadIndex (section 6.4) does. Concurrent readers share one round, so a
// burst of reads costs one round trip; a read that arrives while a round
// runs waits for the next one, which starts after it.
//
// The first round of each term is a barrier: once the leader has applied
// an entry of its own term, its commit index covers every write
// acknowledged by any leader before it. Later rounds in the same term write
// nothing to the log: the read index is the leader's commit index, taken
// when the round starts, once a majority of voters (the leader counted)
// have answered, after that moment, that their term is not newer than the
// leader's (readers wait for the last command at or before it: see
// lastCommand). Terms only grow, and a newer leader needs a majority at its
// newer term both to be elected and to commit, so no such majority existed
// when the round began. The answers are fresh RPCs made for this round,
// never replies to heartbeats already in flight (which hashicorp/raft's
// VerifyLeader may count). A round that cannot gather its majority quickly
// falls back to a barrier, which also gives its errors.
type readBatcher struct {
	r        *raft.Raft
	id       raft.ServerID // this member
	fsm      FSM
	logs     raft.LogStore
	termOf   TermOf        // nil: every round is a barrier
	wait     time.Duration // how long a round waits for terms before a barrier
	verified uint64        // term in which a barrier succeeded; only run touches it
	mu       sync.Mutex
	waiting  []chan readResult // readers waiting for the next round
	busy     bool              // a round is running
	done     chan struct{}
	once     sync.Once
}

type readResult struct {
	index uint64
	err   error
}

func newReadBatcher(r *raft.Raft, id raft.ServerID, fsm FSM, logs raft.LogStore, termOf TermOf, wait time.Duration) *readBatcher {
	return &readBatcher{r: r, id: id, fsm: fsm, logs: logs, termOf: termOf, wait: wait, done: make(chan struct{})}
}

func (b *readBatcher) close() { b.once.Do(func() { close(b.done) }) }

func (b *readBatcher) readIndex(ctx context.Context) (uint64, error) {
	ch := make(chan readResult, 1)
	b.mu.Lock()
	b.waiting = append(b.waiting, ch)
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
		batch := b.waiting
		b.waiting = nil
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
	if b.termOf != nil && term == b.verified {
		// Taken after every waiting read arrived.
		commit := b.r.CommitIndex()
		if b.confirm(term) {
			if index, ok := b.lastCommand(commit); ok {
				return readResult{index: index}
			}
		}
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

// lastCommand turns a commit index into a read index: the index of the
// last command at or before it. Only commands reach the FSM (Raft's no-op,
// barrier and configuration entries do not), so a reader waits for the FSM
// to apply that one. ok is false when the log cannot tell (an entry gone, or
// a long run of entries that are not commands): the caller writes a
// barrier instead.
func (b *readBatcher) lastCommand(commit uint64) (index uint64, ok bool) {
	applied := b.fsm.LastApplied()
	var l raft.Log
	for i := commit; i > applied; i-- {
		if commit-i >= 64 || b.logs.GetLog(i, &l) != nil {
			return 0, false
		}
		if l.Type == raft.LogCommand {
			return i, true
		}
	}
	return applied, true
}

// confirm reports whether a majority of the voters, this leader counted,
// answered that their term is at most term, and this member still leads in
// term afterwards.
func (b *readBatcher) confirm(term uint64) bool {
	f := b.r.GetConfiguration()
	if f.Error() != nil {
		return false
	}
	var others []raft.ServerID
	voters, yes := 0, 0
	for _, s := range f.Configuration().Servers {
		switch {
		case s.Suffrage != raft.Voter:
			continue
		case s.ID == b.id:
			yes++ // this leader answers for itself
		default:
			others = append(others, s.ID)
		}
		voters++
	}
	need := voters/2 + 1
	if yes < need {
		ctx, cancel := context.WithTimeout(context.Background(), b.wait)
		defer cancel()
		answers := make(chan bool, len(others))
		for _, id := range others {
			go func() {
				t, err := b.termOf(ctx, string(id))
				answers <- err == nil && t <= term
			}()
		}
		// Stop once the majority is reached or can no longer be.
		for asked := 0; asked < len(others) && yes < need && yes+len(others)-asked >= need; asked++ {
			if <-answers {
				yes++
			}
		}
	}
	return yes >= need && b.r.CurrentTerm() == term && b.r.State() == raft.Leader
}
