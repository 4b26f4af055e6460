package replica

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"

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
	isChunk := h.kind == recChunk
	p.appendMu.Lock()
	defer p.appendMu.Unlock()
	a := p.active
	full := a != nil && a.size.Load() > 0 && a.size.Load()+n > p.opts.PackSize
	if !isChunk {
		// Tombstones go in the active pack's reserve, past PackSize if
		// need be (the reserve outlives a reopen: blocks allocated past
		// the end of a file stay allocated).
		full = a != nil && a.size.Load()+n > p.opts.PackSize+packReserve
	}
	if a == nil || a.broken.Load() || full {
		if a, err = p.rollLocked(); err != nil {
			return packLoc{}, nil, nil, err
		}
	}
	off := a.size.Load()
	if isChunk {
		if err := a.reserve(off + n + packReserve); err != nil {
			return packLoc{}, nil, nil, noSpace(fmt.Errorf("replica: pack store: write %s: %w", a.path, err))
		}
	}
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
	pf := &packFile{num: num, path: path, f: f}
	// A new pack is used only with its reserve: otherwise the old one stays
	// active, with the room its own reserve keeps for tombstones.
	err = pf.reserve(packReserve)
	if err == nil {
		err = syncDir(p.packDir)
	}
	if err != nil {
		f.Close()
		os.Remove(path)
		return nil, noSpace(fmt.Errorf("replica: pack store: new pack: %w", err))
	}
	p.nextNum++
	p.packMu.Lock()
	p.packs[num] = pf
	p.packMu.Unlock()
	if old := p.active; old != nil {
		old.sealed.Store(true)
		old.unreserve()
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

// packReserve is the room kept allocated past the end of the active pack,
// so that Deletes (tombstones) still work on a full disk and garbage
// collection can give space back: 256 KiB, about 4,000 tombstones.
const packReserve = 256 << 10

// allocStep is how far past what it needs reserve allocates when it can.
const allocStep = 4 << 20

// reserve makes sure the pack's blocks are allocated up to end (fallocate,
// keeping the file's size), so that writes below end cannot fail for want
// of space. On a file system that cannot preallocate it does nothing.
// Guarded by appendMu.
//
// It allocates allocStep more than asked when it can, so that a run of small
// records costs one fallocate, not one each.
func (pf *packFile) reserve(end int64) error {
	if end <= pf.allocEnd || pf.noAlloc {
		return nil
	}
	off := pf.size.Load()
	err := unix.Fallocate(int(pf.f.Fd()), unix.FALLOC_FL_KEEP_SIZE, off, end+allocStep-off)
	if err == nil {
		end += allocStep
	} else if errors.Is(err, unix.ENOSPC) {
		err = unix.Fallocate(int(pf.f.Fd()), unix.FALLOC_FL_KEEP_SIZE, off, end-off)
	}
	switch {
	case errors.Is(err, unix.EOPNOTSUPP) || errors.Is(err, unix.ENOSYS):
		pf.noAlloc = true
		return nil
	case err != nil:
		return err
	}
	pf.allocEnd = end
	return nil
}

// unreserve gives back what was allocated past the end of a sealed pack.
func (pf *packFile) unreserve() {
	size := pf.size.Load()
	if pf.allocEnd > size {
		unix.Fallocate(int(pf.f.Fd()), unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, size, pf.allocEnd-size)
	}
	pf.allocEnd = size
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
