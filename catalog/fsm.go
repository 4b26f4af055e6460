package catalog

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/ddstore/ddstore/internal/blake3"
	"github.com/hashicorp/raft"
	"google.golang.org/protobuf/proto"

	"github.com/ddstore/ddstore/chunker"
	pb "github.com/ddstore/ddstore/proto/ddstore/v1"
)

// commandVersion prefixes every encoded command, so that the format can
// change without old logs being misread.
const commandVersion = 1

// EncodeCommand encodes a command for the Raft log.
func EncodeCommand(cmd *pb.Command) ([]byte, error) {
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(cmd)
	if err != nil {
		return nil, fmt.Errorf("%w: encode command: %v", ErrInvalid, err)
	}
	return append([]byte{commandVersion}, b...), nil
}

// DecodeCommand decodes a command from the Raft log.
func DecodeCommand(data []byte) (*pb.Command, error) {
	if len(data) == 0 || data[0] != commandVersion {
		return nil, fmt.Errorf("%w: unknown command format", ErrInvalid)
	}
	cmd := &pb.Command{}
	if err := proto.Unmarshal(data[1:], cmd); err != nil {
		return nil, fmt.Errorf("%w: decode command: %v", ErrInvalid, err)
	}
	return cmd, nil
}

// FSM is the catalog as a hashicorp/raft state machine. Apply returns a
// Result. Read gives callers a consistent view.
type FSM struct {
	mu      sync.RWMutex
	state   *State
	applied atomic.Uint64

	fmu        sync.Mutex
	filters    *Filters // nil: rebuild on the next call to Filters
	fpRate     float64
	filesIndex uint64 // index of the last command that changed the files (under fmu)
}

// NewFSM returns an FSM over an empty catalog.
func NewFSM() *FSM { return &FSM{state: NewState()} }

// Apply applies one committed log entry.
func (f *FSM) Apply(l *raft.Log) any {
	cmd, err := DecodeCommand(l.Data)
	f.mu.Lock()
	defer f.mu.Unlock()
	defer f.applied.Store(l.Index)
	if err != nil {
		return Result{Err: err}
	}
	res := Apply(f.state, cmd)
	if res.Err == nil {
		f.noteForFilters(l.Index, cmd, res)
	}
	return res
}

// noteForFilters keeps the Bloom filters current: a new file is added to
// them; a delete or an overwrite makes them stale (rebuilt when next asked).
func (f *FSM) noteForFilters(index uint64, cmd *pb.Command, res Result) {
	f.fmu.Lock()
	defer f.fmu.Unlock()
	switch op := cmd.GetOp().(type) {
	case *pb.Command_PutFile:
		f.filesIndex = index
		if f.filters != nil && (op.PutFile.GetOverwrite() || !f.filters.addFile(res.Manifest)) {
			f.filters = nil
		}
	case *pb.Command_DeleteFile:
		f.filesIndex = index
		f.filters = nil
	}
}

// Filters returns Bloom filters over the catalog, sized for fpRate (0: 1%),
// building them if deletes or growth made the current ones stale. Their
// Version is the index of the last command that changed the files, so it
// moves only when the filters' content may have.
func (f *FSM) Filters(fpRate float64) *Filters {
	if fpRate <= 0 {
		fpRate = 0.01
	}
	f.mu.RLock()
	defer f.mu.RUnlock()
	f.fmu.Lock()
	defer f.fmu.Unlock()
	if f.filters == nil || f.fpRate != fpRate {
		f.filters, f.fpRate = BuildFilters(f.state, f.filesIndex, fpRate), fpRate
	}
	f.filters.Version = f.filesIndex
	out := *f.filters // a copy: Apply keeps adding to the FSM's own
	out.Dates, out.Chunks, out.Names = f.filters.Dates.Copy(), f.filters.Chunks.Copy(), f.filters.Names.Copy()
	return &out
}

// FilesVersion is the Version the filters would have now: the index of the
// last command that changed the files.
func (f *FSM) FilesVersion() uint64 {
	f.fmu.Lock()
	defer f.fmu.Unlock()
	return f.filesIndex
}

// LastApplied returns the index of the last log entry applied or restored.
func (f *FSM) LastApplied() uint64 { return f.applied.Load() }

// Read calls fn with the catalog, which must not change it or keep it after
// fn returns (the manifests and node records it hands out may be kept).
func (f *FSM) Read(fn func(*State)) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	fn(f.state)
}

// Snapshot captures the catalog. Manifests are never modified in place, so
// capturing the pointers is enough; encoding happens in Persist, while Apply
// carries on.
func (f *FSM) Snapshot() (raft.FSMSnapshot, error) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return &snapshot{snap: f.state.snapshot(), applied: f.applied.Load()}, nil
}

