package replica

import (
	"context"
	"errors"
	"slices"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// DefaultAvoid is how long Health avoids a node that failed to answer.
const DefaultAvoid = 10 * time.Second

// Health remembers which nodes failed to answer lately — hung, stopped,
// unreachable, out of space — so that copies and reads go to the others
// first and nobody waits on the same dead node twice. A node is avoided for
// Avoid after its last failure, or until it answers again; then it gets
// another try. A nil *Health avoids nobody. Safe for concurrent use.
type Health struct {
	Avoid time.Duration // 0: DefaultAvoid
	Now   func() time.Time

	mu    sync.Mutex
	until map[string]time.Time
}

func (h *Health) now() time.Time {
	if h.Now != nil {
		return h.Now()
	}
	return time.Now()
}

// Failed records that node id did not answer (or could not do the job).
func (h *Health) Failed(id string) {
	if h == nil {
		return
	}
	avoid := h.Avoid
	if avoid <= 0 {
		avoid = DefaultAvoid
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.until == nil {
		h.until = map[string]time.Time{}
	}
	h.until[id] = h.now().Add(avoid)
}

// Succeeded records that node id answered: it is no longer avoided.
func (h *Health) Succeeded(id string) {
	if h == nil {
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	delete(h.until, id)
}

// Avoided reports whether node id failed lately.
func (h *Health) Avoided(id string) bool {
	if h == nil {
		return false
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	t, ok := h.until[id]
	if ok && !h.now().Before(t) {
		delete(h.until, id)
		return false
	}
	return ok
}

// Order returns peers with the avoided ones moved to the end, each group in
// its original order. It returns a new slice.
func (h *Health) Order(peers []Peer) []Peer {
	out := slices.Clone(peers)
	if h == nil {
		return out
	}
	slices.SortStableFunc(out, func(a, b Peer) int {
		aa, ab := h.Avoided(a.ID), h.Avoided(b.ID)
		switch {
		case aa == ab:
			return 0
		case ab:
			return -1
		}
		return 1
	})
	return out
}

// AvoidedOf returns the IDs of the avoided nodes among peers.
func (h *Health) AvoidedOf(peers []Peer) []string {
	var out []string
	for _, p := range peers {
		if h.Avoided(p.ID) {
			out = append(out, p.ID)
		}
	}
	return out
}

// Unhealthy reports errors that say the node, not the request, is at fault:
// it did not answer in time, could not be reached, or is out of space. A
// chunk it rejected or a call it refused says nothing of its health.
func Unhealthy(err error) bool {
	if err == nil {
		return false
	}
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, ErrNoProgress) {
		return true
	}
	switch status.Code(err) {
	case codes.Unavailable, codes.DeadlineExceeded, codes.ResourceExhausted:
		return true
	}
	return false
}
