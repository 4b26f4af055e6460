// Package timerange reads and compares the UTC time ranges that ddstore
// files carry: inclusive spans of time in Unix nanoseconds, written by
// people as RFC 3339 timestamps or calendar days.
//
// A file with only a date covers that whole calendar day, from 00:00:00 to
// 23:59:59.999999999 UTC. A query selects the files whose range overlaps
// it, ends included: a file ending at 2018-04-14T00:00:00Z is selected by a
// query starting at that instant.
package timerange

import (
	"errors"
	"fmt"
	"math"
	"strings"
	"time"
)

// DateLayout is how a calendar day is written.
const DateLayout = "2006-01-02"

// ErrSyntax: a time or range is malformed or reversed; the message says how.
var ErrSyntax = errors.New("timerange: malformed")

// Range is an inclusive span of UTC time in Unix nanoseconds.
type Range struct{ From, To int64 }

// Everything is the range of every representable time: an unbounded query.
var Everything = Range{math.MinInt64, math.MaxInt64}

// Overlaps reports whether r and o share at least one instant.
func (r Range) Overlaps(o Range) bool { return r.From <= o.To && o.From <= r.To }

// Bounded reports whether r has both ends.
func (r Range) Bounded() bool { return r.From != Everything.From && r.To != Everything.To }

// String writes r as two RFC 3339 timestamps ("..": an open end).
func (r Range) String() string {
	from, to := "..", ".."
	if r.From != Everything.From {
		from = Format(r.From)
	}
	if r.To != Everything.To {
		to = Format(r.To)
	}
	return from + " .. " + to
}

// Format writes Unix nanoseconds as an RFC 3339 UTC timestamp.
func Format(ns int64) string { return time.Unix(0, ns).UTC().Format(time.RFC3339Nano) }

// DayOf returns the calendar day (YYYY-MM-DD, UTC) of Unix nanoseconds.
func DayOf(ns int64) string { return time.Unix(0, ns).UTC().Format(DateLayout) }

// Day returns the range of a whole calendar day written YYYY-MM-DD.
func Day(day string) (Range, error) {
	t, err := time.Parse(DateLayout, day)
	if err != nil || t.Format(DateLayout) != day {
		return Range{}, fmt.Errorf("%w: date %q is not a calendar day written YYYY-MM-DD", ErrSyntax, day)
	}
	return Range{t.UnixNano(), t.AddDate(0, 0, 1).UnixNano() - 1}, nil
}

// ParseTime reads one end of a range: an RFC 3339 timestamp
// (2018-04-13T00:00:00Z, with or without seconds or a fraction, any zone
// offset, converted to UTC) or a calendar day (2018-04-13), which stands
// for its first instant when end is false and its last when end is true.
// Times must fall in the years 1678 to 2261 (what int64 nanoseconds hold).
func ParseTime(s string, end bool) (int64, error) {
	s = strings.TrimSpace(s)
	if d, err := Day(s); err == nil {
		if end {
			return d.To, inYears(s, d.To)
		}
		return d.From, inYears(s, d.From)
	}
	for _, layout := range []string{time.RFC3339Nano, "2006-01-02T15:04Z07:00"} {
		if t, err := time.Parse(layout, s); err == nil {
			if t.Year() < 1678 || t.Year() > 2261 {
				return 0, fmt.Errorf("%w: time %q is outside the years 1678 to 2261", ErrSyntax, s)
			}
			return t.UnixNano(), nil
		}
	}
	return 0, fmt.Errorf("%w: time %q is neither an RFC 3339 timestamp (2018-04-13T00:00:00Z, 2018-04-13T00:00Z) nor a day (2018-04-13)", ErrSyntax, s)
}

// inYears refuses days whose nanoseconds overflowed.
func inYears(s string, ns int64) error {
	if y := time.Unix(0, ns).UTC().Year(); y < 1678 || y > 2261 || !strings.HasPrefix(s, fmt.Sprintf("%04d", y)) {
		return fmt.Errorf("%w: time %q is outside the years 1678 to 2261", ErrSyntax, s)
	}
	return nil
}

// Parse reads a range written as two ends (see ParseTime); an empty end is
// unbounded. A reversed range is an error.
func Parse(from, to string) (Range, error) {
	r := Everything
	var err error
	if from != "" {
		if r.From, err = ParseTime(from, false); err != nil {
			return Range{}, err
		}
	}
	if to != "" {
		if r.To, err = ParseTime(to, true); err != nil {
			return Range{}, err
		}
	}
	if r.From > r.To {
		return Range{}, fmt.Errorf("%w: time range %s .. %s is reversed: it ends before it starts", ErrSyntax, from, to)
	}
	return r, nil
}
