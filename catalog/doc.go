// Package catalog is the cluster's replicated metadata: which files exist,
// their ordered chunk lists, sizes, dates and hashes, the chunk reference
// counts, and the nodes' addresses. Raft carries it (see FSM); chunk bytes
// never pass through it.
//
// The logic that decides is separate from the I/O: Apply is a deterministic
// function of a State and a Command, with no clock, randomness or I/O, so
// every node that applies the same log holds the same catalog. The FSM wraps
// it for hashicorp/raft with snapshots.
package catalog
