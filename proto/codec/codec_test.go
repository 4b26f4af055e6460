package codec_test

import (
	"bytes"
	"math/rand/v2"
	"testing"

	"github.com/ddstore/ddstore/proto/codec"
	pb "github.com/ddstore/ddstore/proto/ddstore/v1"
	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
)

func chunk(n int) *pb.Chunk {
	data := make([]byte, n)
	for i := range data {
		data[i] = byte(i*7 + i>>9)
	}
	return &pb.Chunk{Id: bytes.Repeat([]byte{0xab}, 32), RawSize: uint32(n), Codec: pb.Codec(0), Data: data}
}

// split cuts b into pieces the way a transport hands a message over:
// several buffers.
func split(b []byte, piece int) mem.BufferSlice {
	var s mem.BufferSlice
	for len(b) > 0 {
		n := min(piece, len(b))
		s = append(s, mem.SliceBuffer(append([]byte(nil), b[:n]...)))
		b = b[n:]
	}
	return s
}

func TestRoundTrip(t *testing.T) {
	c := codec.New()
	for _, tc := range []struct {
		name string
		msg  proto.Message
		// zeroCopy: the chunk data is sent as it is held, not copied.
		zeroCopy bool
	}{
		{"download chunk", &pb.DownloadResponse{Index: 7, Chunk: chunk(1 << 20)}, true},
		{"download chunk at index 0", &pb.DownloadResponse{Chunk: chunk(codec.MinZeroCopy)}, true},
		{"small chunk", &pb.DownloadResponse{Index: 1, Chunk: chunk(100)}, false},
		{"manifest", &pb.DownloadResponse{Manifest: &pb.FileManifest{Name: "a/b", Size: 5}, Cluster: "x", ChunksTotal: 3}, false},
		{"upload", &pb.UploadRequest{Chunk: chunk(200 << 10)}, true},
		{"put chunks", &pb.PutChunksRequest{Chunk: chunk(300 << 10)}, true},
		{"get chunk", &pb.GetChunkResponse{Chunk: chunk(64 << 10)}, true},
		{"no chunk field", &pb.StatRequest{Name: "n"}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			bs, err := c.Marshal(tc.msg)
			if err != nil {
				t.Fatal(err)
			}
			wire := bs.Materialize()
			if tc.zeroCopy {
				last := bs[len(bs)-1].ReadOnlyData()
				if len(bs) != 2 || &last[0] != &chunkOf(tc.msg).Data[0] {
					t.Fatalf("chunk data was copied: %d buffers", len(bs))
				}
			}
			// Any protobuf decoder reads the same message.
			std := tc.msg.ProtoReflect().New().Interface()
			if err := proto.Unmarshal(wire, std); err != nil {
				t.Fatal(err)
			}
			if !proto.Equal(std, tc.msg) {
				t.Fatalf("standard decoder read %v, want %v", std, tc.msg)
			}
			// The codec reads it back from a transport's pieces.
			got := tc.msg.ProtoReflect().New().Interface()
			if err := c.Unmarshal(split(wire, 16<<10), got); err != nil {
				t.Fatal(err)
			}
			if !proto.Equal(got, tc.msg) {
				t.Fatalf("codec read %v, want %v", got, tc.msg)
			}
			// And what the default encoder writes.
			std2, err := proto.Marshal(tc.msg)
			if err != nil {
				t.Fatal(err)
			}
			got2 := tc.msg.ProtoReflect().New().Interface()
			if err := c.Unmarshal(split(std2, 16<<10), got2); err != nil {
				t.Fatal(err)
			}
			if !proto.Equal(got2, tc.msg) {
				t.Fatalf("codec read %v from the default encoding, want %v", got2, tc.msg)
			}
		})
	}
}

func chunkOf(m proto.Message) *pb.Chunk {
	switch m := m.(type) {
	case *pb.DownloadResponse:
		return m.GetChunk()
	case *pb.UploadRequest:
		return m.GetChunk()
	case *pb.PutChunksRequest:
		return m.GetChunk()
	case *pb.GetChunkResponse:
		return m.GetChunk()
	}
	return nil
}

// TestUnmarshalShares: the chunk data of a decoded message is a slice of
// the buffer it was decoded from.
func TestUnmarshalShares(t *testing.T) {
	want := &pb.DownloadResponse{Index: 3, Chunk: chunk(100 << 10)}
	wire, err := proto.Marshal(want)
	if err != nil {
		t.Fatal(err)
	}
	var got pb.DownloadResponse
	if err := codec.UnmarshalShared(wire, &got); err != nil {
		t.Fatal(err)
	}
	if !proto.Equal(&got, want) {
		t.Fatal("decoded message differs")
	}
	d := got.GetChunk().GetData()
	if &d[len(d)-1] != &wire[len(wire)-1] {
		t.Fatal("chunk data was copied")
	}
}

