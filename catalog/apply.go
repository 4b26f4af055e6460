package catalog

import (
	"bytes"
	"fmt"
	"maps"
	"time"

	"github.com/ddstore/ddstore/chunker"
	pb "github.com/ddstore/ddstore/proto/ddstore/v1"
	"google.golang.org/protobuf/proto"
)

// Result is what applying a command returns to the node that proposed it.
type Result struct {
	Manifest *pb.FileManifest // the file as stored (PutFile) or removed (DeleteFile)
	IDs      []chunker.ID     // CollectChunks: the chunks it marked
	Err      error            // why the command changed nothing
}

// Apply applies cmd to s and says what happened. It is deterministic: the
// outcome depends only on s and cmd (the proposer stamps the creation time
// into the command). A command that fails leaves s unchanged.
func Apply(s *State, cmd *pb.Command) Result {
	switch op := cmd.GetOp().(type) {
	case *pb.Command_PutFile:
		return putFile(s, op.PutFile)
	case *pb.Command_DeleteFile:
		name := op.DeleteFile.GetName()
		m, ok := s.files[name]
		if !ok {
			return Result{Err: fmt.Errorf("%w: no file named %q", ErrNotFound, name)}
		}
		s.remove(m)
		return Result{Manifest: m}
	case *pb.Command_SetNode:
		n := op.SetNode.GetNode()
		if n.GetId() == "" || n.GetApiAddr() == "" {
			return Result{Err: invalid("node record needs an ID and an API address")}
		}
		s.nodes[n.GetId()] = proto.CloneOf(n)
		return Result{}
	case *pb.Command_RemoveNode:
		delete(s.nodes, op.RemoveNode.GetId())
		return Result{}
	case *pb.Command_CollectChunks:
		ids, err := chunkIDs(op.CollectChunks.GetIds())
		if err != nil {
			return Result{Err: err}
		}
		var marked []chunker.ID
		for _, id := range ids {
			if s.refs[id] == 0 {
				s.collecting[id] = struct{}{}
				marked = append(marked, id)
			}
		}
		return Result{IDs: marked}
	case *pb.Command_ForgetChunks:
		ids, err := chunkIDs(op.ForgetChunks.GetIds())
		if err != nil {
			return Result{Err: err}
		}
		for _, id := range ids {
			delete(s.collecting, id)
			delete(s.unref, id)
		}
		if len(ids) > 0 {
			// Counted even if the marks were cleared already: a sweep
			// forgets only after deleting, and a second sweep may have
			// deleted copies of a chunk no longer marked.
			s.collections++
		}
		return Result{}
	case *pb.Command_MarkUnreferenced:
		return markUnreferenced(s, op.MarkUnreferenced)
	default:
		return Result{Err: invalid("command has no known operation")}
	}
}

// markUnreferenced starts the clock of the chunks that no file refers to and
// have none yet, at the proposer's time, and stops that of the chunks to
// forget. It returns the chunks whose clock it started.
func markUnreferenced(s *State, m *pb.MarkUnreferenced) Result {
	since := m.GetSinceUnixNano()
	if since <= 0 {
		return Result{Err: invalid("unreferenced chunks: the proposer did not stamp a time")}
	}
	ids, err := chunkIDs(m.GetIds())
	if err != nil {
		return Result{Err: err}
	}
	forget, err := chunkIDs(m.GetForget())
	if err != nil {
		return Result{Err: err}
	}
	for _, id := range forget {
		delete(s.unref, id)
	}
	var started []chunker.ID
	for _, id := range ids {
		if _, ok := s.unref[id]; ok || s.refs[id] > 0 {
			continue
		}
		s.unref[id] = since
		started = append(started, id)
	}
	return Result{IDs: started}
}

