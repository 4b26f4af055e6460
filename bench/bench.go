package bench

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/ddstore/ddstore/client"
	"github.com/ddstore/ddstore/internal/localcluster"
	"github.com/ddstore/ddstore/internal/testenv"
	"github.com/ddstore/ddstore/server"
)

// Config says what to measure.
type Config struct {
	// Target lists the API addresses of a running cluster to measure; empty
	// starts a local 3-node cluster on the embedded store.
	Target []string
	// ClientOptions are the credentials for the Target cluster (TLS with its
	// CA, a client certificate or token); none: plain text. Local clusters
	// hand out their own.
	ClientOptions []client.Option
	// Exe is a ddstore binary: local nodes run as child processes of it, so
	// that their peak memory can be read. Empty: nodes run in this process.
	Exe string
	// Dir holds generated files and local clusters; empty: a temporary
	// directory, removed at the end.
	Dir        string
	Sizes      []int64  // file sizes; default 64 MiB, 256 MiB, 1 GiB
	Kinds      []string // data kinds; default Random and Text
	Runs       int      // repetitions of each measurement; default 3 (1 for sizes of 2 GiB and more)
	Clients    int      // clients at once in the concurrency scenario; default 4
	SmallFiles int      // files in the small-files scenario; default 2000
	SmallSize  int64    // their size; default 4 KiB
	// Store is the chunk store of the local clusters' nodes: "pack"
	// (default) or "local".
	Store    string
	MongoURI string // also measure the GridFS store and direct GridFS against it
	// Memcached lists memcached servers for the local nodes' second cache
	// tier. Empty: the bench starts one itself when memcached is installed
	// (NoMemcached turns that off).
	Memcached   []string
	NoMemcached bool
	// FedFiles is how many small files each of two peer clusters holds in
	// the federation scenario (default 1000); FedLookups how many lookups
	// of missing names are counted (default 2000). FederationOnly runs only
	// that scenario.
	FedFiles, FedLookups int
	FederationOnly       bool
	// TLSOnly runs only the TLS scenario: the same R=3 workload on a
	// mutual-TLS cluster and an insecure one, interleaved.
	TLSOnly bool
	// S3Only runs only the S3 scenario: PutObject and GetObject through an
	// S3 gateway against the Go client, on a local cluster.
	S3Only bool
	// SourcesOnly runs only the sources scenario: a download from one node
	// against the same from three at once, as the host is and with each
	// node's link limited to LinkRate (tc syntax; default 800mbit) by tc
	// on the loopback device (root only).
	SourcesOnly bool
	LinkRate    string
	Progress    io.Writer
	Command     string // the command line, recorded in the report
}

// Quick returns a configuration that finishes in under a minute: one run of
// a 32 MiB file of each kind, 200 small files, 2 clients.
func Quick() Config {
	return Config{Sizes: []int64{32 << 20}, Runs: 1, Clients: 2, SmallFiles: 200, FedFiles: 100, FedLookups: 200}
}

func (c *Config) defaults() {
	if len(c.Sizes) == 0 {
		c.Sizes = []int64{64 << 20, 256 << 20, 1 << 30}
	}
	slices.Sort(c.Sizes)
	if len(c.Kinds) == 0 {
		c.Kinds = []string{Random, Text}
	}
	if c.Runs <= 0 {
		c.Runs = 3
	}
	if c.Clients <= 0 {
		c.Clients = 4
	}
	if c.SmallFiles <= 0 {
		c.SmallFiles = 2000
	}
	if c.SmallSize <= 0 {
		c.SmallSize = 4 << 10
	}
	if c.FedFiles <= 0 {
		c.FedFiles = 1000
	}
	if c.FedLookups <= 0 {
		c.FedLookups = 2000
	}
	if c.LinkRate == "" {
		c.LinkRate = "800mbit"
	}
	if c.Progress == nil {
		c.Progress = io.Discard
	}
}

// loadAverage is the host's 1-minute load average ("" if unknown): on a
// shared machine, how many others wanted its cores.
func loadAverage() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return ""
	}
	if f := strings.Fields(string(b)); len(f) > 0 {
		return f[0]
	}
	return ""
}

// nodeCacheMiB is the in-process cache tier of the local nodes (the
// server's default): memory a node uses on purpose, beyond its streaming
// working set.
const nodeCacheMiB = 256

// runner holds one run's state.
type runner struct {
	cfg       Config
	dir       string
	rep       *Report
	c         *client.Client
	cl        *localcluster.Cluster // nil with a Target
	memcached *testenv.Memcached    // started by the bench, if any
	replicas  int
	meter     cpuMeter // of the cluster measured; off with a Target
	overTLS   bool     // the measured cluster's clients talk TLS
	samples   map[key][]float64
	extra     map[key]map[string][]float64
	seed      uint64
}

type key struct {
	scenario, data string
	size           int64
}

