// Package timescan finds the observation times in a file while it streams
// past, for the time range a put records. It is an io.Writer: tee the
// reader an upload consumes into it (io.TeeReader), and ask for the result
// once the upload has read the file to its end. There is no second pass and
// memory stays bounded (one line of at most MaxLine bytes, a few numbers
// per candidate column), whatever the file's size.
//
// Two formats are recognised:
//
//   - Mesonet observation files: within the first HeaderLines lines, a
//     header line whose first six whitespace-separated fields are the
//     observation time, YYYY MM DD HH MM SS (2018 04 13 00 00 00). The file
//     covers that instant.
//   - CSV files (comma, semicolon or tab separated) whose header names a
//     timestamp column: time, timestamp, date, datetime, date_time, valid,
//     valid_time, obs_time, observation_time, time_utc, utc (any case), or
//     the column named by Scanner.Column. The file covers the earliest to
//     the latest time of all its rows. Values are RFC 3339, or
//     "2006-01-02 15:04[:05[.fff]]" (with a T or a space; no zone means
//     UTC), 2006/01/02 forms, YYYYMMDD[HHMM[SS]], or Unix seconds (10
//     digits) or milliseconds (13). A value that is a day alone covers the
//     whole day. When several recognised columns parse, the one with the
//     most parsed rows wins (ties: the order above).
//
// Anything else yields no range.
package timescan

import (
	"bytes"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/ddstore/ddstore/timerange"
)

// Limits of the scan.
const (
	MaxLine     = 64 << 10 // bytes; longer lines are skipped
	HeaderLines = 10       // lines searched for a Mesonet header
	maxColumns  = 16       // candidate CSV columns followed
)

// recognised are the CSV column names taken for timestamps, by preference.
var recognised = []string{
	"datetime", "date_time", "timestamp", "obs_time", "observation_time", "valid", "valid_time",
	"time_utc", "utc", "time", "date",
}

// Result is what a scan found.
type Result struct {
	Range  timerange.Range
	Source string // "mesonet header" or "csv column NAME"
	Rows   int    // rows whose time was read (1 for a Mesonet header)
	Failed int    // CSV rows whose time could not be read
}

// Scanner watches a file's bytes for observation times. Its zero value
// looks for recognised CSV columns; set Column to name one. Write never
// fails. A Scanner is not safe for concurrent use.
type Scanner struct {
	// Column, if set, is the CSV column to read (matched without regard
	// to case); no other is considered.
	Column string

	line     []byte
	skipping bool // inside a line longer than MaxLine
	lines    int  // complete lines seen
	mode     int
	sep      byte
	cols     []*column
	maxIndex int
	spans    [][2]int // the current row's fields, reused
	found    Result
}

const (
	modeDetect = iota
	modeCSV
	modeDone // a Mesonet header was found, or the format is not one we read
)

// column follows one candidate CSV column.
type column struct {
	name           string
	index, rank    int
	from, to       int64
	parsed, failed int
	layout         string // the layout that read its last value, tried first
}

// parse reads one cell, trying first the layout that read the previous one.
func (c *column) parse(cell []byte) (from, to int64, ok bool) {
	cell = bytes.TrimSpace(cell)
	if len(cell) >= 2 && cell[0] == '"' && cell[len(cell)-1] == '"' {
		cell = bytes.TrimSpace(cell[1 : len(cell)-1])
	}
	if ns, ok := fastISO(cell); ok {
		return ns, ns, true
	}
	v := string(cell)
	if c.layout != "" {
		if t, err := time.Parse(c.layout, v); err == nil {
			if c.layout == "2006-01-02" || c.layout == "2006/01/02" || c.layout == "20060102" {
				return day(t, nil)
			}
			return instant(t, nil)
		}
	}
	from, to, layout, ok := parseValue(v)
	if ok {
		c.layout = layout
	}
	return from, to, ok
}

// fastISO reads, without allocating, the commonest forms:
// YYYY-MM-DD(T| )HH:MM[:SS] with no zone or Z. Others are left to
// time.Parse.
func fastISO(b []byte) (int64, bool) {
	if n := len(b); n > 0 && b[n-1] == 'Z' {
		b = b[:n-1]
	}
	if (len(b) != 16 && len(b) != 19) || b[4] != '-' || b[7] != '-' || (b[10] != 'T' && b[10] != ' ') || b[13] != ':' {
		return 0, false
	}
	num := func(i, n int) int {
		v := 0
		for _, c := range b[i : i+n] {
			if c < '0' || c > '9' {
				return -1
			}
			v = v*10 + int(c-'0')
		}
		return v
	}
	sec := 0
	if len(b) == 19 {
		if b[16] != ':' {
			return 0, false
		}
		sec = num(17, 2)
	}
	y, mo, d, h, mi := num(0, 4), num(5, 2), num(8, 2), num(11, 2), num(14, 2)
	if y < 1678 || y > 2261 || mo < 1 || mo > 12 || d < 1 || d > 31 || h < 0 || h > 23 || mi < 0 || mi > 59 || sec < 0 || sec > 59 {
		return 0, false
	}
	t := time.Date(y, time.Month(mo), d, h, mi, sec, 0, time.UTC)
	if t.Day() != d { // 31 April and the like
		return 0, false
	}
	return t.UnixNano(), true
}