func putFile(s *State, p *pb.PutFile) Result {
	in := p.GetManifest()
	if err := ValidateManifest(in); err != nil {
		return Result{Err: err}
	}
	if in.GetCreatedUnixNano() <= 0 {
		return Result{Err: invalid("file %q: the proposer did not stamp a creation time", in.GetName())}
	}
	m := proto.CloneOf(in)
	if m.Date == "" && m.TimeFromUnixNano != nil {
		m.Date = DayOf(m.GetTimeFromUnixNano())
	}
	if m.Date == "" {
		m.Date = time.Unix(0, m.GetCreatedUnixNano()).UTC().Format(DateLayout)
	}
	id := string(p.GetRequestId())
	if len(id) > maxRequestID {
		return Result{Err: invalid("file %q: request id of %d bytes; at most %d", in.GetName(), len(id), maxRequestID)}
	}
	old, ok := s.files[m.GetName()]
	if v, done := s.applied[id]; done && id != "" {
		// A retry of a commit that applied (its answer was lost): it
		// succeeded then, whatever happened to the file since.
		if ok && IsVersion(old, v) {
			return Result{Manifest: old}
		}
		m.CreatedUnixNano = v.GetCreatedUnixNano()
		return Result{Manifest: m}
	}
	if want := p.GetReplaces(); want != nil && p.GetOverwrite() && !IsVersion(old, want) {
		if ok && sameContent(old, m, in.GetDate() != "") {
			return Result{Manifest: old} // a retried commit, or a racing one that stored the same
		}
		now := "deleted"
		if ok {
			now = fmt.Sprintf("now the version created at %s, BLAKE3 %x", time.Unix(0, old.GetCreatedUnixNano()).UTC().Format(time.RFC3339Nano), old.GetBlake3())
		}
		return Result{Err: fmt.Errorf("%w: file %q changed after this overwrite began (%s)", ErrChanged, m.GetName(), now)}
	}
	if ok && !p.GetOverwrite() {
		if sameContent(old, m, in.GetDate() != "") {
			return Result{Manifest: old} // a retried commit: already done
		}
		return Result{Err: fmt.Errorf("%w: file %q (use overwrite to replace it)", ErrExists, m.GetName())}
	}
	if p.CollectionsSeen != nil && s.collections > p.GetCollectionsSeen() {
		// A chunk marked after the proposer's check is refused below while
		// marked; once the marks are cleared only this count tells that
		// copies the proposer found may be gone.
		return Result{Err: fmt.Errorf("%w: file %q: %d garbage collections finished while the commit checked its chunks", ErrCollectedSinceCheck, m.GetName(), s.collections-p.GetCollectionsSeen())}
	}
	for _, c := range m.GetChunks() {
		if s.IsCollecting(chunker.ID(c.GetId())) {
			return Result{Err: fmt.Errorf("%w: file %q: chunk %x is being garbage-collected; upload the file again", ErrCollecting, m.GetName(), c.GetId())}
		}
	}
	s.put(m)
	s.remember(id, VersionOf(m))
	return Result{Manifest: m}
}

// VersionOf names the version of a stored file (nil: there is none).
func VersionOf(m *pb.FileManifest) *pb.FileVersion {
	if m == nil {
		return &pb.FileVersion{}
	}
	return &pb.FileVersion{Exists: true, CreatedUnixNano: m.GetCreatedUnixNano(), Blake3: m.GetBlake3()}
}

// IsVersion reports whether m (nil: no file) is version v.
func IsVersion(m *pb.FileManifest, v *pb.FileVersion) bool {
	if m == nil || !v.GetExists() {
		return m == nil && !v.GetExists()
	}
	return m.GetCreatedUnixNano() == v.GetCreatedUnixNano() && bytes.Equal(m.GetBlake3(), v.GetBlake3())
}

func chunkIDs(raw [][]byte) ([]chunker.ID, error) {
	ids := make([]chunker.ID, len(raw))
	for i, b := range raw {
		id, err := chunker.IDFromBytes(b)
		if err != nil {
			return nil, invalid("chunk %d: %v", i, err)
		}
		ids[i] = id
	}
	return ids, nil
}

// sameContent reports whether a stored file already is what m describes, so
// that a commit retried after a lost reply succeeds instead of conflicting.
// The date counts only when the client set it, the time range only when m
// has one.
// SameContent reports whether old and m hold the same file: size, hash,
// chunk list, metadata, when dated, date, and m's time range if it has one.
// A commit of m where old is already stored changes nothing.
func SameContent(old, m *pb.FileManifest, dated bool) bool { return sameContent(old, m, dated) }

func sameContent(old, m *pb.FileManifest, dated bool) bool {
	if old.GetSize() != m.GetSize() || !bytes.Equal(old.GetBlake3(), m.GetBlake3()) ||
		(dated && old.GetDate() != m.GetDate()) ||
		(m.TimeFromUnixNano != nil && FileRange(old) != FileRange(m)) || !maps.Equal(old.GetMetadata(), m.GetMetadata()) ||
		len(old.GetChunks()) != len(m.GetChunks()) {
		return false
	}
	for i, c := range old.GetChunks() {
		if !proto.Equal(c, m.GetChunks()[i]) {
			return false
		}
	}
	return true
}
