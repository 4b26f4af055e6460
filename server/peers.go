package server

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ddstore/ddstore/catalog"
	pb "github.com/ddstore/ddstore/proto/ddstore/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// maxBeyond bounds how many clusters beyond it one peer may pass filters of.
const maxBeyond = 64

// peerCluster is what a node knows of one peer cluster: where to reach it
// and its last Bloom filters.
type peerCluster struct {
	name       string
	configured []string

	mu         sync.Mutex
	learned    []string // the peer's gateways, from its last filter answer
	leaderID   string
	leaderAddr string
	filters    *catalog.Filters
	raw        []byte                 // filters as they arrived, to pass on to other peers
	beyond     map[string]*farCluster // clusters reached through this one
	fetched    time.Time              // when filters arrived (or were confirmed current)
	lastOK     time.Time
	lastErr    error
	failedAt   time.Time // when lastErr was set
	cur        string    // address that answered last

	// Freshness (see checkStale): the peer tells this node of each commit
	// there (noticed: when the last such notice arrived); freshAsOf is when
	// the last refresh that asked for filters holding every commit made
	// before it was sent; freshening is closed when the one under way ends.
	noticed    time.Time
	freshAsOf  time.Time
	freshening chan struct{}
	// Addresses of the peer whose last notice failed, and until when no
	// notice goes to them (so that a dead or slow node does not hold up
	// every commit here).
	noticeSkip map[string]time.Time
}

// noticeAddrs returns the addresses to tell of a commit at now: all of the
// peer's, but those whose last notice failed within noticeBackoff.
func (p *peerCluster) noticeAddrs(now time.Time) []string {
	addrs := p.addrs()
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.DeleteFunc(addrs, func(a string) bool { return now.Before(p.noticeSkip[a]) })
}

// noticePending leaves addr out of notices for d (while a notice that no
// commit waits for is under way), so that a run of commits sends one, not
// one each.
func (p *peerCluster) noticePending(addr string, d time.Duration) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.noticeSkip == nil {
		p.noticeSkip = map[string]time.Time{}
	}
	p.noticeSkip[addr] = time.Now().Add(d)
}

// noticeDone records how a notice to addr went.
func (p *peerCluster) noticeDone(addr string, err error, backoff time.Duration) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if err == nil {
		delete(p.noticeSkip, addr)
		return
	}
	if p.noticeSkip == nil {
		p.noticeSkip = map[string]time.Time{}
	}
	if len(p.noticeSkip) > 4*maxBeyond { // addresses the peer no longer reports
		clear(p.noticeSkip)
	}
	p.noticeSkip[addr] = time.Now().Add(backoff)
}

// addrs returns the addresses to try, best first: the one that answered
// last, the peer's leader, the configured contacts, then its other gateways.
func (p *peerCluster) addrs() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []string
	for _, list := range [][]string{{p.cur, p.leaderAddr}, p.configured, p.learned} {
		for _, a := range list {
			if a != "" && !slices.Contains(out, a) {
				out = append(out, a)
			}
		}
	}
	return out
}

// farCluster is a cluster reached through a peer, and the filters the peer
// holds of it.
type farCluster struct {
	version uint64
	raw     []byte
	filters *catalog.Filters
	hops    uint32 // clusters between the peer and it
}

// mayHave reports whether the peer, or a cluster beyond it that skip does
// not rule out, may hold what test asks about. A peer whose filters have not
// arrived yet may hold anything.
func (p *peerCluster) mayHave(test func(*catalog.Filters) bool, skip func(cluster string) bool) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.filters == nil || test(p.filters) {
		return true
	}
	for name, far := range p.beyond {
		if !skip(name) && test(far.filters) {
			return true
		}
	}
	return false
}

// down returns why the peer is unreachable, if the last exchange with it
// failed on every address: calls skip it (noting why) until a filter
// refresh reaches it again, instead of each waiting out the timeout.
func (p *peerCluster) down() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.downLocked() {
		return status.Errorf(codes.Unavailable, "unreachable at its last exchange: %s", status.Convert(p.lastErr).Message())
	}
	return nil
}

