package catalog

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	pb "github.com/ddstore/ddstore/proto/ddstore/v1"
	"google.golang.org/protobuf/proto"
)

func ts(s string) int64 {
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		panic(err)
	}
	return t.UnixNano()
}

func ranged(m *pb.FileManifest, from, to string) *pb.FileManifest {
	m.TimeFromUnixNano, m.TimeToUnixNano = proto.Int64(ts(from)), proto.Int64(ts(to))
	return m
}

func TestParseTime(t *testing.T) {
	tests := []struct {
		in   string
		end  bool
		want string // RFC 3339; empty: an error
	}{
		{"2018-04-13T00:00:00Z", false, "2018-04-13T00:00:00Z"},
		{"2018-04-13T00:00Z", false, "2018-04-13T00:00:00Z"},
		{"2018-04-13T06:30:15.25Z", true, "2018-04-13T06:30:15.25Z"},
		{"2018-04-13T02:00:00+02:00", false, "2018-04-13T00:00:00Z"},
		{"2018-04-13", false, "2018-04-13T00:00:00Z"},
		{"2018-04-13", true, "2018-04-13T23:59:59.999999999Z"},
		{" 2018-04-13 ", false, "2018-04-13T00:00:00Z"},
		{"2018-4-13", false, ""},
		{"2018-04-31", false, ""},
		{"2018-04-13 00:00", false, ""},
		{"yesterday", false, ""},
		{"", false, ""},
		{"1600-01-01", false, ""},
		{"2300-01-01T00:00Z", false, ""},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%q end=%v", tt.in, tt.end), func(t *testing.T) {
			got, err := ParseTime(tt.in, tt.end)
			if tt.want == "" {
				if !errors.Is(err, ErrInvalid) {
					t.Fatalf("ParseTime = %s, %v; want an ErrInvalid", FormatTime(got), err)
				}
				return
			}
			if err != nil || got != ts(tt.want) {
				t.Fatalf("ParseTime = %s, %v; want %s", FormatTime(got), err, tt.want)
			}
		})
	}
	if _, err := ParseRange("2018-04-14", "2018-04-13T23:00Z"); !errors.Is(err, ErrInvalid) {
		t.Fatalf("reversed range: %v", err)
	}
	if r, err := ParseRange("2018-04-13", "2018-04-13"); err != nil || r != (Range{From: ts("2018-04-13T00:00:00Z"), To: ts("2018-04-13T23:59:59.999999999Z")}) {
		t.Fatalf("one day: %v %v", r, err)
	}
	if r, err := ParseRange("", "2018-04-13"); err != nil || r.From != Everything.From {
		t.Fatalf("open start: %v %v", r, err)
	}
}

func TestValidateManifestRange(t *testing.T) {
	ok := func() *pb.FileManifest {
		return ranged(manifest("f", "a"), "2018-04-13T00:00:00Z", "2018-06-30T23:00:00Z")
	}
	tests := []struct {
		name   string
		edit   func(m *pb.FileManifest)
		errSub string // empty: valid
	}{
		{"range", func(*pb.FileManifest) {}, ""},
		{"range and its first day", func(m *pb.FileManifest) { m.Date = "2018-04-13" }, ""},
		{"one instant", func(m *pb.FileManifest) { m.TimeToUnixNano = m.TimeFromUnixNano }, ""},
		{"no range", func(m *pb.FileManifest) { m.TimeFromUnixNano, m.TimeToUnixNano = nil, nil }, ""},
		{"reversed", func(m *pb.FileManifest) { m.TimeFromUnixNano, m.TimeToUnixNano = m.TimeToUnixNano, m.TimeFromUnixNano }, "reversed"},
		{"from only", func(m *pb.FileManifest) { m.TimeToUnixNano = nil }, "both ends"},
		{"to only", func(m *pb.FileManifest) { m.TimeFromUnixNano = nil }, "both ends"},
		{"date not the first day", func(m *pb.FileManifest) { m.Date = "2018-05-01" }, "first day"},
		{"too long", func(m *pb.FileManifest) { *m.TimeToUnixNano = *m.TimeFromUnixNano + int64(MaxRangeSpan) + 1 }, "spans more"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := ok()
			tt.edit(m)
			err := ValidateManifest(m)
			switch {
			case tt.errSub == "" && err != nil:
				t.Fatalf("refused: %v", err)
			case tt.errSub != "" && (!errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tt.errSub)):
				t.Fatalf("error %v; want ErrInvalid mentioning %q", err, tt.errSub)
			}
		})
	}
}