func (r *runner) add(scenario, data string, size int64, v float64) {
	k := key{scenario, data, size}
	r.samples[k] = append(r.samples[k], v)
}

func (r *runner) addExtra(scenario, data string, size int64, name string, v float64) {
	k := key{scenario, data, size}
	if r.extra[k] == nil {
		r.extra[k] = map[string][]float64{}
	}
	r.extra[k][name] = append(r.extra[k][name], v)
}

func (r *runner) say(format string, args ...any) {
	fmt.Fprintf(r.cfg.Progress, "bench: "+format+"\n", args...)
}

// Run measures everything cfg asks for and returns the report.
func Run(ctx context.Context, cfg Config) (*Report, error) {
	cfg.defaults()
	start := time.Now()
	r := &runner{cfg: cfg, samples: map[key][]float64{}, extra: map[key]map[string][]float64{}}
	r.rep = &Report{
		Command: cfg.Command,
		Started: start.UTC().Format(time.RFC3339),
		Machine: fmt.Sprintf("%d cores, %s/%s, %s", runtime.NumCPU(), runtime.GOOS, runtime.GOARCH, runtime.Version()),
	}
	if l := loadAverage(); l != "" {
		r.rep.Machine += ", load average " + l + " at start"
		defer func() {
			if l := loadAverage(); l != "" {
				r.rep.Machine += ", " + l + " at end"
			}
		}()
	}
	r.dir = cfg.Dir
	if r.dir == "" {
		d, err := os.MkdirTemp("", "ddstore-bench-")
		if err != nil {
			return nil, err
		}
		defer os.RemoveAll(d)
		r.dir = d
	}
	if err := os.MkdirAll(r.dir, 0o755); err != nil {
		return nil, err
	}
	if cfg.FederationOnly {
		r.rep.Cluster = "local: three clusters of 3 nodes on loopback, mutual TLS, embedded store, R=3, nodes in the bench process, one host"
		if err := r.federation(ctx); err != nil {
			return nil, err
		}
		r.rep.Seconds = time.Since(start).Seconds()
		return r.rep, nil
	}
	if cfg.TLSOnly {
		r.rep.Cluster = "local: two clusters of 3 nodes on loopback, one mutual TLS and one insecure, embedded store, R=3, in-process cache tier (256 MiB per node), " + r.nodeMode() + ", one host"
		if err := r.tlsCost(ctx); err != nil {
			return nil, err
		}
		r.rep.Seconds = time.Since(start).Seconds()
		return r.rep, nil
	}
	if cfg.SourcesOnly {
		r.rep.Cluster = "local: 3 nodes on loopback, mutual TLS, embedded store, R=3, " + r.nodeMode() + ", one host; then each node's API port limited to " + cfg.LinkRate + " by tc on lo"
		if err := r.sourcesScenario(ctx); err != nil {
			return nil, err
		}
		r.rep.Seconds = time.Since(start).Seconds()
		return r.rep, nil
	}
	if err := r.open(ctx); err != nil {
		return nil, err
	}
	defer r.close()
	if cfg.S3Only {
		if err := r.s3Scenario(ctx); err != nil {
			return nil, err
		}
		r.finish()
		r.targets()
		r.rep.Targets = r.rep.Targets[len(r.rep.Targets)-1:] // only the S3 one was measured
		r.rep.Seconds = time.Since(start).Seconds()
		return r.rep, nil
	}

	if err := r.sizes(ctx); err != nil {
		return nil, err
	}
	// Before each scenario the disk writes back what the one before left
	// dirty, so that its writeback does not slow the next one's fsyncs.
	settle()
	if err := r.concurrent(ctx); err != nil {
		return nil, err
	}
	settle()
	if err := r.smallFiles(ctx); err != nil {
		return nil, err
	}
	settle()
	if err := r.s3Scenario(ctx); err != nil {
		return nil, err
	}
	r.finish()
	if r.cl != nil {
		r.peakRSS()
		r.close()
		if err := r.replicationFactor(ctx); err != nil {
			return nil, err
		}
		if cfg.MongoURI != "" {
			if err := r.gridfs(ctx); err != nil {
				return nil, err
			}
		}
		if err := r.tlsCost(ctx); err != nil {
			return nil, err
		}
		if err := r.federation(ctx); err != nil {
			return nil, err
		}
	}
	r.targets()
	r.rep.ExtraTargets = append(r.rep.ExtraTargets, r.engineTargets()...)
	r.rep.Seconds = time.Since(start).Seconds()
	return r.rep, nil
}