// TestMergeRules: protobuf's rules hold for odd but valid input: a chunk
// field sent several times merges, and the last data wins.
func TestMergeRules(t *testing.T) {
	part := func(m proto.Message) []byte {
		b, err := proto.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	var wire []byte
	wire = append(wire, part(&pb.DownloadResponse{Chunk: &pb.Chunk{Id: []byte("one"), Data: []byte("first")}})...)
	wire = append(wire, part(&pb.DownloadResponse{Index: 9})...)
	wire = append(wire, part(&pb.DownloadResponse{Chunk: &pb.Chunk{RawSize: 5, Data: []byte("second")}})...)
	wire = append(wire, part(&pb.DownloadResponse{Chunk: &pb.Chunk{Codec: 1}})...)
	wire = protowire.AppendTag(wire, 99, protowire.VarintType) // unknown field
	wire = protowire.AppendVarint(wire, 5)
	var want, got pb.DownloadResponse
	if err := proto.Unmarshal(wire, &want); err != nil {
		t.Fatal(err)
	}
	if err := codec.UnmarshalShared(wire, &got); err != nil {
		t.Fatal(err)
	}
	if !proto.Equal(&got, &want) || string(got.GetChunk().GetData()) != "second" || string(got.GetChunk().GetId()) != "one" {
		t.Fatalf("got %v, want %v", &got, &want)
	}
}

// FuzzUnmarshal: on any input the codec decodes what proto.Unmarshal does,
// and fails where it fails.
func FuzzUnmarshal(f *testing.F) {
	for _, m := range []proto.Message{
		&pb.DownloadResponse{Index: 7, Chunk: chunk(300)},
		&pb.DownloadResponse{Manifest: &pb.FileManifest{Name: "x"}},
		&pb.DownloadResponse{},
	} {
		b, _ := proto.Marshal(m)
		f.Add(b)
	}
	f.Add([]byte{0x1a, 0x03, 0x22, 0x01, 0x41})             // chunk{data: "A"}
	f.Add([]byte{0x1a, 0x02, 0x22, 0x05})                   // truncated data inside the chunk
	f.Add([]byte{0x1a, 0x04, 0x23, 0x24, 0x22, 0x00})       // a group in the chunk
	f.Add([]byte{0x18, 0x01, 0x1a, 0x02, 0x20, 0x01, 0x1c}) // wrong wire type for chunk; end group
	f.Fuzz(func(t *testing.T, wire []byte) {
		var want, got pb.DownloadResponse
		wantErr := proto.Unmarshal(wire, &want)
		gotErr := codec.UnmarshalShared(wire, &got)
		if (wantErr == nil) != (gotErr == nil) {
			t.Fatalf("proto.Unmarshal: %v; codec: %v", wantErr, gotErr)
		}
		if wantErr == nil && !proto.Equal(&got, &want) {
			t.Fatalf("codec read %v, proto.Unmarshal %v", &got, &want)
		}
	})
}

// FuzzMarshal: whatever a chunk carrier holds, the codec's encoding
// decodes to the same message with the standard decoder.
func FuzzMarshal(f *testing.F) {
	f.Add(uint32(1), []byte("id"), uint32(5), int32(0), 40000, uint64(1))
	f.Add(uint32(0), []byte{}, uint32(0), int32(3), codec.MinZeroCopy, uint64(2))
	f.Fuzz(func(t *testing.T, index uint32, id []byte, raw uint32, codecNum int32, n int, seed uint64) {
		if n < 0 || n > 1<<20 {
			return
		}
		data := make([]byte, n)
		r := rand.New(rand.NewPCG(seed, 0))
		for i := range data {
			data[i] = byte(r.Uint32())
		}
		m := &pb.DownloadResponse{Index: index, Chunk: &pb.Chunk{Id: id, RawSize: raw, Codec: pb.Codec(codecNum), Data: data}}
		bs, err := codec.New().Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		var got pb.DownloadResponse
		if err := proto.Unmarshal(bs.Materialize(), &got); err != nil {
			t.Fatal(err)
		}
		if !proto.Equal(&got, m) {
			t.Fatal("decoded message differs")
		}
	})
}

// BenchmarkMarshal and BenchmarkUnmarshal: a 1 MiB chunk message sent,
// and received from a transport's 16 KiB frames, by grpc-go's default
// codec and by this one.
func BenchmarkMarshal(b *testing.B) {
	msg := &pb.DownloadResponse{Index: 1, Chunk: chunk(1 << 20)}
	for _, bc := range codecs() {
		b.Run(bc.name, func(b *testing.B) {
			b.SetBytes(1 << 20)
			for b.Loop() {
				bs, err := bc.c.Marshal(msg)
				if err != nil {
					b.Fatal(err)
				}
				bs.Free()
			}
		})
	}
}

func BenchmarkUnmarshal(b *testing.B) {
	wire, err := proto.Marshal(&pb.DownloadResponse{Index: 1, Chunk: chunk(1 << 20)})
	if err != nil {
		b.Fatal(err)
	}
	in := split(wire, 16<<10)
	for _, bc := range codecs() {
		b.Run(bc.name, func(b *testing.B) {
			b.SetBytes(1 << 20)
			for b.Loop() {
				var got pb.DownloadResponse
				if err := bc.c.Unmarshal(in, &got); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func codecs() []struct {
	name string
	c    encoding.CodecV2
} {
	return []struct {
		name string
		c    encoding.CodecV2
	}{{"default", encoding.GetCodecV2("proto")}, {"codec", codec.New()}}
}