// fieldSpans appends to out the [start, end) of each field of a CSV line
// split at sep outside double quotes, up to limit fields.
func fieldSpans(line []byte, sep byte, limit int, out [][2]int) [][2]int {
	start, quoted := 0, false
	for i := 0; i < len(line); i++ {
		switch c := line[i]; {
		case c == '"':
			quoted = !quoted
		case c == sep && !quoted:
			out = append(out, [2]int{start, i})
			if len(out) == limit {
				return out
			}
			start = i + 1
		}
	}
	return append(out, [2]int{start, len(line)})
}

// Write takes the next bytes of the file.
func (s *Scanner) Write(p []byte) (int, error) {
	n := len(p)
	for len(p) > 0 && s.mode != modeDone {
		i := bytes.IndexByte(p, '\n')
		if i >= 0 && len(s.line) == 0 && !s.skipping && i <= MaxLine {
			// A whole line in p: read in place.
			s.handle(bytes.TrimRight(p[:i], "\r"))
			s.lines++
			p = p[i+1:]
			continue
		}
		chunk := p
		if i >= 0 {
			chunk = p[:i]
		}
		if !s.skipping {
			if len(s.line)+len(chunk) > MaxLine {
				s.skipping, s.line = true, s.line[:0]
			} else {
				s.line = append(s.line, chunk...)
			}
		}
		if i < 0 {
			break
		}
		if !s.skipping {
			s.handle(bytes.TrimRight(s.line, "\r"))
		}
		s.lines++
		s.line, s.skipping = s.line[:0], false
		p = p[i+1:]
	}
	return n, nil
}

// Result returns the range found in the bytes written so far (a last line
// without a newline counts), and whether there is one.
func (s *Scanner) Result() (Result, bool) {
	if len(s.line) > 0 && !s.skipping && s.mode != modeDone {
		s.handle(bytes.TrimRight(s.line, "\r"))
		s.line = s.line[:0]
	}
	if s.found.Source != "" {
		return s.found, true
	}
	var best *column
	for _, c := range s.cols {
		if c.parsed > 0 && (best == nil || c.parsed > best.parsed || (c.parsed == best.parsed && c.rank < best.rank)) {
			best = c
		}
	}
	if best == nil {
		return Result{}, false
	}
	return Result{
		Range:  timerange.Range{From: best.from, To: best.to},
		Source: "csv column " + best.name, Rows: best.parsed, Failed: best.failed,
	}, true
}

func (s *Scanner) handle(line []byte) {
	switch s.mode {
	case modeDetect:
		if s.lines == 0 && s.csvHeader(line) {
			s.mode = modeCSV
			return
		}
		if t, ok := mesonetTime(line); ok {
			s.found = Result{Range: timerange.Range{From: t, To: t}, Source: "mesonet header", Rows: 1}
			s.mode = modeDone
			return
		}
		if s.lines+1 >= HeaderLines {
			s.mode = modeDone
		}
	case modeCSV:
		if len(bytes.TrimSpace(line)) == 0 {
			return
		}
		s.spans = fieldSpans(line, s.sep, s.maxIndex+1, s.spans[:0])
		for _, c := range s.cols {
			if c.index >= len(s.spans) {
				c.failed++
				continue
			}
			sp := s.spans[c.index]
			from, to, ok := c.parse(line[sp[0]:sp[1]])
			if !ok {
				c.failed++
				continue
			}
			if c.parsed == 0 || from < c.from {
				c.from = from
			}
			if c.parsed == 0 || to > c.to {
				c.to = to
			}
			c.parsed++
		}
	}
}

// csvHeader reads a first line as a CSV header and picks the columns to
// follow; it reports whether any was found.
func (s *Scanner) csvHeader(line []byte) bool {
	for _, sep := range []byte{',', ';', '\t'} {
		if bytes.IndexByte(line, sep) < 0 {
			continue
		}
		names := splitFields(line, sep, 1<<20)
		var cols []*column
		for i, raw := range names {
			name := strings.ToLower(strings.TrimSpace(strings.TrimPrefix(raw, "\ufeff")))
			rank := -1
			if s.Column != "" {
				if strings.EqualFold(name, strings.TrimSpace(s.Column)) {
					rank = 0
				}
			} else {
				rank = slices.Index(recognised, name)
			}
			if rank >= 0 && len(cols) < maxColumns {
				cols = append(cols, &column{name: strings.TrimSpace(raw), index: i, rank: rank})
				s.maxIndex = max(s.maxIndex, i)
			}
		}
		if len(cols) > 0 {
			s.sep, s.cols = sep, cols
			return true
		}
		return false
	}
	return false
}