func (r *runner) open(ctx context.Context) error {
	if len(r.cfg.Target) > 0 {
		c, err := client.New(r.cfg.Target, r.cfg.ClientOptions...)
		if err != nil {
			return err
		}
		r.c = c
		st, err := c.Status(ctx)
		if err != nil {
			return fmt.Errorf("bench: target cluster: %w", err)
		}
		r.replicas = int(st.GetReplicas())
		link := "plain text"
		if r.overTLS = len(r.cfg.ClientOptions) > 0; r.overTLS {
			link = "TLS"
		}
		r.rep.Cluster = fmt.Sprintf("running cluster %s: %d nodes, R=%d, client over %s", strings.Join(r.cfg.Target, ","), len(st.GetNodes()), r.replicas, link)
		r.meter = cpuMeter{off: true} // the nodes' CPU time is not ours to read
		return nil
	}
	if len(r.cfg.Memcached) == 0 && !r.cfg.NoMemcached {
		if mc, err := testenv.StartMemcached(1024, 8<<20); err == nil {
			r.memcached = mc
			r.cfg.Memcached = []string{mc.Addr}
		} else {
			r.say("no memcached (%v): nodes cache in memory only", err)
		}
	}
	opts := localcluster.Options{Dir: filepath.Join(r.dir, "cluster-r3"), Exe: r.cfg.Exe, Replicas: 3}
	if len(r.cfg.Memcached) > 0 {
		opts.Args = []string{"--memcached", strings.Join(r.cfg.Memcached, ","), "--memcached-max-item", fmt.Sprint(8 << 20)}
		opts.Tune = func(c *server.Config) { c.Memcached, c.MemcachedMaxItem = r.cfg.Memcached, 8<<20 }
	}
	r.say("starting a local 3-node cluster (embedded store, R=3, memcached %v)", r.cfg.Memcached)
	cl, err := r.startCluster(ctx, opts)
	if err != nil {
		return err
	}
	r.cl, r.overTLS = cl, true
	r.meter = r.newCPUMeter(cl, "bench")
	c, err := cl.Client()
	if err != nil {
		return err
	}
	r.c, r.replicas = c, 3
	tiers := "in-process cache tier (256 MiB per node)"
	if len(r.cfg.Memcached) > 0 {
		tiers += " and memcached " + strings.Join(r.cfg.Memcached, ",")
	}
	r.rep.Cluster = fmt.Sprintf("local: 3 nodes on loopback, mutual TLS, embedded store, R=3, %s, %s, one host", tiers, r.nodeMode())
	return nil
}

func (r *runner) nodeMode() string {
	if r.cfg.Exe != "" {
		return "nodes as child processes"
	}
	return "nodes in the bench process"
}

// clientOptions are what a client of the measured cluster needs.
func (r *runner) clientOptions() []client.Option {
	if r.cl != nil {
		return r.cl.ClientOptions()
	}
	return r.cfg.ClientOptions
}

// startAttempts bounds how often the federation's clusters are planned
// again after a port they were given was taken.
const startAttempts = 3

// startCluster starts a local cluster on the configured store.
func (r *runner) startCluster(ctx context.Context, opts localcluster.Options) (*localcluster.Cluster, error) {
	if opts.Store == "" && r.cfg.Store != "" {
		opts.Store = r.cfg.Store
	}
	return localcluster.Start(ctx, opts)
}

func (r *runner) close() {
	if r.c != nil {
		r.c.Close()
		r.c = nil
	}
	if r.cl != nil {
		r.cl.Close()
		os.RemoveAll(filepath.Join(r.dir, "cluster-r3"))
		r.cl = nil
	}
	if r.memcached != nil {
		r.memcached.Stop()
		r.memcached = nil
	}
}

// file generates a fresh data file (new content on every call).
func (r *runner) file(kind string, size int64) (string, error) {
	r.seed++
	path := filepath.Join(r.dir, fmt.Sprintf("%s-%d-%d.dat", kind, size, r.seed))
	return path, writeData(path, kind, size, r.seed+uint64(time.Now().UnixNano()))
}

// putRandom stores size fresh random bytes under name through c.
func (r *runner) putRandom(ctx context.Context, c *client.Client, name string, size int64) error {
	path, err := r.file(Random, size)
	if err != nil {
		return err
	}
	defer os.Remove(path)
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	_, err = c.Put(ctx, name, f, client.PutOptions{})
	return err
}

func (r *runner) name(parts ...any) string {
	return fmt.Sprintf("bench/%d/%s", time.Now().UnixNano(), strings.Trim(fmt.Sprint(parts...), "[]"))
}

func (r *runner) runsFor(size int64) int {
	if size >= 2<<30 {
		return 1
	}
	return r.cfg.Runs
}

// sizes runs the per-size scenarios and baselines.
func (r *runner) sizes(ctx context.Context) error {
	for _, size := range r.cfg.Sizes {
		for _, kind := range r.cfg.Kinds {
			for run := range r.runsFor(size) {
				r.say("%s %s, run %d/%d", human(size), kind, run+1, r.runsFor(size))
				if err := r.sizeRun(ctx, kind, size); err != nil {
					return fmt.Errorf("bench: %s %s: %w", human(size), kind, err)
				}
			}
		}
	}
	return nil
}

