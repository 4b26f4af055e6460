package server_test

import (
	"bytes"
	"context"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/ddstore/ddstore/chunker"
	"github.com/ddstore/ddstore/client"
	"github.com/ddstore/ddstore/internal/localcluster"
	pb "github.com/ddstore/ddstore/proto/ddstore/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// rawConn is a plain gRPC connection to a node, with the library's default
// limits, for sending what the client package never would.
func rawConn(t *testing.T, cl *localcluster.Cluster, addr string) *grpc.ClientConn {
	t.Helper()
	conn, err := cl.Dial(addr, false, grpc.WithDefaultCallOptions(grpc.MaxCallSendMsgSize(64<<20)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

func wantCode(t *testing.T, err error, code codes.Code, msgPart string) {
	t.Helper()
	st, _ := status.FromError(err)
	if st.Code() != code {
		t.Fatalf("got %v, want code %v", err, code)
	}
	if !strings.Contains(st.Message(), msgPart) {
		t.Fatalf("message %q does not say %q", st.Message(), msgPart)
	}
}

func encoded(t *testing.T, raw []byte) chunker.Encoded {
	return chunker.NewCodecs().Encode(raw)
}

func wire(e chunker.Encoded) *pb.Chunk {
	return &pb.Chunk{Id: e.ID[:], RawSize: uint32(e.RawSize), Codec: pb.Codec(e.Codec), Data: e.Data}
}

// TestBadInput: every kind of bad request gets the right code and a clear
// message, and leaves nothing behind: no chunk stored, no file listed.
func TestBadInput(t *testing.T) {
	cl := startCluster(t, localcluster.Options{})
	conn := rawConn(t, cl, cl.Members[1].APIAddr)
	files := pb.NewFilesClient(conn)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	held := func(id chunker.ID) int {
		n := 0
		for _, m := range cl.Members {
			if ok, err := m.Node.Store().Has(ctx, id); err != nil {
				t.Fatal(err)
			} else if ok {
				n++
			}
		}
		return n
	}
	upload := func(chunks ...*pb.Chunk) error {
		s, err := files.Upload(ctx)
		if err != nil {
			return err
		}
		for _, c := range chunks {
			if err := s.Send(&pb.UploadRequest{Chunk: c}); err != nil {
				break
			}
		}
		_, err = s.CloseAndRecv()
		return err
	}
	good := encoded(t, bytes.Repeat([]byte("ddstore "), 40000))

	t.Run("chunk bytes do not match their ID", func(t *testing.T) {
		bad := wire(good)
		bad.Data = append([]byte(nil), bad.Data...)
		bad.Data[len(bad.Data)/2] ^= 1
		wantCode(t, upload(bad), codes.InvalidArgument, "rejected, nothing stored")
		other := encoded(t, []byte("some other bytes entirely, which are not compressible"))
		lie := wire(other)
		lie.Id = good.ID[:]
		wantCode(t, upload(lie), codes.InvalidArgument, "do not match")
		if n := held(good.ID); n != 0 {
			t.Fatalf("a rejected chunk is held by %d nodes", n)
		}
	})

	t.Run("malformed chunk messages", func(t *testing.T) {
		tooBig := wire(good)
		tooBig.RawSize = chunker.MaxRawSize + 1
		wantCode(t, upload(tooBig), codes.InvalidArgument, "raw bytes")
		short := wire(encoded(t, []byte("incompressible? no, but short and raw")))
		short.Codec, short.Data = pb.Codec_CODEC_RAW, short.Data[:3]
		wantCode(t, upload(short), codes.InvalidArgument, "")
		noID := wire(good)
		noID.Id = noID.Id[:5]
		wantCode(t, upload(noID), codes.InvalidArgument, "ID")
		wantCode(t, upload(&pb.Chunk{}), codes.InvalidArgument, "")
	})

	t.Run("oversized message", func(t *testing.T) {
		huge := &pb.Chunk{Id: good.ID[:], RawSize: 16 << 20, Data: make([]byte, 16<<20)}
		wantCode(t, upload(huge), codes.ResourceExhausted, "larger than max")
	})

	t.Run("commit naming a chunk never stored", func(t *testing.T) {
		never := encoded(t, []byte("never uploaded"))
		m := manifestOf("ghost.bin", never)
		_, err := files.Commit(ctx, &pb.CommitRequest{Manifest: m})
		wantCode(t, err, codes.FailedPrecondition, "not stored")
		_, err = files.Stat(ctx, &pb.StatRequest{Name: "ghost.bin"})
		wantCode(t, err, codes.NotFound, "ghost.bin")
	})

	t.Run("truncated upload stream", func(t *testing.T) {
		a := encoded(t, bytes.Repeat([]byte("a"), 300000))
		b := encoded(t, bytes.Repeat([]byte("b"), 300000))
		sctx, scancel := context.WithCancel(ctx)
		s, err := files.Upload(sctx)
		if err != nil {
			t.Fatal(err)
		}
		if err := s.Send(&pb.UploadRequest{Chunk: wire(a)}); err != nil {
			t.Fatal(err)
		}
		// Wait until the node has stored the chunk on R nodes (all three
		// here), then the client goes away mid-upload.
		for deadline := time.Now().Add(30 * time.Second); held(a.ID) < len(cl.Members); {
			if time.Now().After(deadline) {
				t.Fatalf("the chunk sent is held by %d nodes after 30s, want %d", held(a.ID), len(cl.Members))
			}
			time.Sleep(5 * time.Millisecond)
		}
		// Cancel without CloseSend: a CloseAndRecv here would also send
		// END_STREAM, which can reach the node before the RST_STREAM and
		// end the upload cleanly. The node must never see the end.
		scancel()
		err = s.RecvMsg(new(pb.UploadResponse))
		wantCode(t, err, codes.Canceled, "")
		m := manifestOf("half.bin", a, b)
		_, err = files.Commit(ctx, &pb.CommitRequest{Manifest: m})
		wantCode(t, err, codes.FailedPrecondition, "1 of its 2 distinct chunks")
		if n := held(b.ID); n != 0 {
			t.Fatalf("a chunk never sent is held by %d nodes", n)
		}
	})

	t.Run("unknown file", func(t *testing.T) {
		_, err := files.Stat(ctx, &pb.StatRequest{Name: "no/such/file"})
		wantCode(t, err, codes.NotFound, `"no/such/file"`)
		d, err := files.Download(ctx, &pb.DownloadRequest{Name: "no/such/file"})
		if err == nil {
			_, err = d.Recv()
		}
		wantCode(t, err, codes.NotFound, "no/such/file")
		_, err = files.Delete(ctx, &pb.DeleteRequest{Name: "no/such/file"})
		wantCode(t, err, codes.NotFound, "no/such/file")
	})

	t.Run("empty or invalid file name", func(t *testing.T) {
		for _, name := range []string{"", "a//b", "../etc/passwd", "/abs", "x\x00y", "tab\there", strings.Repeat("n", 2000)} {
			_, err := files.Stat(ctx, &pb.StatRequest{Name: name})
			wantCode(t, err, codes.InvalidArgument, "name")
			m := manifestOf(name, good)
			_, err = files.Commit(ctx, &pb.CommitRequest{Manifest: m})
			wantCode(t, err, codes.InvalidArgument, "name")
		}
	})

	t.Run("manifest that does not add up", func(t *testing.T) {
		m := manifestOf("sizes.bin", good)
		m.Size++
		_, err := files.Commit(ctx, &pb.CommitRequest{Manifest: m})
		wantCode(t, err, codes.InvalidArgument, "")
	})

	t.Run("download past the end", func(t *testing.T) {
		c := newClient(t, cl)
		if _, err := c.Put(ctx, "small.bin", bytes.NewReader([]byte("hello")), client.PutOptions{}); err != nil {
			t.Fatal(err)
		}
		d, err := files.Download(ctx, &pb.DownloadRequest{Name: "small.bin", StartIndex: 5})
		if err == nil {
			_, err = d.Recv()
		}
		wantCode(t, err, codes.OutOfRange, "past the end")
		if err := c.Delete(ctx, "small.bin"); err != nil {
			t.Fatal(err)
		}
	})

	// Nothing listed after all of it.
	resp, err := files.List(ctx, &pb.ListRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.GetFiles()) != 0 {
		t.Fatalf("files listed after bad input: %v", resp.GetFiles())
	}
}

// manifestOf builds a manifest for a file made of the given chunks.
func manifestOf(name string, chunks ...chunker.Encoded) *pb.FileManifest {
	m := &pb.FileManifest{Name: name}
	h := chunker.NewCodecs()
	var whole []byte
	for _, c := range chunks {
		raw, _ := h.Decode(nil, c)
		whole = append(whole, raw...)
		m.Chunks = append(m.Chunks, &pb.ChunkRef{Id: c.ID[:], Offset: m.Size, RawSize: uint32(c.RawSize), StoredSize: uint32(len(c.Data))})
		m.Size += uint64(c.RawSize)
		m.StoredSize += uint64(len(c.Data))
	}
	sum := chunker.Sum(whole)
	m.Blake3 = sum[:]
	return m
}

// countingReader counts the bytes read through it.
type countingReader struct {
	r io.Reader
	n int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

// TestRefusedBeforeUpload: a put the commit would refuse for its name, date
// or metadata is refused before the file is sent, and the cluster receives
// no chunk; a small file refused with its commit leaves none stored either.
func TestRefusedBeforeUpload(t *testing.T) {
	cl := startCluster(t, localcluster.Options{Replicas: 2})
	c := newClient(t, cl)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	const size = 30 << 20
	for _, tt := range []struct {
		name string
		opts client.PutOptions
		want string
	}{
		{"../x", client.PutOptions{}, `".."`},
		{"/abs", client.PutOptions{}, "relative"},
		{"ok.bin", client.PutOptions{Date: "2026-13-01"}, "date"},
		{"ok.bin", client.PutOptions{Metadata: map[string]string{"": "v"}}, "metadata"},
	} {
		in := &countingReader{r: randomReader(5, size)}
		res, err := c.Put(ctx, tt.name, in, tt.opts)
		if status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), tt.want) {
			t.Fatalf("put %q %+v: %v, want InvalidArgument saying %s", tt.name, tt.opts, err, tt.want)
		}
		// The client reads a first chunk's worth to tell a small file
		// (sent with its commit) from a large one, and sends nothing.
		if in.n > 256<<10+1 || res.BytesSent != 0 {
			t.Fatalf("put %q %+v: read %d bytes of the file and sent %d before the refusal, want at most the first 256 KiB read and none sent", tt.name, tt.opts, in.n, res.BytesSent)
		}
	}
	if _, err := c.Put(ctx, "../small", randomReader(6, 1000), client.PutOptions{}); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("small put under a bad name: %v, want InvalidArgument", err)
	}
	st, err := c.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range st.GetNodes() {
		if n.GetChunks() != 0 || n.GetStoredBytes() != 0 {
			t.Fatalf("node %s received %d chunks (%d bytes) from refused puts, want none", n.GetId(), n.GetChunks(), n.GetStoredBytes())
		}
	}
}
