package replica

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/ddstore/ddstore/chunker"
)

// maintain writes the index files of sealed packs and compacts packs whose
// live fraction fell below the threshold, whenever it is kicked (a pack
// sealed, a delete), until ctx ends.
func (p *Pack) maintain(ctx context.Context) {
	defer close(p.maintDone)
	for {
		select {
		case <-ctx.Done():
			return
		case <-p.kickMaint:
		}
		if err := p.writeIndexes(); err != nil {
			p.log.Error("cannot write a pack index; the pack will be scanned when the store is opened", "err", err)
		}
		if p.opts.CompactBelow < 0 {
			continue
		}
		if _, err := p.Compact(ctx); err != nil && ctx.Err() == nil {
			p.log.Error("compaction failed; will retry at the next delete or open", "err", err)
		}
	}
}

// writeIndexes writes the index file of every sealed pack that lacks one.
func (p *Pack) writeIndexes() error {
	p.compactMu.Lock()
	defer p.compactMu.Unlock()
	p.appendMu.Lock()
	q := p.sealedQ
	p.sealedQ = nil
	p.appendMu.Unlock()
	for i, pf := range q {
		if err := p.writeIndex(pf); err != nil {
			p.appendMu.Lock()
			p.sealedQ = append(p.sealedQ, q[i+1:]...)
			p.appendMu.Unlock()
			return err
		}
	}
	return nil
}

// writeIndex syncs a sealed pack and writes its index file.
func (p *Pack) writeIndex(pf *packFile) error {
	p.packMu.Lock()
	dead := pf.dead
	p.packMu.Unlock()
	if dead || pf.broken.Load() || pf.indexed.Load() {
		pf.entries = nil
		return nil
	}
	if err := fdatasync(pf.f); err != nil {
		pf.broken.Store(true)
		pf.entries = nil
		return fmt.Errorf("replica: pack store: sync %s: %w", pf.path, err)
	}
	b := encodeIndex(pf.num, pf.size.Load(), pf.entries)
	tmp := filepath.Join(p.tmp, packName(pf.num, ".idx"))
	os.Remove(tmp)
	if err := writeFileSync(tmp, b); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("replica: pack store: write index: %w", err)
	}
	if err := os.Rename(tmp, filepath.Join(p.packDir, packName(pf.num, ".idx"))); err != nil {
		return fmt.Errorf("replica: pack store: write index: %w", err)
	}
	if err := syncDir(p.packDir); err != nil {
		return fmt.Errorf("replica: pack store: write index: %w", err)
	}
	pf.indexed.Store(true)
	pf.entries = nil
	return nil
}

// threshold is the live fraction under which a pack is compacted.
func (p *Pack) threshold() float64 {
	if p.opts.CompactBelow > 0 {
		return p.opts.CompactBelow
	}
	return packDefaultLive
}

// Compact compacts, one after the other, every sealed pack whose live
// fraction is below the threshold (PackOptions.CompactBelow, or 0.5 when
// background compaction is off) and returns how many it compacted. It runs
// in the background by itself; calling it waits for a compaction in
// progress. Reads and writes go on meanwhile. Close waits for a Compact
// in progress (cancel ctx to stop it; it is finished at the next open).
func (p *Pack) Compact(ctx context.Context) (int, error) {
	if err := p.enter(ctx); err != nil {
		return 0, err
	}
	defer p.leave()
	p.compactMu.Lock()
	defer p.compactMu.Unlock()
	n := 0
	for {
		if err := ctx.Err(); err != nil {
			return n, err
		}
		// A compaction a failure cut short comes first: until it is done,
		// its pack's stale copies must not outlive their tombstones.
		pf, err := p.markedPack()
		if err != nil {
			return n, err
		}
		if pf == nil {
			pf = p.compactionCandidate()
		}
		if pf == nil {
			return n, nil
		}
		if err := p.compactPack(ctx, pf); err != nil {
			return n, err
		}
		n++
	}
}

// compactionCandidate returns the sealed pack with the lowest live
// fraction under the threshold, or nil.
func (p *Pack) compactionCandidate() *packFile {
	p.packMu.Lock()
	defer p.packMu.Unlock()
	var best *packFile
	var bestFrac float64
	for _, pf := range p.packs {
		if !pf.sealed.Load() || pf.dead || pf.puts > 0 {
			continue // its live bytes are not all counted yet
		}
		size, live := pf.size.Load(), pf.live.Load()
		frac := 0.0
		if size > 0 {
			frac = float64(live) / float64(size)
		}
		if live > 0 && frac >= p.threshold() {
			continue
		}
		if best == nil || frac < bestFrac {
			best, bestFrac = pf, frac
		}
	}
	return best
}

