package server

import (
	"sync"
	"time"

	"github.com/ddstore/ddstore/chunker"
)

// pins are the chunks uploads in progress through this node rely on: chunks
// they stored, and chunks a MissingChunks answer told the client were
// present (so it will not send them). Garbage collection spares every
// node's pins, even with gc --now, so a collection does not fail an upload
// it races; the collections count that commits check still catches what
// slips between a sweep's listing and its marks. A commit releases the pins
// of its chunks (they are referenced from then on); a pin left by an
// abandoned upload lapses after ttl.
type pins struct {
	ttl time.Duration

	mu    sync.Mutex
	until map[chunker.ID]time.Time
}

func newPins(ttl time.Duration) *pins {
	return &pins{ttl: ttl, until: map[chunker.ID]time.Time{}}
}

// add pins ids until ttl from now.
func (p *pins) add(ids ...chunker.ID) {
	t := time.Now().Add(p.ttl)
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, id := range ids {
		p.until[id] = t
	}
}

// release unpins ids.
func (p *pins) release(ids []chunker.ID) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, id := range ids {
		delete(p.until, id)
	}
}

// list returns the pinned chunks, dropping lapsed pins.
func (p *pins) list() []chunker.ID {
	now := time.Now()
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make([]chunker.ID, 0, len(p.until))
	for id, t := range p.until {
		if now.After(t) {
			delete(p.until, id)
			continue
		}
		out = append(out, id)
	}
	return out
}
