package server

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/raft"

	"github.com/ddstore/ddstore/catalog"
	"github.com/ddstore/ddstore/chunker"
	"github.com/ddstore/ddstore/consensus"
	pb "github.com/ddstore/ddstore/proto/ddstore/v1"
	"github.com/ddstore/ddstore/replica"
)

// healCounters count what scrub, repair and garbage collection did.
type healCounters struct {
	scrubbed, scrubCorrupt, scrubPasses, repaired, lost, gcDeleted atomic.Uint64
	repairPasses, gcPasses, repairChecked, underReplicated         atomic.Uint64
	scrubFailed, repairFailed, gcFailed                            atomic.Uint64
	lastScrub, lastRepair, lastGC                                  atomic.Int64 // Unix nanoseconds of the last completed pass
}

// pass counts a pass that ended with err into passes or failed (a pass cut
// short because the node stops is neither), and stamps last when it
// completed.
func (h *healCounters) pass(ctx context.Context, err error, passes, failed *atomic.Uint64, last *atomic.Int64) {
	switch {
	case err == nil:
		passes.Add(1)
		last.Store(time.Now().UnixNano())
	case ctx.Err() == nil:
		failed.Add(1)
	}
}

func (h *healCounters) status() *pb.HealStatus {
	return &pb.HealStatus{
		ScrubbedChunks: h.scrubbed.Load(), ScrubCorrupt: h.scrubCorrupt.Load(), ScrubPasses: h.scrubPasses.Load(),
		RepairedCopies: h.repaired.Load(), LostChunks: h.lost.Load(), GcDeleted: h.gcDeleted.Load(),
	}
}

// pacer spreads work so that it stays under a rate in bytes per second.
type pacer struct {
	rate  int64
	start time.Time
	done  int64
}

func newPacer(rate int64) *pacer { return &pacer{rate: rate, start: time.Now()} }

func (p *pacer) wait(ctx context.Context, n int64) error {
	p.done += n
	due := time.Duration(float64(p.done) / float64(p.rate) * float64(time.Second))
	if d := due - time.Since(p.start); d > 0 {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(d):
		}
	}
	return nil
}

// healLoops runs scrub on every node and, on the leader, repair and garbage
// collection, until the node stops.
func (n *Node) healLoops() {
	ctx, cancel := context.WithCancel(context.Background())
	go func() { <-n.stop; cancel() }()
	var wg sync.WaitGroup
	every := func(interval time.Duration, kick <-chan struct{}, leaderOnly bool, name string, fn func(context.Context) error) {
		if interval < 0 {
			return
		}
		wg.Go(func() {
			t := time.NewTicker(interval)
			defer t.Stop()
			for {
				select {
				case <-ctx.Done():
					return
				case <-t.C:
				case <-kick:
				}
				if leaderOnly && !n.raft.IsLeader() {
					continue
				}
				if err := fn(ctx); err != nil && ctx.Err() == nil {
					n.log.Warn(name+" pass failed", "err", err)
				}
			}
		})
	}
	every(n.cfg.ScrubInterval, nil, false, "scrub", func(ctx context.Context) error { _, err := n.Scrub(ctx); return err })
	every(n.cfg.RepairInterval, n.repairKick, true, "repair", func(ctx context.Context) error { _, err := n.Repair(ctx); return err })
	every(n.cfg.GCInterval, nil, true, "garbage collection", func(ctx context.Context) error { _, err := n.Collect(ctx, false, false); return err })
	wg.Wait()
}

// ScrubReport says what one scrub pass did.
type ScrubReport struct {
	Chunks, Corrupt, Repaired int
}

// Scrub re-reads every chunk in the node's own store (not its caches),
// checking each against its ID, at most ScrubRate bytes per second. A corrupt
// copy is removed (the local store quarantines it) and replaced by a good copy
// from another node.
func (n *Node) Scrub(ctx context.Context) (ScrubReport, error) {
	rep, err := n.scrub(ctx)
	h := &n.healed
	h.pass(ctx, err, &h.scrubPasses, &h.scrubFailed, &h.lastScrub)
	return rep, err
}

