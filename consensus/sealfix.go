package consensus

import (
	"github.com/hashicorp/raft-wal/fs"
	"github.com/hashicorp/raft-wal/segment"
	"github.com/hashicorp/raft-wal/types"
)

// sealFixFiler works around a raft-wal v0.4.0 bug (hashicorp/raft-wal#31,
// fixed by #33 after the last release, which the module proxy does not
// serve): clearing a suffix of the log (what Raft does when a new leader's
// log disagrees with this node's) marks the old tail segment sealed without
// writing the index block a sealed segment is read through. The running
// process reads it through its in-memory index, but every later open fails
// with "sealed segment has no index block" and hashicorp/raft panics: a node
// stopped at any time after such a truncation could never start again.
// Such a segment is opened here the way raft-wal recovers an unsealed tail,
// by scanning its frames; the WAL reads from it only the entries up to the
// segment's recorded MaxIndex, so those the truncation cleared stay unread.
type sealFixFiler struct {
	*segment.Filer
}

func newSealFixFiler(dir string) sealFixFiler {
	return sealFixFiler{segment.NewFiler(dir, fs.New())}
}

// Open opens a sealed segment for reading.
func (f sealFixFiler) Open(info types.SegmentInfo) (types.SegmentReader, error) {
	if !info.SealTime.IsZero() && info.IndexStart == 0 {
		return f.Filer.RecoverTail(info)
	}
	return f.Filer.Open(info)
}