// downLocked reports whether the last exchange with the peer failed on
// every address and the peer has not called since with news of a commit.
func (p *peerCluster) downLocked() bool {
	return p.lastErr != nil && unreachable(p.lastErr) && !p.noticed.After(p.failedAt)
}

// failed records why an exchange with the peer failed.
func (p *peerCluster) failed(err error) {
	p.lastErr, p.failedAt = err, time.Now()
}

// staleLocked reports whether the peer's filters may lack a file committed
// there: none have arrived, it told of a commit after the last fresh
// refresh began, or no refresh confirmed them within maxAge.
func (p *peerCluster) staleLocked(now time.Time, maxAge time.Duration) bool {
	return p.filters == nil || p.noticed.After(p.freshAsOf) || now.Sub(p.fetched) > maxAge
}

// peerSet is a node's view of every peer cluster, and its counters.
type peerSet struct {
	n     *Node
	peers []*peerCluster // sorted by name

	lookups, peerCalls, filterSkips, served atomic.Uint64
	staleChecks                             atomic.Uint64 // filters that ruled out a lookup checked with their peer first
	ignore                                  atomic.Bool   // ask every peer, whatever its filters say

	encMu      sync.Mutex
	encVersion uint64
	encoded    []byte // this cluster's filters, encoded at encVersion
}

func newPeerSet(n *Node) *peerSet {
	ps := &peerSet{n: n}
	ps.ignore.Store(n.cfg.AlwaysMaybe)
	for name, addrs := range n.cfg.Peers {
		ps.peers = append(ps.peers, &peerCluster{name: name, configured: slices.Clone(addrs)})
	}
	slices.SortFunc(ps.peers, func(a, b *peerCluster) int { return strings.Compare(a.name, b.name) })
	return ps
}

func (ps *peerSet) get(name string) *peerCluster {
	for _, p := range ps.peers {
		if p.name == name {
			return p
		}
	}
	return nil
}

func (ps *peerSet) names() []string {
	out := make([]string, len(ps.peers))
	for i, p := range ps.peers {
		out[i] = p.name
	}
	return out
}

// ErrUnknownCluster: a call named a cluster that is neither this one nor a
// configured peer.
var ErrUnknownCluster = errors.New("unknown cluster")

// call runs fn against the peer, trying its addresses in turn while they are
// unavailable. Each try is bounded by the node's peer timeout (and ctx).
func (ps *peerSet) call(ctx context.Context, p *peerCluster, fn func(context.Context, *grpc.ClientConn) error) error {
	return ps.try(ctx, p, ps.timeout(ctx), fn)
}

// peerStream opens a stream on the peer with open, trying its addresses in
// turn while they are unavailable. The stream lives as long as ctx.
func peerStream[S any](ctx context.Context, ps *peerSet, p *peerCluster, open func(*grpc.ClientConn) (S, error)) (S, error) {
	var s S
	err := ps.try(ctx, p, 0, func(_ context.Context, cc *grpc.ClientConn) error {
		var err error
		s, err = open(cc)
		return err
	})
	return s, err
}

// try runs fn on the peer's addresses in turn until one answers or fails
// other than unreachable; each try bounded by timeout (0: only by ctx). The
// address that answers is tried first next time; when none does, the peer
// counts as down until a filter refresh reaches it.
func (ps *peerSet) try(ctx context.Context, p *peerCluster, timeout time.Duration, fn func(context.Context, *grpc.ClientConn) error) error {
	var failed []string
	for _, addr := range p.addrs() {
		cctx, cancel := ctx, context.CancelFunc(func() {})
		if timeout > 0 {
			cctx, cancel = context.WithTimeout(ctx, timeout)
		}
		err := fn(cctx, ps.n.conns.Peer(p.name, addr))
		cancel()
		if err == nil {
			p.mu.Lock()
			p.cur = addr
			p.mu.Unlock()
			return nil
		}
		if ctx.Err() != nil || !unreachable(err) {
			return err
		}
		failed = append(failed, fmt.Sprintf("%s: %s", addr, status.Convert(err).Message()))
	}
	within := ""
	if timeout > 0 {
		within = " within " + timeout.Round(time.Millisecond).String()
	}
	err := status.Errorf(codes.Unavailable, "no address of cluster %s answered%s (%s)", p.name, within, strings.Join(failed, "; "))
	if len(failed) == 0 {
		err = status.Errorf(codes.Unavailable, "cluster %s: no address to reach it", p.name)
	}
	p.mu.Lock()
	p.failed(err)
	p.mu.Unlock()
	return err
}