func (r *runner) sizeRun(ctx context.Context, kind string, size int64) error {
	path, err := r.file(kind, size)
	if err != nil {
		return err
	}
	defer os.Remove(path)

	// Baselines on the same bytes.
	if kind == Random {
		w, rd, err := diskWrite(path, r.dir)
		if err != nil {
			return fmt.Errorf("disk baseline: %w", err)
		}
		r.add("baseline: disk write+fsync", Random, size, w)
		r.add("baseline: disk read (page cache)", Random, size, rd)
		up, down, err := grpcRate(ctx, size, false)
		if err != nil {
			return fmt.Errorf("gRPC baseline: %w", err)
		}
		r.add("baseline: gRPC loopback, upload direction", "", size, up)
		r.add("baseline: gRPC loopback, download direction", "", size, down)
		up, down, err = grpcRate(ctx, size, true)
		if err != nil {
			return fmt.Errorf("gRPC TLS baseline: %w", err)
		}
		r.add("baseline: gRPC loopback TLS, upload direction", "", size, up)
		r.add("baseline: gRPC loopback TLS, download direction", "", size, down)
	}
	sp := cpuMeter{}.start()
	pl, err := pipelineRate(ctx, path)
	if err != nil {
		return fmt.Errorf("pipeline baseline: %w", err)
	}
	r.add("baseline: chunker pipeline", kind, size, pl)
	r.addCPU("baseline: chunker pipeline", kind, size, sp)

	// Upload, then the same file again.
	name := r.name(kind, size)
	sp = r.meter.start()
	first, err := r.put(ctx, name, path, false)
	if err != nil {
		return err
	}
	r.add("upload", kind, size, mbps(size, first.Duration))
	r.addCPU("upload", kind, size, sp)
	r.addExtra("upload", kind, size, "stored_fraction", float64(first.Manifest.GetStoredSize())/float64(max(1, size)))
	again, err := r.put(ctx, name, path, false)
	if err != nil {
		return err
	}
	r.add("re-upload unchanged", kind, size, first.Duration.Seconds()/again.Duration.Seconds())
	r.addExtra("re-upload unchanged", kind, size, "bytes_sent", float64(again.BytesSent))
	r.addExtra("re-upload unchanged", kind, size, "seconds", again.Duration.Seconds())

	// Download (no ddstore cache exists yet: every download is cold).
	sp = r.meter.start()
	start := time.Now()
	if _, err := r.c.Get(ctx, name, io.Discard, client.GetOptions{}); err != nil {
		return fmt.Errorf("download: %w", err)
	}
	d := time.Since(start)
	r.add("download", kind, size, mbps(size, d))
	r.addCPU("download", kind, size, sp)
	r.addExtra("download", kind, size, "chunks_per_s", float64(len(first.Manifest.GetChunks()))/d.Seconds())
	// The same file again: served from the cache tiers as far as they hold it.
	start = time.Now()
	if _, err := r.c.Get(ctx, name, io.Discard, client.GetOptions{}); err != nil {
		return fmt.Errorf("second download: %w", err)
	}
	r.add("download hot (second read)", kind, size, mbps(size, time.Since(start)))

	if kind == Random {
		if err := r.resume(ctx, name, size); err != nil {
			return err
		}
	}

	// 1% of the bytes changed in place, uploaded again.
	if err := changeInPlace(path, 0.01, r.seed); err != nil {
		return err
	}
	changed, err := r.put(ctx, name+".changed", path, false)
	if err != nil {
		return err
	}
	r.add("re-upload 1% changed", kind, size, 100*float64(changed.BytesSent)/float64(first.BytesSent))
	r.addExtra("re-upload 1% changed", kind, size, "chunks_sent", float64(changed.ChunksSent))
	r.addExtra("re-upload 1% changed", kind, size, "MB/s", mbps(size, changed.Duration))
	return nil
}

func (r *runner) put(ctx context.Context, name, path string, overwrite bool) (*client.PutResult, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	res, err := r.c.Put(ctx, name, f, client.PutOptions{Overwrite: overwrite})
	if err != nil {
		return nil, fmt.Errorf("upload %s: %w", name, err)
	}
	return res, nil
}

// resume interrupts a download half-way and resumes it.
func (r *runner) resume(ctx context.Context, name string, size int64) error {
	out := filepath.Join(r.dir, "resume.out")
	defer os.Remove(out)
	cut, cancel := context.WithCancel(ctx)
	_, err := r.c.GetFile(cut, name, out, false, client.GetOptions{Progress: func(done, total int64) {
		if done >= total/2 {
			cancel()
		}
	}})
	cancel()
	if err == nil || ctx.Err() != nil {
		return fmt.Errorf("interrupted download: %v", err)
	}
	res, err := r.c.GetFile(ctx, name, out, true, client.GetOptions{})
	if err != nil {
		return fmt.Errorf("resumed download: %w", err)
	}
	rest := size - res.KeptBytes
	r.add("download resumed half-way", Random, size, mbps(rest, res.Duration))
	r.addExtra("download resumed half-way", Random, size, "kept_fraction", float64(res.KeptBytes)/float64(size))
	return nil
}