// markedPack returns the pack the COMPACTING file names, or nil.
func (p *Pack) markedPack() (*packFile, error) {
	b, err := os.ReadFile(filepath.Join(p.dir, packMarkerName))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("replica: pack store: %w", err)
	}
	n, perr := strconv.ParseUint(strings.TrimSpace(string(b)), 10, 32)
	var pf *packFile
	if perr == nil {
		pf = p.packOf(uint32(n))
	}
	if pf == nil {
		// Done but for removing the file, or garbage (the marker is written
		// by rename, so never partly).
		if err := p.removeMarker(); err != nil {
			return nil, err
		}
	}
	return pf, nil
}

// finishCompaction finishes, when the store is opened, a compaction a crash
// interrupted.
func (p *Pack) finishCompaction(ctx context.Context) error {
	pf, err := p.markedPack()
	if err != nil || pf == nil {
		return err
	}
	p.log.Info("finishing an interrupted compaction", "pack", pf.path)
	p.compactMu.Lock()
	defer p.compactMu.Unlock()
	return p.compactPack(ctx, pf)
}

func (p *Pack) removeMarker() error {
	err := os.Remove(filepath.Join(p.dir, packMarkerName))
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("replica: pack store: %w", err)
	}
	if err := syncDir(p.dir); err != nil {
		return fmt.Errorf("replica: pack store: %w", err)
	}
	return nil
}

// compactPack empties the sealed pack pf into the active pack and removes
// it. The caller holds compactMu.
//
// Steps, each safe to interrupt: (1) the COMPACTING file names pf; (2) each
// live record is copied, and the index pointed at the copy, under its
// shard's lock, so that a Delete either comes first (and the record is not
// copied) or after (and its tombstone follows the copy); a tombstone that
// still hides a record in another pack is copied too, unless its chunk was
// stored again since; (3) a sync makes every copy durable; (4) pf is
// removed, then the COMPACTING file. Until (4), replaying the packs puts
// every chunk in pf or in its copy (later in the replay, so it wins).
func (p *Pack) compactPack(ctx context.Context, pf *packFile) error {
	p.waitPuts(pf)
	entries, err := p.packEntries(pf)
	if err != nil {
		return err
	}
	if !p.needsCopies(pf, entries) {
		// Nothing to copy: removing the pack is one unlink, safe without
		// the COMPACTING file (and possible on a full disk). A record the
		// index stopped pointing at never becomes live again, and a
		// tombstone that need not be carried never needs to be again.
		return p.removePack(pf, 0)
	}
	if err := writeFileSync(filepath.Join(p.tmp, packMarkerName), []byte(strconv.FormatUint(uint64(pf.num), 10))); err != nil {
		os.Remove(filepath.Join(p.tmp, packMarkerName))
		return noSpace(fmt.Errorf("replica: pack store: compaction marker: %w", err))
	}
	if err := os.Rename(filepath.Join(p.tmp, packMarkerName), filepath.Join(p.dir, packMarkerName)); err != nil {
		return fmt.Errorf("replica: pack store: compaction marker: %w", err)
	}
	if err := syncDir(p.dir); err != nil {
		return fmt.Errorf("replica: pack store: compaction marker: %w", err)
	}
	type moved struct {
		id       chunker.ID
		from, to packLoc
	}
	var copies []moved
	// undo points the index back at pf when the copies could not be made
	// durable: pf stays, and so does the COMPACTING file.
	undo := func() {
		for _, m := range copies {
			sh := p.shard(m.id)
			sh.mu.Lock()
			if cur, ok := sh.index[m.id]; ok && cur == m.to {
				sh.index[m.id] = m.from
				pf.live.Add(int64(m.to.len))
				if to := p.packOf(m.to.pack); to != nil {
					to.live.Add(-int64(m.to.len))
				}
			}
			sh.mu.Unlock()
		}
	}
	var buf []byte
	var copied int64
	for _, e := range entries {
		if err := ctx.Err(); err != nil {
			return errors.Join(err, p.settle(undo))
		}
		from := packLoc{pack: pf.num, off: e.off, len: e.len}
		sh := p.shard(e.id)
		if e.kind == recTomb {
			if e.shadow == pf.num || p.packOf(e.shadow) == nil {
				continue // the record it hides is gone
			}
			sh.mu.Lock()
			_, live := sh.index[e.id]
			_, pending := sh.pending[e.id]
			if !live && !pending {
				_, _, err = p.appendTombstone(e.id, e.shadow)
			}
			sh.mu.Unlock()
			if err != nil {
				return errors.Join(err, p.settle(undo))
			}
			continue
		}
		sh.mu.RLock()
		cur, ok := sh.index[e.id]
		sh.mu.RUnlock()
		if !ok || cur != from {
			continue // deleted, or stored again elsewhere
		}
		if cap(buf) < int(e.len) {
			buf = make([]byte, e.len)
		}
		b := buf[:e.len]
		_, corrupt, err := readRecord(pf.f, b, from, e.id)
		if err != nil {
			return errors.Join(fmt.Errorf("replica: pack store: compaction: read %s at %d: %w", pf.path, e.off, err), p.settle(undo))
		}
		if corrupt != nil {
			p.quarantineRecord(e.id, from, append([]byte(nil), b...), corrupt)
			continue
		}
		sh.mu.Lock()
		if cur, ok := sh.index[e.id]; ok && cur == from {
			var to packLoc
			to, _, err = p.appendCopy(b)
			if err == nil {
				sh.index[e.id] = to
				copies = append(copies, moved{e.id, from, to})
				pf.live.Add(-int64(e.len))
				if dst := p.packOf(to.pack); dst != nil {
					dst.live.Add(int64(e.len))
				}
				copied += int64(e.len)
			}
		}
		sh.mu.Unlock()
		if err != nil {
			return errors.Join(err, p.settle(undo))
		}
	}
	if err := p.barrier(); err != nil {
		undo()
		return fmt.Errorf("replica: pack store: compaction of %s: %w", pf.path, err)
	}
	// Every live record of pf has a durable copy the index points at.
	return p.removePack(pf, copied)
}

