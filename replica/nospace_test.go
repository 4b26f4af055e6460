package replica

import (
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/ddstore/ddstore/chunker"
	"github.com/ddstore/ddstore/internal/testenv"
	"go.mongodb.org/mongo-driver/v2/mongo"
)

// TestLocalDiskFull fills a real tmpfs under a local store: a Put that finds
// no room fails with ErrNoSpace (ResourceExhausted on the wire), leaves no
// partial file behind, CheckSpace says so too, and both recover as soon as
// space is freed.
func TestLocalDiskFull(t *testing.T) {
	fs, err := testenv.MountTmpfs(filepath.Join(t.TempDir(), "disk"), 16<<20)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { fs.Unmount() })
	l := openLocal(t, filepath.Join(fs.Dir, "chunks"))
	ctx := ctxFor(t)
	codecs := chunker.NewCodecs()
	if err := l.CheckSpace(ctx); err != nil {
		t.Fatalf("CheckSpace on an empty disk: %v", err)
	}
	if _, err := fs.Fill("ballast"); err != nil {
		t.Fatal(err)
	}
	c := randomChunk(t, codecs, 1<<20)
	_, err = l.Put(ctx, c)
	if !errors.Is(err, ErrNoSpace) {
		t.Fatalf("Put on a full disk: %v, want ErrNoSpace", err)
	}
	if code := status.Code(Status(err)); code != codes.ResourceExhausted {
		t.Errorf("Put on a full disk answers %v, want ResourceExhausted", code)
	}
	if ok, _ := l.Has(ctx, c.ID); ok {
		t.Error("a failed Put left the chunk behind")
	}
	if err := l.CheckSpace(ctx); !errors.Is(err, ErrNoSpace) {
		t.Errorf("CheckSpace on a full disk: %v, want ErrNoSpace", err)
	}
	if u, _ := l.Usage(ctx); u.Chunks != 0 {
		t.Errorf("usage counts %d chunks after failed puts", u.Chunks)
	}

	if err := fs.Shrink("ballast", 0); err != nil {
		t.Fatal(err)
	}
	if err := l.CheckSpace(ctx); err != nil {
		t.Fatalf("CheckSpace after space was freed: %v", err)
	}
	if w, err := l.Put(ctx, c); err != nil || !w {
		t.Fatalf("Put after space was freed: written %v, %v", w, err)
	}
}

// TestGridFSNoSpace: the database's ways of saying its disk is full become
// ErrNoSpace; other errors stay as they are.
func TestGridFSNoSpace(t *testing.T) {
	for _, tc := range []struct {
		name string
		err  error
		want bool
	}{
		{"mongodb OutOfDiskSpace", mongo.CommandError{Code: 14031, Message: "Commit failed"}, true},
		{"sqlite through ferretdb", fmt.Errorf("insert: %w", errors.New("database or disk is full (13)")), true},
		{"operating system", errors.New("write /data/db: no space left on device"), true},
		{"quota", errors.New("write: disk quota exceeded"), true},
		{"duplicate key", mongo.CommandError{Code: 11000, Message: "duplicate key"}, false},
		{"network", errors.New("connection reset by peer"), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := gridfsNoSpace(tc.err)
			if got := errors.Is(err, ErrNoSpace); got != tc.want {
				t.Errorf("errors.Is(%v, ErrNoSpace) = %v, want %v", err, got, tc.want)
			}
			if !strings.Contains(err.Error(), tc.err.Error()) {
				t.Errorf("%q lost the database's words %q", err, tc.err)
			}
		})
	}
}