// timeout bounds one try at a peer: the peer timeout, or less when the
// caller's own deadline is nearer, so that the answer (with a note of the
// peer that did not answer) still reaches the caller in time.
func (ps *peerSet) timeout(ctx context.Context) time.Duration {
	t := ps.n.cfg.PeerTimeout
	if dl, ok := ctx.Deadline(); ok {
		t = min(t, time.Until(dl)*3/4)
	}
	return max(t, time.Millisecond)
}

// unreachable reports errors that mean "try another address of that cluster".
func unreachable(err error) bool {
	switch status.Code(err) {
	case codes.Unavailable, codes.DeadlineExceeded:
		return true
	}
	return false
}

// refreshLoop keeps every peer's filters current.
func (ps *peerSet) refreshLoop() {
	if len(ps.peers) == 0 {
		return
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		select {
		case <-ps.n.stop:
			cancel()
		case <-ctx.Done():
		}
	}()
	t := time.NewTicker(ps.n.cfg.FilterRefresh)
	defer t.Stop()
	for {
		var wg sync.WaitGroup
		for _, p := range ps.peers {
			wg.Go(func() {
				if err := ps.refresh(ctx, p); err != nil {
					ps.n.log.Debug("peer cluster filters not refreshed", "cluster", p.name, "err", err)
				}
			})
		}
		wg.Wait()
		select {
		case <-ps.n.stop:
			return
		case <-t.C:
		}
	}
}

// refresh asks the peer for its filters, sending the version held here so
// that unchanged filters do not travel again.
func (ps *peerSet) refresh(ctx context.Context, p *peerCluster) error {
	return ps.pull(ctx, p, false)
}

// filtersRequest is a request for p's filters from this cluster, naming
// the versions held here.
func (ps *peerSet) filtersRequest(p *peerCluster) *pb.FiltersRequest {
	req := &pb.FiltersRequest{FromCluster: ps.n.cfg.Cluster, HaveBeyond: map[string]uint64{}}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.filters != nil {
		req.HaveVersion = p.filters.Version
	}
	for name, far := range p.beyond {
		req.HaveBeyond[name] = far.version
	}
	return req
}

