package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ddstore/ddstore/client"
	"github.com/ddstore/ddstore/internal/blake3"
	pb "github.com/ddstore/ddstore/proto/ddstore/v1"
	"golang.org/x/term"
)

// rangeGet is `get --from T1 --to T2 DIR`: every file of this cluster and
// its peers (as ls finds them) whose time range overlaps, downloaded into
// DIR under its name, several at a time. A file already in DIR with the
// listed size and BLAKE3 is skipped; one being downloaded is NAME.part
// until verified, and a rerun resumes it from its verified chunks.
type rangeGet struct {
	g        *globalFlags
	dir      string
	parallel int

	mu      sync.Mutex
	clients map[string]*client.Client // by cluster
}

// rangeGetStats counts what a range download did.
type rangeGetStats struct {
	files, skipped, fetched, failed atomic.Int64
	resumed                         atomic.Int64 // fetched files that kept verified chunks of a partial one
	bytes, done                     atomic.Int64 // bytes of all the files, and in place so far
}

// run lists the range and downloads what it lists.
func (rg *rangeGet) run(ctx context.Context, c *client.Client, opts client.ListOptions) error {
	start := time.Now()
	listing, err := c.List(ctx, opts)
	if err != nil {
		return fmt.Errorf("get: list the range: %w", err)
	}
	for _, n := range listing.Unanswered {
		fmt.Fprintf(os.Stderr, "ddstore: get: cluster %s did not answer; its files are missing here: %s\n", n.GetCluster(), n.GetError())
	}
	defer rg.close()
	paths := localPaths(rg.dir, listing.Files)
	st := &rangeGetStats{}
	st.files.Store(int64(len(listing.Files)))
	for _, f := range listing.Files {
		st.bytes.Add(int64(f.GetSize()))
	}
	stopLine := rg.progressLine(st)
	var (
		wg       sync.WaitGroup
		errMu    sync.Mutex
		failures []nameErrorJSON
		work     = make(chan int)
	)
	for range max(1, rg.parallel) {
		wg.Go(func() {
			for i := range work {
				if err := rg.one(ctx, listing.Files[i], paths[i], st); err != nil {
					st.failed.Add(1)
					errMu.Lock()
					failures = append(failures, nameErrorJSON{Name: listing.Files[i].GetName(), Error: oneLine(err)})
					errMu.Unlock()
				}
			}
		})
	}
feed:
	for i := range listing.Files {
		select {
		case work <- i:
		case <-ctx.Done():
			break feed
		}
	}
	close(work)
	wg.Wait()
	stopLine()
	d := time.Since(start)
	if rg.g.json {
		sort.Slice(failures, func(i, j int) bool { return failures[i].Name < failures[j].Name })
		printJSON(os.Stdout, getRangeJSON{
			Dir: rg.dir, Files: st.files.Load(), Fetched: st.fetched.Load(), Resumed: st.resumed.Load(), Skipped: st.skipped.Load(),
			Failed: st.failed.Load(), Bytes: st.bytes.Load(), Seconds: d.Seconds(), Failures: append([]nameErrorJSON{}, failures...),
			Unanswered: notesJSON(listing.Unanswered),
		})
	} else {
		fmt.Fprintf(os.Stderr, "got %d files into %s: %d fetched (%d resumed), %d already there and verified, %d failed; %s, %.1f MB/s\n",
			st.files.Load(), rg.dir, st.fetched.Load(), st.resumed.Load(), st.skipped.Load(), st.failed.Load(), humanSize(st.bytes.Load()), mbps(st.bytes.Load(), d))
	}
	if ctx.Err() != nil {
		err := fmt.Errorf("get: stopped (%w) with %d of %d files in place; run the same command again to resume", ctx.Err(), st.skipped.Load()+st.fetched.Load(), st.files.Load())
		if errors.Is(ctx.Err(), context.Canceled) { // Ctrl-C or SIGTERM, not --timeout
			return interruptedError{err}
		}
		return err
	}
	if len(failures) > 0 {
		sort.Slice(failures, func(i, j int) bool { return failures[i].Name < failures[j].Name })
		msgs := make([]string, len(failures))
		for i, f := range failures {
			msgs[i] = f.Name + ": " + f.Error
		}
		return fmt.Errorf("get: %d of %d files failed (run the same command again to resume): %s", len(failures), st.files.Load(), strings.Join(msgs, "; "))
	}
	return nil
}

