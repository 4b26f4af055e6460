package client

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"google.golang.org/grpc"

	pb "github.com/ddstore/ddstore/proto/ddstore/v1"
	"github.com/ddstore/ddstore/server/snapshotfile"
)

// SaveSnapshot asks the cluster for a consistent snapshot of its catalog
// (Cluster.SnapshotSave, admin) and writes it to path atomically: into a
// temporary file beside it, checked as it arrives (length, BLAKE3), synced,
// then renamed over path. Memory stays bounded (one piece at a time). It
// returns the snapshot's header and the file's size. A node that is
// unavailable before the snapshot is complete is left for the next one,
// starting again.
func (c *Client) SaveSnapshot(ctx context.Context, path string) (*pb.SnapshotHeader, int64, error) {
	dir, base := filepath.Split(path)
	if dir == "" {
		dir = "."
	}
	tmp, err := os.CreateTemp(dir, "."+base+".*.tmp")
	if err != nil {
		return nil, 0, fmt.Errorf("snapshot: %w", err)
	}
	done := false
	defer func() {
		if !done {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	var hdr *pb.SnapshotHeader
	err = c.callFor(ctx, 0, func(ctx context.Context, conn *grpc.ClientConn) error {
		if err := tmp.Truncate(0); err != nil {
			return err
		}
		if _, err := tmp.Seek(0, io.SeekStart); err != nil {
			return err
		}
		stream, err := pb.NewClusterClient(conn).SnapshotSave(ctx, &pb.SnapshotSaveRequest{})
		if err != nil {
			return err
		}
		w := bufio.NewWriterSize(tmp, 1<<20)
		hdr, err = snapshotfile.Receive(stream.Recv, w)
		if err != nil {
			return err
		}
		return w.Flush()
	})
	if err != nil {
		return nil, 0, fmt.Errorf("snapshot save: %w", err)
	}
	size, err := tmp.Seek(0, io.SeekCurrent)
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), path)
	}
	if err != nil {
		return nil, 0, fmt.Errorf("snapshot save: write %s: %w", path, err)
	}
	done = true
	if d, err := os.Open(dir); err == nil {
		d.Sync()
		d.Close()
	}
	return hdr, size, nil
}

// RestoreSnapshot checks the snapshot file at path whole (snapshotfile.Check:
// checksum, format, the catalog in it) and only then sends it to the cluster
// (Cluster.SnapshotRestore, admin), which checks it again and replaces its
// catalog with it. Without force a cluster whose catalog holds files refuses
// (FailedPrecondition). It returns the file's header and the cluster's
// answer.
func (c *Client) RestoreSnapshot(ctx context.Context, path string, force bool) (*pb.SnapshotHeader, *pb.SnapshotRestoreResponse, error) {
	f, err := snapshotfile.Check(path)
	if err != nil {
		return nil, nil, fmt.Errorf("snapshot restore: %s: %w (nothing was sent)", path, err)
	}
	fh, err := os.Open(path)
	if err != nil {
		return nil, nil, fmt.Errorf("snapshot restore: %w", err)
	}
	defer fh.Close()
	var resp *pb.SnapshotRestoreResponse
	err = c.callFor(ctx, 0, func(ctx context.Context, conn *grpc.ClientConn) error {
		stream, err := pb.NewClusterClient(conn).SnapshotRestore(ctx)
		if err != nil {
			return err
		}
		err = snapshotfile.Send(f, fh, func(p *pb.SnapshotPiece) error {
			return stream.Send(&pb.SnapshotRestoreRequest{Piece: p, Force: force})
		})
		if err != nil && err != io.EOF {
			return err
		}
		resp, err = stream.CloseAndRecv()
		return err
	})
	if err != nil {
		return f.Header, nil, fmt.Errorf("snapshot restore: %w", err)
	}
	return f.Header, resp, nil
}
