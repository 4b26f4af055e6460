package replica

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/ddstore/ddstore/chunker"
)

// appendChunk appends c's record and returns its location, its pack (with
// one put registered on it, to be ended with endPut once the index says
// where the record is) and the round that makes it durable.
func (p *Pack) appendChunk(c chunker.Encoded) (packLoc, *packFile, *syncRound, error) {
	var hdr [packHdrLen]byte
	recordHeader(hdr[:], recChunk, c.Codec, c.ID, c.RawSize, c.Data, 0)
	return p.appendRecord(hdr[:], c.Data, true)
}

// appendTombstone appends a tombstone for id, which deletes the record in
// pack shadow.
func (p *Pack) appendTombstone(id chunker.ID, shadow uint32) (packLoc, *syncRound, error) {
	var hdr [packHdrLen]byte
	recordHeader(hdr[:], recTomb, chunker.Raw, id, 0, nil, shadow)
	loc, _, r, err := p.appendRecord(hdr[:], nil, false)
	return loc, r, err
}

// appendCopy appends a whole record as it is (compaction).
func (p *Pack) appendCopy(rec []byte) (packLoc, *syncRound, error) {
	loc, _, r, err := p.appendRecord(rec[:packHdrLen], rec[packHdrLen:], false)
	return loc, r, err
}

// appendRecord writes a record (header, then data) at the end of the active
// pack, starting a new pack first if it would grow past PackSize. A write
// that fails is cut off again, so that the pack never holds a partial record
// while the store is open. put registers a Put on the pack (see endPut).
func (p *Pack) appendRecord(hdr, data []byte, put bool) (packLoc, *packFile, *syncRound, error) {
	n := int64(len(hdr) + len(data))
	h, err := parseHeader(hdr)
	if err != nil {
		return packLoc{}, nil, nil, err
	}
	p.appendMu.Lock()
	defer p.appendMu.Unlock()
	a := p.active
	if a == nil || a.broken.Load() || (a.size.Load() > 0 && a.size.Load()+n > p.opts.PackSize) {
		if a, err = p.rollLocked(); err != nil {
			return packLoc{}, nil, nil, err
		}
	}
	off := a.size.Load()
	_, err = a.f.WriteAt(hdr, off)
	if err == nil && len(data) > 0 {
		_, err = a.f.WriteAt(data, off+int64(len(hdr)))
	}
	if err != nil {
		if terr := a.f.Truncate(off); terr != nil {
			// The pack may end with a partial record: write no more to it;
			// the next open cuts it off.
			a.broken.Store(true)
			p.log.Error("cannot cut a failed write off a pack; starting a new one", "pack", a.path, "err", terr)
		}
		return packLoc{}, nil, nil, noSpace(fmt.Errorf("replica: pack store: write %s: %w", a.path, err))
	}
	a.size.Store(off + n)
	loc := packLoc{pack: a.num, off: uint32(off), len: uint32(n)}
	a.entries = append(a.entries, packEntry{kind: h.kind, id: h.id, off: loc.off, len: loc.len, shadow: h.shadow})
	if len(p.dirty) == 0 || p.dirty[len(p.dirty)-1] != a {
		p.dirty = append(p.dirty, a)
	}
	if put {
		p.packMu.Lock()
		a.puts++
		p.packMu.Unlock()
	}
	p.kick(p.kickSync)
	return loc, a, p.round, nil
}

// endPut ends a Put registered on pf by appendRecord.
func (p *Pack) endPut(pf *packFile) {
	p.packMu.Lock()
	defer p.packMu.Unlock()
	pf.puts--
	if pf.puts == 0 {
		p.putsDone.Broadcast()
	}
}

// waitPuts waits until no Put is between appending a record to pf and
// recording it in the index.
func (p *Pack) waitPuts(pf *packFile) {
	p.packMu.Lock()
	defer p.packMu.Unlock()
	for pf.puts > 0 {
		p.putsDone.Wait()
	}
}

// rollLocked seals the active pack and starts a new one. The new file's
// directory entry is synced before any record in it can be acknowledged.
func (p *Pack) rollLocked() (*packFile, error) {
	num := p.nextNum
	path := filepath.Join(p.packDir, packName(num, ".pack"))
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return nil, noSpace(fmt.Errorf("replica: pack store: new pack: %w", err))
	}
	if err := syncDir(p.packDir); err != nil {
		f.Close()
		os.Remove(path)
		return nil, noSpace(fmt.Errorf("replica: pack store: new pack: %w", err))
	}
	p.nextNum++
	pf := &packFile{num: num, path: path, f: f}
	p.packMu.Lock()
	p.packs[num] = pf
	p.packMu.Unlock()
	if old := p.active; old != nil {
		old.sealed.Store(true)
		if !old.broken.Load() {
			p.sealedQ = append(p.sealedQ, old)
			p.kick(p.kickMaint)
		} else {
			old.entries = nil
		}
	}
	p.active = pf
	return pf, nil
}

// syncLoop is the group committer: for each round it takes the packs
// written since the previous one, starts a new round for the records that
// arrive meanwhile, syncs them and closes the round.
func (p *Pack) syncLoop() {
	defer close(p.syncDone)
	for {
		select {
		case <-p.kickSync:
		case <-p.stopSync:
			return
		}
		p.appendMu.Lock()
		r, files := p.round, p.dirty
		p.round, p.dirty, p.syncing = newRound(), nil, r
		p.appendMu.Unlock()
		for _, pf := range files {
			p.stats.syncs.Add(1)
			if err := fdatasync(pf.f); err != nil {
				// After a failed fdatasync the kernel may have dropped the
				// pages: what this round wrote is not known durable, and a
				// later sync of the same file could report success anyway.
				// Start a new pack; the next open scans this one.
				pf.broken.Store(true)
				if r.err == nil {
					r.err = noSpace(fmt.Errorf("replica: pack store: sync %s: %w", pf.path, err))
				}
			}
		}
		close(r.done)
		p.appendMu.Lock()
		p.syncing = nil
		p.appendMu.Unlock()
	}
}

// barrier returns once every record appended before it was called is
// durable (or the sync failed).
func (p *Pack) barrier() error {
	p.appendMu.Lock()
	r := p.round
	if len(p.dirty) == 0 {
		// Nothing waits for the next round: wait for the one being synced.
		r = p.syncing
	}
	p.appendMu.Unlock()
	if r == nil {
		return nil
	}
	p.kick(p.kickSync)
	<-r.done
	return r.err
}