func (n *Node) scrub(ctx context.Context) (ScrubReport, error) {
	var rep ScrubReport
	var ids []chunker.ID
	if err := n.base.Walk(ctx, func(id chunker.ID, _ int64) error { ids = append(ids, id); return nil }); err != nil {
		return rep, fmt.Errorf("scrub: list the store: %w", err)
	}
	p := newPacer(n.cfg.ScrubRate)
	for _, id := range ids {
		e, err := n.base.Get(ctx, id)
		switch {
		case errors.Is(err, replica.ErrNotFound):
			continue // deleted meanwhile
		case errors.Is(err, chunker.ErrCorrupt), errors.Is(err, chunker.ErrBadEncoded):
			rep.Corrupt++
			n.healed.scrubCorrupt.Add(1)
			n.log.Warn("scrub found a corrupt copy; replacing it from another node", "chunk", id, "err", err)
			if err := n.store.Delete(ctx, id); err != nil {
				n.log.Warn("scrub could not remove a corrupt copy", "chunk", id, "err", err)
				continue
			}
			peers, _ := n.placement()
			good, err := n.repl.Fetch(ctx, peers, id)
			if err != nil {
				n.log.Error("no good copy of a corrupt chunk on any other node; repair will report it", "chunk", id, "err", err)
				continue
			}
			if _, err := n.base.Put(ctx, good); err != nil {
				return rep, fmt.Errorf("scrub: rewrite chunk %s: %w", id, err)
			}
			rep.Repaired++
			n.healed.repaired.Add(1)
			e = good
		case err != nil:
			return rep, fmt.Errorf("scrub: read chunk %s: %w", id, err)
		}
		rep.Chunks++
		n.healed.scrubbed.Add(1)
		if err := p.wait(ctx, int64(len(e.Data))); err != nil {
			return rep, err
		}
	}
	return rep, nil
}

// voters returns the other voters as peers, whether or not they answer.
func (n *Node) voters() ([]replica.Peer, error) {
	servers, err := n.raft.Servers()
	if err != nil {
		return nil, err
	}
	var peers []replica.Peer
	var missing []string
	n.fsm.Read(func(s *catalog.State) {
		for _, srv := range servers {
			id := string(srv.ID)
			if id == n.cfg.ID || srv.Suffrage != raft.Voter {
				continue
			}
			if info, ok := s.Node(id); ok {
				peers = append(peers, replica.Peer{ID: id, Client: pb.NewNodeClient(n.conns.Get(info.GetApiAddr()))})
			} else {
				missing = append(missing, id)
			}
		}
	})
	if len(missing) > 0 {
		return peers, fmt.Errorf("nodes %v have no registered address yet", missing)
	}
	return peers, nil
}

// repairBatch is how many chunks one repair step asks every node about.
const repairBatch = 2048

// Repair brings every chunk a file refers to back to R copies on live nodes
// (leader only), copying at most RepairRate bytes per second. A node that
// does not answer counts as holding nothing and receives nothing.
func (n *Node) Repair(ctx context.Context) (*pb.RepairResponse, error) {
	if !n.raft.IsLeader() {
		return nil, consensus.ErrNotLeader
	}
	resp, err := n.repair(ctx)
	h := &n.healed
	h.pass(ctx, err, &h.repairPasses, &h.repairFailed, &h.lastRepair)
	if err == nil {
		h.underReplicated.Store(resp.UnderReplicated)
	}
	return resp, err
}