// TestApplyRange: the date of a ranged file is the range's first day; a
// dated file without a range (as every manifest before ranges) covers its
// whole day; a retried commit of the same range is a no-op, another range
// under the name conflicts.
func TestApplyRange(t *testing.T) {
	s := NewState()
	m := ranged(manifest("wx/obs.csv", "a", "b"), "2018-04-13T00:00:00Z", "2018-06-30T23:00:00Z")
	res := Apply(s, put(m, day1, false))
	if res.Err != nil {
		t.Fatal(res.Err)
	}
	if got := res.Manifest.GetDate(); got != "2018-04-13" {
		t.Fatalf("date %q, want the range's first day", got)
	}
	if r := FileRange(res.Manifest); r != (Range{From: ts("2018-04-13T00:00:00Z"), To: ts("2018-06-30T23:00:00Z")}) {
		t.Fatalf("range %v", r)
	}
	if again := Apply(s, put(m, day1+1, false)); again.Err != nil || again.Manifest.GetCreatedUnixNano() != day1 {
		t.Fatalf("retried commit: %v", again.Err)
	}
	other := ranged(manifest("wx/obs.csv", "a", "b"), "2018-04-13T00:00:00Z", "2018-07-01T00:00:00Z")
	if res := Apply(s, put(other, day1+2, false)); !errors.Is(res.Err, ErrExists) {
		t.Fatalf("another range under the name: %v", res.Err)
	}
	reversed := ranged(manifest("wx/bad", "c"), "2018-06-30T00:00:00Z", "2018-04-13T00:00:00Z")
	if res := Apply(s, put(reversed, day1, false)); !errors.Is(res.Err, ErrInvalid) {
		t.Fatalf("reversed range applied: %v", res.Err)
	}

	old := manifest("old/dated", "d")
	old.Date = "2017-01-02"
	res = Apply(s, put(old, day1, false))
	if res.Err != nil || res.Manifest.TimeFromUnixNano != nil {
		t.Fatalf("dated file: %v, %v", res.Err, res.Manifest)
	}
	if r := FileRange(res.Manifest); r != (Range{From: ts("2017-01-02T00:00:00Z"), To: ts("2017-01-02T23:59:59.999999999Z")}) {
		t.Fatalf("a dated file's range is %v, want its whole day", r)
	}

	// Snapshots keep ranges, and restore them.
	snap, err := s.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	back, err := FromSnapshot(snap)
	if err != nil {
		t.Fatal(err)
	}
	got, _ := back.File("wx/obs.csv")
	if !proto.Equal(got, func() *pb.FileManifest { m, _ := s.File("wx/obs.csv"); return m }()) {
		t.Fatalf("restored %v", got)
	}
}

