package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ddstore/ddstore/internal/localcluster"
)

// TestTimeRangeUsage: malformed, reversed or contradictory ranges are usage
// errors (exit 2, one line), found before any node is called.
func TestTimeRangeUsage(t *testing.T) {
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"put reversed", []string{"put", "--from", "2018-04-14", "--to", "2018-04-13T23:00Z", "/dev/null", "x"}, "reversed"},
		{"put malformed from", []string{"put", "--from", "2018-04-13 00:00", "--to", "2018-04-14", "/dev/null", "x"}, "rfc 3339"},
		{"put malformed to", []string{"put", "--from", "2018-04-13", "--to", "soon", "/dev/null", "x"}, "rfc 3339"},
		{"put from alone", []string{"put", "--from", "2018-04-13", "/dev/null", "x"}, "together"},
		{"put date and range", []string{"put", "--date", "2018-04-13", "--from", "2018-04-13", "--to", "2018-04-14", "/dev/null", "x"}, "not both"},
		{"put too long", []string{"put", "--from", "1700-01-01", "--to", "2200-01-01", "/dev/null", "x"}, "spans more"},
		{"put time-from-data and date", []string{"put", "--time-from-data", "--date", "2018-04-13", "/dev/null", "x"}, "not both"},
		{"put time-column and range", []string{"put", "--time-column", "valid", "--from", "2018-04-13", "--to", "2018-04-14", "/dev/null", "x"}, "not both"},
		{"ls reversed", []string{"ls", "--from", "2018-04-14T00:00Z", "--to", "2018-04-13"}, "reversed"},
		{"ls malformed", []string{"ls", "--from", "13/04/2018"}, "rfc 3339"},
		{"ls bad day", []string{"ls", "--to", "2018-02-30"}, "rfc 3339"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			wantFail(t, run(t, append([]string{"--addr", "127.0.0.1:1"}, tt.args...)...), 2, tt.want)
		})
	}
}

// lsNames runs ls with args and returns the names it lists, sorted.
func lsNames(t *testing.T, addr string, args ...string) []string {
	t.Helper()
	r := run(t, append([]string{"--addr", addr, "ls"}, args...)...)
	if r.code != 0 {
		t.Fatalf("ls %v: exit %d: %s", args, r.code, r.stderr)
	}
	names := []string{}
	for _, line := range strings.Split(strings.TrimSpace(r.stdout), "\n")[1:] {
		if f := strings.Fields(line); len(f) > 0 {
			names = append(names, f[0])
		}
	}
	slices.Sort(names)
	return names
}

