package catalog

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"math"
	"time"

	"github.com/bits-and-blooms/bloom/v3"

	"github.com/ddstore/ddstore/chunker"
	pb "github.com/ddstore/ddstore/proto/ddstore/v1"
)

// Filters are Bloom filters over a catalog: the calendar days its files'
// time ranges touch (each day of a range of up to MaxFilterDays days, each
// year, keyed "Y2018", of a longer one),
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

// BuildFilters sizes and fills filters from s, for a false-positive rate
// in (0, MaxFPRate) (others: 1%).
func BuildFilters(s *State, version uint64, fpRate float64) *Filters {
	if !(fpRate > 0 && fpRate < MaxFPRate) {
		fpRate = 0.01
	}
	days := map[string]struct{}{}
	ranges := map[Range]struct{}{} // files of one range add its keys once
	for _, m := range s.files {
		r := FileRange(m)
		if _, seen := ranges[r]; seen {
			continue
		}
		ranges[r] = struct{}{}
		for _, k := range filterKeys(r) {
			days[k] = struct{}{}
		}
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
	for _, k := range filterKeys(FileRange(m)) {
		if !f.Dates.TestOrAddString(k) {
			f.added[fDates]++
		}
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
// Missing or empty filters answer "maybe".
func (f *Filters) MayHaveName(name string) bool {
	return f == nil || mayHave(f.Names, []byte(name))
}

// MayHaveChunk reports whether a file of the catalog may refer to the chunk.
func (f *Filters) MayHaveChunk(id chunker.ID) bool {
	return f == nil || mayHave(f.Chunks, id[:])
}

// mayHave tests a filter, answering "maybe" for a missing or zero one
// (whose zero size would divide by zero).
func mayHave(bf *bloom.BloomFilter, data []byte) bool {
	return !usable(bf) || bf.Test(data)
}

// usable reports whether bf is a filter bloom can use: not nil nor a zero
// BloomFilter.
func usable(bf *bloom.BloomFilter) bool {
	return bf != nil && bf.Cap() > 0 && bf.BitSet() != nil
}

// MayHaveDates reports whether the catalog may hold a file whose range
// touches a day between from and to (YYYY-MM-DD, inclusive; empty means
// unbounded). Ranges longer than ten years, or open-ended ones, answer
// "maybe".
func (f *Filters) MayHaveDates(from, to string) bool {
	r, err := QueryRange(from, to, nil, nil)
	return err != nil || f.MayHaveRange(r)
}

// MayHaveRange reports whether the catalog may hold a file whose time range
// overlaps r. Unbounded queries, and those longer than ten years, answer
// "maybe".
func (f *Filters) MayHaveRange(r Range) bool {
	if f == nil || r.From == Everything.From || r.To == Everything.To || r.From > r.To ||
		uint64(r.To-r.From) > uint64(10*366*24*time.Hour) {
		return true
	}
	first, last := dayStart(r.From), dayStart(r.To)
	for d := first; !d.After(last); d = d.AddDate(0, 0, 1) {
		if mayHave(f.Dates, []byte(d.Format(DateLayout))) {
			return true
		}
	}
	for y := first.Year(); y <= last.Year(); y++ {
		if mayHave(f.Dates, []byte(yearKey(y))) {
			return true
		}
	}
	return false
}

// Limits on filters a peer cluster sends. The filters BuildFilters makes
// stay far below them: sized for twice their items at 1%, they take ~2.4
// bytes per item, and whole filters travel in one gRPC message (9 MiB).
const (
	MaxFiltersSize  = 64 << 20 // bytes of the whole encoding
	MaxFilterBits   = 1 << 32  // bits (m) of one filter
	MaxFilterHashes = 64       // hash functions (k) of one filter
	MaxFPRate       = 0.5      // false-positive rates are in (0, MaxFPRate)
)

// Encoding: filtersMagic, Version and FPRate (big-endian uint64 and
// float64), then for Dates, Chunks and Names a big-endian uint32 length
// and bloom's binary form: m, k and the bitset's length in bits (each a
// big-endian uint64), then the bitset's ceil(length/64) words (big-endian
// uint64).
const (
	filtersMagic     = "DDBF1"
	filtersHeaderLen = len(filtersMagic) + 8 + 8
	bloomHeaderLen   = 8 + 8 + 8
)

// MarshalBinary encodes the filters for another cluster.
func (f *Filters) MarshalBinary() ([]byte, error) {
	if f == nil || !usable(f.Dates) || !usable(f.Chunks) || !usable(f.Names) {
		return nil, fmt.Errorf("%w: filters: encoding missing or zero filters", ErrInvalid)
	}
	var b bytes.Buffer
	b.WriteString(filtersMagic)
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

// UnmarshalFilters decodes filters a peer cluster sent. The peer is not
// trusted: the encoding must be exactly what MarshalBinary writes for
// filters within the limits above (m of 1 to MaxFilterBits bits, k of 1 to
// MaxFilterHashes, a bitset of exactly m bits with nothing set beyond them,
// a false-positive rate in (0, MaxFPRate), no trailing bytes). Anything
// else is an error wrapping ErrInvalid. Decoding allocates about the size
// of data.
func UnmarshalFilters(data []byte) (*Filters, error) {
	if len(data) > MaxFiltersSize {
		return nil, fmt.Errorf("%w: filters are %d bytes; the limit is %d", ErrInvalid, len(data), MaxFiltersSize)
	}
	if len(data) < filtersHeaderLen || string(data[:len(filtersMagic)]) != filtersMagic {
		return nil, fmt.Errorf("%w: not ddstore filters", ErrInvalid)
	}
	rest := data[len(filtersMagic):]
	f := &Filters{
		Version: binary.BigEndian.Uint64(rest),
		FPRate:  math.Float64frombits(binary.BigEndian.Uint64(rest[8:])),
	}
	rest = rest[16:]
	if !(f.FPRate > 0 && f.FPRate < MaxFPRate) { // NaN fails too
		return nil, fmt.Errorf("%w: filters: false-positive rate %g, want one in (0, %g)", ErrInvalid, f.FPRate, MaxFPRate)
	}
	for i, dst := range []**bloom.BloomFilter{&f.Dates, &f.Chunks, &f.Names} {
		name := [...]string{"dates", "chunks", "names"}[i]
		if len(rest) < 4 {
			return nil, fmt.Errorf("%w: filters truncated before the %s filter", ErrInvalid, name)
		}
		n := binary.BigEndian.Uint32(rest)
		rest = rest[4:]
		if uint64(n) > uint64(len(rest)) {
			return nil, fmt.Errorf("%w: filters truncated: the %s filter claims %d bytes, %d follow", ErrInvalid, name, n, len(rest))
		}
		bf, err := unmarshalBloom(rest[:n])
		if err != nil {
			return nil, fmt.Errorf("%w: %s filter: %s", ErrInvalid, name, err)
		}
		*dst = bf
		rest = rest[n:]
	}
	if len(rest) != 0 {
		return nil, fmt.Errorf("%w: filters followed by %d stray bytes", ErrInvalid, len(rest))
	}
	return f, nil
}

// unmarshalBloom checks one filter's encoding before bloom decodes it: bloom
// itself trusts m, k and the bitset length (m=0 divides by zero on lookup,
// a huge k spins, a huge length allocates before reading).
func unmarshalBloom(b []byte) (*bloom.BloomFilter, error) {
	if len(b) < bloomHeaderLen {
		return nil, fmt.Errorf("%d bytes, shorter than its header", len(b))
	}
	m := binary.BigEndian.Uint64(b)
	k := binary.BigEndian.Uint64(b[8:])
	length := binary.BigEndian.Uint64(b[16:])
	switch {
	case m == 0 || m > MaxFilterBits:
		return nil, fmt.Errorf("%d bits; want 1 to %d", m, uint64(MaxFilterBits))
	case k == 0 || k > MaxFilterHashes:
		return nil, fmt.Errorf("%d hash functions; want 1 to %d", k, MaxFilterHashes)
	case length != m:
		return nil, fmt.Errorf("a bitset of %d bits for a filter of %d", length, m)
	}
	words := (length + 63) / 64 // length <= MaxFilterBits: no overflow
	if have := uint64(len(b) - bloomHeaderLen); have != 8*words {
		return nil, fmt.Errorf("a bitset of %d bits needs %d bytes; %d are there", length, 8*words, have)
	}
	if r := length % 64; r != 0 {
		if last := binary.BigEndian.Uint64(b[len(b)-8:]); last>>r != 0 {
			return nil, fmt.Errorf("bits set beyond the filter's %d", m)
		}
	}
	bf := &bloom.BloomFilter{}
	if err := bf.UnmarshalBinary(b); err != nil {
		return nil, err
	}
	return bf, nil
}
