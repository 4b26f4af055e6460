package nemesis

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ddstore/ddstore/client"
	"github.com/ddstore/ddstore/internal/blake3"
	pb "github.com/ddstore/ddstore/proto/ddstore/v1"
)

// namePrefix starts every name the workload uses.
const namePrefix = "nemesis/"

// workload generates the clients' files and runs their operations.
type workload struct {
	seed      uint64
	names     []string
	timeout   time.Duration
	hist      *history
	newClient func(worker int) (*client.Client, error)

	putSeq atomic.Uint64
	mu     sync.Mutex
	seqOf  map[string]uint64 // version -> the put that wrote it
}

func newWorkload(seed uint64, names int, timeout time.Duration, hist *history, newClient func(int) (*client.Client, error)) *workload {
	w := &workload{seed: seed, timeout: timeout, hist: hist, newClient: newClient, seqOf: map[string]uint64{}}
	for i := range names {
		w.names = append(w.names, fmt.Sprintf("%sk%d", namePrefix, i))
	}
	return w
}

// content is the file put number seq writes: a header naming it, then
// pseudo-random bytes from the seed; a few KiB to 1 MiB, mostly small.
// Every put writes different content, so a file's BLAKE3 names the put.
func (w *workload) content(seq uint64) []byte {
	var key [32]byte
	binary.LittleEndian.PutUint64(key[0:], w.seed)
	binary.LittleEndian.PutUint64(key[8:], seq)
	copy(key[16:], "ddstore-nemesis!")
	src := rand.NewChaCha8(key)
	r := rand.New(src)
	var size int
	switch p := r.Float64(); {
	case p < 0.6:
		size = 4<<10 + r.IntN(60<<10)
	case p < 0.9:
		size = 64<<10 + r.IntN(192<<10)
	default:
		size = 256<<10 + r.IntN(768<<10+1)
	}
	buf := make([]byte, size)
	n := copy(buf, fmt.Sprintf("ddstore nemesis seed %d put %d\n", w.seed, seq))
	src.Read(buf[n:])
	return buf
}

// newFile makes the content of a new put and remembers its version.
func (w *workload) newFile() ([]byte, string) {
	seq := w.putSeq.Add(1)
	data := w.content(seq)
	sum := blake3.Sum256(data)
	v := versionOf(sum[:])
	w.mu.Lock()
	w.seqOf[v] = seq
	w.mu.Unlock()
	return data, v
}

// expected returns the content of version v, if some put wrote it.
func (w *workload) expected(v string) ([]byte, bool) {
	w.mu.Lock()
	seq, ok := w.seqOf[v]
	w.mu.Unlock()
	if !ok {
		return nil, false
	}
	return w.content(seq), true
}

// run starts n workers and returns when ctx is done and each has finished
// its operation.
func (w *workload) run(ctx context.Context, n int) error {
	var wg sync.WaitGroup
	defer wg.Wait()
	for id := range n {
		cl, err := w.newClient(id)
		if err != nil {
			return err
		}
		wg.Go(func() {
			defer cl.Close()
			w.worker(ctx, id, cl)
		})
	}
	return nil
}

// worker runs operations until ctx is done: a mix of writes and reads on a
// few names, so that clients race on each name.
func (w *workload) worker(ctx context.Context, id int, cl *client.Client) {
	var key [32]byte
	binary.LittleEndian.PutUint64(key[0:], w.seed)
	binary.LittleEndian.PutUint64(key[8:], uint64(id))
	copy(key[16:], "nemesis-worker!!")
	r := rand.New(rand.NewChaCha8(key))
	for ctx.Err() == nil {
		name := w.names[r.IntN(len(w.names))]
		var kind Kind
		switch p := r.IntN(100); {
		case p < 25:
			kind = KindPut
		case p < 45:
			kind = KindOverwrite
		case p < 57:
			kind = KindDelete
		case p < 75:
			kind = KindStat
		case p < 85:
			kind = KindList
		default:
			kind = KindGet
		}
		w.hist.add(w.do(ctx, cl, id, kind, name, false))
		select {
		case <-ctx.Done():
		case <-time.After(time.Duration(r.IntN(40)) * time.Millisecond):
		}
	}
}