// middleSize is the size used by the single-size scenarios: the largest
// measured size up to 1 GiB.
func (r *runner) middleSize() int64 {
	s := r.cfg.Sizes[0]
	for _, v := range r.cfg.Sizes {
		if v <= 1<<30 {
			s = v
		}
	}
	return s
}

// concurrent uploads, then downloads, one file per client at once.
func (r *runner) concurrent(ctx context.Context) error {
	n := r.cfg.Clients
	total := r.middleSize()
	per := total / int64(n)
	r.say("%d clients at once, %s each", n, human(per))
	var paths, names []string
	for i := range n {
		p, err := r.file(Random, per)
		if err != nil {
			return err
		}
		defer os.Remove(p)
		paths, names = append(paths, p), append(names, r.name("client", i))
	}
	clients := make([]*client.Client, n)
	for i := range clients {
		c, err := client.New(r.addrs(), r.clientOptions()...)
		if err != nil {
			return err
		}
		defer c.Close()
		clients[i] = c
	}
	for _, op := range []string{"upload", "download"} {
		for range r.cfg.Runs {
			sp := r.meter.start()
			start := time.Now()
			errs := make([]error, n)
			var wg sync.WaitGroup
			for i := range n {
				wg.Go(func() {
					if op == "upload" {
						f, err := os.Open(paths[i])
						if err != nil {
							errs[i] = err
							return
						}
						defer f.Close()
						_, errs[i] = clients[i].Put(ctx, names[i], f, client.PutOptions{Overwrite: true})
					} else {
						_, errs[i] = clients[i].Get(ctx, names[i], io.Discard, client.GetOptions{})
					}
				})
			}
			wg.Wait()
			if err := errors.Join(errs...); err != nil {
				return fmt.Errorf("%d clients, %s: %w", n, op, err)
			}
			scenario := fmt.Sprintf("%d clients at once, %s (aggregate)", n, op)
			r.add(scenario, Random, per*int64(n), mbps(per*int64(n), time.Since(start)))
			r.addCPU(scenario, Random, per*int64(n), sp)
			if op == "upload" {
				// Fresh content for the next run, so nothing deduplicates.
				for i := range paths {
					os.Remove(paths[i])
					p, err := r.file(Random, per)
					if err != nil {
						return err
					}
					paths[i] = p
					defer os.Remove(p)
				}
			}
		}
	}
	return nil
}

func (r *runner) addrs() []string {
	if r.cl != nil {
		return r.cl.Addrs()
	}
	return r.cfg.Target
}

// smallWorkers is how many clients write, then read, small files at once.
const smallWorkers = 16

// smallFiles commits many small files from smallWorkers goroutines, then
// reads each back (verified) from as many: files per second and per-call
// latency percentiles, both ways.
func (r *runner) smallFiles(ctx context.Context) error {
	n, size := r.cfg.SmallFiles, r.cfg.SmallSize
	path, err := r.file(Random, int64(n)*size)
	if err != nil {
		return err
	}
	defer os.Remove(path)
	data, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	runs := r.runsFor(int64(n) * size)
	for run := range runs {
		r.say("%d files of %s, %d writers, then %d readers, run %d/%d", n, human(size), smallWorkers, smallWorkers, run+1, runs)
		if err := r.smallFilesRun(ctx, data, r.name("small")); err != nil {
			return err
		}
	}
	return nil
}

// smallFilesRun is one run of smallFiles: data cut into files under prefix.
func (r *runner) smallFilesRun(ctx context.Context, data []byte, prefix string) error {
	n, size := r.cfg.SmallFiles, r.cfg.SmallSize
	name := func(i int) string { return fmt.Sprintf("%s/%06d", prefix, i) }
	put := func(i int) error {
		_, err := r.c.Put(ctx, name(i), bytes.NewReader(data[int64(i)*size:int64(i+1)*size]), client.PutOptions{})
		return err
	}
	get := func(i int) error {
		var b bytes.Buffer
		if _, err := r.c.Get(ctx, name(i), &b, client.GetOptions{}); err != nil {
			return err
		}
		if !bytes.Equal(b.Bytes(), data[int64(i)*size:int64(i+1)*size]) {
			return fmt.Errorf("%s: read back differs", name(i))
		}
		return nil
	}
	for _, side := range []struct {
		what string
		op   func(int) error
	}{{"put", put}, {"get", get}} {
		rate, lat, err := parallel(n, smallWorkers, side.op)
		if err != nil {
			return fmt.Errorf("small files, %s: %w", side.what, err)
		}
		k := fmt.Sprintf("small files %s (%s each, %d at once)", side.what, human(size), smallWorkers)
		r.add(k, Random, 0, rate)
		r.addExtra(k, Random, 0, side.what+"_ms_p50", lat[n/2])
		r.addExtra(k, Random, 0, side.what+"_ms_p99", lat[min(n-1, n*99/100)])
		r.addExtra(k, Random, 0, "files", float64(n))
	}
	return nil
}