func (n *Node) repair(ctx context.Context) (*pb.RepairResponse, error) {
	var ids []chunker.ID
	n.fsm.Read(func(s *catalog.State) {
		s.Referenced(func(id chunker.ID) bool { ids = append(ids, id); return true })
	})
	slices.SortFunc(ids, func(a, b chunker.ID) int { return compareIDs(a, b) })
	peers, copies := n.placement()
	resp := &pb.RepairResponse{}
	p := newPacer(n.cfg.RepairRate)
	for start := 0; start < len(ids); start += repairBatch {
		batch := ids[start:min(len(ids), start+repairBatch)]
		holds, live, err := n.holdings(ctx, peers, batch, false)
		if err != nil {
			return resp, fmt.Errorf("repair: %w", err)
		}
		for i, id := range batch {
			resp.ChunksChecked++
			n.healed.repairChecked.Add(1)
			if len(holds[i]) >= copies {
				continue
			}
			resp.UnderReplicated++
			if len(holds[i]) == 0 {
				resp.Lost++
				n.log.Error("repair: no live node holds a chunk a file refers to", "chunk", id)
				continue
			}
			made, size, err := n.restore(ctx, id, holds[i], live, copies)
			resp.CopiesMade += uint64(made)
			n.healed.repaired.Add(uint64(made))
			if err != nil {
				n.log.Warn("repair: could not restore all copies", "chunk", id, "err", err)
			}
			if err := p.wait(ctx, int64(made*size)); err != nil {
				return resp, err
			}
		}
	}
	n.healed.lost.Store(resp.Lost)
	if resp.CopiesMade > 0 || resp.Lost > 0 {
		n.log.Info("repair pass", "checked", resp.ChunksChecked, "under_replicated", resp.UnderReplicated, "copies_made", resp.CopiesMade, "lost", resp.Lost)
	}
	return resp, nil
}

// holdBatch is how many IDs one HasChunks call asks about: small enough
// that a healthy node answers well within NodeTimeout.
const holdBatch = 10_000

// holdings asks this node's store and every peer which of ids they hold, in
// batches, each bounded by NodeTimeout. A peer that does not answer counts as
// holding nothing and is left out of live (so that nothing is copied to it);
// it is avoided for a while. With quick, a peer avoided already gets a
// tenth of the timeout: on a client's path, a hung node costs one full
// timeout, not one per call.
func (n *Node) holdings(ctx context.Context, peers []replica.Peer, ids []chunker.ID, quick bool) (holds []map[string]bool, live []replica.Peer, err error) {
	holds = make([]map[string]bool, len(ids))
	for i, id := range ids {
		holds[i] = map[string]bool{}
		ok, err := n.base.Has(ctx, id)
		if err != nil {
			return nil, nil, fmt.Errorf("local store: %w", err)
		}
		if ok {
			holds[i][n.cfg.ID] = true
		}
	}
	answers := make([][]bool, len(peers))
	var wg sync.WaitGroup
	for j, peer := range peers {
		timeout := n.cfg.NodeTimeout
		if quick && n.avoid.Avoided(peer.ID) {
			// It failed lately: give it a short chance. Skipping it
			// outright would count its copies as missing until the
			// avoidance ends, though copies may have gone to it since.
			timeout /= 10
		}
		wg.Go(func() {
			has := make([]bool, 0, len(ids))
			for start := 0; start < len(ids); start += holdBatch {
				batch := ids[start:min(len(ids), start+holdBatch)]
				cctx, cancel := context.WithTimeout(ctx, timeout)
				resp, err := peer.Client.HasChunks(cctx, &pb.HasChunksRequest{Ids: idsWire(batch)})
				cancel()
				if err == nil && len(resp.GetHas()) != len(batch) {
					err = fmt.Errorf("answered about %d chunks, asked about %d", len(resp.GetHas()), len(batch))
				}
				if err != nil {
					if ctx.Err() == nil && replica.Unhealthy(err) {
						n.avoid.Failed(peer.ID)
					}
					n.log.Warn("a node did not say which chunks it holds; counting it as holding none", "node", peer.ID, "err", err)
					return
				}
				has = append(has, resp.GetHas()...)
			}
			n.avoid.Succeeded(peer.ID)
			answers[j] = has
		})
	}
	wg.Wait()
	for j, peer := range peers {
		if answers[j] == nil {
			continue
		}
		live = append(live, peer)
		for i, h := range answers[j] {
			if h {
				holds[i][peer.ID] = true
			}
		}
	}
	return holds, live, ctx.Err()
}