// Restore replaces the catalog with a snapshot's. A snapshot that does not
// decode or check out (see FromSnapshot) is an error wrapping ErrInvalid,
// and the catalog is left as it was.
func (f *FSM) Restore(rc io.ReadCloser) error {
	defer rc.Close()
	s, applied, err := readSnapshot(rc)
	if err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.state = s
	f.applied.Store(applied)
	f.fmu.Lock()
	f.filters, f.filesIndex = nil, applied
	f.fmu.Unlock()
	return nil
}

// snapshot returns the state in canonical order.
func (s *State) snapshot() *pb.CatalogSnapshot {
	snap := &pb.CatalogSnapshot{Files: make([]*pb.FileManifest, 0, len(s.names)), Nodes: s.Nodes(), Collections: s.collections}
	for _, id := range s.Collecting() {
		snap.Collecting = append(snap.Collecting, id[:])
	}
	for id, t := range s.unref {
		snap.Unreferenced = append(snap.Unreferenced, &pb.UnreferencedChunk{Id: id[:], SinceUnixNano: t})
	}
	slices.SortFunc(snap.Unreferenced, func(a, b *pb.UnreferencedChunk) int { return bytes.Compare(a.GetId(), b.GetId()) })
	for _, name := range s.names {
		snap.Files = append(snap.Files, s.files[name])
	}
	for _, id := range s.order {
		snap.Applied = append(snap.Applied, &pb.AppliedCommit{RequestId: []byte(id), Version: s.applied[id]})
	}
	return snap
}

// Snapshot returns the catalog's canonical encoding: equal states give equal
// bytes.
func (s *State) Snapshot() ([]byte, error) {
	return proto.MarshalOptions{Deterministic: true}.Marshal(s.snapshot())
}

// FromSnapshot rebuilds a State from Snapshot's encoding. The snapshot may
// come from a faulty or compromised leader, so everything is checked again:
// every manifest as putFile stores it (valid, stamped with a creation time
// and a date), node records as SetNode stores them (an ID and an API
// address), chunk marks (32-byte IDs, none that a file refers to), and no
// file, node or mark twice. Any violation is an error wrapping ErrInvalid.
func FromSnapshot(data []byte) (*State, error) {
	if uint64(len(data)) > MaxSnapshotSize {
		return nil, fmt.Errorf("%w: snapshot is %d bytes; the limit is %d", ErrInvalid, len(data), uint64(MaxSnapshotSize))
	}
	snap := &pb.CatalogSnapshot{}
	if err := proto.Unmarshal(data, snap); err != nil {
		return nil, fmt.Errorf("%w: snapshot: %v", ErrInvalid, err)
	}
	s := NewState()
	for i, m := range snap.GetFiles() {
		if err := ValidateManifest(m); err != nil {
			return nil, fmt.Errorf("snapshot: file %d: %w", i, err)
		}
		switch {
		case m.GetCreatedUnixNano() <= 0:
			return nil, fmt.Errorf("%w: snapshot: file %q has no creation time", ErrInvalid, m.GetName())
		case m.GetDate() == "":
			return nil, fmt.Errorf("%w: snapshot: file %q has no date", ErrInvalid, m.GetName())
		case s.bytes+m.GetSize() < s.bytes:
			return nil, fmt.Errorf("%w: snapshot: the files' sizes overflow", ErrInvalid)
		}
		if _, dup := s.files[m.GetName()]; dup {
			return nil, fmt.Errorf("%w: snapshot holds file %q twice", ErrInvalid, m.GetName())
		}
		s.files[m.GetName()] = m
		s.names = append(s.names, m.GetName())
		s.bytes += m.GetSize()
		for _, id := range distinctChunks(m) {
			s.refs[id]++
		}
	}
	slices.SortFunc(s.names, strings.Compare)
	for i, n := range snap.GetNodes() {
		if n.GetId() == "" || n.GetApiAddr() == "" {
			return nil, fmt.Errorf("%w: snapshot: node record %d needs an ID and an API address", ErrInvalid, i)
		}
		if _, dup := s.nodes[n.GetId()]; dup {
			return nil, fmt.Errorf("%w: snapshot holds node %q twice", ErrInvalid, n.GetId())
		}
		s.nodes[n.GetId()] = n
	}
	ids, err := chunkIDs(snap.GetCollecting())
	if err != nil {
		return nil, fmt.Errorf("snapshot: %w", err)
	}
	for _, id := range ids {
		if _, dup := s.collecting[id]; dup {
			return nil, fmt.Errorf("%w: snapshot marks chunk %s twice", ErrInvalid, id)
		}
		if s.refs[id] > 0 {
			return nil, fmt.Errorf("%w: snapshot marks chunk %s for collection but a file refers to it", ErrInvalid, id)
		}
		s.collecting[id] = struct{}{}
	}
	s.collections = snap.GetCollections()
	// Snapshots from before the clock was kept have none: it starts again.
	for i, u := range snap.GetUnreferenced() {
		id, err := chunker.IDFromBytes(u.GetId())
		switch {
		case err != nil:
			return nil, fmt.Errorf("%w: snapshot: unreferenced chunk %d: %v", ErrInvalid, i, err)
		case u.GetSinceUnixNano() <= 0:
			return nil, fmt.Errorf("%w: snapshot: unreferenced chunk %s has no time", ErrInvalid, id)
		case s.refs[id] > 0:
			return nil, fmt.Errorf("%w: snapshot: chunk %s is unreferenced since %d but a file refers to it", ErrInvalid, id, u.GetSinceUnixNano())
		}
		if _, dup := s.unref[id]; dup {
			return nil, fmt.Errorf("%w: snapshot: chunk %s unreferenced twice", ErrInvalid, id)
		}
		s.unref[id] = u.GetSinceUnixNano()
	}
	// Snapshots from before request ids were kept have none.
	for i, a := range snap.GetApplied() {
		id := string(a.GetRequestId())
		switch {
		case id == "" || len(id) > maxRequestID:
			return nil, fmt.Errorf("%w: snapshot: applied commit %d has a request id of %d bytes", ErrInvalid, i, len(id))
		case !a.GetVersion().GetExists() || a.GetVersion().GetCreatedUnixNano() <= 0:
			return nil, fmt.Errorf("%w: snapshot: applied commit %d names no version", ErrInvalid, i)
		}
		if _, dup := s.applied[id]; dup {
			return nil, fmt.Errorf("%w: snapshot: request id %x applied twice", ErrInvalid, id)
		}
		s.remember(id, a.GetVersion())
	}
	return s, nil
}

