package server

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/hashicorp/raft"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/ddstore/ddstore/catalog"
	"github.com/ddstore/ddstore/consensus"
	pb "github.com/ddstore/ddstore/proto/ddstore/v1"
	"github.com/ddstore/ddstore/server/auth"
	"github.com/ddstore/ddstore/server/snapshotfile"
)

// ErrCatalogNotEmpty: a restore without force into a cluster whose catalog
// holds files.
var ErrCatalogNotEmpty = errors.New("the catalog holds files")

// snapshotTemp creates a temporary file in the node's data directory (next
// to raft/ and chunks/, removed once the call ends).
func (n *Node) snapshotTemp(what string) (*os.File, error) {
	f, err := os.CreateTemp(n.cfg.DataDir, ".snapshot-"+what+"-*.tmp")
	if err != nil {
		return nil, status.Errorf(codes.Internal, "snapshot: temporary file: %v", err)
	}
	return f, nil
}

func dropTemp(f *os.File) {
	f.Close()
	os.Remove(f.Name())
}

// SnapshotSave streams a consistent snapshot of the catalog: after a
// linearizable read, this node's Raft snapshots the catalog (which holds at
// least every change committed before the call); the snapshot is copied
// aside, decoded as a restore would (to count its files and to never hand
// out one that cannot be restored), then sent with its header and BLAKE3.
func (c *clusterService) SnapshotSave(_ *pb.SnapshotSaveRequest, stream pb.Cluster_SnapshotSaveServer) error {
	n := c.n
	ctx := stream.Context()
	start := time.Now()
	hdr, err := n.snapshotSave(ctx, stream.Send)
	n.auditStream(ctx, "snapshot-save", err, time.Since(start), hdr)
	return err
}

func (n *Node) snapshotSave(ctx context.Context, send func(*pb.SnapshotPiece) error) (*pb.SnapshotHeader, error) {
	if err := n.readBarrier(ctx, pb.Consistency_CONSISTENCY_LINEARIZABLE); err != nil {
		return nil, toStatus(err)
	}
	meta, rc, err := n.raft.TakeSnapshot(ctx)
	if err != nil {
		return nil, toStatus(fmt.Errorf("snapshot: %w", err))
	}
	tmp, err := n.snapshotTemp("save")
	if err != nil {
		rc.Close()
		return nil, err
	}
	defer dropTemp(tmp)
	k, err := io.Copy(tmp, rc)
	rc.Close()
	if err != nil || k != meta.Size {
		return nil, status.Errorf(codes.Internal, "snapshot: copied %d of %d bytes: %v", k, meta.Size, err)
	}
	cat, err := snapshotfile.Catalog(io.NewSectionReader(tmp, 0, k))
	if err != nil {
		return nil, status.Errorf(codes.Internal, "snapshot taken at index %d does not decode: %v", meta.Index, err)
	}
	files, bytes := snapshotfile.Totals(cat)
	cat = nil
	hdr := &pb.SnapshotHeader{
		Format: snapshotfile.Format, Cluster: n.cfg.Cluster, Node: n.cfg.ID, Index: meta.Index, Term: meta.Term,
		Size: uint64(k), Files: files, Bytes: bytes, CreatedUnixNano: time.Now().UnixNano(), RaftVersion: int32(meta.Version),
	}
	hb, err := snapshotfile.EncodeHeader(hdr)
	if err != nil {
		return nil, status.Errorf(codes.Internal, "snapshot header: %v", err)
	}
	f := &snapshotfile.File{Header: hdr, HeaderBytes: hb, DataOffset: 0}
	if err := snapshotfile.Send(f, tmp, send); err != nil {
		return nil, err
	}
	n.log.Info("catalog snapshot saved", "index", meta.Index, "term", meta.Term, "files", files, "bytes", k)
	return hdr, nil
}

// SnapshotRestore receives a saved snapshot whole into a temporary file,
// checks it (checksum, format, every manifest), and has the leader install
// it (a follower passes the checked file on to the leader).
func (c *clusterService) SnapshotRestore(stream pb.Cluster_SnapshotRestoreServer) error {
	n := c.n
	ctx := stream.Context()
	start := time.Now()
	var force bool
	first := true
	recv := func() (*pb.SnapshotPiece, error) {
		req, err := stream.Recv()
		if err != nil {
			return nil, err
		}
		if first {
			force, first = req.GetForce(), false
		}
		return req.GetPiece(), nil
	}
	resp, err := n.snapshotRestore(ctx, recv, &force)
	n.auditStream(ctx, "snapshot-restore", err, time.Since(start), nil)
	if err != nil {
		return err
	}
	return stream.SendAndClose(resp)
}