// restore copies one chunk from a holder to live nodes that lack it, in
// rendezvous order, until copies nodes hold it. It fails when fewer than
// copies nodes hold it at the end.
func (n *Node) restore(ctx context.Context, id chunker.ID, holds map[string]bool, live []replica.Peer, copies int) (made, size int, err error) {
	var holders []replica.Peer
	for _, p := range live {
		if holds[p.ID] {
			holders = append(holders, p)
		}
	}
	c, err := n.repl.Fetch(ctx, holders, id)
	if err != nil {
		return 0, 0, err
	}
	size = len(c.Data)
	have := len(holds)
	var errs []error
	if !holds[n.cfg.ID] && have < copies {
		switch _, err := n.base.Put(ctx, c); {
		case errors.Is(err, replica.ErrNoSpace):
			errs = append(errs, err) // this node is full: the copy goes to another
		case err != nil:
			return made, size, err
		default:
			made++
			have++
		}
	}
	for _, p := range replica.Rank(id, live) {
		if have >= copies {
			break
		}
		if holds[p.ID] {
			continue
		}
		if err := copyTo(ctx, p, c, 3*n.cfg.NodeTimeout); err != nil {
			if replica.Unhealthy(err) {
				n.avoid.Failed(p.ID)
			}
			errs = append(errs, fmt.Errorf("node %s: %w", p.ID, err))
			continue
		}
		made++
		have++
	}
	if have < copies {
		errs = append(errs, fmt.Errorf("%w: chunk %s is on %d of %d nodes", replica.ErrTooFewCopies, id, have, copies))
	}
	return made, size, errors.Join(errs...)
}

// copyTo stores one chunk on a peer over a PutChunks stream.
func copyTo(ctx context.Context, p replica.Peer, c chunker.Encoded, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	stream, err := p.Client.PutChunks(ctx)
	if err != nil {
		return err
	}
	if err := stream.Send(&pb.PutChunksRequest{Chunk: replica.ToWire(c)}); err != nil {
		return err
	}
	if _, err := stream.Recv(); err != nil {
		return err
	}
	return stream.CloseSend()
}

func compareIDs(a, b chunker.ID) int {
	for i := range a {
		if a[i] != b[i] {
			return int(a[i]) - int(b[i])
		}
	}
	return 0
}

// Collect runs one garbage-collection sweep (leader only). It lists every
// voter's store — any listing error aborts the sweep, since deleting on a
// partial view loses data — and finds the chunks no file refers to. The
// time each was first seen so is kept in the catalog (MarkUnreferenced,
// stamped with this leader's clock), so the clock survives a change of
// leader. A chunk unreferenced for longer than GCGrace — or any, with now —
// is marked through Raft (which refuses commits naming it from then on and
// skips any chunk a file refers to by then), its copies are deleted from
// every store and cache, and the mark is cleared; a commit that checked its
// chunks before that finished is refused (PutFile.collections_seen), so no
// file is ever stored without its chunks, now or not. Marks left by an
// interrupted sweep are finished first. A dry run changes nothing: chunks
// seen unreferenced for the first time count as seen now.
func (n *Node) Collect(ctx context.Context, dryRun, now bool) (*pb.CollectResponse, error) {
	if !n.raft.IsLeader() {
		return nil, consensus.ErrNotLeader
	}
	resp, err := n.collect(ctx, dryRun, now)
	if !dryRun {
		h := &n.healed
		h.pass(ctx, err, &h.gcPasses, &h.gcFailed, &h.lastGC)
	}
	return resp, err
}

