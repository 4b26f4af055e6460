package catalog

import (
	"fmt"
	"math"
	"strings"
	"time"

	pb "github.com/ddstore/ddstore/proto/ddstore/v1"
	"github.com/ddstore/ddstore/timerange"
)

// Time ranges. A file carries the UTC time range its data covers, inclusive
// at both ends, in Unix nanoseconds (FileManifest.time_from_unix_nano and
// time_to_unix_nano). A file with only a date (every manifest written
// before ranges existed) covers that whole calendar day: from 00:00:00 to
// 23:59:59.999999999 UTC. A listing's range selects the files whose range
// overlaps it: a file ending at 2018-04-14T00:00:00Z is listed by a query
// starting at that instant.
const (
	// MaxRangeSpan bounds the span of a file's range: about a century.
	MaxRangeSpan = 36525 * 24 * time.Hour
	// MaxFilterDays bounds the calendar days a file adds to the date
	// filter one by one (about ten years). A longer range adds its years
	// instead (yearKey), which MayHaveRange tests too.
	MaxFilterDays = 3660
)

// Range is an inclusive span of UTC time in Unix nanoseconds.
type Range = timerange.Range

// Everything is the range of every representable time: an unbounded query.
var Everything = timerange.Everything

// FormatTime writes Unix nanoseconds as an RFC 3339 UTC timestamp.
func FormatTime(ns int64) string { return timerange.Format(ns) }

// DayOf returns the calendar day (YYYY-MM-DD, UTC) of Unix nanoseconds.
func DayOf(ns int64) string { return timerange.DayOf(ns) }

// DayRange returns the range of a whole calendar day written YYYY-MM-DD.
func DayRange(day string) (Range, error) {
	r, err := timerange.Day(day)
	return r, wrapSyntax(err)
}

// wrapSyntax makes a timerange error one wrapping ErrInvalid.
func wrapSyntax(err error) error {
	if err == nil {
		return nil
	}
	return invalid("%s", strings.TrimPrefix(err.Error(), timerange.ErrSyntax.Error()+": "))
}

// FileRange returns the range a file covers: its time range, or the whole
// day of its date when it has none.
func FileRange(m *pb.FileManifest) Range {
	if m.TimeFromUnixNano != nil && m.TimeToUnixNano != nil {
		return Range{From: m.GetTimeFromUnixNano(), To: m.GetTimeToUnixNano()}
	}
	r, err := DayRange(m.GetDate())
	if err != nil {
		return Everything // never for a stored manifest: they are validated
	}
	return r
}

// InfoRange returns the range of a listed file: the one the listing gave,
// or the day of its date when it gave none (a node older than ranges).
func InfoRange(fi *pb.FileInfo) Range {
	if fi.GetTimeFromUnixNano() != 0 || fi.GetTimeToUnixNano() != 0 {
		return Range{From: fi.GetTimeFromUnixNano(), To: fi.GetTimeToUnixNano()}
	}
	r, err := DayRange(fi.GetDate())
	if err != nil {
		return Everything
	}
	return r
}

// ValidateRange checks a file's time range: from <= to, both within the
// years 1678..2261 that Unix nanoseconds hold, and a span of at most
// MaxRangeSpan. Errors wrap ErrInvalid.
func ValidateRange(r Range) error {
	switch {
	case r.From > r.To:
		return invalid("time range %s is reversed: it ends before it starts", r)
	case r.From == math.MinInt64 || r.To == math.MaxInt64:
		return invalid("time range must be bounded at both ends")
	case uint64(r.To-r.From) > uint64(MaxRangeSpan):
		return invalid("time range %s spans more than %d days", r, MaxRangeSpan/(24*time.Hour))
	}
	return nil
}

// validateManifestRange checks the range fields of a manifest: both or
// neither set, a valid range, and a date (when set) that is the range's
// first day.
func validateManifestRange(m *pb.FileManifest) error {
	if (m.TimeFromUnixNano == nil) != (m.TimeToUnixNano == nil) {
		return invalid("file %q: a time range needs both ends", m.GetName())
	}
	if m.TimeFromUnixNano == nil {
		return nil
	}
	r := Range{From: m.GetTimeFromUnixNano(), To: m.GetTimeToUnixNano()}
	if err := ValidateRange(r); err != nil {
		return fmt.Errorf("file %q: %w", m.GetName(), err)
	}
	if day := DayOf(r.From); m.GetDate() != "" && m.GetDate() != day {
		return invalid("file %q: date %s is not the first day of its time range (%s)", m.GetName(), m.GetDate(), day)
	}
	return nil
}

// ParseTime reads one end of a time range (see timerange.ParseTime).
// Errors wrap ErrInvalid.
func ParseTime(s string, end bool) (int64, error) {
	ns, err := timerange.ParseTime(s, end)
	return ns, wrapSyntax(err)
}

// ParseRange reads a range written as two ends (see timerange.Parse).
// Errors wrap ErrInvalid.
func ParseRange(from, to string) (Range, error) {
	r, err := timerange.Parse(from, to)
	return r, wrapSyntax(err)
}

// QueryRange combines a listing's bounds, days (YYYY-MM-DD, empty:
// unbounded) and times (nil: unbounded), into the range they all allow. A
// malformed day or a reversed range is an error wrapping ErrInvalid.
func QueryRange(dateFrom, dateTo string, timeFrom, timeTo *int64) (Range, error) {
	r := Everything
	if dateFrom != "" {
		d, err := DayRange(dateFrom)
		if err != nil {
			return Range{}, err
		}
		r.From = d.From
	}
	if dateTo != "" {
		d, err := DayRange(dateTo)
		if err != nil {
			return Range{}, err
		}
		r.To = d.To
	}
	if timeFrom != nil {
		r.From = max(r.From, *timeFrom)
	}
	if timeTo != nil {
		r.To = min(r.To, *timeTo)
	}
	if r.From > r.To {
		return Range{}, invalid("time range %s is reversed: it ends before it starts", r)
	}
	return r, nil
}

// filterKeys returns the date filter's keys for a range: each calendar day
// it touches (YYYY-MM-DD), or, past MaxFilterDays days, each year (yearKey).
func filterKeys(r Range) []string {
	first, last := dayStart(r.From), dayStart(r.To)
	if days := int(last.Sub(first)/(24*time.Hour)) + 1; days <= MaxFilterDays {
		keys := make([]string, 0, days)
		for d := first; !d.After(last); d = d.AddDate(0, 0, 1) {
			keys = append(keys, d.Format(DateLayout))
		}
		return keys
	}
	var keys []string
	for y := first.Year(); y <= last.Year(); y++ {
		keys = append(keys, yearKey(y))
	}
	return keys
}

// yearKey is the date filter's key for a year of a file whose range spans
// more than MaxFilterDays days.
func yearKey(y int) string { return fmt.Sprintf("Y%04d", y) }

func dayStart(ns int64) time.Time {
	t := time.Unix(0, ns).UTC()
	return time.Date(t.Year(), t.Month(), t.Day(), 0, 0, 0, 0, time.UTC)
}