// settle asks the kernel to write every dirty page to disk, so that one
// scenario's writeback does not run into the next one's measurement.
func settle() { syscall.Sync() }

// parallel runs op(0..n-1) on workers goroutines and returns the calls per
// second and each call's latency in milliseconds, sorted.
func parallel(n, workers int, op func(int) error) (float64, []float64, error) {
	lat := make([]float64, n)
	next := make(chan int)
	errs := make(chan error, workers)
	start := time.Now()
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for i := range next {
				t := time.Now()
				if err := op(i); err != nil {
					errs <- err
					return
				}
				lat[i] = time.Since(t).Seconds() * 1000
			}
		})
	}
	var ferr error
feed:
	for i := range n {
		select {
		case next <- i:
		case ferr = <-errs:
			break feed
		}
	}
	close(next)
	wg.Wait()
	if ferr == nil {
		select {
		case ferr = <-errs:
		default:
		}
	}
	if ferr != nil {
		return 0, nil, ferr
	}
	d := time.Since(start)
	sort.Float64s(lat)
	return float64(n) / d.Seconds(), lat, nil
}

// replicationFactor uploads the middle size with R=1 on a fresh cluster.
func (r *runner) replicationFactor(ctx context.Context) error {
	size := r.middleSize()
	r.say("R=1: %s random on a fresh 3-node cluster", human(size))
	cl, err := r.startCluster(ctx, localcluster.Options{Dir: filepath.Join(r.dir, "cluster-r1"), Exe: r.cfg.Exe, Replicas: 1})
	if err != nil {
		return err
	}
	defer func() { cl.Close(); os.RemoveAll(filepath.Join(r.dir, "cluster-r1")) }()
	c, err := cl.Client()
	if err != nil {
		return err
	}
	defer c.Close()
	meter := r.newCPUMeter(cl, "R=1")
	var runs, disk, cpu []float64
	for range r.cfg.Runs {
		path, err := r.file(Random, size)
		if err != nil {
			return err
		}
		w, _, err := diskWrite(path, r.dir)
		if err != nil {
			os.Remove(path)
			return err
		}
		disk = append(disk, w)
		f, err := os.Open(path)
		if err != nil {
			return err
		}
		sp := meter.start()
		res, err := c.Put(ctx, r.name("r1"), f, client.PutOptions{})
		f.Close()
		os.Remove(path)
		if err != nil {
			return fmt.Errorf("R=1 upload: %w", err)
		}
		runs = append(runs, mbps(size, res.Duration))
		if v, ok := sp.perGiB(size); ok {
			cpu = append(cpu, v)
		}
	}
	d := newResult("", "", 0, "", disk)
	res := newResult("upload, R=1", Random, size, "MB/s", runs).against("disk write+fsync", d.Median)
	if len(cpu) > 0 {
		v := newResult("", "", 0, "", cpu).Median
		res.Extra = map[string]float64{"cpu_s_per_GiB": v, "cpu_bound_MB/s": cpuBound(v)}
	}
	r.rep.Results = append(r.rep.Results, res)
	return nil
}

// gridfs measures a cluster on the GridFS store against direct GridFS.
func (r *runner) gridfs(ctx context.Context) error {
	size := r.cfg.Sizes[0]
	r.say("GridFS: %s random, ddstore on GridFS against direct GridFS", human(size))
	cl, err := r.startCluster(ctx, localcluster.Options{Dir: filepath.Join(r.dir, "cluster-gridfs"), Exe: r.cfg.Exe, Store: "gridfs", MongoURI: r.cfg.MongoURI})
	if err != nil {
		return err
	}
	defer func() { cl.Close(); os.RemoveAll(filepath.Join(r.dir, "cluster-gridfs")) }()
	c, err := cl.Client()
	if err != nil {
		return err
	}
	defer c.Close()
	var up, down, bup, bdown []float64
	for range r.cfg.Runs {
		path, err := r.file(Random, size)
		if err != nil {
			return err
		}
		u, d, err := gridfsRate(ctx, r.cfg.MongoURI, path)
		if err != nil {
			os.Remove(path)
			return err
		}
		bup, bdown = append(bup, u), append(bdown, d)
		f, err := os.Open(path)
		if err != nil {
			return err
		}
		name := r.name("gridfs")
		res, err := c.Put(ctx, name, f, client.PutOptions{})
		f.Close()
		os.Remove(path)
		if err != nil {
			return fmt.Errorf("GridFS-store upload: %w", err)
		}
		up = append(up, mbps(size, res.Duration))
		start := time.Now()
		if _, err := c.Get(ctx, name, io.Discard, client.GetOptions{}); err != nil {
			return fmt.Errorf("GridFS-store download: %w", err)
		}
		down = append(down, mbps(size, time.Since(start)))
	}
	bu, bd := newResult("", "", 0, "", bup), newResult("", "", 0, "", bdown)
	r.rep.Results = append(r.rep.Results,
		newResult("baseline: direct GridFS upload", Random, size, "MB/s", bup),
		newResult("baseline: direct GridFS download", Random, size, "MB/s", bdown),
		newResult("upload, GridFS store (R=3, one database per node)", Random, size, "MB/s", up).against("direct GridFS upload", bu.Median),
		newResult("download, GridFS store", Random, size, "MB/s", down).against("direct GridFS download", bd.Median))
	return nil
}