func (n *Node) collect(ctx context.Context, dryRun, now bool) (*pb.CollectResponse, error) {
	grace := n.cfg.GCGrace
	if now {
		grace = 0
	}
	resp := &pb.CollectResponse{DryRun: dryRun, Now: now, Grace: grace.String()}
	peers, err := n.voters()
	if err != nil {
		return resp, fmt.Errorf("garbage collection aborted: %w", err)
	}
	where := map[chunker.ID][]string{}
	sizes := map[chunker.ID]uint64{}
	if err := n.base.Walk(ctx, func(id chunker.ID, size int64) error {
		where[id] = append(where[id], n.cfg.ID)
		sizes[id] = uint64(size)
		return nil
	}); err != nil {
		return resp, fmt.Errorf("garbage collection aborted: list this node's store: %w", err)
	}
	pinned := map[chunker.ID]bool{}
	for _, p := range peers {
		if err := listChunks(ctx, p, func(id chunker.ID, size uint64) {
			where[id] = append(where[id], p.ID)
			sizes[id] = size
		}, func(id chunker.ID) { pinned[id] = true }); err != nil {
			return resp, fmt.Errorf("garbage collection aborted: list node %s: %w", p.ID, err)
		}
	}
	var unref, fresh, gone, pending []chunker.ID
	since := map[chunker.ID]int64{}
	n.fsm.Read(func(s *catalog.State) {
		for id := range where {
			if s.Refs(id) != 0 {
				continue
			}
			unref = append(unref, id)
			if t, ok := s.UnreferencedSince(id); ok {
				since[id] = t
			} else {
				fresh = append(fresh, id)
			}
		}
		s.Unreferenced(func(id chunker.ID, _ int64) bool {
			if _, held := where[id]; !held {
				gone = append(gone, id) // no store holds it any more
			}
			return true
		})
		pending = s.Collecting()
	})
	resp.Unreferenced = uint64(len(unref))

	t0 := time.Now()
	if !dryRun && (len(fresh) > 0 || len(gone) > 0) {
		if err := n.startClocks(ctx, fresh, gone, t0); err != nil {
			return resp, err
		}
	}
	for _, id := range n.pins.list() {
		pinned[id] = true
	}
	var eligible []chunker.ID
	for _, id := range unref {
		if pinned[id] {
			resp.Pinned++ // an upload in progress relies on it
			continue
		}
		t, ok := since[id]
		if !ok {
			t = t0.UnixNano() // seen just now
		}
		if t0.Sub(time.Unix(0, t)) >= grace {
			eligible = append(eligible, id)
			resp.EligibleBytes += sizes[id]
		}
	}
	resp.Eligible = uint64(len(eligible))
	if dryRun || (len(eligible) == 0 && len(pending) == 0) {
		return resp, nil
	}

	marked, err := n.markForCollection(ctx, eligible)
	if err != nil {
		return resp, err
	}
	doomed := append(pending, marked...)
	byNode := map[string][][]byte{}
	for _, id := range doomed {
		for _, node := range where[id] {
			byNode[node] = append(byNode[node], id[:])
		}
	}
	for _, id := range doomed {
		if slices.Contains(where[id], n.cfg.ID) {
			if err := n.store.Delete(ctx, id); err != nil {
				return resp, fmt.Errorf("garbage collection: delete chunk %s here: %w", id, err)
			}
			resp.DeletedCopies++
		}
	}
	for _, p := range peers {
		if ids := byNode[p.ID]; len(ids) > 0 {
			d, err := p.Client.DeleteChunks(ctx, &pb.DeleteChunksRequest{Ids: ids})
			if err != nil {
				return resp, fmt.Errorf("garbage collection: delete on node %s: %w (the marks stay; the next sweep finishes)", p.ID, err)
			}
			resp.DeletedCopies += d.GetDeleted()
		}
	}
	n.healed.gcDeleted.Add(resp.DeletedCopies)
	if err := n.applyChunks(ctx, &pb.Command{Op: &pb.Command_ForgetChunks{ForgetChunks: &pb.ForgetChunks{Ids: idsWire(doomed)}}}); err != nil {
		return resp, err
	}
	n.log.Info("garbage collection", "now", now, "unreferenced", resp.Unreferenced, "deleted_chunks", len(doomed), "deleted_copies", resp.DeletedCopies)
	return resp, nil
}