// pull refreshes the peer's filters. With fresh, the node that answers
// first catches up with its cluster's leader (mdFiltersFresh), so the
// filters hold every file committed there before the call.
func (ps *peerSet) pull(ctx context.Context, p *peerCluster, fresh bool) error {
	req := ps.filtersRequest(p)
	start := time.Now()
	if fresh {
		ctx = metadata.AppendToOutgoingContext(ctx, mdFiltersFresh, "1")
	}
	var resp *pb.FiltersResponse
	err := ps.call(ctx, p, func(ctx context.Context, cc *grpc.ClientConn) error {
		var err error
		resp, err = pb.NewFederationClient(cc).Filters(ctx, req)
		return err
	})
	var f *catalog.Filters
	if err == nil && resp.GetCluster() != p.name {
		err = fmt.Errorf("cluster %s: its addresses answer as cluster %q", p.name, resp.GetCluster())
	}
	if err == nil {
		err = checkAddrs(resp)
	}
	if err == nil && len(resp.GetFilters()) > 0 {
		f, err = catalog.UnmarshalFilters(resp.GetFilters())
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	var beyond map[string]*farCluster
	if err == nil {
		beyond, err = ps.beyondFrom(resp, p.beyond)
	}
	if err != nil {
		if !unreachable(err) && (p.lastErr == nil || p.lastErr.Error() != err.Error()) {
			// The peer answered with something that does not check out:
			// nothing of the answer is kept, used or passed on.
			ps.n.log.Error("peer cluster's filters refused; keeping what was held before", "cluster", p.name, "err", err)
		}
		p.failed(err)
		return err
	}
	now := time.Now()
	p.lastOK, p.lastErr = now, nil
	p.leaderID, p.leaderAddr = resp.GetLeaderId(), resp.GetLeaderAddr()
	p.learned = resp.GetGateways()
	p.beyond = beyond
	if f != nil {
		p.filters, p.raw, p.fetched = f, resp.GetFilters(), now
	} else if p.filters != nil && p.filters.Version == resp.GetVersion() {
		p.fetched = now
	}
	if fresh {
		p.freshAsOf = start
	}
	return nil
}

// staleAfter is the age past which a peer's filters are checked with it
// before they rule a lookup out, whether or not it told of a commit: two
// refresh periods, which only a stalled or failing refresh reaches.
func (ps *peerSet) staleAfter() time.Duration { return 2 * ps.n.cfg.FilterRefresh }

// checkStale is called when p's filters rule out what a lookup asks about.
// If they may be stale (p told this node of a commit since its last fresh
// refresh, or they are older than staleAfter), it refreshes them from p at
// once, bounded like every call to a peer, and reports whether it did: the
// caller tests them again. A peer that is down is not asked; its last
// filters stand.
func (ps *peerSet) checkStale(ctx context.Context, p *peerCluster) bool {
	p.mu.Lock()
	stale := p.staleLocked(time.Now(), ps.staleAfter()) && !p.downLocked()
	p.mu.Unlock()
	if !stale {
		return false
	}
	ps.staleChecks.Add(1)
	if err := ps.freshen(ctx, p); err != nil {
		ps.n.log.Debug("stale peer filters not checked", "cluster", p.name, "err", err)
		return false
	}
	return true
}

// freshen makes a fresh refresh of p's filters, or waits for the one under
// way (any number of lookups share one call), while they are stale.
func (ps *peerSet) freshen(ctx context.Context, p *peerCluster) error {
	for range 2 {
		p.mu.Lock()
		if !p.staleLocked(time.Now(), ps.staleAfter()) {
			p.mu.Unlock()
			return nil
		}
		if wait := p.freshening; wait != nil {
			p.mu.Unlock()
			select {
			case <-wait:
				continue
			case <-ctx.Done():
				return fmt.Errorf("waiting for cluster %s's filters: %w", p.name, ctx.Err())
			}
		}
		done := make(chan struct{})
		p.freshening = done
		p.mu.Unlock()
		err := ps.pull(ctx, p, true)
		p.mu.Lock()
		p.freshening = nil
		p.mu.Unlock()
		close(done)
		return err
	}
	return nil
}

// noticeFrom takes a peer's word that it has committed a file: its filters
// held here are stale until a fresh refresh, which starts now in the
// background (lookups in the meantime wait for it when the filters rule
// them out). The notice of a cluster that is not a peer is ignored.
func (ps *peerSet) noticeFrom(name string) {
	p := ps.get(name)
	if p == nil {
		return
	}
	p.mu.Lock()
	p.noticed = time.Now()
	busy := p.freshening != nil
	p.mu.Unlock()
	if busy {
		return // the lookups that need fresh filters start another refresh
	}
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), ps.n.cfg.PeerTimeout)
		defer cancel()
		go func() {
			select {
			case <-ps.n.stop:
				cancel()
			case <-ctx.Done():
			}
		}()
		select {
		case <-ps.n.stop:
			return
		default:
		}
		if err := ps.freshen(ctx, p); err != nil {
			ps.n.log.Debug("peer cluster's filters not refreshed after its notice", "cluster", p.name, "err", err)
		}
	}()
}

// noticeTimeout bounds how long a commit waits for its notices to reach
// the peers: no longer than a refresh period, after which they pull the
// new filters anyway.
func (ps *peerSet) noticeTimeout() time.Duration {
	return min(ps.n.cfg.PeerTimeout, ps.n.cfg.FilterRefresh)
}

