package snapshotfile

import (
	"bytes"
	"errors"
	"io"
	"testing"

	"github.com/hashicorp/raft"

	"github.com/ddstore/ddstore/catalog"
	pb "github.com/ddstore/ddstore/proto/ddstore/v1"
)

// memSink is a raft.SnapshotSink over a buffer.
type memSink struct{ bytes.Buffer }

func (*memSink) Close() error  { return nil }
func (*memSink) ID() string    { return "mem" }
func (*memSink) Cancel() error { return nil }

// sample returns a snapshot file holding an empty catalog's Raft snapshot
// padded by pieces of data, so that the stream has several data pieces.
func sample(t *testing.T) ([]byte, []*pb.SnapshotPiece) {
	t.Helper()
	snap, err := catalog.NewFSM().Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	var sink memSink
	if err := snap.Persist(&sink); err != nil {
		t.Fatal(err)
	}
	data := sink.Bytes()
	hb, err := EncodeHeader(&pb.SnapshotHeader{Format: Format, Cluster: "c", Node: "n1", Index: 7, Term: 2, Size: uint64(len(data)), RaftVersion: int32(raft.SnapshotVersionMax)})
	if err != nil {
		t.Fatal(err)
	}
	f := &File{Header: &pb.SnapshotHeader{Size: uint64(len(data))}, HeaderBytes: hb}
	var pieces []*pb.SnapshotPiece
	if err := Send(f, bytes.NewReader(data), func(p *pb.SnapshotPiece) error { pieces = append(pieces, p); return nil }); err != nil {
		t.Fatal(err)
	}
	var file bytes.Buffer
	if _, err := Receive(feed(pieces), &file); err != nil {
		t.Fatal(err)
	}
	return file.Bytes(), pieces
}

func feed(pieces []*pb.SnapshotPiece) Recv {
	i := 0
	return func() (*pb.SnapshotPiece, error) {
		if i == len(pieces) {
			return nil, io.EOF
		}
		i++
		return pieces[i-1], nil
	}
}

// TestRoundTrip: what Receive writes, Verify accepts, Send streams again
// byte for byte, and the catalog in it decodes.
func TestRoundTrip(t *testing.T) {
	file, pieces := sample(t)
	f, err := Verify(bytes.NewReader(file))
	if err != nil {
		t.Fatal(err)
	}
	if f.Header.GetIndex() != 7 || f.Header.GetCluster() != "c" {
		t.Fatalf("header %v", f.Header)
	}
	var again []*pb.SnapshotPiece
	if err := Send(f, bytes.NewReader(file), func(p *pb.SnapshotPiece) error { again = append(again, p); return nil }); err != nil {
		t.Fatal(err)
	}
	var file2 bytes.Buffer
	if _, err := Receive(feed(again), &file2); err != nil || !bytes.Equal(file2.Bytes(), file) || len(again) != len(pieces) {
		t.Fatalf("sent again: %d pieces (want %d), %v, equal %v", len(again), len(pieces), err, bytes.Equal(file2.Bytes(), file))
	}
	if _, err := Catalog(f.Data(bytes.NewReader(file))); err != nil {
		t.Fatal(err)
	}
}

// TestDamage: every truncation and every flipped byte of a file is refused
// by Verify with ErrInvalid, and so is every truncated or altered stream by
// Receive.
func TestDamage(t *testing.T) {
	file, pieces := sample(t)
	for n := range len(file) {
		if _, err := Verify(bytes.NewReader(file[:n])); !errors.Is(err, ErrInvalid) {
			t.Fatalf("file cut to %d of %d bytes: %v", n, len(file), err)
		}
	}
	if _, err := Verify(bytes.NewReader(append(bytes.Clone(file), 0))); !errors.Is(err, ErrFormat) {
		t.Fatalf("a byte after the checksum: %v", err)
	}
	for i := range file {
		bad := bytes.Clone(file)
		bad[i] ^= 0x01
		if _, err := Verify(bytes.NewReader(bad)); !errors.Is(err, ErrInvalid) {
			t.Fatalf("byte %d flipped: %v", i, err)
		}
	}
	for n := range len(pieces) {
		if _, err := Receive(feed(pieces[:n]), io.Discard); !errors.Is(err, ErrTruncated) && !errors.Is(err, ErrFormat) {
			t.Fatalf("stream cut to %d of %d pieces: %v", n, len(pieces), err)
		}
	}
	swapped := append([]*pb.SnapshotPiece{pieces[1], pieces[0]}, pieces[2:]...)
	if _, err := Receive(feed(swapped), io.Discard); !errors.Is(err, ErrFormat) {
		t.Fatalf("data before the header: %v", err)
	}
	extra := append(append([]*pb.SnapshotPiece{}, pieces...), pieces[1])
	if _, err := Receive(feed(extra), io.Discard); !errors.Is(err, ErrFormat) {
		t.Fatalf("a piece after the checksum: %v", err)
	}
	hb, _ := EncodeHeader(&pb.SnapshotHeader{Format: 2})
	future := append([]*pb.SnapshotPiece{{Part: &pb.SnapshotPiece_Header{Header: hb}}}, pieces[1:]...)
	if _, err := Receive(feed(future), io.Discard); !errors.Is(err, ErrFormat) {
		t.Fatalf("format 2: %v", err)
	}
}
