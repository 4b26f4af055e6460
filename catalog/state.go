package catalog

import (
	"bytes"
	"slices"
	"strings"

	"github.com/ddstore/ddstore/chunker"
	pb "github.com/ddstore/ddstore/proto/ddstore/v1"
)

// State is the catalog held in memory. Manifests and node records in it are
// never modified after they are stored (a change replaces them), so callers
// may keep pointers to them but must not modify them. A State is not safe for
// concurrent use; the FSM guards it.
type State struct {
	files map[string]*pb.FileManifest
	names []string // sorted, for listing
	nodes map[string]*pb.NodeInfo
	refs  map[chunker.ID]uint32 // files referring to each chunk (a chunk listed twice in one file counts once)
	bytes uint64                // sum of file sizes
	// collecting holds chunks marked for garbage collection: no file refers
	// to them and none may be committed until they are forgotten.
	collecting map[chunker.ID]struct{}
	// collections counts finished collections: ForgetChunks commands
	// naming a chunk (sent after its copies were deleted).
	collections uint64
	// unref holds, for chunks some store held while no file referred to
	// them, when that was first seen (Unix nanoseconds, stamped by the
	// leader that proposed MarkUnreferenced): the garbage-collection clock.
	// A chunk leaves it when a file refers to it or it is collected.
	unref map[chunker.ID]int64
	// applied holds the request ids of the latest commits that applied
	// (at most maxApplied; order lists them oldest first) with the version
	// each created: a commit is applied at most once, however often it is
	// retried.
	applied map[string]*pb.FileVersion
	order   []string
}

// maxApplied bounds the commits whose request ids the catalog remembers: a
// retry must come within that many commits of its first attempt (32,768:
// over ten seconds at the fastest small-file rate measured, about 6 MiB).
const maxApplied = 1 << 15

// maxRequestID bounds a request id's length.
const maxRequestID = 64

// remember records that the commit with request id id created version v,
// forgetting the oldest beyond maxApplied.
func (s *State) remember(id string, v *pb.FileVersion) {
	if id == "" {
		return
	}
	if _, ok := s.applied[id]; !ok {
		s.order = append(s.order, id)
	}
	s.applied[id] = v
	if len(s.order) > maxApplied {
		delete(s.applied, s.order[0])
		s.order = s.order[1:]
	}
}

// NewState returns an empty catalog.
func NewState() *State {
	return &State{
		files: map[string]*pb.FileManifest{},
		nodes: map[string]*pb.NodeInfo{},
		refs:  map[chunker.ID]uint32{},

		collecting: map[chunker.ID]struct{}{},
		unref:      map[chunker.ID]int64{},
		applied:    map[string]*pb.FileVersion{},
	}
}

// File returns the manifest of the named file.
func (s *State) File(name string) (*pb.FileManifest, bool) {
	m, ok := s.files[name]
	return m, ok
}

// Query selects files to list. Zero fields select everything.
type Query struct {
	Prefix     string
	StartAfter string // only names after this one
	Limit      int    // at most this many; 0 means no limit
	DateFrom   string // YYYY-MM-DD, inclusive
	DateTo     string // YYYY-MM-DD, inclusive
	// Time, if set, selects files whose time range (FileRange) overlaps
	// it, as well as the days above.
	Time *Range
}

// List returns the files q selects in name order (those whose time range
// overlaps the query's days and time range, both inclusive), and whether more follow
// beyond the limit.
func (s *State) List(q Query) (files []*pb.FileManifest, truncated bool) {
	from := q.Prefix
	if q.StartAfter >= from {
		from = q.StartAfter + "\x00"
	}
	i, _ := slices.BinarySearch(s.names, from)
	want := Everything
	if q.Time != nil {
		want = *q.Time
	}
	if q.DateFrom != "" {
		if d, err := DayRange(q.DateFrom); err == nil {
			want.From = max(want.From, d.From)
		}
	}
	if q.DateTo != "" {
		if d, err := DayRange(q.DateTo); err == nil {
			want.To = min(want.To, d.To)
		}
	}
	for ; i < len(s.names); i++ {
		name := s.names[i]
		if !strings.HasPrefix(name, q.Prefix) {
			break
		}
		m := s.files[name]
		if want != Everything && !FileRange(m).Overlaps(want) {
			continue
		}
		if q.Limit > 0 && len(files) == q.Limit {
			return files, true
		}
		files = append(files, m)
	}
	return files, false
}

