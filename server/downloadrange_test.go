package server_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ddstore/ddstore/chunker"
	"github.com/ddstore/ddstore/client"
	"github.com/ddstore/ddstore/internal/localcluster"
	pb "github.com/ddstore/ddstore/proto/ddstore/v1"
	"github.com/ddstore/ddstore/server/auth"
	"github.com/ddstore/ddstore/timerange"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
)

// TestDownloadRange: three clusters, each a peer of the others, hold files
// with time ranges (two of them multi-chunk, one of those in a peer; one
// name in two clusters). One DownloadRange call asked of A brings exactly
// the files whose range overlaps, from all three, in listing order (name,
// then cluster), byte for byte; DownloadRangeToDir writes them into a
// directory. A reversed range, or none, is InvalidArgument; a token scoped
// to a/ gets only a/ files, and no credentials get Unauthenticated.
func TestDownloadRange(t *testing.T) {
	names := []string{"A", "B", "C"}
	fed := startClusters(t, 1, names, map[string][]string{"A": {"B", "C"}, "B": {"A", "C"}, "C": {"A", "B"}})
	small := chunker.Options{MinSize: 16 << 10, AvgSize: 32 << 10, MaxSize: 64 << 10}
	files := []struct {
		cluster, name, from, to string
		size                    int64
	}{
		{"A", "a/april.csv", "2018-04-13T00:00:00Z", "2018-04-13T23:00:00Z", 100},
		{"A", "a/multi.bin", "2018-04-13T12:00:00Z", "2018-04-14T12:00:00Z", 10 << 20},
		{"A", "a/2019.csv", "2019-01-01T00:00:00Z", "2019-12-31T23:59:59Z", 50},
		{"B", "b/quarter.csv", "2018-04-01T00:00:00Z", "2018-06-30T23:00:00Z", 2 << 20},
		{"B", "a/fromB.csv", "2018-04-14T23:59:59Z", "2018-04-15T01:00:00Z", 0},
		{"B", "b/old.csv", "2017-01-01T00:00:00Z", "2017-12-31T00:00:00Z", 10},
		{"C", "c/instant.txt", "2018-04-14T00:00:00Z", "2018-04-14T00:00:00Z", 7},
		{"C", "a/april.csv", "2018-04-12T00:00:00Z", "2018-04-13T00:00:00Z", 200},
		{"C", "c/july.csv", "2018-07-01T00:00:00Z", "2018-07-31T23:59:59Z", 10},
	}
	content := map[string][]byte{} // by name@cluster
	for i, f := range files {
		r, err := timerange.Parse(f.from, f.to)
		if err != nil {
			t.Fatal(err)
		}
		data, err := io.ReadAll(randomReader(byte(i+1), f.size))
		if err != nil {
			t.Fatal(err)
		}
		res, err := newClient(t, fed[f.cluster]).Put(context.Background(), f.name, bytes.NewReader(data),
			client.PutOptions{TimeRange: client.FixedRange(r), Chunking: small})
		if err != nil {
			t.Fatalf("put %s: %v", f.name, err)
		}
		if f.size > 1<<20 && res.Chunks < 16 {
			t.Fatalf("%s has %d chunks; the test wants many", f.name, res.Chunks)
		}
		content[f.name+"@"+f.cluster] = data
	}
	for _, n := range names {
		waitFilters(t, fed, n)
	}
	from := time.Date(2018, 4, 13, 0, 0, 0, 0, time.UTC)
	to := time.Date(2018, 4, 14, 23, 59, 59, 0, time.UTC)
	all := "[a/april.csv@A a/april.csv@C a/fromB.csv@B a/multi.bin@A b/quarter.csv@B c/instant.txt@C]"

	// got downloads the range through c and checks every file against what
	// was put; it returns the files as name@cluster, in the order they came.
	got := func(t *testing.T, c *client.Client, opts client.RangeOptions) string {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		var order []string
		start := time.Now()
		res, err := c.DownloadRange(ctx, from, to, opts, func(f client.RangeFile, r io.Reader) error {
			key := f.Manifest.GetName() + "@" + f.Cluster
			if f.Index != len(order) {
				t.Errorf("%s came as file %d, want %d", key, f.Index, len(order))
			}
			order = append(order, key)
			b, err := io.ReadAll(r)
			if err != nil {
				return err
			}
			if want, ok := content[key]; !ok || !bytes.Equal(b, want) {
				t.Errorf("%s: %d bytes, not the %d put", key, len(b), len(want))
			}
			return nil
		})
		if err != nil {
			t.Fatalf("download range: %v", err)
		}
		if len(res.Unanswered) != 0 || len(res.Files) != len(order) {
			t.Errorf("unanswered %v; %d files in the result, %d handed on", res.Unanswered, len(res.Files), len(order))
		}
		t.Logf("%d files, %d bytes in %s", len(res.Files), res.Bytes, time.Since(start).Round(time.Millisecond))
		return fmt.Sprint(order)
	}

	t.Run("AllClusters", func(t *testing.T) {
		for _, asked := range names {
			if g := got(t, newClient(t, fed[asked]), client.RangeOptions{}); g != all {
				t.Errorf("asked of %s: %s, want %s", asked, g, all)
			}
		}
		if g := got(t, newClient(t, fed["A"]), client.RangeOptions{Prefix: "b/", Verify: true}); g != "[b/quarter.csv@B]" {
			t.Errorf("prefix b/: %s", g)
		}
	})

	t.Run("ToDir", func(t *testing.T) {
		dir := t.TempDir()
		res, err := newClient(t, fed["B"]).DownloadRangeToDir(context.Background(), from, to, dir, client.RangeOptions{})
		if err != nil || len(res.Files) != 6 {
			t.Fatalf("%v files, %v", res, err)
		}
		for path, key := range map[string]string{
			"a/april.csv": "a/april.csv@A", "C/a/april.csv": "a/april.csv@C", "a/fromB.csv": "a/fromB.csv@B",
			"a/multi.bin": "a/multi.bin@A", "b/quarter.csv": "b/quarter.csv@B", "c/instant.txt": "c/instant.txt@C",
		} {
			b, err := os.ReadFile(filepath.Join(dir, path))
			if err != nil || !bytes.Equal(b, content[key]) {
				t.Errorf("%s: %d bytes, %v; want %s's %d", path, len(b), err, key, len(content[key]))
			}
		}
	})

	conn, err := fed["A"].Dial(fed["A"].Addrs()[0], true)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	first := func(ctx context.Context, fc pb.FilesClient, req *pb.DownloadRangeRequest) error {
		s, err := fc.DownloadRange(ctx, req)
		if err == nil {
			_, err = s.Recv()
		}
		return err
	}

	t.Run("BadRanges", func(t *testing.T) {
		fc := pb.NewFilesClient(conn)
		err := first(context.Background(), fc, &pb.DownloadRangeRequest{TimeFromUnixNano: proto.Int64(2e18), TimeToUnixNano: proto.Int64(1e18)})
		if status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), "reversed") {
			t.Errorf("reversed range: %v", err)
		}
		err = first(context.Background(), fc, &pb.DownloadRangeRequest{})
		if status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), "no time range") {
			t.Errorf("no range: %v", err)
		}
		// One end open: everything from 2019 on.
		s, err := fc.DownloadRange(context.Background(), &pb.DownloadRangeRequest{TimeFromUnixNano: proto.Int64(time.Date(2019, 1, 1, 0, 0, 0, 0, time.UTC).UnixNano())})
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for {
			msg, err := s.Recv()
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
			if m := msg.GetPart().GetManifest(); m != nil {
				got = append(got, fmt.Sprintf("%d:%s@%s", msg.GetFileIndex(), m.GetName(), msg.GetPart().GetCluster()))
			}
		}
		if fmt.Sprint(got) != "[0:a/2019.csv@A]" {
			t.Errorf("from 2019 on: %v", got)
		}
	})

	t.Run("Auth", func(t *testing.T) {
		cl := fed["A"]
		tok, err := cl.Token(auth.RoleRead, "a/", time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		c, err := client.New(cl.Addrs(), append(cl.TLSOnly(), client.WithToken(tok))...)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if g, want := got(t, c, client.RangeOptions{}), "[a/april.csv@A a/april.csv@C a/fromB.csv@B a/multi.bin@A]"; g != want {
			t.Errorf("token for a/: %s, want %s", g, want)
		}
		_, err = c.DownloadRange(context.Background(), from, to, client.RangeOptions{Prefix: "b/"}, func(client.RangeFile, io.Reader) error { return nil })
		if status.Code(err) != codes.PermissionDenied {
			t.Errorf("token for a/, prefix b/: %v, want PermissionDenied", err)
		}

		roots := x509.NewCertPool()
		roots.AddCert(cl.CA().Cert)
		anon := dialAs(t, cl.Addrs()[0], &tls.Config{RootCAs: roots}, "")
		err = first(anon.ctx(t), pb.NewFilesClient(anon.conn), &pb.DownloadRangeRequest{TimeFromUnixNano: proto.Int64(from.UnixNano())})
		if status.Code(err) != codes.Unauthenticated {
			t.Errorf("no credentials: %v, want Unauthenticated", err)
		}
	})

	// A file deleted after the listing, before its turn, is skipped: its
	// index does not come. Until the first file is read, the stream cannot
	// get past a/multi.bin (10 MiB; the client's stream window is 8 MiB),
	// so c/instant.txt is still to come when it is deleted.
	t.Run("Vanished", func(t *testing.T) {
		var order []string
		res, err := newClient(t, fed["A"]).DownloadRange(context.Background(), from, to, client.RangeOptions{}, func(f client.RangeFile, r io.Reader) error {
			if f.Index == 0 {
				if err := newClient(t, fed["C"]).Delete(context.Background(), "c/instant.txt"); err != nil {
					return err
				}
			}
			b, err := io.ReadAll(r)
			if key := f.Manifest.GetName() + "@" + f.Cluster; err != nil || !bytes.Equal(b, content[key]) {
				t.Errorf("%s: %d bytes, %v", key, len(b), err)
			}
			order = append(order, fmt.Sprintf("%d:%s@%s", f.Index, f.Manifest.GetName(), f.Cluster))
			return err
		})
		want := "[0:a/april.csv@A 1:a/april.csv@C 2:a/fromB.csv@B 3:a/multi.bin@A 4:b/quarter.csv@B]"
		if err != nil || fmt.Sprint(order) != want || len(res.Files) != 5 {
			t.Errorf("with c/instant.txt deleted during the download: %v, %v; want %s", order, err, want)
		}
	})
}