// announce tells every node of every peer cluster this node can reach that
// this cluster has committed a file (a Filters call carrying
// mdFiltersChanged), so that their next lookup the filters held there rule
// out refreshes them first. It waits at most noticeTimeout; a peer that is
// down or slower learns at its next refresh. An address whose notice
// failed (or did not answer in time) is left out for noticeBackoff, so a
// dead or slow node of a peer holds up at most one commit in that time.
// Answers are versions only.
func (ps *peerSet) announce(ctx context.Context) {
	if len(ps.peers) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), ps.noticeTimeout())
	defer cancel()
	ctx = metadata.NewOutgoingContext(ctx, metadata.Pairs(mdFiltersChanged, "1"))
	backoff := ps.noticeBackoff()
	now := time.Now()
	var wg sync.WaitGroup
	for _, p := range ps.peers {
		// A peer that was down at its last exchange is told too (it may
		// have come up since: two clusters started together each find the
		// other down at first), but the commit does not wait for it.
		down := p.down() != nil
		req := &pb.FiltersRequest{FromCluster: ps.n.cfg.Cluster}
		for _, addr := range p.noticeAddrs(now) {
			tell := func(ctx context.Context) {
				_, err := pb.NewFederationClient(ps.n.conns.Peer(p.name, addr)).Filters(ctx, req)
				if err != nil {
					ps.n.log.Debug("peer cluster not told of a commit", "cluster", p.name, "addr", addr, "err", err)
				}
				p.noticeDone(addr, err, backoff)
			}
			if down {
				p.noticePending(addr, ps.noticeTimeout())
				go func() {
					bctx, bcancel := context.WithTimeout(context.WithoutCancel(ctx), ps.noticeTimeout())
					defer bcancel()
					tell(bctx)
				}()
				continue
			}
			wg.Go(func() { tell(ctx) })
		}
	}
	wg.Wait()
}

// noticeBackoff is how long an address whose notice failed is left out of
// notices: ten refresh periods.
func (ps *peerSet) noticeBackoff() time.Duration { return 10 * ps.n.cfg.FilterRefresh }

// beyondFrom reads the clusters a peer reaches, keeping the filters held
// (old) of those it says are unchanged. This cluster itself is left out.
func (ps *peerSet) beyondFrom(resp *pb.FiltersResponse, old map[string]*farCluster) (map[string]*farCluster, error) {
	if len(resp.GetBeyond()) > maxBeyond {
		return nil, fmt.Errorf("cluster %s passes on the filters of %d clusters; at most %d are taken", resp.GetCluster(), len(resp.GetBeyond()), maxBeyond)
	}
	out := map[string]*farCluster{}
	for _, b := range resp.GetBeyond() {
		if err := validClusterName(b.GetCluster()); err != nil {
			return nil, fmt.Errorf("cluster %s passes on filters of a cluster with a bad name: %w", resp.GetCluster(), err)
		}
		if b.GetHops() > uint32(ps.n.cfg.HopLimit) {
			return nil, fmt.Errorf("cluster %s passes on filters of %s, %d hops away; the hop limit is %d", resp.GetCluster(), b.GetCluster(), b.GetHops(), ps.n.cfg.HopLimit)
		}
		if b.GetCluster() == ps.n.cfg.Cluster {
			continue
		}
		far := &farCluster{version: b.GetVersion(), hops: b.GetHops(), raw: b.GetFilters()}
		if len(b.GetFilters()) == 0 {
			prev := old[b.GetCluster()]
			if prev == nil || prev.version != b.GetVersion() {
				continue // not sent, not held: asked again next time
			}
			far.raw, far.filters = prev.raw, prev.filters
		} else {
			f, err := catalog.UnmarshalFilters(b.GetFilters())
			if err != nil {
				return nil, fmt.Errorf("cluster %s, filters of %s beyond it: %w", resp.GetCluster(), b.GetCluster(), err)
			}
			far.filters = f
		}
		out[b.GetCluster()] = far
	}
	return out, nil
}

