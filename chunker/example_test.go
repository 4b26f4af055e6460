package chunker_test

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"

	"github.com/ddstore/ddstore/chunker"
)

// A Pipeline cuts a stream into content-defined chunks, names each by its
// BLAKE3 hash and compresses it; Decode turns a chunk back into its bytes,
// checking them against the ID.
func Example() {
	data := make([]byte, 3<<20)
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range data {
		data[i] = byte(rng.IntN(4)) // compressible
	}
	codecs := chunker.NewCodecs()
	p := chunker.Pipeline{
		Options: chunker.Options{MinSize: 64 << 10, AvgSize: 256 << 10, MaxSize: 1 << 20},
		Codecs:  codecs,
	}
	var out bytes.Buffer
	sum, err := p.Run(context.Background(), bytes.NewReader(data), func(c chunker.Piece) error {
		raw, err := codecs.Decode(nil, c.Encoded)
		if err != nil {
			return err
		}
		if c.Codec != chunker.Zstd || len(c.Data) >= c.RawSize {
			return fmt.Errorf("chunk %d not compressed", c.Index)
		}
		out.Write(raw)
		return nil
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println("bytes:", sum.Size)
	fmt.Println("several chunks:", sum.Chunks > 4)
	fmt.Println("identical:", bytes.Equal(out.Bytes(), data))
	fmt.Println("whole-file ID matches:", sum.Hash == chunker.Sum(data))
	// Output:
	// bytes: 3145728
	// several chunks: true
	// identical: true
	// whole-file ID matches: true
}
