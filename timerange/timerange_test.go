package timerange

import (
	"errors"
	"testing"
)

func TestParse(t *testing.T) {
	tests := []struct {
		from, to string
		want     string // Range.String(); empty: an error wrapping ErrSyntax
	}{
		{"2018-04-13T00:00Z", "2018-04-14", "2018-04-13T00:00:00Z .. 2018-04-14T23:59:59.999999999Z"},
		{"2018-04-13", "2018-04-13", "2018-04-13T00:00:00Z .. 2018-04-13T23:59:59.999999999Z"},
		{"2018-04-13T02:00:00+02:00", "", "2018-04-13T00:00:00Z .. .."},
		{"", "2018-04-13T00:00:00.5Z", ".. .. 2018-04-13T00:00:00.5Z"},
		{"", "", ".. .. .."},
		{"2018-04-13T00:00:00Z", "2018-04-13T00:00:00Z", "2018-04-13T00:00:00Z .. 2018-04-13T00:00:00Z"},
		{"2018-04-14", "2018-04-13T23:59Z", ""},
		{"2018-04-13T00:00", "", ""},
		{"2018-02-29", "", ""},
		{"1677-12-31", "", ""},
		{"", "2262-06-01T00:00Z", ""},
		{"now", "", ""},
	}
	for _, tt := range tests {
		r, err := Parse(tt.from, tt.to)
		switch {
		case tt.want == "" && !errors.Is(err, ErrSyntax):
			t.Errorf("Parse(%q, %q) = %v, %v; want an ErrSyntax", tt.from, tt.to, r, err)
		case tt.want != "" && (err != nil || r.String() != tt.want):
			t.Errorf("Parse(%q, %q) = %v, %v; want %s", tt.from, tt.to, r, err, tt.want)
		}
	}
}

func TestOverlaps(t *testing.T) {
	a := Range{From: 10, To: 20}
	for _, tt := range []struct {
		b    Range
		want bool
	}{
		{Range{From: 20, To: 30}, true}, // ends included
		{Range{From: 0, To: 10}, true},
		{Range{From: 21, To: 30}, false},
		{Range{From: 0, To: 9}, false},
		{Range{From: 12, To: 12}, true},
		{Everything, true},
	} {
		if got := a.Overlaps(tt.b); got != tt.want || tt.b.Overlaps(a) != tt.want {
			t.Errorf("%v overlaps %v: %v, want %v", a, tt.b, got, tt.want)
		}
	}
}
