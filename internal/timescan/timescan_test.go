package timescan

import (
	"crypto/rand"
	"fmt"
	"io"
	"strings"
	"testing"
	"time"
)

// quarterCSV is an hourly CSV from 2018-04-13T00:00Z to 2018-06-30T23:00Z
// (three months), rows in the order given.
func quarterCSV(header string, format func(time.Time) string) string {
	var b strings.Builder
	b.WriteString(header + "\n")
	start := time.Date(2018, 4, 13, 0, 0, 0, 0, time.UTC)
	for t := start; t.Before(time.Date(2018, 7, 1, 0, 0, 0, 0, time.UTC)); t = t.Add(time.Hour) {
		fmt.Fprintf(&b, "KSJC,%s,%.1f,\"a, quoted\"\n", format(t), 50+float64(t.Hour())/2)
	}
	return b.String()
}

const mesonet = `Mesonet observations, MADIS text export
 2018 04 13 00 00 00
  STN      LAT       LON    ELEV   TMPF   DWPF   RELH
 KSJC  37.3626 -121.9290   15.0   55.4   42.1   61.0
 KSFO  37.6196 -122.3656    3.0   54.0   45.0   71.5
`

func TestScan(t *testing.T) {
	iso := func(t time.Time) string { return t.Format(time.RFC3339) }
	quarter := "2018-04-13T00:00:00Z .. 2018-06-30T23:00:00Z"
	noise := make([]byte, 1<<20)
	rand.Read(noise)
	tests := []struct {
		name, column, data string
		want, source       string // want empty: no range
	}{
		{"mesonet", "", mesonet, "2018-04-13T00:00:00Z .. 2018-04-13T00:00:00Z", "mesonet header"},
		{"mesonet first line", "", strings.SplitN(mesonet, "\n", 2)[1], "2018-04-13T00:00:00Z .. 2018-04-13T00:00:00Z", "mesonet header"},
		{"mesonet CRLF", "", strings.ReplaceAll(mesonet, "\n", "\r\n"), "2018-04-13T00:00:00Z .. 2018-04-13T00:00:00Z", "mesonet header"},
		{"csv time RFC 3339", "", quarterCSV("station,time,tmpf,note", iso), quarter, "csv column time"},
		{"csv valid IEM", "", quarterCSV("station,valid,tmpf,note", func(t time.Time) string { return t.Format("2006-01-02 15:04") }), quarter, "csv column valid"},
		{"csv quoted header and values", "", quarterCSV(`"station","obs_time","tmpf","note"`, func(t time.Time) string { return `"` + t.Format("2006-01-02T15:04:05") + `"` }), quarter, "csv column obs_time"},
		{"csv epoch", "", quarterCSV("station,timestamp,tmpf,note", func(t time.Time) string { return fmt.Sprint(t.Unix()) }), quarter, "csv column timestamp"},
		{"csv days", "", quarterCSV("station,Date,tmpf,note", func(t time.Time) string { return t.Format("2006-01-02") }), "2018-04-13T00:00:00Z .. 2018-06-30T23:59:59.999999999Z", "csv column Date"},
		{"csv named column", "when", quarterCSV("station,when,tmpf,note", iso), quarter, "csv column when"},
		{"csv named column absent", "when", quarterCSV("station,time,tmpf,note", iso), "", ""},
		{"csv date and time columns: the one that parses", "", "date,time,v\n2018-04-13,00:00,1\n2018-06-30,23:00,2\n", "2018-04-13T00:00:00Z .. 2018-06-30T23:59:59.999999999Z", "csv column date"},
		{"csv unordered rows", "", "time,v\n2018-05-01T00:00Z,1\n2018-04-13T00:00Z,2\n2018-06-30T23:00:00Z,3\nbroken,4\n", "2018-04-13T00:00:00Z .. 2018-06-30T23:00:00Z", "csv column time"},
		{"csv without a newline at the end", "", "time,v\n2018-04-13T00:00:00Z,1", "2018-04-13T00:00:00Z .. 2018-04-13T00:00:00Z", "csv column time"},
		{"csv without a time column", "", "a,b,c\n1,2,3\n", "", ""},
		{"csv with nothing parsable", "", "time,v\nnoon,1\n", "", ""},
		{"plain text", "", "hello\nworld\n2018 is a year\n", "", ""},
		{"random bytes", "", string(noise), "", ""},
		{"mesonet header too late", "", strings.Repeat("title\n", HeaderLines) + mesonet, "", ""},
	}
	for _, tt := range tests {
		for _, step := range []int{1, 7, 4096, 1 << 30} {
			t.Run(fmt.Sprintf("%s/writes of %d", tt.name, step), func(t *testing.T) {
				if step == 1 && len(tt.data) > 1<<16 {
					t.Skip("large")
				}
				s := &Scanner{Column: tt.column}
				for b := []byte(tt.data); len(b) > 0; {
					n := min(step, len(b))
					if w, err := s.Write(b[:n]); w != n || err != nil {
						t.Fatalf("Write = %d, %v", w, err)
					}
					b = b[n:]
				}
				res, ok := s.Result()
				if tt.want == "" {
					if ok {
						t.Fatalf("found %v (%s), want nothing", res.Range, res.Source)
					}
					return
				}
				if !ok || res.Range.String() != tt.want || res.Source != tt.source {
					t.Fatalf("found %v %q (ok %v), want %s %q", res.Range, res.Source, ok, tt.want, tt.source)
				}
			})
		}
	}
}

// TestScanBounded: a long line is skipped, not held, and the scan stays
// within its line buffer over a large CSV.
func TestScanBounded(t *testing.T) {
	s := &Scanner{}
	io.WriteString(s, "time,v\n")
	io.WriteString(s, "2018-04-13T00:00:00Z,"+strings.Repeat("x", 3*MaxLine)+"\n")
	for i := range 100000 {
		fmt.Fprintf(s, "2018-05-%02dT00:00:00Z,%d\n", 1+i%28, i)
	}
	res, ok := s.Result()
	if !ok || res.Range.String() != "2018-05-01T00:00:00Z .. 2018-05-28T00:00:00Z" || res.Rows != 100000 {
		t.Fatalf("found %v rows %d (ok %v)", res.Range, res.Rows, ok)
	}
	if cap(s.line) > MaxLine+4096 {
		t.Fatalf("line buffer grew to %d bytes", cap(s.line))
	}
}

// BenchmarkScanCSV measures the scan's cost per byte of a CSV (it runs in
// the reader of an upload).
func BenchmarkScanCSV(b *testing.B) {
	data := []byte(quarterCSV("station,time,tmpf,note", func(t time.Time) string { return t.Format(time.RFC3339) }))
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		s := &Scanner{}
		for p := data; len(p) > 0; p = p[min(len(p), 32<<10):] {
			s.Write(p[:min(len(p), 32<<10)])
		}
		if _, ok := s.Result(); !ok {
			b.Fatal("no range")
		}
	}
}

// BenchmarkScanBinary measures the scan's cost over bytes of no known format.
func BenchmarkScanBinary(b *testing.B) {
	data := make([]byte, 8<<20)
	rand.Read(data)
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		s := &Scanner{}
		for p := data; len(p) > 0; p = p[min(len(p), 32<<10):] {
			s.Write(p[:min(len(p), 32<<10)])
		}
	}
}