// beyond lists, for a peer that asks, the filters this node holds of the
// clusters beyond this one: its peers (hops 1) and what they reach, as far
// as the hop limit lets a request travel. Filters the asker holds at the
// same version are not sent again.
func (ps *peerSet) beyondFor(req *pb.FiltersRequest) []*pb.BeyondFilters {
	best := map[string]*pb.BeyondFilters{}
	add := func(name string, version uint64, raw []byte, hops uint32) {
		if name == req.GetFromCluster() || name == ps.n.cfg.Cluster || raw == nil || int(hops) >= ps.n.cfg.HopLimit {
			return
		}
		if cur := best[name]; cur != nil && cur.Hops <= hops {
			return
		}
		b := &pb.BeyondFilters{Cluster: name, Version: version, Hops: hops}
		if have, ok := req.GetHaveBeyond()[name]; !ok || have != version {
			b.Filters = raw
		}
		best[name] = b
	}
	for _, p := range ps.peers {
		p.mu.Lock()
		if p.filters != nil {
			add(p.name, p.filters.Version, p.raw, 1)
		}
		for name, far := range p.beyond {
			add(name, far.version, far.raw, far.hops+1)
		}
		p.mu.Unlock()
	}
	out := make([]*pb.BeyondFilters, 0, len(best))
	for _, name := range slices.Sorted(maps.Keys(best)) {
		out = append(out, best[name])
	}
	return out
}

// status reports every peer as this node knows it.
func (ps *peerSet) status() []*pb.PeerClusterStatus {
	var out []*pb.PeerClusterStatus
	now := time.Now()
	since := func(t time.Time) int64 {
		if t.IsZero() {
			return -1
		}
		return now.Sub(t).Milliseconds()
	}
	for _, p := range ps.peers {
		addrs := p.addrs()
		p.mu.Lock()
		st := &pb.PeerClusterStatus{
			Name: p.name, Addrs: addrs, LeaderId: p.leaderID, LeaderAddr: p.leaderAddr,
			Reachable: !p.lastOK.IsZero() && p.lastErr == nil, FilterAgeMs: since(p.fetched), LastContactMs: since(p.lastOK),
		}
		if p.filters != nil {
			st.FilterVersion, st.FilterFpRate = p.filters.Version, p.filters.FPRate
		}
		st.Beyond = slices.Sorted(maps.Keys(p.beyond))
		if p.lastErr != nil {
			st.Error = status.Convert(p.lastErr).Message()
		}
		p.mu.Unlock()
		out = append(out, st)
	}
	return out
}

func (ps *peerSet) counters() *pb.FederationStatus {
	return &pb.FederationStatus{
		Lookups: ps.lookups.Load(), PeerCalls: ps.peerCalls.Load(),
		FilterSkips: ps.filterSkips.Load(), ServedForwarded: ps.served.Load(),
	}
}

// StaleFilterChecks counts the lookups whose peer filters ruled them out
// but were checked with the peer first, as they might be stale.
func (n *Node) StaleFilterChecks() uint64 { return n.peers.staleChecks.Load() }

// encodedFilters returns this cluster's filters, encoded, and their version.
func (ps *peerSet) encodedFilters() ([]byte, uint64, error) {
	ps.encMu.Lock()
	defer ps.encMu.Unlock()
	v := ps.n.fsm.FilesVersion()
	if ps.encoded != nil && ps.encVersion == v {
		return ps.encoded, v, nil
	}
	f := ps.n.fsm.Filters(ps.n.cfg.FilterFPRate)
	data, err := f.MarshalBinary()
	if err != nil {
		return nil, 0, err
	}
	ps.encoded, ps.encVersion = data, f.Version
	return data, f.Version, nil
}

// checkAddrs checks the addresses a peer reports. They are dialled only
// expecting that peer's certificate, so a wrong one costs a failed
// handshake, never a call to someone else; this keeps out the absurd.
func checkAddrs(resp *pb.FiltersResponse) error {
	if len(resp.GetGateways()) > maxBeyond {
		return fmt.Errorf("cluster %s reports %d gateways; at most %d are taken", resp.GetCluster(), len(resp.GetGateways()), maxBeyond)
	}
	for _, a := range append([]string{resp.GetLeaderAddr()}, resp.GetGateways()...) {
		if a == "" {
			continue
		}
		if _, _, err := net.SplitHostPort(a); err != nil || len(a) > 300 {
			return fmt.Errorf("cluster %s reports a bad address %.40q", resp.GetCluster(), a)
		}
	}
	return nil
}