// Snapshot file layout: magic, applied index, payload length, BLAKE3 of the
// payload, payload (a CatalogSnapshot).
var snapMagic = [8]byte{'D', 'D', 'C', 'A', 'T', 'v', '1', '\n'}

const snapHeaderLen = 8 + 8 + 8 + 32

// MaxSnapshotSize bounds a snapshot's payload. Reading one allocates as the
// bytes arrive, not as the header claims.
const MaxSnapshotSize = 1 << 34

type snapshot struct {
	snap    *pb.CatalogSnapshot
	applied uint64
}

func (s *snapshot) Persist(sink raft.SnapshotSink) error {
	payload, err := proto.MarshalOptions{Deterministic: true}.Marshal(s.snap)
	if err == nil {
		hdr := make([]byte, 0, snapHeaderLen)
		hdr = append(hdr, snapMagic[:]...)
		hdr = binary.BigEndian.AppendUint64(hdr, s.applied)
		hdr = binary.BigEndian.AppendUint64(hdr, uint64(len(payload)))
		sum := blake3.Sum256(payload)
		hdr = append(hdr, sum[:]...)
		if _, err = sink.Write(hdr); err == nil {
			_, err = sink.Write(payload)
		}
	}
	if err != nil {
		sink.Cancel()
		return fmt.Errorf("catalog: persist snapshot: %w", err)
	}
	return sink.Close()
}

func (s *snapshot) Release() {}

// readSnapshot reads what Persist wrote: nothing may be missing, altered or
// follow the payload.
func readSnapshot(r io.Reader) (*State, uint64, error) {
	hdr := make([]byte, snapHeaderLen)
	if _, err := io.ReadFull(r, hdr); err != nil {
		return nil, 0, fmt.Errorf("%w: snapshot header: %v", ErrInvalid, err)
	}
	if !bytes.Equal(hdr[:8], snapMagic[:]) {
		return nil, 0, fmt.Errorf("%w: not a catalog snapshot", ErrInvalid)
	}
	applied := binary.BigEndian.Uint64(hdr[8:])
	n := binary.BigEndian.Uint64(hdr[16:])
	if n > MaxSnapshotSize {
		return nil, 0, fmt.Errorf("%w: snapshot claims %d bytes; the limit is %d", ErrInvalid, n, uint64(MaxSnapshotSize))
	}
	// The buffer grows as the bytes arrive (at most doubling, never beyond
	// n), so a header claiming more than follows costs nothing.
	payload := make([]byte, 0, min(n, 1<<20))
	for uint64(len(payload)) < n {
		if len(payload) == cap(payload) {
			payload = slices.Grow(payload, int(min(n-uint64(len(payload)), uint64(len(payload)))))
		}
		k, err := io.ReadFull(r, payload[len(payload):min(uint64(cap(payload)), n)])
		payload = payload[:len(payload)+k]
		if err != nil {
			return nil, 0, fmt.Errorf("%w: snapshot truncated: %d of %d bytes: %v", ErrInvalid, len(payload), n, err)
		}
	}
	if k, _ := io.ReadFull(r, make([]byte, 1)); k != 0 {
		return nil, 0, fmt.Errorf("%w: snapshot followed by stray bytes", ErrInvalid)
	}
	if sum := blake3.Sum256(payload); !bytes.Equal(sum[:], hdr[24:]) {
		return nil, 0, fmt.Errorf("%w: snapshot checksum mismatch", ErrInvalid)
	}
	s, err := FromSnapshot(payload)
	if err != nil {
		return nil, 0, err
	}
	return s, applied, nil
}
