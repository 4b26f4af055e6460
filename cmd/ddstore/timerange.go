package main

import (
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/ddstore/ddstore/catalog"
	"github.com/ddstore/ddstore/client"
	"github.com/ddstore/ddstore/internal/timescan"
	"github.com/ddstore/ddstore/timerange"
)

// putRange holds put's time-range flags, and the scan of the data of the
// put's last attempt.
type putRange struct {
	from, to string
	fromData bool   // --time-from-data: a range from the data, or no commit
	column   string // --time-column
	scanner  *timescan.Scanner
	result   *timescan.Result // what the last attempt's scan found
}

// apply checks the flags and sets the range the put commits. A malformed,
// reversed or too long range, or --date with --from/--to, is a usage
// error.
func (p *putRange) apply(opts *client.PutOptions) error {
	p.fromData = p.fromData || p.column != ""
	if p.fromData && (p.from != "" || p.to != "" || opts.Date != "") {
		return usageError{errors.New("put: --time-from-data/--time-column read the range from the data: give them or --date/--from/--to, not both")}
	}
	if p.from == "" && p.to == "" {
		return nil
	}
	switch {
	case p.from == "" || p.to == "":
		return usageError{errors.New("put: --from and --to go together (for one instant, give it to both)")}
	case opts.Date != "":
		return usageError{errors.New("put: give --date or --from/--to, not both")}
	}
	r, err := timerange.Parse(p.from, p.to)
	if err != nil {
		return usageError{fmt.Errorf("put: --from/--to: %s", syntaxMessage(err))}
	}
	if uint64(r.To-r.From) > uint64(catalog.MaxRangeSpan) { // To >= From: no overflow in uint64
		return usageError{fmt.Errorf("put: --from/--to: the range spans more than %d days", catalog.MaxRangeSpan/(24*time.Hour))}
	}
	opts.Date = timerange.DayOf(r.From)
	opts.TimeRange = client.FixedRange(r)
	return nil
}

// scan returns r teed through a new scanner of the data when the put's
// range comes from the data (--time-from-data, or no --date/--from/--to),
// and points opts.TimeRange at its result; otherwise r itself.
func (p *putRange) scan(name string, r io.Reader, opts *client.PutOptions) io.Reader {
	if opts.Date != "" || p.from != "" {
		return r // a day or a range given by hand
	}
	p.scanner, p.result = &timescan.Scanner{Column: p.column}, nil
	sc := p.scanner
	opts.TimeRange = func() (timerange.Range, bool, error) {
		res, ok := sc.Result()
		if !ok {
			if p.fromData {
				return timerange.Range{}, false, fmt.Errorf("--time-from-data: no observation times found in %s (%s)", name, wanted(p.column))
			}
			return timerange.Range{}, false, nil
		}
		if err := catalog.ValidateRange(res.Range); err != nil {
			return timerange.Range{}, false, fmt.Errorf("the time range read from the data (%s): %w", res.Source, err)
		}
		p.result = &res
		return res.Range, true, nil
	}
	return io.TeeReader(r, sc)
}

// wanted says what the scan looked for.
func wanted(column string) string {
	if column != "" {
		return fmt.Sprintf("a CSV column %q of timestamps", column)
	}
	return "a Mesonet header line YYYY MM DD HH MM SS in the first lines, or a CSV column time, timestamp, date, datetime, valid or obs_time"
}

// found says what the scan found, for people ("" when nothing).
func (p *putRange) found() string {
	if p.result == nil {
		return ""
	}
	s := fmt.Sprintf("time range from data: %s .. %s (%s", timerange.Format(p.result.Range.From), timerange.Format(p.result.Range.To), p.result.Source)
	if p.result.Source != "mesonet header" {
		s += fmt.Sprintf(", %d rows", p.result.Rows)
		if p.result.Failed > 0 {
			s += fmt.Sprintf(", %d without a readable time", p.result.Failed)
		}
	}
	return s + ")"
}

// source names where the put's range came from: "data: ..." , "flags", or
// "" (none: the day of the commit or --date).
func (p *putRange) source() string {
	switch {
	case p.result != nil:
		return "data: " + p.result.Source
	case p.from != "":
		return "flags"
	}
	return ""
}

// syntaxMessage is a timerange error without its package prefix.
func syntaxMessage(err error) string {
	return strings.TrimPrefix(err.Error(), timerange.ErrSyntax.Error()+": ")
}

// rangeText writes a file's range for people: its day when it is one whole
// day, else its two ends.
func rangeText(r timerange.Range) string {
	if d, err := timerange.Day(timerange.DayOf(r.From)); err == nil && d == r {
		return timerange.DayOf(r.From)
	}
	return timerange.Format(r.From) + ".." + timerange.Format(r.To)
}