func (n *Node) snapshotRestore(ctx context.Context, recv snapshotfile.Recv, force *bool) (*pb.SnapshotRestoreResponse, error) {
	tmp, err := n.snapshotTemp("restore")
	if err != nil {
		return nil, err
	}
	defer dropTemp(tmp)
	if _, err := snapshotfile.Receive(recv, tmp); err != nil {
		if errors.Is(err, snapshotfile.ErrInvalid) {
			return nil, status.Errorf(codes.InvalidArgument, "snapshot refused, nothing changed: %v", err)
		}
		return nil, toStatus(err)
	}
	if _, err := tmp.Seek(0, io.SeekStart); err != nil {
		return nil, status.Errorf(codes.Internal, "snapshot: %v", err)
	}
	f, err := snapshotfile.Verify(tmp)
	if err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "snapshot refused, nothing changed: %v", err)
	}
	if v := raft.SnapshotVersion(f.Header.GetRaftVersion()); v < raft.SnapshotVersionMin || v > raft.SnapshotVersionMax {
		return nil, status.Errorf(codes.InvalidArgument, "snapshot refused, nothing changed: Raft snapshot version %d unknown", v)
	}
	cat, err := snapshotfile.Catalog(f.Data(tmp))
	if err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "snapshot refused, nothing changed: %v", err)
	}
	files, bytes := snapshotfile.Totals(cat)
	if files != f.Header.GetFiles() || bytes != f.Header.GetBytes() {
		return nil, status.Errorf(codes.InvalidArgument, "snapshot refused, nothing changed: it holds %d files (%d bytes), its header says %d (%d)",
			files, bytes, f.Header.GetFiles(), f.Header.GetBytes())
	}
	// Refused here already when this node's catalog (after a linearizable
	// read) holds other files; the leader checks again.
	if err := n.readBarrier(ctx, pb.Consistency_CONSISTENCY_LINEARIZABLE); err != nil {
		return nil, toStatus(err)
	}
	had, hadBytes, same := n.compareCatalog(cat)
	if had > 0 && !*force && !same {
		return nil, notEmpty(n.cfg.Cluster, had, hadBytes)
	}
	var resp *pb.SnapshotRestoreResponse
	err = n.withLeader(ctx, func(ctx context.Context) error {
		if n.raft.IsLeader() {
			var err error
			resp, err = n.restoreHere(ctx, cat, *force)
			return err
		}
		conn, err := n.leaderConn()
		if err != nil {
			return err
		}
		cs, err := pb.NewClusterClient(conn).SnapshotRestore(ctx)
		if err != nil {
			return err
		}
		err = snapshotfile.Send(f, tmp, func(p *pb.SnapshotPiece) error {
			return cs.Send(&pb.SnapshotRestoreRequest{Piece: p, Force: *force})
		})
		if err != nil && err != io.EOF {
			return err
		}
		resp, err = cs.CloseAndRecv()
		return err
	})
	if err != nil {
		return nil, toStatus(err)
	}
	resp.FromCluster, resp.FromIndex, resp.FromTerm = f.Header.GetCluster(), f.Header.GetIndex(), f.Header.GetTerm()
	// What the catalog held when this call began: a leader that answers
	// after a retry (the first try may have restored already) cannot know.
	resp.ReplacedFiles = 0
	if !same {
		resp.ReplacedFiles = had
	}
	resp.Already = same
	return resp, nil
}

// compareCatalog returns the files this node's catalog holds and whether
// they are exactly cat's (same names, same manifests).
func (n *Node) compareCatalog(cat *catalog.FSM) (files, bytes uint64, same bool) {
	n.fsm.Read(func(s *catalog.State) {
		files, bytes = s.Totals()
		cat.Read(func(c *catalog.State) { same = sameFiles(s, c) })
	})
	return files, bytes, same
}

// sameFiles reports whether a and b hold the same files.
func sameFiles(a, b *catalog.State) bool {
	fa, ba := a.Totals()
	if fb, bb := b.Totals(); fa != fb || ba != bb {
		return false
	}
	files, _ := a.List(catalog.Query{})
	for _, m := range files {
		if o, ok := b.File(m.GetName()); !ok || !proto.Equal(m, o) {
			return false
		}
	}
	return true
}

func notEmpty(cluster string, files, bytes uint64) error {
	return status.Errorf(codes.FailedPrecondition, "restore refused, nothing changed: %v: cluster %s holds %d files (%d bytes) and a restore replaces the whole catalog; give --force to replace them",
		ErrCatalogNotEmpty, cluster, files, bytes)
}