// TestDownloadRangeChain: A knows only B, B only C. DownloadRange asked of
// A brings C's files through B, also one whose name A holds too (it is
// asked of B as a call meant for C).
func TestDownloadRangeChain(t *testing.T) {
	fed := startClusters(t, 1, []string{"A", "B", "C"}, map[string][]string{"A": {"B"}, "B": {"C"}})
	content := map[string][]byte{}
	for i, f := range []struct{ cluster, name string }{{"A", "x/same.csv"}, {"B", "b/mid.csv"}, {"C", "c/deep.bin"}, {"C", "x/same.csv"}} {
		data, err := io.ReadAll(randomReader(byte(10+i), int64(1000+i<<20)))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := newClient(t, fed[f.cluster]).Put(context.Background(), f.name, bytes.NewReader(data), client.PutOptions{Date: "2026-04-01"}); err != nil {
			t.Fatalf("put %s: %v", f.name, err)
		}
		content[f.name+"@"+f.cluster] = data
	}
	waitFilters(t, map[string]*localcluster.Cluster{"B": fed["B"], "C": fed["C"]}, "B")
	waitFilters(t, map[string]*localcluster.Cluster{"A": fed["A"], "B": fed["B"]}, "A")
	waitBeyond(t, fed["A"], "B", "C")

	var order []string
	day := time.Date(2026, 4, 1, 0, 0, 0, 0, time.UTC)
	res, err := newClient(t, fed["A"]).DownloadRange(context.Background(), day, day.Add(24*time.Hour-1), client.RangeOptions{}, func(f client.RangeFile, r io.Reader) error {
		key := f.Manifest.GetName() + "@" + f.Cluster
		b, err := io.ReadAll(r)
		if err != nil || !bytes.Equal(b, content[key]) {
			t.Errorf("%s: %d bytes, %v; want the %d put", key, len(b), err, len(content[key]))
		}
		order = append(order, key)
		return err
	})
	want := "[b/mid.csv@B c/deep.bin@C x/same.csv@A x/same.csv@C]"
	if err != nil || fmt.Sprint(order) != want || len(res.Unanswered) != 0 {
		t.Errorf("through A: %v, %v (unanswered %v); want %s", order, err, res.Unanswered, want)
	}
}
