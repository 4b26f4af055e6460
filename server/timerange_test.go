package server_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/ddstore/ddstore/client"
	pb "github.com/ddstore/ddstore/proto/ddstore/v1"
	"github.com/ddstore/ddstore/timerange"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
)

// TestTimeRangeFederation: three clusters, each a peer of the others, hold
// files with time ranges (and one with only a date, as files had before
// ranges). A range listing asked of any cluster returns exactly the files
// whose range overlaps, from all three; a cluster whose date filter rules
// the range out is not asked. Reversed ranges are InvalidArgument.
func TestTimeRangeFederation(t *testing.T) {
	names := []string{"A", "B", "C"}
	fed := startClusters(t, 1, names, map[string][]string{"A": {"B", "C"}, "B": {"A", "C"}, "C": {"A", "B"}})
	files := []struct {
		cluster, name, from, to string // from empty: dated to
	}{
		{"A", "a/april.csv", "2018-04-13T00:00:00Z", "2018-04-13T23:00:00Z"},
		{"A", "a/dated.bin", "", "2018-04-20"},
		{"B", "b/quarter.csv", "2018-04-13T00:00:00Z", "2018-06-30T23:00:00Z"},
		{"B", "b/instant.txt", "2018-04-14T00:00:00Z", "2018-04-14T00:00:00Z"},
		{"C", "c/2019.csv", "2019-01-01T00:00:00Z", "2019-12-31T23:59:59Z"},
		{"C", "c/july.csv", "2018-07-01T00:00:00Z", "2018-07-31T23:59:59Z"},
	}
	for i, f := range files {
		opts := client.PutOptions{Date: f.to}
		if f.from != "" {
			r, err := timerange.Parse(f.from, f.to)
			if err != nil {
				t.Fatal(err)
			}
			opts = client.PutOptions{TimeRange: client.FixedRange(r)}
		}
		c := newClient(t, fed[f.cluster])
		if _, err := c.Put(context.Background(), f.name, strings.NewReader(fmt.Sprint("file ", i)), opts); err != nil {
			t.Fatalf("put %s: %v", f.name, err)
		}
	}
	for _, n := range names {
		waitFilters(t, fed, n)
	}
	tests := []struct {
		from, to string
		want     string
	}{
		{"2018-04-13T00:00Z", "2018-04-14", "[a/april.csv@A b/instant.txt@B b/quarter.csv@B]"},
		{"2018-04-14T00:00:00Z", "2018-04-14T00:00:00Z", "[b/instant.txt@B b/quarter.csv@B]"},
		{"2018-04-20T12:00Z", "2018-04-20T12:00Z", "[a/dated.bin@A b/quarter.csv@B]"},
		{"2018-06-30T23:00:00Z", "2018-07-01T00:00:00Z", "[b/quarter.csv@B c/july.csv@C]"},
		{"2019-03-01", "2019-03-01", "[c/2019.csv@C]"},
		{"2020-01-01", "2020-12-31", "[]"},
		{"2018-01-01", "2019-12-31", "[a/april.csv@A a/dated.bin@A b/instant.txt@B b/quarter.csv@B c/2019.csv@C c/july.csv@C]"},
	}
	for _, asked := range names {
		c := newClient(t, fed[asked])
		for _, tt := range tests {
			l, err := c.List(context.Background(), client.ListOptions{DateFrom: tt.from, DateTo: tt.to})
			if err != nil {
				t.Fatalf("asked of %s, %s..%s: %v", asked, tt.from, tt.to, err)
			}
			got := []string{}
			for _, f := range l.Files {
				got = append(got, f.GetName()+"@"+f.GetCluster())
			}
			slices.Sort(got)
			if fmt.Sprint(got) != tt.want || len(l.Unanswered) != 0 {
				t.Errorf("asked of %s, %s..%s: %v (unanswered %v), want %v", asked, tt.from, tt.to, got, l.Unanswered, tt.want)
			}
		}
	}

	// A range only C's files overlap: A asks C, not B.
	before := served(fed["B"])
	beforeC := served(fed["C"])
	l, err := newClient(t, fed["A"]).List(context.Background(), client.ListOptions{DateFrom: "2019-02-01T00:00Z", DateTo: "2019-02-01T06:00Z"})
	if err != nil || len(l.Files) != 1 {
		t.Fatalf("C's range: %v %v", l, err)
	}
	if b, c := served(fed["B"])-before, served(fed["C"])-beforeC; b != 0 || c == 0 {
		t.Errorf("a range only C holds: B answered %d calls, C %d; want 0 and some", b, c)
	}

	// The gRPC API refuses reversed ranges with InvalidArgument.
	conn, err := fed["A"].Dial(fed["A"].Addrs()[0], true)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fc := pb.NewFilesClient(conn)
	_, err = fc.List(context.Background(), &pb.ListRequest{TimeFromUnixNano: proto.Int64(2e18), TimeToUnixNano: proto.Int64(1e18)})
	if status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), "reversed") {
		t.Errorf("reversed list range: %v", err)
	}
	_, err = fc.List(context.Background(), &pb.ListRequest{DateFrom: "2018-04-14", DateTo: "2018-04-13"})
	if status.Code(err) != codes.InvalidArgument {
		t.Errorf("reversed list days: %v", err)
	}
	st, err := newClient(t, fed["A"]).Stat(context.Background(), "a/april.csv", 0)
	if err != nil {
		t.Fatal(err)
	}
	m := proto.CloneOf(st)
	m.Name, m.CreatedUnixNano, m.Date = "a/reversed.csv", 0, ""
	m.TimeFromUnixNano, m.TimeToUnixNano = m.TimeToUnixNano, m.TimeFromUnixNano
	_, err = fc.Commit(context.Background(), &pb.CommitRequest{Manifest: m})
	if status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), "reversed") {
		t.Errorf("commit of a reversed range: %v", err)
	}
}
