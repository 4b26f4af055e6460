package s3

import (
	"context"
	"fmt"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/ddstore/ddstore/client"
	pb "github.com/ddstore/ddstore/proto/ddstore/v1"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// fakeCatalog answers List and Stat from a sorted list of names, with the
// cluster's paging rules (a page of at most limit names after start_after,
// truncated when more follow).
type fakeCatalog struct {
	names []string
	lists int // List calls
}

func (f *fakeCatalog) List(_ context.Context, o client.ListOptions) (*client.Listing, error) {
	f.lists++
	out := &client.Listing{}
	for _, n := range f.names {
		if !strings.HasPrefix(n, o.Prefix) || n <= o.StartAfter {
			continue
		}
		if o.Limit > 0 && len(out.Files) == o.Limit {
			out.Truncated = true
			break
		}
		out.Files = append(out.Files, &pb.FileInfo{Name: n, Size: uint64(len(n)), Blake3: make([]byte, 32)})
	}
	return out, nil
}

func (f *fakeCatalog) Stat(_ context.Context, name string, _ pb.Consistency) (*pb.FileManifest, error) {
	if !slices.Contains(f.names, name) {
		return nil, status.Error(codes.NotFound, "no such file")
	}
	return &pb.FileManifest{Name: name, Blake3: make([]byte, 32), Metadata: map[string]string{metaETag: "etag-of-" + name}}, nil
}

// expectedListing is a listing worked out the slow way: every key, in
// order, collapsed by delimiter.
func expectedListing(keys []string, prefix, delim, startAfter string) []string {
	var out []string
	seen := map[string]bool{}
	for _, k := range keys {
		if !strings.HasPrefix(k, prefix) || k <= startAfter {
			continue
		}
		if delim != "" {
			if i := strings.Index(k[len(prefix):], delim); i >= 0 {
				// A common prefix rolls up the keys after start-after,
				// even when start-after lies inside it (as S3 does).
				cp := k[:len(prefix)+i+len(delim)]
				if !seen[cp] {
					seen[cp] = true
					out = append(out, cp+" (prefix)")
				}
				continue
			}
		}
		out = append(out, k)
	}
	return out
}

// TestListObjectsV2Paging walks listings page by page with continuation
// tokens, for many page sizes, prefixes and delimiters, and compares what
// they add up to with the listing worked out the slow way; hidden names
// (the bucket marker, multipart uploads) never show.
func TestListObjectsV2Paging(t *testing.T) {
	var keys []string
	for i := range 30 {
		keys = append(keys, fmt.Sprintf("logs/2026/%02d.txt", i))
	}
	for i := range 7 {
		keys = append(keys, fmt.Sprintf("photos/album%d/img.jpg", i), fmt.Sprintf("photos/album%d/img2.jpg", i))
	}
	keys = append(keys, "a", "b/c", "b/d/e", "photos/top.jpg", "z", ".s3-bucketx", "-dash")
	slices.Sort(keys)
	names := []string{"bkt/" + BucketMarker}
	for _, k := range keys {
		names = append(names, "bkt/"+k)
	}
	for i := range 5 {
		names = append(names, fmt.Sprintf("bkt/%supload%d/part.00001", MultipartDir, i))
	}
	names = append(names, "other/a", "bkt0/x")
	slices.Sort(names)

	for _, tc := range []struct{ prefix, delim, startAfter string }{
		{"", "", ""}, {"", "/", ""}, {"logs/", "", ""}, {"logs/", "/", ""}, {"photos/", "/", ""},
		{"photos/al", "/", ""}, {"", "/", "logs/2026/10.txt"}, {"", "", "photos/album3/img.jpg"}, {"nothing", "/", ""},
		{"", "2026", ""}, {"b", "/", ""},
	} {
		want := expectedListing(keys, tc.prefix, tc.delim, tc.startAfter)
		for _, maxKeys := range []int{1, 2, 3, 7, 1000} {
			t.Run(fmt.Sprintf("prefix=%q delim=%q start-after=%q max-keys=%d", tc.prefix, tc.delim, tc.startAfter, maxKeys), func(t *testing.T) {
				fc := &fakeCatalog{names: names}
				var got []string
				token := ""
				for page := 0; ; page++ {
					if page > len(keys)+2 {
						t.Fatal("the listing does not end")
					}
					q := url.Values{"list-type": {"2"}, "prefix": {tc.prefix}, "delimiter": {tc.delim}, "max-keys": {strconv.Itoa(maxKeys)}}
					if tc.startAfter != "" {
						q.Set("start-after", tc.startAfter)
					}
					if token != "" {
						q.Set("continuation-token", token)
					}
					lq, err := parseListQuery(q, true)
					if err != nil {
						t.Fatal(err)
					}
					res, err := listBucket(context.Background(), fc, "bkt", lq)
					if err != nil {
						t.Fatal(err)
					}
					n := len(res.Contents) + len(res.CommonPrefixes)
					if *res.KeyCount != n || n > maxKeys {
						t.Fatalf("page %d: KeyCount %d, %d entries, max-keys %d", page, *res.KeyCount, n, maxKeys)
					}
					// Keys and prefixes come back in one order.
					var entries []string
					for _, o := range res.Contents {
						if o.ETag != `"etag-of-bkt/`+o.Key+`"` {
							t.Fatalf("key %s has ETag %s", o.Key, o.ETag)
						}
						entries = append(entries, o.Key)
					}
					for _, cp := range res.CommonPrefixes {
						entries = append(entries, cp.Prefix+" (prefix)")
					}
					slices.SortFunc(entries, func(a, b string) int {
						return strings.Compare(strings.TrimSuffix(a, " (prefix)"), strings.TrimSuffix(b, " (prefix)"))
					})
					got = append(got, entries...)
					if !res.IsTruncated {
						if res.NextContinuationToken != "" {
							t.Fatal("a last page has a continuation token")
						}
						break
					}
					if n == 0 || res.NextContinuationToken == "" {
						t.Fatalf("page %d is truncated with %d entries and token %q", page, n, res.NextContinuationToken)
					}
					token = res.NextContinuationToken
				}
				if strings.Join(got, "\n") != strings.Join(want, "\n") {
					t.Fatalf("pages add up to\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
				}
			})
		}
	}
}

// TestListSkipsCommonPrefixes: a common prefix is skipped whole, without
// listing its names page by page.
func TestListSkipsCommonPrefixes(t *testing.T) {
	var names []string
	for d := range 5 {
		for i := range 3000 {
			names = append(names, fmt.Sprintf("bkt/dir%d/%05d", d, i))
		}
	}
	fc := &fakeCatalog{names: names}
	lq, _ := parseListQuery(url.Values{"list-type": {"2"}, "delimiter": {"/"}}, true)
	res, err := listBucket(context.Background(), fc, "bkt", lq)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.CommonPrefixes) != 5 || len(res.Contents) != 0 {
		t.Fatalf("%d prefixes, %d keys", len(res.CommonPrefixes), len(res.Contents))
	}
	if fc.lists > 6 {
		t.Fatalf("%d listings of the cluster for 5 common prefixes of 3000 names each", fc.lists)
	}
}