// TestListRange: a listing returns exactly the files whose range overlaps
// the query, ends included.
func TestListRange(t *testing.T) {
	s := NewState()
	files := []struct{ name, from, to, date string }{
		{"a-april", "2018-04-13T00:00:00Z", "2018-04-13T23:00:00Z", ""},
		{"b-quarter", "2018-04-13T00:00:00Z", "2018-06-30T23:00:00Z", ""},
		{"c-instant", "2018-04-14T00:00:00Z", "2018-04-14T00:00:00Z", ""},
		{"d-dated", "", "", "2018-04-15"},
		{"e-2019", "2019-01-01T00:00:00Z", "2019-12-31T23:59:59Z", ""},
	}
	for _, f := range files {
		m := manifest(f.name, f.name)
		if f.from != "" {
			ranged(m, f.from, f.to)
		}
		m.Date = f.date
		if res := Apply(s, put(m, day1, false)); res.Err != nil {
			t.Fatal(res.Err)
		}
	}
	tests := []struct {
		from, to string
		want     string
	}{
		{"", "", "[a-april b-quarter c-instant d-dated e-2019]"},
		{"2018-04-13T00:00Z", "2018-04-14", "[a-april b-quarter c-instant]"},
		{"2018-04-13T23:00:00Z", "2018-04-13T23:00:00Z", "[a-april b-quarter]"},
		{"2018-04-13T23:00:00.000000001Z", "2018-04-13T23:59:59Z", "[b-quarter]"},
		{"2018-04-14T00:00Z", "2018-04-14T00:00Z", "[b-quarter c-instant]"},
		{"2018-04-15T12:00Z", "2018-04-15T12:00Z", "[b-quarter d-dated]"},
		{"2018-07-01", "2018-12-31", "[]"},
		{"2018-06-30T23:00Z", "", "[b-quarter e-2019]"},
		{"", "2018-04-13", "[a-april b-quarter]"},
		{"2019-06-01", "2019-06-01", "[e-2019]"},
	}
	for _, tt := range tests {
		t.Run(tt.from+".."+tt.to, func(t *testing.T) {
			r, err := ParseRange(tt.from, tt.to)
			if err != nil {
				t.Fatal(err)
			}
			got, _ := s.List(Query{Time: &r})
			names := []string{}
			for _, m := range got {
				names = append(names, m.GetName())
			}
			if fmt.Sprint(names) != tt.want {
				t.Fatalf("listed %v, want %v", names, tt.want)
			}
		})
	}
	// Days and times narrow each other.
	r, _ := ParseRange("2018-04-13T12:00Z", "")
	got, _ := s.List(Query{Time: &r, DateTo: "2018-04-13"})
	if len(got) != 2 {
		t.Fatalf("days and times: %d files", len(got))
	}
	if _, err := QueryRange("2018-04-14", "2018-04-13", nil, nil); !errors.Is(err, ErrInvalid) {
		t.Fatalf("reversed days: %v", err)
	}
}

// TestFiltersRange: the date filter holds every day of a range (no false
// negatives), a long range's years, and still says no to other days.
func TestFiltersRange(t *testing.T) {
	s := NewState()
	quarter := ranged(manifest("quarter", "q"), "2018-04-13T00:00:00Z", "2018-06-30T23:00:00Z")
	long := ranged(manifest("long", "l"), "1950-01-01T00:00:00Z", "1979-12-31T00:00:00Z") // past MaxFilterDays
	dated := manifest("dated", "d")
	dated.Date = "2020-02-02"
	for _, m := range []*pb.FileManifest{quarter, long, dated} {
		if res := Apply(s, put(m, day1, false)); res.Err != nil {
			t.Fatal(res.Err)
		}
	}
	check := func(t *testing.T, f *Filters) {
		for d := ts("2018-04-13T00:00:00Z"); d <= ts("2018-06-30T00:00:00Z"); d += int64(24 * time.Hour) {
			if !f.MayHaveRange(Range{From: d, To: d}) || !f.MayHaveDates(DayOf(d), DayOf(d)) {
				t.Fatalf("false negative on %s", DayOf(d))
			}
		}
		for _, q := range [][2]string{{"1965-06-01T12:00Z", "1965-06-01T13:00Z"}, {"2020-02-02", "2020-02-02"}, {"2018-06-30T23:30Z", "2018-07-02"}} {
			r, _ := ParseRange(q[0], q[1])
			if !f.MayHaveRange(r) {
				t.Fatalf("false negative on %v", q)
			}
		}
		for _, q := range [][2]string{{"2018-07-01", "2018-07-31"}, {"1990-01-01", "1990-12-31"}, {"2018-04-12T00:00Z", "2018-04-12T23:59Z"}} {
			r, _ := ParseRange(q[0], q[1])
			if f.MayHaveRange(r) {
				t.Logf("false positive on %v (possible, unlikely)", q)
			}
		}
	}
	t.Run("built", func(t *testing.T) { check(t, BuildFilters(s, 1, 0.01)) })
	t.Run("added", func(t *testing.T) {
		f := BuildFilters(NewState(), 1, 0.01)
		for _, name := range []string{"quarter", "long", "dated"} {
			m, _ := s.File(name)
			f.addFile(m)
		}
		check(t, f)
	})
	t.Run("encoded", func(t *testing.T) {
		b, err := BuildFilters(s, 1, 0.01).MarshalBinary()
		if err != nil {
			t.Fatal(err)
		}
		f, err := UnmarshalFilters(b)
		if err != nil {
			t.Fatal(err)
		}
		check(t, f)
	})
}
