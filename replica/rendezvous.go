package replica

import (
	"encoding/binary"
	"hash/fnv"
	"slices"

	"github.com/ddstore/ddstore/chunker"
)

// Rank orders peers for a chunk by rendezvous (highest random weight)
// hashing: each chunk gets its own stable order of nodes, so copies spread
// evenly and adding or removing a node moves few of them. It returns a new
// slice and leaves peers as it is.
func Rank(id chunker.ID, peers []Peer) []Peer {
	key := binary.BigEndian.Uint64(id[:8]) // chunk IDs are already uniform
	out := slices.Clone(peers)
	score := func(p Peer) uint64 {
		h := fnv.New64a()
		h.Write([]byte(p.ID))
		return mix64(key ^ h.Sum64())
	}
	slices.SortStableFunc(out, func(a, b Peer) int {
		sa, sb := score(a), score(b)
		switch {
		case sa > sb:
			return -1
		case sa < sb:
			return 1
		}
		return 0
	})
	return out
}

// mix64 is the splitmix64 finalizer.
func mix64(x uint64) uint64 {
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	x ^= x >> 31
	return x
}
