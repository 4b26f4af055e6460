package main

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/ddstore/ddstore/catalog"
	"github.com/ddstore/ddstore/client"
	"github.com/ddstore/ddstore/timerange"
)

// putRange holds put's time-range flags.
type putRange struct {
	from, to string
}

// apply checks the flags and sets the range the put commits. A malformed,
// reversed or too long range, or --date with --from/--to, is a usage
// error.
func (p *putRange) apply(opts *client.PutOptions) error {
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