// startClocks proposes MarkUnreferenced: the garbage-collection clocks of
// fresh (chunks seen unreferenced for the first time) start at t, those of
// gone (chunks no store holds any more) stop.
func (n *Node) startClocks(ctx context.Context, fresh, gone []chunker.ID, t time.Time) error {
	for start := 0; start == 0 || start < len(fresh); start += 10000 {
		m := &pb.MarkUnreferenced{SinceUnixNano: t.UnixNano(), Ids: idsWire(fresh[start:min(len(fresh), start+10000)])}
		if start == 0 {
			m.Forget = idsWire(gone)
		}
		if err := n.applyChunks(ctx, &pb.Command{Op: &pb.Command_MarkUnreferenced{MarkUnreferenced: m}}); err != nil {
			return fmt.Errorf("start the clocks of unreferenced chunks: %w", err)
		}
	}
	return nil
}

// markForCollection proposes CollectChunks and returns the chunks the catalog
// marked (those still unreferenced when the command applied).
func (n *Node) markForCollection(ctx context.Context, ids []chunker.ID) ([]chunker.ID, error) {
	var marked []chunker.ID
	for start := 0; start < len(ids); start += 10000 {
		batch := ids[start:min(len(ids), start+10000)]
		data, err := catalog.EncodeCommand(&pb.Command{Op: &pb.Command_CollectChunks{CollectChunks: &pb.CollectChunks{Ids: idsWire(batch)}}})
		if err != nil {
			return marked, err
		}
		out, err := n.raft.Apply(ctx, data)
		if err != nil {
			return marked, fmt.Errorf("garbage collection: mark chunks: %w", err)
		}
		res, _ := out.(catalog.Result)
		if res.Err != nil {
			return marked, fmt.Errorf("garbage collection: mark chunks: %w", res.Err)
		}
		marked = append(marked, res.IDs...)
	}
	return marked, nil
}

func (n *Node) applyChunks(ctx context.Context, cmd *pb.Command) error {
	data, err := catalog.EncodeCommand(cmd)
	if err != nil {
		return err
	}
	out, err := n.raft.Apply(ctx, data)
	if err != nil {
		return fmt.Errorf("garbage collection: %w", err)
	}
	if res, _ := out.(catalog.Result); res.Err != nil {
		return fmt.Errorf("garbage collection: %w", res.Err)
	}
	return nil
}

func idsWire(ids []chunker.ID) [][]byte {
	out := make([][]byte, len(ids))
	for i := range ids {
		out[i] = ids[i][:]
	}
	return out
}

// listChunks reads a peer's ListChunks stream to the end.
func listChunks(ctx context.Context, p replica.Peer, fn func(chunker.ID, uint64), pinned func(chunker.ID)) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Minute)
	defer cancel()
	stream, err := p.Client.ListChunks(ctx, &pb.ListChunksRequest{})
	if err != nil {
		return err
	}
	for {
		resp, err := stream.Recv()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		if len(resp.GetStoredSizes()) != len(resp.GetIds()) {
			return errors.New("malformed chunk list")
		}
		for i, b := range resp.GetIds() {
			id, err := chunker.IDFromBytes(b)
			if err != nil {
				return err
			}
			fn(id, resp.GetStoredSizes()[i])
		}
		for _, b := range resp.GetPinned() {
			id, err := chunker.IDFromBytes(b)
			if err != nil {
				return err
			}
			if pinned != nil {
				pinned(id)
			}
		}
	}
}
