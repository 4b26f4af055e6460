package catalog

import (
	"bytes"
	"fmt"
	"maps"
	"time"

	pb "github.com/ddstore/ddstore/proto/ddstore/v1"
	"google.golang.org/protobuf/proto"
)

// Result is what applying a command returns to the node that proposed it.
type Result struct {
	Manifest *pb.FileManifest // the file as stored (PutFile) or removed (DeleteFile)
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
	default:
		return Result{Err: invalid("command has no known operation")}
	}
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
	if m.Date == "" {
		m.Date = time.Unix(0, m.GetCreatedUnixNano()).UTC().Format(DateLayout)
	}
	if old, ok := s.files[m.GetName()]; ok && !p.GetOverwrite() {
		if sameContent(old, m, in.GetDate() != "") {
			return Result{Manifest: old} // a retried commit: already done
		}
		return Result{Err: fmt.Errorf("%w: file %q (use overwrite to replace it)", ErrExists, m.GetName())}
	}
	s.put(m)
	return Result{Manifest: m}
}

// sameContent reports whether a stored file already is what m describes, so
// that a commit retried after a lost reply succeeds instead of conflicting.
// The date counts only when the client set it.
func sameContent(old, m *pb.FileManifest, dated bool) bool {
	if old.GetSize() != m.GetSize() || !bytes.Equal(old.GetBlake3(), m.GetBlake3()) ||
		(dated && old.GetDate() != m.GetDate()) || !maps.Equal(old.GetMetadata(), m.GetMetadata()) ||
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