// do runs one operation with the client-side timeout and returns its
// record; a get keeps the downloaded bytes in it if keep is set. The
// operation is not cut short when ctx ends: its own deadline bounds it.
func (w *workload) do(ctx context.Context, cl *client.Client, worker int, kind Kind, name string, keep bool) *Op {
	o := &Op{Worker: worker, Kind: kind, Name: name}
	var data []byte
	if kind == KindPut || kind == KindOverwrite {
		data, o.Version = w.newFile()
	}
	octx, cancel := context.WithTimeout(context.WithoutCancel(ctx), w.timeout)
	defer cancel()
	o.Call = w.hist.now()
	var err error
	switch kind {
	case KindPut, KindOverwrite:
		var res *client.PutResult
		res, err = cl.Put(octx, name, bytes.NewReader(data), client.PutOptions{Overwrite: kind == KindOverwrite, Workers: 1})
		o.Return = w.hist.now()
		o.Outcome = classifyWrite(kind, err, octx.Err())
		if err == nil {
			if got := versionOf(res.Manifest.GetBlake3()); got != o.Version {
				err = fmt.Errorf("commit answered version %s, want %s", got, o.Version)
			}
		}
		if o.Outcome == Replaced {
			o.Now, o.NowKnown = replacedNow(err)
		}
	case KindDelete:
		err = cl.Delete(octx, name)
		o.Return = w.hist.now()
		o.Outcome = classifyWrite(kind, err, octx.Err())
	case KindStat:
		var m *pb.FileManifest
		m, err = cl.Stat(octx, name, pb.Consistency_CONSISTENCY_LINEARIZABLE)
		o.Return = w.hist.now()
		o.Outcome = classifyRead(err)
		o.Version = versionOf(m.GetBlake3())
	case KindGet:
		var data []byte
		o.Version, o.Outcome, data, o.corrupt, err = w.get(octx, cl, name)
		o.Return = w.hist.now()
		if keep {
			o.data = data
		}
	case KindList:
		var l *client.Listing
		l, err = cl.List(octx, client.ListOptions{Prefix: namePrefix})
		o.Return = w.hist.now()
		o.Outcome = classifyRead(err)
		if err == nil {
			o.Listed = map[string]string{}
			for _, f := range l.GetFiles() {
				o.Listed[f.GetName()] = versionOf(f.GetBlake3())
			}
		}
	}
	if err != nil {
		o.Err = oneLine(err.Error())
	}
	return o
}

// get downloads name and returns the version it read: the manifest's, when
// the download got that far, even if the data then failed to come (a get
// that read the manifest observed that version). A download whose bytes do
// not hash to the manifest's BLAKE3 fails with client.ErrCorrupt.
//
// corrupt reports bytes that do not match the manifest's hashes (not a
// file that changed between two streams of a resumed download).
func (w *workload) get(ctx context.Context, cl *client.Client, name string) (v string, out Outcome, data []byte, corrupt bool, err error) {
	var buf bytes.Buffer
	res, err := cl.Get(ctx, name, &buf, client.GetOptions{})
	if res != nil && res.Manifest != nil {
		v := versionOf(res.Manifest.GetBlake3())
		if err != nil {
			corrupt = errors.Is(err, client.ErrCorrupt) && !strings.Contains(err.Error(), "changed on the cluster during the download")
			return v, OK, nil, corrupt, fmt.Errorf("manifest read, data failed: %w", err)
		}
		if sum := blake3.Sum256(buf.Bytes()); versionOf(sum[:]) != v {
			return v, OK, nil, true, fmt.Errorf("%w: downloaded bytes hash to %s", client.ErrCorrupt, versionOf(sum[:]))
		}
		return v, OK, buf.Bytes(), false, nil
	}
	return absent, classifyRead(err), nil, false, err
}

// oneLine shortens an error message for the report.
func oneLine(s string) string {
	s = strings.ReplaceAll(s, "\n", " ")
	if len(s) > 300 {
		s = s[:300] + "..."
	}
	return s
}
