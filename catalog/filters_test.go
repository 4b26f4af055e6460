package catalog

import (
	"fmt"
	"testing"

	"github.com/hashicorp/raft"

	"github.com/ddstore/ddstore/chunker"
)

// TestFilters: no false negatives; the measured false-positive rate stays
// near the configured one; deletes are forgotten after the rebuild they
// trigger; filters survive encoding.
func TestFilters(t *testing.T) {
	f := NewFSM()
	const files = 5000
	for i := range files {
		m := manifest(fmt.Sprintf("dir/file-%05d", i), fmt.Sprint("chunk-", i))
		m.Date = fmt.Sprintf("2026-%02d-%02d", 1+i%6, 1+i%28)
		data, _ := EncodeCommand(put(m, day1, false))
		f.Apply(&raft.Log{Index: uint64(i + 1), Data: data})
		if i == 100 {
			f.Filters(0.01) // build early: the rest are added one by one, then rebuilt on growth
		}
	}
	flt := f.Filters(0.01)
	for i := range files {
		if !flt.MayHaveName(fmt.Sprintf("dir/file-%05d", i)) || !flt.MayHaveChunk(chunker.Sum([]byte(fmt.Sprint("chunk-", i)))) {
			t.Fatalf("false negative for file %d", i)
		}
	}
	fp := 0
	const probes = 100000
	for i := range probes {
		if flt.MayHaveName(fmt.Sprintf("other/%d", i)) {
			fp++
		}
	}
	rate := float64(fp) / probes
	t.Logf("measured false-positive rate %.4f (configured 0.01), version %d", rate, flt.Version)
	if rate > 0.02 {
		t.Fatalf("false-positive rate %.4f, configured 0.01", rate)
	}
	if !flt.MayHaveDates("2026-03-01", "2026-03-03") || flt.MayHaveDates("2025-01-01", "2025-12-31") {
		t.Fatal("date ranges answered wrong")
	}

	data, _ := EncodeCommand(del("dir/file-00007"))
	f.Apply(&raft.Log{Index: files + 1, Data: data})
	after := f.Filters(0.01)
	if after.Version != files+1 {
		t.Fatalf("version %d, want %d", after.Version, files+1)
	}
	if after.MayHaveName("dir/file-00007") { // deterministic: the hashes are fixed
		t.Fatal("the rebuild after a delete still holds the deleted name")
	}
	enc, err := after.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	got, err := UnmarshalFilters(enc)
	if err != nil || got.Version != after.Version || !got.MayHaveName("dir/file-04999") {
		t.Fatalf("decoded filters: %v", err)
	}
	if _, err := UnmarshalFilters(enc[:20]); err == nil {
		t.Fatal("truncated filters accepted")
	}
}
