package server_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/ddstore/ddstore/client"
	"github.com/ddstore/ddstore/internal/localcluster"
	pb "github.com/ddstore/ddstore/proto/ddstore/v1"
	"github.com/ddstore/ddstore/server/auth"
	"github.com/ddstore/ddstore/server/snapshotfile"
)

// TestSnapshotSaveRestore saves the catalog of a 3-node cluster holding
// several files (one of many chunks), restores it into a new cluster whose
// nodes were given copies of the old nodes' chunk directories, and
// downloads every file intact; corrupted and truncated snapshot files,
// a forged stream, a non-empty catalog without force and a read token are
// refused, each leaving the catalog as it was.
func TestSnapshotSaveRestore(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	base := t.TempDir()
	old, err := localcluster.Start(ctx, localcluster.Options{Dir: filepath.Join(base, "old"), Fast: true, Cluster: "old"})
	if err != nil {
		t.Fatal(err)
	}
	defer old.Close()
	oc, err := old.Client()
	if err != nil {
		t.Fatal(err)
	}
	defer oc.Close()

	rng := rand.New(rand.NewPCG(14, 6))
	want := map[string][]byte{}
	for i, size := range []int{0, 1, 3000, 200 << 10, 12 << 20} {
		data := make([]byte, size)
		for j := range data {
			data[j] = byte(rng.Uint32())
		}
		name := fmt.Sprintf("dir/file%d", i)
		want[name] = data
		res, err := oc.Put(ctx, name, bytes.NewReader(data), client.PutOptions{})
		if err != nil {
			t.Fatalf("put %s: %v", name, err)
		}
		if size == 12<<20 && len(res.Manifest.GetChunks()) < 3 {
			t.Fatalf("the large file has %d chunks; want several", len(res.Manifest.GetChunks()))
		}
	}
	var total uint64
	for _, d := range want {
		total += uint64(len(d))
	}

	snap := filepath.Join(base, "catalog.snap")
	hdr, size, err := oc.SaveSnapshot(ctx, snap)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("saved: index %d, term %d, %d files, %d bytes, file of %d bytes", hdr.GetIndex(), hdr.GetTerm(), hdr.GetFiles(), hdr.GetBytes(), size)
	if hdr.GetFiles() != uint64(len(want)) || hdr.GetBytes() != total || hdr.GetIndex() == 0 || hdr.GetTerm() == 0 || hdr.GetCluster() != "old" {
		t.Fatalf("header %v; want %d files, %d bytes of cluster old", hdr, len(want), total)
	}
	if fi, err := os.Stat(snap); err != nil || fi.Size() != size {
		t.Fatalf("snapshot file: %v, %v; want %d bytes", fi, err, size)
	}
	if leftovers, _ := filepath.Glob(filepath.Join(base, ".catalog.snap.*")); len(leftovers) > 0 {
		t.Fatalf("temporary files left: %v", leftovers)
	}

	// Any node saves (the one asked takes the snapshot, after a linearizable
	// read): another one than the first gives the same catalog. (Its Raft
	// index may be lower: the leader's read barriers are log entries a
	// follower need not have applied, only the commands before them.)
	of, err := client.New([]string{old.Members[1].APIAddr}, old.ClientOptions()...)
	if err != nil {
		t.Fatal(err)
	}
	fhdr, _, err := of.SaveSnapshot(ctx, filepath.Join(base, "follower.snap"))
	of.Close()
	if err != nil {
		t.Fatal(err)
	}
	if fhdr.GetFiles() != hdr.GetFiles() || fhdr.GetBytes() != total || fhdr.GetIndex() == 0 || fhdr.GetNode() == hdr.GetNode() {
		t.Fatalf("saved through %s: %v; through %s: %v", old.Members[1].ID, fhdr, old.Members[0].ID, hdr)
	}

	// A read token may not save.
	readTok, err := old.Token(auth.RoleRead, "", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	rc, err := client.New(old.Addrs(), append(old.TLSOnly(), client.WithToken(readTok))...)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := rc.SaveSnapshot(ctx, filepath.Join(base, "denied.snap")); status.Code(errors.Unwrap(err)) != codes.PermissionDenied && status.Code(err) != codes.PermissionDenied {
		t.Errorf("save with a read token: %v; want PermissionDenied", err)
	}
	rc.Close()
	if _, err := os.Stat(filepath.Join(base, "denied.snap")); !os.IsNotExist(err) {
		t.Errorf("a refused save left a file: %v", err)
	}

	// The old cluster stops; the new one gets copies of its chunk stores.
	if err := old.Close(); err != nil {
		t.Fatal(err)
	}
	var logs syncBuffer
	nc, err := localcluster.New(localcluster.Options{Dir: filepath.Join(base, "new"), Fast: true, Cluster: "new", Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	for i, m := range nc.Members {
		if err := os.CopyFS(filepath.Join(m.DataDir, "chunks"), os.DirFS(filepath.Join(old.Members[i].DataDir, "chunks"))); err != nil {
			t.Fatal(err)
		}
	}
	if err := nc.Launch(ctx); err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	cc, err := nc.Client()
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	files := func() uint64 {
		t.Helper()
		st, err := cc.Status(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return st.GetFiles()
	}
	if n := files(); n != 0 {
		t.Fatalf("the new cluster holds %d files", n)
	}

	// Corrupted, truncated and forged snapshots change nothing.
	good, err := os.ReadFile(snap)
	if err != nil {
		t.Fatal(err)
	}
	bad := filepath.Join(base, "bad.snap")
	for name, tc := range map[string]struct {
		data []byte
		want error
	}{
		"corrupted": {flip(good, len(good)/2), snapshotfile.ErrChecksum},
		"truncated": {good[:len(good)-100], snapshotfile.ErrTruncated},
		"not one":   {[]byte("this is not a snapshot of a ddstore catalog\n"), snapshotfile.ErrFormat},
	} {
		if err := os.WriteFile(bad, tc.data, 0o644); err != nil {
			t.Fatal(err)
		}
		_, _, err := cc.RestoreSnapshot(ctx, bad, true)
		if !errors.Is(err, tc.want) {
			t.Errorf("restore of a %s snapshot: %v; want %v", name, err, tc.want)
		}
		t.Logf("%s: %v", name, err)
	}
	// A client that skips the checks: the node refuses the stream itself.
	conn, err := nc.Dial(nc.Members[1].APIAddr, false)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	f, err := snapshotfile.Verify(bytes.NewReader(good))
	if err != nil {
		t.Fatal(err)
	}
	for name, mangle := range map[string]func(*pb.SnapshotPiece) *pb.SnapshotPiece{
		"wrong checksum": func(p *pb.SnapshotPiece) *pb.SnapshotPiece {
			if s := p.GetBlake3(); s != nil {
				return &pb.SnapshotPiece{Part: &pb.SnapshotPiece_Blake3{Blake3: flip(s, 0)}}
			}
			return p
		},
		"altered data": func(p *pb.SnapshotPiece) *pb.SnapshotPiece {
			if d := p.GetData(); d != nil {
				return &pb.SnapshotPiece{Part: &pb.SnapshotPiece_Data{Data: flip(d, len(d)/2)}}
			}
			return p
		},
		"missing checksum": func(p *pb.SnapshotPiece) *pb.SnapshotPiece {
			if p.GetBlake3() != nil {
				return nil
			}
			return p
		},
	} {
		stream, err := pb.NewClusterClient(conn).SnapshotRestore(ctx)
		if err != nil {
			t.Fatal(err)
		}
		err = snapshotfile.Send(f, bytes.NewReader(good), func(p *pb.SnapshotPiece) error {
			if p = mangle(p); p == nil {
				return nil
			}
			return stream.Send(&pb.SnapshotRestoreRequest{Piece: p, Force: true})
		})
		if err != nil && err != io.EOF {
			t.Fatal(err)
		}
		_, err = stream.CloseAndRecv()
		if status.Code(err) != codes.InvalidArgument {
			t.Errorf("forged stream (%s): %v; want InvalidArgument", name, err)
		}
		t.Logf("%s: %v", name, err)
	}
	if n := files(); n != 0 {
		t.Fatalf("refused restores left %d files", n)
	}

	// A read token may not restore.
	newRead, err := nc.Token(auth.RoleRead, "", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	rc, err = client.New(nc.Addrs(), append(nc.TLSOnly(), client.WithToken(newRead))...)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := rc.RestoreSnapshot(ctx, snap, true); status.Code(errors.Unwrap(err)) != codes.PermissionDenied && status.Code(err) != codes.PermissionDenied {
		t.Errorf("restore with a read token: %v; want PermissionDenied", err)
	}
	rc.Close()

	// The restore, sent to a follower (which passes it to the leader).
	follower := nc.Members[(nc.Leader(ctx)+1)%len(nc.Members)]
	fc, err := client.New([]string{follower.APIAddr}, nc.ClientOptions()...)
	if err != nil {
		t.Fatal(err)
	}
	defer fc.Close()
	start := time.Now()
	_, resp, err := fc.RestoreSnapshot(ctx, snap, false)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("restored through follower %s in %s: %v", follower.ID, time.Since(start).Round(time.Millisecond), resp)
	if resp.GetFiles() != uint64(len(want)) || resp.GetBytes() != total || resp.GetFromCluster() != "old" || resp.GetFromIndex() != hdr.GetIndex() || resp.GetReplacedFiles() != 0 {
		t.Fatalf("restore answered %v", resp)
	}
	if n := files(); n != uint64(len(want)) {
		t.Fatalf("after the restore the cluster holds %d files; want %d", n, len(want))
	}
	checkAll := func(when string) {
		t.Helper()
		for name, data := range want {
			var buf bytes.Buffer
			if _, err := cc.Get(ctx, name, &buf, client.GetOptions{}); err != nil {
				t.Fatalf("%s: get %s: %v", when, name, err)
			}
			if !bytes.Equal(buf.Bytes(), data) {
				t.Fatalf("%s: %s differs (%d bytes, want %d)", when, name, buf.Len(), len(data))
			}
		}
	}
	checkAll("after the restore")
	// The copied stores hold every chunk the restored files refer to.
	rep, err := cc.Repair(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if rep.GetLost() != 0 || rep.GetUnderReplicated() != 0 {
		t.Fatalf("repair after the restore: %v", rep)
	}
	t.Logf("repair after the restore: %v", rep)
	// Every member holds the restored catalog, and the cluster kept its own
	// node records (writes reach the leader at its new address).
	for _, m := range nc.Members {
		mc, err := client.New([]string{m.APIAddr}, nc.ClientOptions()...)
		if err != nil {
			t.Fatal(err)
		}
		for name := range want {
			if _, err := mc.Stat(ctx, name, pb.Consistency_CONSISTENCY_LINEARIZABLE); err != nil {
				t.Errorf("stat %s on %s: %v", name, m.ID, err)
			}
		}
		mc.Close()
	}
	st, err := cc.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range st.GetNodes() {
		if n.GetState() == "unreachable" || n.GetState() == "unknown" {
			t.Errorf("node %s after the restore: %s %s", n.GetId(), n.GetState(), n.GetError())
		}
	}
	extra := []byte("written after the restore")

	// The same snapshot again changes nothing and is no error.
	_, resp, err = cc.RestoreSnapshot(ctx, snap, false)
	if err != nil || !resp.GetAlready() || resp.GetFiles() != uint64(len(want)) || resp.GetReplacedFiles() != 0 {
		t.Fatalf("restore of the same snapshot again: %v, %v; want already", resp, err)
	}
	if _, err := fc.Put(ctx, "after", bytes.NewReader(extra), client.PutOptions{}); err != nil {
		t.Fatalf("put after the restore: %v", err)
	}

	// Not into a catalog that holds other files, unless forced.
	_, _, err = cc.RestoreSnapshot(ctx, snap, false)
	if status.Code(errors.Unwrap(err)) != codes.FailedPrecondition && status.Code(err) != codes.FailedPrecondition {
		t.Fatalf("restore into a non-empty catalog: %v; want FailedPrecondition", err)
	}
	t.Logf("non-empty: %v", err)
	if n := files(); n != uint64(len(want))+1 {
		t.Fatalf("the refused restore left %d files; want %d", n, len(want)+1)
	}
	_, resp, err = cc.RestoreSnapshot(ctx, snap, true)
	if err != nil {
		t.Fatal(err)
	}
	if resp.GetReplacedFiles() != uint64(len(want))+1 || resp.GetFiles() != uint64(len(want)) {
		t.Fatalf("forced restore answered %v", resp)
	}
	if _, err := cc.Stat(ctx, "after", pb.Consistency_CONSISTENCY_LINEARIZABLE); status.Code(err) != codes.NotFound {
		t.Errorf("a file written after the snapshot survived a forced restore: %v", err)
	}
	checkAll("after the forced restore")

	// Each restore, refused or not, left an audit line on the node asked.
	for want, n := range map[string]int{
		`op=snapshot-restore principal=client:test-read(read,token) outcome=PermissionDenied`: 1,
		`op=snapshot-restore principal=client:admin(admin,cert) outcome=InvalidArgument`:      3,
		`op=snapshot-restore principal=client:admin(admin,cert) outcome=FailedPrecondition`:   1,
		`op=snapshot-restore principal=client:admin(admin,cert) outcome=OK`:                   3,
	} {
		if got := countAudit(logs.String(), want); got != n {
			t.Errorf("%d audit lines with %s, want %d; audit lines:\n%s", got, want, n, grepAudit(logs.String()))
		}
	}
}

// flip returns a copy of b with byte i inverted.
func flip(b []byte, i int) []byte {
	out := bytes.Clone(b)
	out[i] ^= 0xff
	return out
}
