package bench

import (
	"context"
	"crypto/x509"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/ddstore/ddstore/client"
	"github.com/ddstore/ddstore/internal/localcluster"
	"github.com/ddstore/ddstore/server"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// fedFPRate is the false-positive rate the federation's filters are sized
// for (the server's default).
const fedFPRate = 0.01

// federation measures three local clusters of three nodes, A, B and C, each
// a peer of the others (nodes in this process, so that C's filters can be
// switched off; without the in-process cache tier, so that nine nodes fit
// the process's memory limit): a download of A's file through B against one from A
// itself; peer calls per lookup of a name no cluster holds, asked of C,
// with the filters and without; and the filters' measured false-positive
// rate against the configured one.
func (r *runner) federation(ctx context.Context) error {
	cls, err := r.startFederation(ctx)
	if err != nil {
		return err
	}
	defer r.stopFederation(cls)
	clients := map[string]*client.Client{}
	for _, name := range fedNames {
		c, err := cls[name].Client()
		if err != nil {
			return err
		}
		defer c.Close()
		clients[name] = c
	}
	if err := r.forwardedDownload(ctx, cls, clients); err != nil {
		return err
	}
	return r.lookups(ctx, cls, clients)
}

var fedNames = []string{"A", "B", "C"}

// startFederation plans and launches the three clusters, planning them
// again on other ports when a port was taken before a node could listen on
// it.
func (r *runner) startFederation(ctx context.Context) (map[string]*localcluster.Cluster, error) {
	for attempt := 1; ; attempt++ {
		cls := map[string]*localcluster.Cluster{}
		for _, name := range fedNames {
			// Each cluster gets its own CA (mutual TLS on every link) and
			// trusts its peers' CAs for their nodes.
			cl, err := localcluster.New(localcluster.Options{
				Dir: filepath.Join(r.dir, "fed-"+name), Replicas: 3, Cluster: name,
				PeerCA: func(peer string) *x509.Certificate { return cls[peer].CA().Cert },
				Tune: func(c *server.Config) {
					c.Peers = map[string][]string{}
					for _, o := range fedNames {
						if o != name {
							c.Peers[o] = cls[o].Addrs()
						}
					}
					c.FilterFPRate = fedFPRate
					c.CacheSize = -1 // nine nodes share this process and its memory limit
					c.FilterRefresh = 200 * time.Millisecond
					c.RepairInterval, c.ScrubInterval, c.GCInterval = -1, -1, -1
				},
			})
			if err != nil {
				r.stopFederation(cls)
				return nil, err
			}
			cls[name] = cl
		}
		r.say("federation: starting clusters A, B and C (3 nodes each, peers of each other)")
		var err error
		for _, name := range fedNames {
			if err = cls[name].Launch(ctx); err != nil {
				err = fmt.Errorf("federation: cluster %s: %w", name, err)
				break
			}
		}
		if err == nil {
			return cls, nil
		}
		r.stopFederation(cls)
		if attempt == startAttempts || !localcluster.PortTaken(err, "") {
			return nil, err
		}
		r.say("%v: again on other ports", err)
	}
}

func (r *runner) stopFederation(cls map[string]*localcluster.Cluster) {
	for _, name := range fedNames {
		if cl := cls[name]; cl != nil {
			cl.Close()
			os.RemoveAll(filepath.Join(r.dir, "fed-"+name))
		}
	}
}

// forwardedDownload compares a download of A's file from A with one through
// B's leader.
func (r *runner) forwardedDownload(ctx context.Context, cls map[string]*localcluster.Cluster, clients map[string]*client.Client) error {
	size := r.middleSize()
	r.say("federation: %s random in A, downloaded from A and through B", human(size))
	if err := r.putRandom(ctx, clients["A"], "fed/big.bin", size); err != nil {
		return fmt.Errorf("federation: put into A: %w", err)
	}
	viaB, err := client.New([]string{cls["B"].Members[max(0, cls["B"].Leader(ctx))].APIAddr}, cls["B"].ClientOptions()...)
	if err != nil {
		return err
	}
	defer viaB.Close()
	if err := waitFound(ctx, viaB, "fed/big.bin"); err != nil {
		return err
	}
	var local, fwd []float64
	for range r.cfg.Runs {
		for _, m := range []struct {
			c   *client.Client
			out *[]float64
		}{{clients["A"], &local}, {viaB, &fwd}} {
			res, err := m.c.Get(ctx, "fed/big.bin", io.Discard, client.GetOptions{})
			if err != nil {
				return fmt.Errorf("federation: download: %w", err)
			}
			*m.out = append(*m.out, mbps(size, res.Duration))
		}
	}
	l := newResult("federation: download from A (local)", Random, size, "MB/s", local)
	l.Note = "A's file from A's nodes, same run"
	fw := newResult("federation: download through B (forwarded)", Random, size, "MB/s", fwd).against("local download", l.Median)
	fw.Note = "A's file asked of B's leader; B fetches its chunks from A (4 ahead), checks each and streams it on"
	r.rep.Results = append(r.rep.Results, l, fw)
	return nil
}

// waitFound waits until a name is found through c (its cluster learns of a
// peer's new file at the next filter refresh).
func waitFound(ctx context.Context, c *client.Client, name string) error {
	deadline := time.Now().Add(30 * time.Second)
	for {
		_, err := c.Stat(ctx, name, 0)
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("federation: %s not found through the peer: %w", name, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// lookups fills A and B with small files, then asks C for names no cluster
// holds, counting C's calls to its peers.
func (r *runner) lookups(ctx context.Context, cls map[string]*localcluster.Cluster, clients map[string]*client.Client) error {
	files, lookups := r.cfg.FedFiles, r.cfg.FedLookups
	r.say("federation: %d files each in A and B, then %d lookups of missing names asked of C", files, lookups)
	for _, name := range []string{"A", "B"} {
		if err := putMany(ctx, clients[name], name, files); err != nil {
			return err
		}
	}
	if err := localcluster.WaitPeerFilters(ctx, cls, "C"); err != nil {
		return err
	}
	c := clients["C"]
	count := func(n int, ask func(i int) error) (calls, skips uint64, per time.Duration, err error) {
		before, err := fedTotals(ctx, c)
		if err != nil {
			return 0, 0, 0, err
		}
		start := time.Now()
		for i := range n {
			if err := ask(i); err != nil {
				return 0, 0, 0, err
			}
		}
		per = time.Since(start) / time.Duration(n)
		after, err := fedTotals(ctx, c)
		return after.PeerCalls - before.PeerCalls, after.FilterSkips - before.FilterSkips, per, err
	}
	stat := func(tag string) func(int) error {
		return func(i int) error {
			_, err := c.Stat(ctx, fmt.Sprintf("missing/%s/%06d", tag, i), 0)
			if status.Code(err) != codes.NotFound {
				return fmt.Errorf("federation: lookup of a missing name: %v, want NotFound", err)
			}
			return nil
		}
	}
	list := func(i int) error {
		day := time.Date(2023, 1, 1, 0, 0, 0, 0, time.UTC).AddDate(0, 0, i%365).Format("2006-01-02")
		l, err := c.List(ctx, client.ListOptions{DateFrom: day, DateTo: day})
		if err == nil && len(l.Files) > 0 {
			err = fmt.Errorf("federation: %d files listed for %s, want none", len(l.Files), day)
		}
		return err
	}

	withCalls, withSkips, withPer, err := count(lookups, stat("f"))
	if err != nil {
		return err
	}
	listCalls, _, listPer, err := count(lookups/4, list)
	if err != nil {
		return err
	}
	for _, m := range cls["C"].Members {
		m.Node.IgnorePeerFilters(true)
	}
	noCalls, _, noPer, err := count(lookups/4, stat("n"))
	for _, m := range cls["C"].Members {
		m.Node.IgnorePeerFilters(false)
	}
	if err != nil {
		return err
	}
	peers := 2.0
	with := newResult("federation: peer calls per missing-name lookup, with filters", "", 0, "calls", []float64{float64(withCalls) / float64(lookups)})
	with.Extra = map[string]float64{"lookups": float64(lookups), "filter_skips": float64(withSkips), "ms_per_lookup": ms(withPer)}
	without := newResult("federation: peer calls per missing-name lookup, filters ignored", "", 0, "calls", []float64{float64(noCalls) / float64(lookups/4)})
	without.Extra = map[string]float64{"lookups": float64(lookups / 4), "ms_per_lookup": ms(noPer)}
	with.against("filters ignored", without.Median)
	fp := newResult("federation: name filter false-positive rate", "", 0, "rate", []float64{float64(withCalls) / (peers * float64(lookups))})
	fp.against("configured", fedFPRate)
	capacity := filterCapacity(files)
	fp.Extra = map[string]float64{"files_per_peer": float64(files), "filter_capacity": float64(capacity), "peer_filter_tests": peers * float64(lookups)}
	fp.Note = fmt.Sprintf("name filters hold %d of the %d names they are sized for (%.0f%%); at capacity the rate is the configured one", files, capacity, 100*float64(files)/float64(capacity))
	lists := newResult("federation: peer calls per date listing of an empty day", "", 0, "calls", []float64{float64(listCalls) / float64(lookups/4)})
	lists.Extra = map[string]float64{"listings": float64(lookups / 4), "ms_per_listing": ms(listPer), "days_per_peer": float64(min(files, 365))}
	r.rep.Results = append(r.rep.Results, with, without, fp, lists)
	return nil
}

// filterCapacity is how many names a cluster's name filter is sized for
// after files were added one by one: filters are built for max(1024, 2n)
// items and rebuilt when that is passed.
func filterCapacity(files int) int {
	capacity := 1024
	for files > capacity {
		capacity = 2 * (capacity + 1)
	}
	return capacity
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// putMany stores n small files in a cluster, dated over 2025.
func putMany(ctx context.Context, c *client.Client, cluster string, n int) error {
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		errs []error
		next = make(chan int)
	)
	for range 8 {
		wg.Go(func() {
			for i := range next {
				day := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC).AddDate(0, 0, i%365).Format("2006-01-02")
				body := fmt.Sprintf("file %d of cluster %s", i, cluster)
				if _, err := c.Put(ctx, fmt.Sprintf("fed/%s/%06d", cluster, i), strings.NewReader(body), client.PutOptions{Date: day}); err != nil {
					mu.Lock()
					errs = append(errs, err)
					mu.Unlock()
				}
			}
		})
	}
	for i := range n {
		next <- i
	}
	close(next)
	wg.Wait()
	if len(errs) > 0 {
		return fmt.Errorf("federation: put into %s: %d failed, first: %w", cluster, len(errs), errs[0])
	}
	return nil
}

// fedTotals sums a cluster's federation counters over its nodes.
func fedTotals(ctx context.Context, c *client.Client) (struct{ PeerCalls, FilterSkips uint64 }, error) {
	var t struct{ PeerCalls, FilterSkips uint64 }
	st, err := c.Status(ctx)
	if err != nil {
		return t, err
	}
	for _, n := range st.GetNodes() {
		t.PeerCalls += n.GetFederation().GetPeerCalls()
		t.FilterSkips += n.GetFederation().GetFilterSkips()
	}
	return t, nil
}