func (r *runner) peakRSS() {
	r.rep.PeakRSSMB = map[string]int{}
	if v, err := localcluster.PeakRSS(os.Getpid()); err == nil {
		r.rep.PeakRSSMB["client (bench process)"] = int(v >> 20)
	}
	if r.cfg.Exe == "" {
		return
	}
	for i, m := range r.cl.Members {
		if v, err := r.cl.PeakRSS(i); err == nil {
			r.rep.PeakRSSMB[m.ID] = int(v >> 20)
		}
	}
}

// finish turns the samples into results, each beside its baseline.
func (r *runner) finish() {
	base := func(scenario, data string, size int64) float64 {
		if s := r.samples[key{scenario, data, size}]; len(s) > 0 {
			return newResult("", "", 0, "", s).Median
		}
		return 0
	}
	keys := make([]key, 0, len(r.samples))
	for k := range r.samples {
		keys = append(keys, k)
	}
	order := func(s string) int {
		for i, p := range []string{"baseline", "upload", "download", "re-upload unchanged", "re-upload 1%", "download resumed", "2 clients", "4 clients", "small"} {
			if strings.HasPrefix(s, p) {
				return i
			}
		}
		return 99
	}
	slices.SortFunc(keys, func(a, b key) int {
		if oa, ob := order(a.scenario), order(b.scenario); oa != ob {
			return oa - ob
		}
		if a.scenario != b.scenario {
			return strings.Compare(a.scenario, b.scenario)
		}
		if a.data != b.data {
			return strings.Compare(a.data, b.data)
		}
		return int(a.size - b.size)
	})
	for _, k := range keys {
		unit := "MB/s"
		switch {
		case k.scenario == "re-upload unchanged":
			unit = "x faster"
		case k.scenario == "re-upload 1% changed":
			unit = "% of bytes"
		case strings.HasPrefix(k.scenario, "small files"):
			unit = "files/s"
		}
		res := newResult(k.scenario, k.data, k.size, unit, r.samples[k])
		for name, vals := range r.extra[k] {
			if res.Extra == nil {
				res.Extra = map[string]float64{}
			}
			res.Extra[name] = newResult("", "", 0, "", vals).Median
		}
		disk := base("baseline: disk write+fsync", Random, k.size)
		grpcDown := base("baseline: gRPC loopback, download direction", "", k.size)
		switch {
		case k.scenario == "upload" && k.data == Random:
			res.against(fmt.Sprintf("disk write+fsync / R (R=%d)", r.replicas), disk/float64(max(1, r.replicas)))
		case k.scenario == "upload":
			res.against("chunker pipeline alone", base("baseline: chunker pipeline", k.data, k.size))
		case k.scenario == "download hot (second read)":
			res.against("cold download (first read)", base("download", k.data, k.size))
		case k.scenario == "baseline: gRPC loopback TLS, upload direction":
			res.against("plain gRPC loopback upload", base("baseline: gRPC loopback, upload direction", "", k.size))
		case k.scenario == "baseline: gRPC loopback TLS, download direction":
			res.against("plain gRPC loopback download", grpcDown)
		case k.scenario == "download", k.scenario == "download resumed half-way":
			res.against("gRPC loopback download", grpcDown)
		case k.scenario == s3Upload:
			res.against("gRPC client upload, same run", base(grpcUpload, k.data, k.size))
		case k.scenario == s3Download:
			res.against("gRPC client download, same run", base(grpcDownload, k.data, k.size))
		case k.scenario == "re-upload unchanged":
			res.Note = "first upload time / re-upload time"
		case k.scenario == "re-upload 1% changed":
			res.Note = "bytes sent / bytes of the first upload"
		case strings.Contains(k.scenario, "clients at once, upload"):
			res.against(fmt.Sprintf("disk write+fsync / R (R=%d)", r.replicas), base("baseline: disk write+fsync", Random, r.middleSize())/float64(max(1, r.replicas)))
		case strings.Contains(k.scenario, "clients at once, download"):
			res.against("gRPC loopback download", base("baseline: gRPC loopback, download direction", "", r.middleSize()))
		}
		r.rep.Results = append(r.rep.Results, res)
	}
}

