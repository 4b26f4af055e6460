package catalog

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"time"

	"github.com/bits-and-blooms/bloom/v3"

	"github.com/ddstore/ddstore/chunker"
	pb "github.com/ddstore/ddstore/proto/ddstore/v1"
)

// Filters are Bloom filters over a catalog: the calendar days of its files,
// their chunk IDs and their names. They answer "certainly not here" cheaply,
// so that a cluster asked for something it lacks need only ask the peer
// clusters whose filters say "maybe". A Bloom filter cannot forget, so after
// deletes (or once more items were added than it was sized for) the filters
// are rebuilt from the catalog.
type Filters struct {
	Version uint64  // the catalog index the filters reflect
	FPRate  float64 // the false-positive rate they are sized for
	Dates   *bloom.BloomFilter
	Chunks  *bloom.BloomFilter
	Names   *bloom.BloomFilter

	capacity [3]uint // items each filter was sized for
	added    [3]uint // items added since
}

const (
	fDates = iota
	fChunks
	fNames
)

// minFilterItems is the smallest capacity a filter is sized for; filters
// are sized for twice the current count, so that growth between rebuilds
// keeps the false-positive rate.
const minFilterItems = 1024

// BuildFilters sizes and fills filters from s.
func BuildFilters(s *State, version uint64, fpRate float64) *Filters {
	if fpRate <= 0 || fpRate >= 1 {
		fpRate = 0.01
	}
	days := map[string]struct{}{}
	for _, m := range s.files {
		days[m.GetDate()] = struct{}{}
	}
	f := &Filters{Version: version, FPRate: fpRate}
	counts := [3]uint{uint(len(days)), uint(len(s.refs)), uint(len(s.files))}
	filters := [3]**bloom.BloomFilter{&f.Dates, &f.Chunks, &f.Names}
	for i, n := range counts {
		f.capacity[i] = max(minFilterItems, 2*n)
		*filters[i] = bloom.NewWithEstimates(f.capacity[i], fpRate)
	}
	for d := range days {
		f.Dates.AddString(d)
	}
	for id := range s.refs {
		f.Chunks.Add(id[:])
	}
	for name := range s.files {
		f.Names.AddString(name)
	}
	f.added = counts
	return f
}

// addFile records a newly stored file. It reports false when a filter is
// past its capacity and should be rebuilt.
func (f *Filters) addFile(m *pb.FileManifest) bool {
	if !f.Dates.TestOrAddString(m.GetDate()) {
		f.added[fDates]++
	}
	for _, c := range m.GetChunks() {
		if !f.Chunks.TestOrAdd(c.GetId()) {
			f.added[fChunks]++
		}
	}
	f.Names.AddString(m.GetName())
	f.added[fNames]++
	for i := range f.added {
		if f.added[i] > f.capacity[i] {
			return false
		}
	}
	return true
}

// MayHaveName reports whether the catalog may hold a file of that name.
func (f *Filters) MayHaveName(name string) bool { return f.Names.TestString(name) }

// MayHaveChunk reports whether a file of the catalog may refer to the chunk.
func (f *Filters) MayHaveChunk(id chunker.ID) bool { return f.Chunks.Test(id[:]) }

// MayHaveDates reports whether the catalog may hold a file dated between
// from and to (YYYY-MM-DD, inclusive; empty means unbounded). Ranges longer
// than ten years, or open-ended ones, answer "maybe".
func (f *Filters) MayHaveDates(from, to string) bool {
	if from == "" || to == "" {
		return true
	}
	start, err1 := time.Parse(DateLayout, from)
	end, err2 := time.Parse(DateLayout, to)
	if err1 != nil || err2 != nil || end.Sub(start) > 10*366*24*time.Hour {
		return true
	}
	for d := start; !d.After(end); d = d.AddDate(0, 0, 1) {
		if f.Dates.TestString(d.Format(DateLayout)) {
			return true
		}
	}
	return false
}

// MarshalBinary encodes the filters for another cluster.
func (f *Filters) MarshalBinary() ([]byte, error) {
	var b bytes.Buffer
	b.WriteString("DDBF1")
	binary.Write(&b, binary.BigEndian, f.Version)
	binary.Write(&b, binary.BigEndian, f.FPRate)
	for _, bf := range []*bloom.BloomFilter{f.Dates, f.Chunks, f.Names} {
		data, err := bf.MarshalBinary()
		if err != nil {
			return nil, err
		}
		binary.Write(&b, binary.BigEndian, uint32(len(data)))
		b.Write(data)
	}
	return b.Bytes(), nil
}

// UnmarshalFilters decodes filters a peer cluster sent.
func UnmarshalFilters(data []byte) (*Filters, error) {
	r := bytes.NewReader(data)
	magic := make([]byte, 5)
	if _, err := r.Read(magic); err != nil || string(magic) != "DDBF1" {
		return nil, fmt.Errorf("%w: not ddstore filters", ErrInvalid)
	}
	f := &Filters{}
	if err := binary.Read(r, binary.BigEndian, &f.Version); err != nil {
		return nil, fmt.Errorf("%w: filters: %v", ErrInvalid, err)
	}
	if err := binary.Read(r, binary.BigEndian, &f.FPRate); err != nil {
		return nil, fmt.Errorf("%w: filters: %v", ErrInvalid, err)
	}
	for _, dst := range []**bloom.BloomFilter{&f.Dates, &f.Chunks, &f.Names} {
		var n uint32
		if err := binary.Read(r, binary.BigEndian, &n); err != nil || int(n) > r.Len() {
			return nil, fmt.Errorf("%w: filters truncated", ErrInvalid)
		}
		buf := make([]byte, n)
		r.Read(buf)
		bf := &bloom.BloomFilter{}
		if err := bf.UnmarshalBinary(buf); err != nil {
			return nil, fmt.Errorf("%w: filters: %v", ErrInvalid, err)
		}
		*dst = bf
	}
	return f, nil
}