// restoreHere installs cat on the leader: the catalog must be empty (or
// force), the cluster keeps its own node records (the snapshot's are those
// of the cluster it came from), and the snapshot given to Raft records the
// index Raft will give it.
func (n *Node) restoreHere(ctx context.Context, cat *catalog.FSM, force bool) (*pb.SnapshotRestoreResponse, error) {
	index, err := n.raft.ReadIndex(ctx)
	if err != nil {
		return nil, err
	}
	if err := n.raft.WaitApplied(ctx, index); err != nil {
		return nil, err
	}
	had, hadBytes, same := n.compareCatalog(cat)
	if same {
		// Restored already (by a try that failed as the leader changed
		// after its restore had taken), or the same snapshot again.
		files, bytes := snapshotfile.Totals(cat)
		return &pb.SnapshotRestoreResponse{Index: n.fsm.LastApplied(), Term: n.raft.Status().Term, Files: files, Bytes: bytes, Already: true}, nil
	}
	if had > 0 && !force {
		return nil, notEmpty(n.cfg.Cluster, had, hadBytes)
	}
	var nodes []*pb.NodeInfo
	n.fsm.Read(func(s *catalog.State) { nodes = s.Nodes() })
	var old []*pb.NodeInfo
	cat.Read(func(s *catalog.State) { old = s.Nodes() })
	for attempt := 0; ; attempt++ {
		at := n.raft.RestoreIndex()
		// Node records: the snapshot's go, this cluster's stay. The
		// last command sets the catalog's applied index to at.
		var cmds []*pb.Command
		for _, o := range old {
			cmds = append(cmds, &pb.Command{Op: &pb.Command_RemoveNode{RemoveNode: &pb.RemoveNode{Id: o.GetId()}}})
		}
		for _, m := range nodes {
			cmds = append(cmds, &pb.Command{Op: &pb.Command_SetNode{SetNode: &pb.SetNode{Node: m}}})
		}
		cmds = append(cmds, &pb.Command{Op: &pb.Command_RemoveNode{RemoveNode: &pb.RemoveNode{}}})
		for _, cmd := range cmds {
			data, err := catalog.EncodeCommand(cmd)
			if err != nil {
				return nil, err
			}
			if res, ok := cat.Apply(&raft.Log{Index: at, Type: raft.LogCommand, Data: data}).(catalog.Result); !ok || res.Err != nil {
				return nil, status.Errorf(codes.Internal, "snapshot: node records: %v", res.Err)
			}
		}
		old = nodes
		tmp, err := n.snapshotTemp("install")
		if err != nil {
			return nil, err
		}
		size, err := persist(cat, tmp)
		if err == nil {
			_, err = tmp.Seek(0, io.SeekStart)
		}
		if err == nil {
			err = n.raft.RestoreSnapshot(ctx, at, size, tmp)
		}
		dropTemp(tmp)
		if errors.Is(err, consensus.ErrRestoreIndex) && attempt < 3 {
			continue
		}
		if err != nil {
			n.log.Warn("restore failed", "index", at, "err", err)
			return nil, fmt.Errorf("restore: %w", err)
		}
		files, bytes := snapshotfile.Totals(cat)
		n.log.Warn("catalog restored from a snapshot", "index", at, "files", files, "bytes", bytes, "replaced_files", had)
		return &pb.SnapshotRestoreResponse{Index: at, Term: n.raft.Status().Term, Files: files, Bytes: bytes, ReplacedFiles: had}, nil
	}
}

// persist writes cat's Raft snapshot to f and returns its size.
func persist(cat *catalog.FSM, f *os.File) (int64, error) {
	snap, err := cat.Snapshot()
	if err != nil {
		return 0, err
	}
	defer snap.Release()
	sink := &fileSink{f: f}
	if err := snap.Persist(sink); err != nil {
		return 0, err
	}
	if sink.err != nil {
		return 0, sink.err
	}
	return sink.n, nil
}

// fileSink is a raft.SnapshotSink over a temporary file.
type fileSink struct {
	f   *os.File
	n   int64
	err error
}

func (s *fileSink) Write(p []byte) (int, error) {
	k, err := s.f.Write(p)
	s.n += int64(k)
	return k, err
}
func (s *fileSink) Close() error  { return nil }
func (s *fileSink) ID() string    { return "restore" }
func (s *fileSink) Cancel() error { s.err = errors.New("snapshot: persist cancelled"); return nil }

// auditStream logs the audit line of a streaming call (the guard audits
// unary calls itself).
func (n *Node) auditStream(ctx context.Context, op string, err error, took time.Duration, hdr *pb.SnapshotHeader) {
	p, _ := auth.FromContext(ctx)
	attrs := []any{"op", op, "principal", p.String(), "outcome", status.Code(err).String(), "took", took.Round(time.Millisecond)}
	if hdr != nil {
		attrs = append(attrs, "index", hdr.GetIndex(), "files", hdr.GetFiles())
	}
	if err != nil {
		attrs = append(attrs, "err", status.Convert(err).Message())
	}
	n.log.Info("audit", attrs...)
}