// targets checks the suite's five goals.
func (r *runner) targets() {
	rep := r.rep
	t1 := Target{Name: "1. upload, incompressible, >=1 GiB", Want: ">= 0.6 x disk write+fsync / R"}
	if u := rep.find("upload", Random, 0); u != nil {
		t1.Value, t1.Pass = u.Ratio, u.Ratio >= 0.6
		t1.Got = fmt.Sprintf("%s MB/s = %s x %s MB/s (%s)", num(u.Median), num(u.Ratio), num(u.BaselineValue), human(u.Size))
		if u.Size < 1<<30 {
			t1.Reason = "largest size " + human(u.Size) + " < 1 GiB"
		}
	}
	if u := rep.find("upload, R=1", Random, 0); u != nil {
		t1.Got += fmt.Sprintf("; R=1: %s MB/s = %s x disk", num(u.Median), num(u.Ratio))
		t1.Pass = t1.Pass && u.Ratio >= 0.6
	}
	t2 := Target{Name: "2. cold download, incompressible", Want: ">= 0.6 x raw loopback gRPC"}
	if d := rep.find("download", Random, 0); d != nil {
		t2.Value, t2.Pass = d.Ratio, d.Ratio >= 0.6
		t2.Got = fmt.Sprintf("%s MB/s = %s x %s MB/s (%s)", num(d.Median), num(d.Ratio), num(d.BaselineValue), human(d.Size))
	}
	t3 := Target{Name: "3. upload, compressible text", Want: ">= 0.8 x chunker pipeline alone"}
	if u := rep.find("upload", Text, 0); u != nil {
		t3.Value, t3.Pass = u.Ratio, u.Ratio >= 0.8
		t3.Got = fmt.Sprintf("%s MB/s = %s x %s MB/s (%s)", num(u.Median), num(u.Ratio), num(u.BaselineValue), human(u.Size))
	}
	t4 := Target{Name: "4. re-upload: unchanged 1 GiB / 1% changed", Want: "0 bytes and >= 5x faster / <= 5% of bytes sent"}
	if a := rep.find("re-upload unchanged", Random, 0); a != nil {
		c := rep.find("re-upload 1% changed", Random, a.Size)
		t4.Value = a.Median
		t4.Pass = a.Extra["bytes_sent"] == 0 && a.Median >= 5 && c != nil && c.Median <= 5
		t4.Got = fmt.Sprintf("%s bytes sent, %sx faster; changed: %s%% sent (%s)", num(a.Extra["bytes_sent"]), num(a.Median), num(c.Median), human(a.Size))
		if a.Size < 1<<30 {
			t4.Reason = "largest size " + human(a.Size) + " < 1 GiB"
		}
	}
	t5 := Target{Name: "5. peak RSS, client and each node", Want: fmt.Sprintf("<= 256 MiB (4 GiB file); nodes: plus their %d MiB in-process cache", nodeCacheMiB)}
	if len(rep.PeakRSSMB) > 1 {
		worst := 0 // beyond the budget
		var parts []string
		for _, k := range slices.Sorted(mapsKeys(rep.PeakRSSMB)) {
			budget := 256
			if strings.HasPrefix(k, "node") {
				budget += nodeCacheMiB
			}
			worst = max(worst, rep.PeakRSSMB[k]-budget)
			parts = append(parts, fmt.Sprintf("%s %d/%d", k, rep.PeakRSSMB[k], budget))
		}
		t5.Value, t5.Pass = float64(worst), worst <= 0
		t5.Got = "MiB used/budget: " + strings.Join(parts, ", ")
		if r.cfg.Sizes[len(r.cfg.Sizes)-1] < 4<<30 {
			t5.Reason = "largest size " + human(r.cfg.Sizes[len(r.cfg.Sizes)-1]) + " < 4 GiB"
		}
	} else {
		t5.Reason = "node memory is measured only for local nodes run as child processes"
	}
	t6 := Target{Name: "6. S3 gateway against the gRPC client (issue 13)", Want: ">= 0.8 x, upload and download"}
	if u, d := rep.find(s3Upload, Random, 0), rep.find(s3Download, Random, 0); u != nil && d != nil {
		t6.Value, t6.Pass = min(u.Ratio, d.Ratio), u.Ratio >= 0.8 && d.Ratio >= 0.8
		t6.Got = fmt.Sprintf("upload %s MB/s = %s x %s MB/s, download %s MB/s = %s x %s MB/s (%s)", num(u.Median), num(u.Ratio), num(u.BaselineValue), num(d.Median), num(d.Ratio), num(d.BaselineValue), human(u.Size))
	} else {
		t6.Reason = "not measured (the S3 scenario needs a local cluster)"
	}
	rep.Targets = []Target{t1, t2, t3, t4, t5, t6}
}
