package server

import (
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/ddstore/ddstore/catalog"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// TestPeerStaleness: when a peer's filters that rule a lookup out are
// checked with the peer first, and when a peer counts as down.
func TestPeerStaleness(t *testing.T) {
	const maxAge = 4 * time.Second
	now := time.Now()
	p := &peerCluster{name: "B"}
	if !p.staleLocked(now, maxAge) {
		t.Error("no filters yet: stale")
	}
	p.filters, p.fetched, p.freshAsOf = catalog.BuildFilters(catalog.NewState(), 1, 0.01), now, now
	if p.staleLocked(now, maxAge) {
		t.Error("filters just fetched fresh, no notice since: not stale")
	}
	if !p.staleLocked(now.Add(maxAge+time.Millisecond), maxAge) {
		t.Error("filters not confirmed for longer than the bound: stale")
	}
	p.noticed = now.Add(time.Millisecond)
	if !p.staleLocked(now.Add(time.Second), maxAge) {
		t.Error("a notice after the last fresh refresh began: stale")
	}
	p.fetched = now.Add(2 * time.Millisecond) // a plain refresh does not answer a notice
	if !p.staleLocked(now.Add(time.Second), maxAge) {
		t.Error("a plain refresh after the notice: still stale")
	}
	p.freshAsOf = now.Add(2 * time.Millisecond)
	if p.staleLocked(now.Add(time.Second), maxAge) {
		t.Error("a fresh refresh begun after the notice: not stale")
	}

	p.noticed = time.Time{}
	p.failed(status.Error(codes.Unavailable, "no address answered"))
	if !p.downLocked() {
		t.Error("an exchange failed on every address: down")
	}
	p.noticed = p.failedAt.Add(time.Millisecond)
	if p.downLocked() {
		t.Error("a notice from the peer after the failure: not down")
	}
	p.failed(status.Error(codes.PermissionDenied, "refused"))
	if p.downLocked() {
		t.Error("a refusal is not unreachability")
	}
}

// TestNoticeBackoff: an address whose notice failed is left out of the
// notices for the backoff, then tried again; one that answers stays in.
func TestNoticeBackoff(t *testing.T) {
	p := &peerCluster{name: "B", configured: []string{"b1:1", "b2:1", "b3:1"}}
	now := time.Now()
	p.noticeDone("b2:1", errors.New("deadline exceeded"), time.Minute)
	p.noticeDone("b1:1", nil, time.Minute)
	if got := p.noticeAddrs(now); !slices.Equal(got, []string{"b1:1", "b3:1"}) {
		t.Errorf("addresses told: %v, want b1 and b3", got)
	}
	if got := p.noticeAddrs(now.Add(2 * time.Minute)); len(got) != 3 {
		t.Errorf("after the backoff, addresses told: %v, want all three", got)
	}
	p.noticeDone("b2:1", nil, time.Minute)
	if got := p.noticeAddrs(now); len(got) != 3 {
		t.Errorf("after b2 answered, addresses told: %v, want all three", got)
	}
	// A notice under way that no commit waits for (the peer was down):
	// later commits leave that address out until it ends.
	p.noticePending("b3:1", time.Minute)
	if got := p.noticeAddrs(time.Now()); !slices.Equal(got, []string{"b1:1", "b2:1"}) {
		t.Errorf("with a notice to b3 under way, addresses told: %v, want b1 and b2", got)
	}
	p.noticeDone("b3:1", nil, time.Minute)
	if got := p.noticeAddrs(time.Now()); len(got) != 3 {
		t.Errorf("after b3's notice answered, addresses told: %v, want all three", got)
	}
}