// splitFields splits a CSV line at sep (outside double quotes), unquoting
// fields, and stops after limit fields.
func splitFields(line []byte, sep byte, limit int) []string {
	var out []string
	var b strings.Builder
	quoted := false
	for i := 0; i < len(line); i++ {
		c := line[i]
		switch {
		case c == '"' && quoted && i+1 < len(line) && line[i+1] == '"':
			b.WriteByte('"')
			i++
		case c == '"':
			quoted = !quoted
		case c == sep && !quoted:
			out = append(out, b.String())
			b.Reset()
			if len(out) == limit {
				return out
			}
		default:
			b.WriteByte(c)
		}
	}
	return append(out, b.String())
}

// mesonetTime reads a Mesonet header line: its first six fields are
// YYYY MM DD HH MM SS.
func mesonetTime(line []byte) (int64, bool) {
	f := strings.Fields(string(line))
	if len(f) < 6 || len(f[0]) != 4 {
		return 0, false
	}
	var v [6]int
	for i := range v {
		if len(f[i]) > 4 || (i > 0 && len(f[i]) > 2) {
			return 0, false
		}
		n, err := strconv.Atoi(f[i])
		if err != nil || n < 0 {
			return 0, false
		}
		v[i] = n
	}
	t := time.Date(v[0], time.Month(v[1]), v[2], v[3], v[4], v[5], 0, time.UTC)
	if v[0] < 1800 || v[0] > 2200 || t.Year() != v[0] || int(t.Month()) != v[1] || t.Day() != v[2] ||
		t.Hour() != v[3] || t.Minute() != v[4] || t.Second() != v[5] {
		return 0, false
	}
	return t.UnixNano(), true
}

// layouts are the timestamp forms read besides RFC 3339; no zone is UTC.
var layouts = []string{
	"2006-01-02T15:04:05Z07:00", "2006-01-02 15:04:05Z07:00", "2006-01-02T15:04Z07:00", "2006-01-02 15:04Z07:00",
	"2006-01-02T15:04:05", "2006-01-02 15:04:05", "2006-01-02T15:04", "2006-01-02 15:04",
	"2006-01-02 15:04:05 MST", "2006/01/02 15:04:05", "2006/01/02 15:04", "20060102T150405Z",
}

// parseValue reads one timestamp cell; a day alone covers the whole day.
// It returns the layout that read it ("" for digits read as Unix time).
func parseValue(v string) (from, to int64, layout string, ok bool) {
	v = strings.TrimSpace(v)
	if len(v) < 8 || len(v) > 40 {
		return 0, 0, "", false
	}
	if allDigits(v) {
		var t time.Time
		var err error
		switch len(v) {
		case 8:
			from, to, ok = day(time.Parse("20060102", v))
			return from, to, "20060102", ok
		case 10:
			n, _ := strconv.ParseInt(v, 10, 64)
			t = time.Unix(n, 0)
		case 12:
			layout = "200601021504"
			t, err = time.Parse(layout, v)
		case 13:
			n, _ := strconv.ParseInt(v, 10, 64)
			t = time.UnixMilli(n)
		case 14:
			layout = "20060102150405"
			t, err = time.Parse(layout, v)
		default:
			return 0, 0, "", false
		}
		from, to, ok = instant(t, err)
		return from, to, layout, ok
	}
	if len(v) == 10 {
		for _, l := range []string{"2006-01-02", "2006/01/02"} {
			if t, err := time.Parse(l, v); err == nil {
				from, to, ok = day(t, nil)
				return from, to, l, ok
			}
		}
	}
	for _, l := range append([]string{time.RFC3339Nano}, layouts...) {
		if t, err := time.Parse(l, v); err == nil {
			from, to, ok = instant(t, nil)
			return from, to, l, ok
		}
	}
	return 0, 0, "", false
}

func allDigits(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

func inYears(t time.Time) bool { return t.Year() >= 1678 && t.Year() <= 2261 }

func instant(t time.Time, err error) (int64, int64, bool) {
	if err != nil || !inYears(t) {
		return 0, 0, false
	}
	return t.UnixNano(), t.UnixNano(), true
}

func day(t time.Time, err error) (int64, int64, bool) {
	if err != nil || !inYears(t) {
		return 0, 0, false
	}
	return t.UnixNano(), t.AddDate(0, 0, 1).UnixNano() - 1, true
}
