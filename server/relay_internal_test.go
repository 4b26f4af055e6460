package server

import (
	"crypto/rand"
	"io"
	"testing"

	"github.com/ddstore/ddstore/chunker"
	"github.com/ddstore/ddstore/internal/blake3"
	pb "github.com/ddstore/ddstore/proto/ddstore/v1"
	"github.com/ddstore/ddstore/replica"
	"github.com/ddstore/ddstore/server/metrics"
	"google.golang.org/grpc"
)

// fakeFile is a small file of n chunks: its manifest and its chunks as a
// node sends them.
func fakeFile(t *testing.T, n int) (*pb.FileManifest, []*pb.Chunk) {
	t.Helper()
	codecs := chunker.NewCodecs()
	m := &pb.FileManifest{Name: "old/f.bin"}
	h := blake3.New()
	var wire []*pb.Chunk
	for range n {
		raw := make([]byte, 1000)
		rand.Read(raw)
		h.Write(raw)
		e := codecs.Encode(raw)
		m.Chunks = append(m.Chunks, &pb.ChunkRef{Id: e.ID[:], Offset: m.Size, RawSize: uint32(e.RawSize), StoredSize: uint32(len(e.Data))})
		m.Size += uint64(len(raw))
		m.StoredSize += uint64(len(e.Data))
		wire = append(wire, replica.ToWire(e))
	}
	m.Blake3 = h.Sum(nil)
	return m, wire
}

// scriptedDownload is a peer's Download stream that sends msgs, then ends.
type scriptedDownload struct {
	grpc.ClientStream
	msgs []*pb.DownloadResponse
}

func (s *scriptedDownload) Recv() (*pb.DownloadResponse, error) {
	if len(s.msgs) == 0 {
		return nil, io.EOF
	}
	m := s.msgs[0]
	s.msgs = s.msgs[1:]
	return m, nil
}

type collect struct{ msgs []*pb.DownloadResponse }

func (c *collect) Send(m *pb.DownloadResponse) error {
	c.msgs = append(c.msgs, m)
	return nil
}

// TestRelayStep: a node relaying a peer cluster's download for a stream of
// every second chunk from chunk 1 passes on chunks 1 and 3 of 5 (after the
// manifest, which says the step), whether the peer applied the step itself
// or, predating steps, sent every chunk.
func TestRelayStep(t *testing.T) {
	m, wire := fakeFile(t, 5)
	n := &Node{codecs: chunker.NewCodecs(), metrics: metrics.New(nil)}
	req := &pb.DownloadRequest{Name: m.GetName(), StartIndex: 1, Step: 2}
	for _, peerStep := range []int{2, 0} {
		first := &pb.DownloadResponse{Manifest: m, Cluster: "B", ChunksTotal: uint32(len(wire)), Step: uint32(peerStep)}
		var msgs []*pb.DownloadResponse
		for i := 1; i < len(wire); i += max(1, peerStep) {
			msgs = append(msgs, &pb.DownloadResponse{Index: uint32(i), Chunk: wire[i]})
		}
		out := &collect{}
		if err := n.relayDownload(peerDownload{s: &scriptedDownload{msgs: msgs}, first: first}, req, out); err != nil {
			t.Fatalf("peer step %d: %v", peerStep, err)
		}
		if len(out.msgs) != 3 || out.msgs[0].GetStep() != 2 || out.msgs[1].GetIndex() != 1 || out.msgs[2].GetIndex() != 3 {
			var got []uint32
			for _, m := range out.msgs[1:] {
				got = append(got, m.GetIndex())
			}
			t.Fatalf("peer step %d: relayed %d messages, step %d, chunks %v; want the manifest with step 2, then chunks 1 and 3", peerStep, len(out.msgs), out.msgs[0].GetStep(), got)
		}
	}
}