// needsCopies reports whether compacting pf has anything to copy: a live
// record, or a tombstone that still hides a record in another pack.
func (p *Pack) needsCopies(pf *packFile, entries []packEntry) bool {
	for _, e := range entries {
		sh := p.shard(e.id)
		sh.mu.RLock()
		cur, live := sh.index[e.id]
		_, pending := sh.pending[e.id]
		sh.mu.RUnlock()
		switch {
		case e.kind == recChunk && live && cur == (packLoc{pack: pf.num, off: e.off, len: e.len}):
			return true
		case e.kind == recTomb && e.shadow != pf.num && !live && !pending && p.packOf(e.shadow) != nil:
			return true
		}
	}
	return false
}

// removePack removes a compacted pack, then the COMPACTING file.
func (p *Pack) removePack(pf *packFile, copied int64) error {
	p.packMu.Lock()
	delete(p.packs, pf.num)
	pf.dead = true
	if pf.refs == 0 {
		pf.f.Close()
	}
	p.packMu.Unlock()
	for _, ext := range []string{".pack", ".idx"} {
		if err := os.Remove(filepath.Join(p.packDir, packName(pf.num, ext))); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("replica: pack store: %w", err)
		}
	}
	if err := syncDir(p.packDir); err != nil {
		return fmt.Errorf("replica: pack store: %w", err)
	}
	if err := p.removeMarker(); err != nil {
		return err
	}
	p.stats.compactions.Add(1)
	p.stats.copiedBytes.Add(copied)
	p.log.Info("compacted a pack", "pack", pf.path, "size", pf.size.Load(), "copied", copied)
	return nil
}

// settle ends a compaction cut short: the copies made so far are kept if
// they can be made durable (the pack stays, with the COMPACTING file, and
// the compaction is finished later), else undone.
func (p *Pack) settle(undo func()) error {
	if err := p.barrier(); err != nil {
		undo()
		return err
	}
	return nil
}

// packEntries lists the records of a sealed pack, from its index file or
// by scanning it.
func (p *Pack) packEntries(pf *packFile) ([]packEntry, error) {
	if pf.indexed.Load() {
		b, err := os.ReadFile(filepath.Join(p.packDir, packName(pf.num, ".idx")))
		if err == nil {
			if entries, err := decodeIndex(b, pf.num, pf.size.Load()); err == nil {
				return entries, nil
			}
		}
	}
	res, err := scanPack(pf.f, pf.size.Load())
	if err != nil {
		return nil, fmt.Errorf("replica: pack store: scan %s: %w", pf.path, err)
	}
	return res.entries, nil
}
