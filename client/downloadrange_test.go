package client

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"testing"
	"time"

	"github.com/ddstore/ddstore/chunker"
	"github.com/ddstore/ddstore/internal/blake3"
	pb "github.com/ddstore/ddstore/proto/ddstore/v1"
	"google.golang.org/grpc"
)

// rangeServer answers DownloadRange with the messages of send.
type rangeServer struct {
	pb.UnimplementedFilesServer
	send []*pb.DownloadRangeResponse
}

func (s *rangeServer) DownloadRange(_ *pb.DownloadRangeRequest, stream pb.Files_DownloadRangeServer) error {
	for _, m := range s.send {
		if err := stream.Send(m); err != nil {
			return err
		}
	}
	return nil
}

// rangeMessages returns the messages of one file of DownloadRange at index,
// its manifest in two parts, then its chunks.
func rangeMessages(index uint32, name string, pieces ...[]byte) []*pb.DownloadRangeResponse {
	codecs := chunker.NewCodecs()
	m := &pb.FileManifest{Name: name}
	h := blake3.New()
	var chunks []*pb.Chunk
	for _, p := range pieces {
		e := codecs.Encode(p)
		m.Chunks = append(m.Chunks, &pb.ChunkRef{Id: e.ID[:], Offset: m.Size, RawSize: uint32(len(p)), StoredSize: uint32(len(e.Data))})
		m.Size += uint64(len(p))
		h.Write(p)
		chunks = append(chunks, &pb.Chunk{Id: e.ID[:], RawSize: uint32(e.RawSize), Codec: pb.Codec(e.Codec), Data: e.Data})
	}
	m.Blake3 = h.Sum(nil)
	first := &pb.FileManifest{Name: name, Size: m.Size, Blake3: m.Blake3, Chunks: m.Chunks[:1]}
	out := []*pb.DownloadRangeResponse{
		{FileIndex: index, Part: &pb.DownloadResponse{Manifest: first, Cluster: "X", ChunksTotal: uint32(len(m.Chunks))}},
		{FileIndex: index, Part: &pb.DownloadResponse{Manifest: &pb.FileManifest{Name: name, Chunks: m.Chunks[1:]}}},
	}
	for i, c := range chunks {
		out = append(out, &pb.DownloadRangeResponse{FileIndex: index, Part: &pb.DownloadResponse{Index: uint32(i), Chunk: c}})
	}
	return out
}

func serveRange(t *testing.T, send []*pb.DownloadRangeResponse) *Client {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	pb.RegisterFilesServer(srv, &rangeServer{send: send})
	go srv.Serve(lis)
	t.Cleanup(srv.Stop)
	c, err := New([]string{lis.Addr().String()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// TestDownloadRangeChecks: files come whole and checked, with paged
// manifests; a file fn leaves early is skipped; a chunk that does not match
// its ID fails the download, and fn's reader sees the error, not io.EOF.
func TestDownloadRangeChecks(t *testing.T) {
	day := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	good := append(rangeMessages(0, "a", []byte("hello "), []byte("world")), rangeMessages(2, "b", []byte("left"), []byte(" early"))...)
	good[0].Unanswered = []*pb.ClusterNote{{Cluster: "Y", Error: "down"}}
	got := map[string]string{}
	res, err := serveRange(t, good).DownloadRange(context.Background(), day, time.Time{}, RangeOptions{}, func(f RangeFile, r io.Reader) error {
		if f.Manifest.GetName() == "b" {
			return nil // reads nothing
		}
		b, err := io.ReadAll(r)
		got[f.Manifest.GetName()] = string(b)
		return err
	})
	if err != nil || got["a"] != "hello world" || len(res.Files) != 2 || res.Files[1].Index != 2 || len(res.Unanswered) != 1 {
		t.Fatalf("%v, %v, %+v", got, err, res)
	}

	bad := rangeMessages(0, "c", []byte("one"), []byte("two"))
	bad[3].Part.Chunk.Data = []byte("twx")
	var readErr error
	_, err = serveRange(t, bad).DownloadRange(context.Background(), day, day, RangeOptions{}, func(f RangeFile, r io.Reader) error {
		_, readErr = io.ReadAll(r)
		return nil
	})
	if !errors.Is(err, ErrCorrupt) || !errors.Is(readErr, ErrCorrupt) {
		t.Fatalf("corrupt chunk: %v (reader: %v), want ErrCorrupt", err, readErr)
	}

	if _, err := serveRange(t, nil).DownloadRange(context.Background(), day, day.Add(-1), RangeOptions{}, nil); err == nil || !bytes.Contains([]byte(err.Error()), []byte("reversed")) {
		t.Fatalf("reversed range: %v", err)
	}
}
