package client

import (
	"bytes"
	"context"
	"crypto/rand"
	"net"
	"testing"
	"time"

	"github.com/ddstore/ddstore/chunker"
	"github.com/ddstore/ddstore/internal/blake3"
	pb "github.com/ddstore/ddstore/proto/ddstore/v1"
	"google.golang.org/grpc"
)

// oldNode serves Download as a node that predates DownloadRequest.step:
// the manifest, then every chunk from start_index on, whatever step was
// asked.
type oldNode struct {
	pb.UnimplementedFilesServer
	m     *pb.FileManifest
	wire  []*pb.Chunk
	steps chan uint32 // the steps asked
}

func (o *oldNode) Download(req *pb.DownloadRequest, s grpc.ServerStreamingServer[pb.DownloadResponse]) error {
	o.steps <- req.GetStep()
	if err := s.Send(&pb.DownloadResponse{Manifest: o.m, Cluster: "old", ChunksTotal: uint32(len(o.wire))}); err != nil {
		return err
	}
	for i := int(req.GetStartIndex()); i < len(o.wire); i++ {
		if err := s.Send(&pb.DownloadResponse{Index: uint32(i), Chunk: o.wire[i]}); err != nil {
			return err
		}
	}
	return nil
}

// TestDownloadFromOldNodes: asked for every second chunk, nodes that
// predate steps send every chunk and no step in their first message; the
// client notices and reads the file from one node, whole.
func TestDownloadFromOldNodes(t *testing.T) {
	codecs := chunker.NewCodecs()
	m := &pb.FileManifest{Name: "old/f.bin"}
	var want []byte
	var wire []*pb.Chunk
	for range 6 {
		raw := make([]byte, 1000)
		rand.Read(raw)
		want = append(want, raw...)
		e := codecs.Encode(raw)
		m.Chunks = append(m.Chunks, &pb.ChunkRef{Id: e.ID[:], Offset: m.Size, RawSize: uint32(e.RawSize), StoredSize: uint32(len(e.Data))})
		m.Size += uint64(len(raw))
		wire = append(wire, &pb.Chunk{Id: e.ID[:], RawSize: uint32(e.RawSize), Codec: pb.Codec(e.Codec), Data: e.Data})
	}
	sum := blake3.Sum256(want)
	m.Blake3 = sum[:]

	steps := make(chan uint32, 16)
	var (
		addrs []string
		srvs  []*grpc.Server
	)
	for range 2 {
		lis, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		srv := grpc.NewServer()
		pb.RegisterFilesServer(srv, &oldNode{m: m, wire: wire, steps: steps})
		go srv.Serve(lis)
		t.Cleanup(srv.Stop)
		srvs, addrs = append(srvs, srv), append(addrs, lis.Addr().String())
	}
	c, err := New(addrs)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var got bytes.Buffer
	if _, err := c.Get(ctx, m.GetName(), &got, GetOptions{Sources: 2}); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got.Bytes(), want) {
		t.Fatalf("got %d bytes that differ from the %d of the file", got.Len(), len(want))
	}
	for _, srv := range srvs {
		srv.Stop() // no handler sends on steps after this
	}
	close(steps)
	var asked []uint32
	for s := range steps {
		asked = append(asked, s)
	}
	if len(asked) < 2 || asked[0] != 2 || asked[len(asked)-1] != 0 {
		t.Fatalf("steps asked %v; want 2 first, then 0 (every chunk from one node)", asked)
	}
}
