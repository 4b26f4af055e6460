package chunker

import (
	"context"
	"io"
	"runtime"
	"sync"

	"github.com/ddstore/ddstore/internal/blake3"
)

// Piece is one chunk of a stream, in file order, ready to send.
type Piece struct {
	Index  int   // position in the file's chunk list
	Offset int64 // where the chunk starts in the file
	Encoded
}

// Summary describes the whole stream a Pipeline read.
type Summary struct {
	Size   int64
	Chunks int
	Hash   ID // BLAKE3-256 of the whole stream
}

// Pipeline cuts, hashes and compresses a stream with a bounded number of
// chunks in flight, so that memory stays the same whatever the stream's size:
// at most InFlight raw chunks of MaxSize plus their encoded forms.
//
// One goroutine cuts, Workers goroutines hash and compress, and the caller's
// goroutine hashes the whole stream and calls emit in file order.
type Pipeline struct {
	Options  Options // zero: DefaultOptions()
	Workers  int     // zero: GOMAXPROCS
	InFlight int     // chunks cut but not yet emitted; zero: 2*Workers+2
	Codecs   *Codecs // nil: NewCodecs()
}

// Run reads r to the end and calls emit for every chunk in order. It stops at
// the first error from r, from emit or from ctx and returns it; the Summary is
// complete only when the error is nil. emit may keep the Piece's Data.
func (p Pipeline) Run(ctx context.Context, r io.Reader, emit func(Piece) error) (Summary, error) {
	o := p.Options.orDefault()
	if err := o.Validate(); err != nil {
		return Summary{}, err
	}
	workers := p.Workers
	if workers <= 0 {
		workers = runtime.GOMAXPROCS(0)
	}
	inflight := p.InFlight
	if inflight <= 0 {
		inflight = 2*workers + 2
	}
	codecs := p.Codecs
	if codecs == nil {
		codecs = NewCodecs()
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	type job struct {
		piece Piece
		raw   []byte
		done  chan struct{}
	}
	var (
		jobs    = make(chan *job)
		order   = make(chan *job, inflight)
		tokens  = make(chan struct{}, inflight) // bounds the chunks in flight
		free    = make(chan []byte, inflight)   // raw buffers to reuse
		wg      sync.WaitGroup
		readErr error
		size    int64
		count   int
	)
	for range workers {
		wg.Go(func() {
			for j := range jobs {
				j.piece.Encoded = codecs.Encode(j.raw)
				close(j.done)
			}
		})
	}
	go func() {
		defer close(order)
		defer close(jobs)
		c := NewCutter(r, o)
		for {
			chunk, err := c.Next()
			if err == io.EOF {
				return
			}
			if err != nil {
				readErr = err
				return
			}
			select {
			case tokens <- struct{}{}:
			case <-ctx.Done():
				return
			}
			var buf []byte
			select {
			case buf = <-free:
			default:
				buf = make([]byte, 0, o.MaxSize)
			}
			j := &job{piece: Piece{Index: count, Offset: size}, raw: append(buf[:0], chunk...), done: make(chan struct{})}
			size += int64(len(chunk))
			count++
			jobs <- j
			order <- j
		}
	}()

	var err error
	whole := blake3.New()
	for j := range order {
		<-j.done
		if err == nil {
			err = ctx.Err()
		}
		if err == nil {
			whole.Write(j.raw)
			if err = emit(j.piece); err != nil {
				cancel()
			}
		}
		select {
		case free <- j.raw:
		default:
		}
		<-tokens
	}
	wg.Wait()
	if err == nil {
		err = readErr
	}
	if err == nil {
		err = ctx.Err()
	}
	if err != nil {
		return Summary{}, err
	}
	s := Summary{Size: size, Chunks: count}
	copy(s.Hash[:], whole.Sum(nil))
	return s, nil
}