// Node returns the addresses registered for a node.
func (s *State) Node(id string) (*pb.NodeInfo, bool) {
	n, ok := s.nodes[id]
	return n, ok
}

// Nodes returns every registered node, sorted by ID.
func (s *State) Nodes() []*pb.NodeInfo {
	out := make([]*pb.NodeInfo, 0, len(s.nodes))
	for _, n := range s.nodes {
		out = append(out, n)
	}
	slices.SortFunc(out, func(a, b *pb.NodeInfo) int { return strings.Compare(a.GetId(), b.GetId()) })
	return out
}

// Refs returns how many files refer to the chunk.
func (s *State) Refs(id chunker.ID) int { return int(s.refs[id]) }

// Referenced calls fn for every chunk some file refers to, until fn returns
// false.
func (s *State) Referenced(fn func(id chunker.ID) bool) {
	for id := range s.refs {
		if !fn(id) {
			return
		}
	}
}

// Collecting returns the chunks marked for garbage collection, sorted.
func (s *State) Collecting() []chunker.ID {
	out := make([]chunker.ID, 0, len(s.collecting))
	for id := range s.collecting {
		out = append(out, id)
	}
	slices.SortFunc(out, func(a, b chunker.ID) int { return bytes.Compare(a[:], b[:]) })
	return out
}

// IsCollecting reports whether the chunk is marked for garbage collection.
func (s *State) IsCollecting(id chunker.ID) bool {
	_, ok := s.collecting[id]
	return ok
}

// UnreferencedSince returns when the chunk was first seen unreferenced
// (Unix nanoseconds), if its garbage-collection clock runs.
func (s *State) UnreferencedSince(id chunker.ID) (int64, bool) {
	t, ok := s.unref[id]
	return t, ok
}

// Unreferenced calls fn for every chunk whose garbage-collection clock
// runs, with the time it started, until fn returns false.
func (s *State) Unreferenced(fn func(id chunker.ID, since int64) bool) {
	for id, t := range s.unref {
		if !fn(id, t) {
			return
		}
	}
}

// Collections returns the number of finished garbage collections. A commit
// reads it before checking that its chunks are stored (see PutFile's
// collections_seen).
func (s *State) Collections() uint64 { return s.collections }

// Chunks returns how many distinct chunks the files refer to.
func (s *State) Chunks() int { return len(s.refs) }

// Totals returns the number of files and the sum of their sizes.
func (s *State) Totals() (files, bytes uint64) { return uint64(len(s.files)), s.bytes }

// put stores m under its name, replacing any file of that name.
func (s *State) put(m *pb.FileManifest) {
	if old, ok := s.files[m.GetName()]; ok {
		s.remove(old)
	}
	s.files[m.GetName()] = m
	i, _ := slices.BinarySearch(s.names, m.GetName())
	s.names = slices.Insert(s.names, i, m.GetName())
	s.bytes += m.GetSize()
	for _, id := range distinctChunks(m) {
		s.refs[id]++
		delete(s.unref, id) // referenced: its clock stops
	}
}

// remove drops a stored file and its chunk references.
func (s *State) remove(m *pb.FileManifest) {
	delete(s.files, m.GetName())
	if i, ok := slices.BinarySearch(s.names, m.GetName()); ok {
		s.names = slices.Delete(s.names, i, i+1)
	}
	s.bytes -= m.GetSize()
	for _, id := range distinctChunks(m) {
		if s.refs[id] <= 1 {
			delete(s.refs, id)
		} else {
			s.refs[id]--
		}
	}
}

// distinctChunks returns the IDs m refers to, each once. Manifests are
// validated before they are stored, so every ID has the right length.
func distinctChunks(m *pb.FileManifest) []chunker.ID {
	seen := make(map[chunker.ID]struct{}, len(m.GetChunks()))
	out := make([]chunker.ID, 0, len(m.GetChunks()))
	for _, c := range m.GetChunks() {
		id := chunker.ID(c.GetId())
		if _, dup := seen[id]; !dup {
			seen[id] = struct{}{}
			out = append(out, id)
		}
	}
	return out
}