// one downloads one listed file to path, unless it is already there.
func (rg *rangeGet) one(ctx context.Context, f *pb.FileInfo, path string, st *rangeGetStats) error {
	if ctx.Err() != nil {
		return ctx.Err()
	}
	if same, err := sameFile(path, f); err != nil {
		return err
	} else if same {
		st.skipped.Add(1)
		st.done.Add(int64(f.GetSize()))
		return nil
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	part := path + ".part"
	if same, err := sameFile(part, f); err != nil {
		return err
	} else if same { // whole, but stopped before its rename
		st.done.Add(int64(f.GetSize()))
		st.fetched.Add(1)
		return os.Rename(part, path)
	}
	c, err := rg.clientFor(f.GetCluster())
	if err != nil {
		return err
	}
	var last int64
	opts := client.GetOptions{Consistency: rg.g.consistency(), Progress: func(done, _ int64) {
		st.done.Add(done - last)
		last = done
	}}
	res, err := c.GetFile(ctx, f.GetName(), part, true, opts)
	if err != nil {
		return err
	}
	if !bytes.Equal(res.Manifest.GetBlake3(), f.GetBlake3()) {
		// Replaced since the listing: keep what was fetched, under its name.
		fmt.Fprintf(os.Stderr, "ddstore: get: %s changed since it was listed; fetched its current version\n", f.GetName())
	}
	st.done.Add(int64(res.Manifest.GetSize()) - last)
	if err := os.Rename(part, path); err != nil {
		return err
	}
	st.fetched.Add(1)
	if res.KeptBytes > 0 {
		st.resumed.Add(1)
	}
	return nil
}

// sameFile reports whether path holds exactly the listed file: its size and
// its whole-file BLAKE3.
func sameFile(path string, f *pb.FileInfo) (bool, error) {
	fh, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	defer fh.Close()
	if st, err := fh.Stat(); err != nil || !st.Mode().IsRegular() || st.Size() != int64(f.GetSize()) {
		return false, err
	}
	h := blake3.New()
	if _, err := io.Copy(h, fh); err != nil {
		return false, err
	}
	return bytes.Equal(h.Sum(nil), f.GetBlake3()), nil
}

// localPaths maps listed files onto DIR: DIR/NAME, or DIR/CLUSTER/NAME for
// a name that more than one cluster holds. Names are relative paths with
// no "." or ".." segments (the catalog checks), so they stay inside DIR.
func localPaths(dir string, files []*pb.FileInfo) []string {
	count := map[string]int{}
	for _, f := range files {
		count[f.GetName()]++
	}
	out := make([]string, len(files))
	for i, f := range files {
		if count[f.GetName()] > 1 {
			out[i] = filepath.Join(dir, f.GetCluster(), filepath.FromSlash(f.GetName()))
		} else {
			out[i] = filepath.Join(dir, filepath.FromSlash(f.GetName()))
		}
	}
	return out
}

// clientFor returns a client whose calls are meant for cluster.
func (rg *rangeGet) clientFor(cluster string) (*client.Client, error) {
	rg.mu.Lock()
	defer rg.mu.Unlock()
	if c, ok := rg.clients[cluster]; ok {
		return c, nil
	}
	g := *rg.g
	g.cluster = cluster
	c, err := g.client()
	if err != nil {
		return nil, err
	}
	if rg.clients == nil {
		rg.clients = map[string]*client.Client{}
	}
	rg.clients[cluster] = c
	return c, nil
}

func (rg *rangeGet) close() {
	rg.mu.Lock()
	defer rg.mu.Unlock()
	for _, c := range rg.clients {
		c.Close()
	}
}

// progressLine keeps one progress line on stderr, when it is a terminal and
// output is not JSON, until the returned function is called.
func (rg *rangeGet) progressLine(st *rangeGetStats) (stop func()) {
	if rg.g.json || !term.IsTerminal(int(os.Stderr.Fd())) {
		return func() {}
	}
	done := make(chan struct{})
	var wg sync.WaitGroup
	line := func() {
		n := st.skipped.Load() + st.fetched.Load() + st.failed.Load()
		total, got := st.bytes.Load(), st.done.Load()
		pct := 100.0
		if total > 0 {
			pct = 100 * float64(got) / float64(total)
		}
		fmt.Fprintf(os.Stderr, "\rget: %d/%d files, %s of %s (%.0f%%)\x1b[K", n, st.files.Load(), humanSize(got), humanSize(total), pct)
	}
	wg.Go(func() {
		t := time.NewTicker(200 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-done:
				line()
				fmt.Fprintln(os.Stderr)
				return
			case <-t.C:
				line()
			}
		}
	})
	return func() { close(done); wg.Wait() }
}