// TestTimeRangeCLI: files put with --from/--to, --date, ranges read from
// their data (Mesonet, CSV), or nothing, listed by ranges of timestamps and
// days: exactly the overlapping ones.
func TestTimeRangeCLI(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	dir := t.TempDir()
	cl, err := localcluster.Start(ctx, localcluster.Options{Dir: filepath.Join(dir, "cluster"), Exe: exe, Nodes: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	for k, v := range cl.CLIEnv() {
		t.Setenv(k, v)
	}
	addr := cl.Addrs()[0]
	plain := filepath.Join(dir, "plain.bin")
	if err := os.WriteFile(plain, []byte("no times in here\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	// A Mesonet observation file (small: one call) and a CSV of three
	// months, one row a minute (5 MB: the chunked upload), get their ranges
	// from their contents.
	mesonet := filepath.Join(dir, "obs_20180413_0000.txt")
	if err := os.WriteFile(mesonet, []byte("Mesonet observations\n 2018 04 13 00 00 00\n  STN   LAT   LON  TMPF\n KSJC 37.36 -121.93 55.4\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	var csv strings.Builder
	csv.WriteString("station,time,tmpf,relh\n")
	for m := time.Date(2018, 4, 13, 0, 0, 0, 0, time.UTC); m.Before(time.Date(2018, 7, 1, 0, 0, 0, 0, time.UTC)); m = m.Add(time.Minute) {
		fmt.Fprintf(&csv, "KSJC,%s,%.1f,%d\n", m.Format(time.RFC3339), 50+float64(m.Minute())/10, m.Hour()*4)
	}
	quarterCSV := filepath.Join(dir, "quarter.csv")
	if err := os.WriteFile(quarterCSV, []byte(csv.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	iem := filepath.Join(dir, "iem.csv")
	if err := os.WriteFile(iem, []byte("station,when,tmpf\nSJC,2018-08-01 00:54,55\nSJC,2018-08-02 23:54,56\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		args []string
		want string
	}{
		{[]string{mesonet, "mesonet"}, "time range from data: 2018-04-13T00:00:00Z .. 2018-04-13T00:00:00Z (mesonet header)"},
		{[]string{quarterCSV, "quarter.csv"}, "time range from data: 2018-04-13T00:00:00Z .. 2018-06-30T23:59:00Z (csv column time, 113760 rows)"},
		{[]string{"--time-column", "when", iem, "iem.csv"}, "time range from data: 2018-08-01T00:54:00Z .. 2018-08-02T23:54:00Z (csv column when, 2 rows)"},
	} {
		r := run(t, append([]string{"--addr", addr, "put"}, tt.args...)...)
		if r.code != 0 || !strings.Contains(r.stdout, tt.want+"\n") {
			t.Fatalf("put %v: exit %d, stdout %q, stderr %q; want %q", tt.args, r.code, r.stdout, r.stderr, tt.want)
		}
	}
	// The same CSV from standard input, with --json.
	cmd := exec.Command(exe, "--addr", addr, "--json", "put", "--time-from-data", "-", "stdin.csv")
	cmd.Stdin = strings.NewReader(csv.String())
	out, err := cmd.Output()
	var js map[string]any
	if err != nil || json.Unmarshal(out, &js) != nil || js["time_from"] != "2018-04-13T00:00:00Z" || js["time_to"] != "2018-06-30T23:59:00Z" || js["time_source"] != "data: csv column time" {
		t.Fatalf("put from stdin: %v %s", err, out)
	}
	// --time-from-data on a file without times: nothing committed.
	wantFail(t, run(t, "--addr", addr, "put", "--time-from-data", plain, "plain-strict"), 1, "no observation times")
	if r := run(t, "--addr", addr, "stat", "plain-strict"); r.code == 0 {
		t.Fatal("a put without the times it was told to read was committed")
	}

	puts := [][]string{
		{"--from", "2018-04-13T00:00Z", "--to", "2018-04-13T23:00:00Z", plain, "april"},
		{"--from", "2018-04-13", "--to", "2018-06-30", plain, "quarter"},
		{"--from", "2018-04-14T00:00:00Z", "--to", "2018-04-14T00:00:00Z", plain, "instant"},
		{"--date", "2018-04-20", plain, "dated"},
		{plain, "today"},
	}
	for _, args := range puts {
		if r := run(t, append([]string{"--addr", addr, "put"}, args...)...); r.code != 0 {
			t.Fatalf("put %v: exit %d: %s", args, r.code, r.stderr)
		}
	}
	today := time.Now().UTC().Format("2006-01-02")
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"--from", "2018-04-13T00:00Z", "--to", "2018-04-14"}, "[april instant mesonet quarter quarter.csv stdin.csv]"},
		{[]string{"--from", "2018-04-14T00:00Z", "--to", "2018-04-14T00:00Z"}, "[instant quarter quarter.csv stdin.csv]"},
		{[]string{"--from", "2018-04-13T23:00:01Z", "--to", "2018-04-13T23:59:59Z"}, "[quarter quarter.csv stdin.csv]"},
		{[]string{"--from", "2018-04-20", "--to", "2018-04-20"}, "[dated quarter quarter.csv stdin.csv]"},
		{[]string{"--from", "2018-06-30T23:59:30Z", "--to", "2018-07-01"}, "[quarter]"},
		{[]string{"--from", "2018-07-01", "--to", "2018-08-01T00:54Z"}, "[iem.csv]"},
		{[]string{"--from", "2018-08-03"}, "[today]"},
		{[]string{"--to", "2018-04-13T00:00Z"}, "[april mesonet quarter quarter.csv stdin.csv]"},
		{[]string{"--from", today, "--to", today}, "[today]"},
		{nil, "[april dated iem.csv instant mesonet quarter quarter.csv stdin.csv today]"},
	}
	for _, tt := range tests {
		if got := lsNames(t, addr, tt.args...); strings.Join(got, " ") != strings.Trim(tt.want, "[]") {
			t.Errorf("ls %v = %v, want %v", tt.args, got, tt.want)
		}
	}
	if r := run(t, "--addr", addr, "stat", "quarter"); !strings.Contains(r.stdout, "range:   2018-04-13T00:00:00Z..2018-06-30T23:59:59.999999999Z") || !strings.Contains(r.stdout, "date:    2018-04-13") {
		t.Errorf("stat quarter:\n%s", r.stdout)
	}
	if r := run(t, "--addr", addr, "stat", "dated"); !strings.Contains(r.stdout, "range:   2018-04-20\n") {
		t.Errorf("stat dated:\n%s", r.stdout)
	}
}
