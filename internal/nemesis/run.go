package nemesis

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/anishathalye/porcupine"
	"github.com/ddstore/ddstore/client"
)

// Config describes one nemesis run.
type Config struct {
	Seed     uint64
	Duration time.Duration // how long faults and clients run
	// Partitions runs the cluster in network namespaces and adds the
	// partition faults to the process faults.
	Partitions bool
	Exe        string // the ddstore binary
	Dir        string // the nodes' data directories and logs
	// OutDir receives porcupine's visualization and the nodes' logs when
	// the run finds a problem.
	OutDir string
	Faults []FaultKind // default: ProcessFaults, plus PartitionFaults with Partitions

	Workers      int           // concurrent clients; default 4
	Names        int           // size of the key space; default 5
	OpTimeout    time.Duration // client-side deadline of one operation; default 10s
	CheckTimeout time.Duration // bound on porcupine, shared by the names; default 2m
	Logger       *slog.Logger
}

// Report is what a run found.
type Report struct {
	Seed       uint64
	Mode       string // "loopback" or "netns"
	Duration   time.Duration
	Ops        map[Kind]map[Outcome]int
	Faults     []*Fault
	Verdict    porcupine.CheckResult
	CheckedOps int           // porcupine operations (an ls counts once per name)
	CheckTook  time.Duration // porcupine's time
	// Visualization is the path of porcupine's HTML rendering of a history
	// that is not linearizable.
	Visualization string
	// Illegal lists the names whose history is not linearizable, with an
	// excerpt of the operations on the first one.
	Illegal []string
	Excerpt string

	Names     int      // names read back at the end
	Survivors int      // of them, those whose last acknowledged write nothing may have replaced
	Lost      []string // acknowledged files missing or different at the end
	// Corrupt are downloads whose bytes do not hash to the manifest they
	// read.
	Corrupt []string
	// GetErrors are downloads that read a manifest and then failed to bring
	// its bytes (not counted as a failure: a fault may hide every copy).
	GetErrors []string
	// Recovery is set when the healed cluster did not become healthy.
	Recovery string
	// Panics are the panics in the nodes' logs: the node, how many times,
	// and the first one with the log line before it.
	Panics []string

	// Unavailable is, per fault kind, the longest time with no successful
	// operation after each fault of that kind (until the next fault).
	Unavailable map[FaultKind][]time.Duration
	// Baseline is the same measure before the first fault.
	Baseline time.Duration
	Logs     []string // the nodes' log files
	History  string   // a failing run's history, kept as JSON lines
}

// Failed reports whether the run found a problem in ddstore.
func (r *Report) Failed() bool {
	return r.Verdict == porcupine.Illegal || len(r.Lost) > 0 || len(r.Corrupt) > 0 || r.Recovery != "" || len(r.Panics) > 0
}

// Run starts a cluster, runs the clients and the fault schedule for
// cfg.Duration, heals every fault and checks the history and the files. An
// error means the harness could not do its work; problems found in ddstore
// are in the report (Report.Failed).
func Run(ctx context.Context, cfg Config) (*Report, error) {
	if cfg.Workers == 0 {
		cfg.Workers = 4
	}
	if cfg.Names == 0 {
		cfg.Names = 5
	}
	if cfg.OpTimeout == 0 {
		cfg.OpTimeout = 10 * time.Second
	}
	if cfg.CheckTimeout == 0 {
		cfg.CheckTimeout = 2 * time.Minute
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Faults == nil {
		cfg.Faults = ProcessFaults()
		if cfg.Partitions {
			cfg.Faults = append(cfg.Faults, PartitionFaults()...)
		}
	}
	rep := &Report{Seed: cfg.Seed, Mode: "loopback", Duration: cfg.Duration, Ops: map[Kind]map[Outcome]int{}, Unavailable: map[FaultKind][]time.Duration{}}
	log := cfg.Logger.With("seed", cfg.Seed)

	var c cluster
	var err error
	if cfg.Partitions {
		rep.Mode = "netns"
		c, err = startNamespaced(ctx, cfg.Exe, cfg.Dir)
	} else {
		c, err = startLoopback(ctx, cfg.Exe, cfg.Dir)
	}
	if err != nil {
		return nil, err
	}
	defer c.Close()
	for i := range 3 {
		rep.Logs = append(rep.Logs, c.LogPath(i))
	}
	log.Info("cluster up", "mode", rep.Mode, "addrs", c.Addrs())

	hist := newHistory(time.Now())
	addrs := c.Addrs()
	wl := newWorkload(cfg.Seed, cfg.Names, cfg.OpTimeout, hist, func(worker int) (*client.Client, error) {
		// Each client starts on a different node.
		k := worker % len(addrs)
		return client.New(append(slices.Clone(addrs[k:]), addrs[:k]...), c.ClientOptions()...)
	})
	nem := newNemesis(c, cfg.Faults, cfg.Seed, hist, log)

	runCtx, cancel := context.WithTimeout(ctx, cfg.Duration)
	var wg sync.WaitGroup
	wg.Go(func() { nem.run(runCtx) })
	var wlErr error
	wg.Go(func() { wlErr = wl.run(runCtx, cfg.Workers) })
	wg.Wait()
	cancel()
	if wlErr != nil {
		return nil, wlErr
	}
	workEnd := hist.now()
	log.Info("schedule over; healing", "ops", len(hist.snapshot()), "faults", len(nem.faults))

	// Heal: the schedule healed its last fault; make sure of the network.
	if err := c.HealNetwork(); err != nil {
		return nil, err
	}
	if err := waitHealthy(ctx, c, 2*time.Minute); err != nil {
		rep.Recovery = err.Error()
	}
	// A write whose outcome is unknown may still be applied while the
	// cluster settles; after that, none can.
	time.Sleep(3 * time.Second)
	end := hist.now()
	finalOps, finalErr := finalReads(ctx, c, wl, cfg.Workers, hist)
	if finalErr != nil && rep.Recovery == "" {
		rep.Recovery = finalErr.Error()
	}

	ops := hist.snapshot()
	for _, o := range ops {
		if rep.Ops[o.Kind] == nil {
			rep.Ops[o.Kind] = map[Outcome]int{}
		}
		rep.Ops[o.Kind][o.Outcome]++
		if o.Kind == KindGet && o.Outcome == OK && o.Err != "" {
			msg := fmt.Sprintf("op %d (worker %d, %.3fs) get %s %s: %s", o.ID, o.Worker, float64(o.Call)/1e9, o.Name, o.Version, o.Err)
			if o.corrupt {
				rep.Corrupt = append(rep.Corrupt, msg)
			} else {
				rep.GetErrors = append(rep.GetErrors, msg)
			}
		}
	}
	rep.Faults = nem.faults
	for i, path := range rep.Logs {
		if p := panics(path); p != "" {
			rep.Panics = append(rep.Panics, nodeID(i)+": "+p)
		}
	}
	unavailability(rep, ops, nem.faults, workEnd)
	survivors(rep, ops, finalOps, wl, end)

	v := checkLinearizable(ops, wl.names, end, cfg.CheckTimeout)
	rep.Verdict, rep.CheckedOps, rep.CheckTook = v.Result, v.Ops, v.Took
	rep.Illegal = v.Illegal
	if len(rep.Illegal) > 0 {
		rep.Excerpt = excerpt(ops, rep.Illegal[0], 60)
	}
	if rep.Failed() {
		keep(rep, cfg, v, ops, log)
	}
	return rep, nil
}

// finalReads reads every name back (stat, then get) once the cluster is
// healed, retrying until each gets a definite answer, and records them as a
// last client's operations.
func finalReads(ctx context.Context, c cluster, wl *workload, worker int, hist *history) (map[string]*Op, error) {
	cl, err := client.New(c.Addrs(), c.ClientOptions()...)
	if err != nil {
		return nil, err
	}
	defer cl.Close()
	out := map[string]*Op{}
	deadline := time.Now().Add(time.Minute)
	var errs []string
	for _, name := range wl.names {
		for {
			o := wl.do(ctx, cl, worker, KindGet, name, true)
			if (o.Outcome == OK && o.Err == "") || o.Outcome == NotFound {
				hist.add(o)
				out[name] = o
				break
			}
			if time.Now().After(deadline) {
				if o.Outcome == OK {
					hist.add(o)
					out[name] = o
				}
				errs = append(errs, fmt.Sprintf("%s: %s", name, o.Err))
				break
			}
			time.Sleep(500 * time.Millisecond)
		}
	}
	if len(errs) > 0 {
		return out, fmt.Errorf("nemesis: names not readable after healing: %s", strings.Join(errs, "; "))
	}
	return out, nil
}

// survivors checks the files at the end. For each name, the last
// acknowledged write that no other write or rm may have followed (one whose
// outcome is unknown may have taken effect any time until end) must be what
// the final read found; and whatever version the final read found must
// download as exactly the bytes its put sent.
func survivors(rep *Report, ops []*Op, final map[string]*Op, wl *workload, end int64) {
	for _, name := range wl.names {
		rep.Names++
		f, ok := final[name]
		if !ok {
			continue
		}
		var mine []*Op
		for _, o := range ops {
			if o.Name == name && o.mutates() && o != f {
				mine = append(mine, o)
			}
		}
		var must *Op
		for _, w := range mine {
			if w.Outcome != OK || w.Kind == KindDelete {
				continue
			}
			alone := true
			for _, o := range mine {
				ret := o.Return
				if o.Outcome == Unknown {
					ret = end
				}
				if o != w && ret >= w.Call {
					alone = false
					break
				}
			}
			if alone && (must == nil || w.Call > must.Call) {
				must = w
			}
		}
		if must != nil {
			rep.Survivors++
			if f.Version != must.Version {
				rep.Lost = append(rep.Lost, fmt.Sprintf("%s: %s committed version %s (op %d, acknowledged at %.3fs), nothing may have replaced it, but the final read found %s",
					name, must.Kind, must.Version, must.ID, float64(must.Return)/1e9, describeVersion(f.Version)))
			}
		}
		if f.Version == absent {
			continue
		}
		if f.Err != "" {
			rep.Lost = append(rep.Lost, fmt.Sprintf("%s: version %s does not download: %s", name, f.Version, f.Err))
			continue
		}
		want, ok := wl.expected(f.Version)
		if !ok {
			rep.Lost = append(rep.Lost, fmt.Sprintf("%s: the final read found version %s, which no client put", name, f.Version))
			continue
		}
		if !bytes.Equal(f.data, want) {
			rep.Lost = append(rep.Lost, fmt.Sprintf("%s: version %s downloads %d bytes that differ from the %d its put sent", name, f.Version, len(f.data), len(want)))
		}
	}
}

// unavailability computes, for each fault, the longest stretch with no
// successful operation from its injection until the next fault's.
func unavailability(rep *Report, ops []*Op, faults []*Fault, workEnd int64) {
	var done []int64
	for _, o := range ops {
		if o.succeeded() && o.Return <= workEnd {
			done = append(done, o.Return)
		}
	}
	slices.Sort(done)
	longest := func(from, to int64) time.Duration {
		prev, gap := from, int64(0)
		for _, t := range done {
			if t < from {
				continue
			}
			if t > to {
				break
			}
			gap, prev = max(gap, t-prev), t
		}
		return time.Duration(max(gap, to-prev))
	}
	first := workEnd
	if len(faults) > 0 {
		first = faults[0].Start
	}
	rep.Baseline = longest(0, first)
	for k, f := range faults {
		next := workEnd
		if k+1 < len(faults) {
			next = faults[k+1].Start
		}
		rep.Unavailable[f.Kind] = append(rep.Unavailable[f.Kind], longest(f.Start, next))
	}
}

// panics reads a node's log for panics: how many, and the first with the
// line before it.
func panics(path string) string {
	raw, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	lines := strings.Split(string(raw), "\n")
	n, first := 0, ""
	for i, l := range lines {
		if !strings.HasPrefix(l, "panic:") {
			continue
		}
		if n++; n == 1 {
			first = l
			if i > 0 {
				first = oneLine(lines[i-1]) + " / " + l
			}
		}
	}
	if n == 0 {
		return ""
	}
	return fmt.Sprintf("%d panics; first: %s", n, first)
}

// excerpt prints the last n operations on name (and ls ops) before the end.
func excerpt(ops []*Op, name string, n int) string {
	var mine []*Op
	for _, o := range ops {
		if o.Name == name {
			mine = append(mine, o)
		}
	}
	if len(mine) > n {
		mine = mine[len(mine)-n:]
	}
	return describeOps(mine)
}

// keep writes porcupine's visualization, the history (one JSON operation a
// line) and the nodes' logs into cfg.OutDir.
func keep(rep *Report, cfg Config, v verdict, ops []*Op, log *slog.Logger) {
	if cfg.OutDir == "" {
		return
	}
	if err := os.MkdirAll(cfg.OutDir, 0o755); err != nil {
		log.Error("keep results", "err", err)
		return
	}
	var hist bytes.Buffer
	enc := json.NewEncoder(&hist)
	for _, o := range ops {
		enc.Encode(o)
	}
	path := filepath.Join(cfg.OutDir, fmt.Sprintf("nemesis-%s-seed%d-history.jsonl", rep.Mode, rep.Seed))
	if err := os.WriteFile(path, hist.Bytes(), 0o644); err != nil {
		log.Error("keep history", "err", err)
	} else {
		rep.History = path
	}
	if v.Result == porcupine.Illegal {
		path := filepath.Join(cfg.OutDir, fmt.Sprintf("nemesis-%s-seed%d-%s.html", rep.Mode, rep.Seed, strings.ReplaceAll(rep.Illegal[0], "/", "_")))
		if err := porcupine.VisualizePath(model(), v.Info, path); err != nil {
			log.Error("visualization", "err", err)
		} else {
			rep.Visualization = path
		}
	}
	for i, src := range rep.Logs {
		dst := filepath.Join(cfg.OutDir, fmt.Sprintf("nemesis-%s-seed%d-%s.log", rep.Mode, rep.Seed, nodeID(i)))
		if err := copyFile(src, dst); err != nil {
			log.Error("keep node log", "err", err)
		} else {
			rep.Logs[i] = dst
		}
	}
}

func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.Create(dst)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

// String is the run's summary.
func (r *Report) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "nemesis %s, seed %d, %s of faults and clients\n", r.Mode, r.Seed, r.Duration)
	fmt.Fprintf(&b, "operations:\n")
	total := 0
	for _, k := range Kinds() {
		m := r.Ops[k]
		n := 0
		var parts []string
		for _, out := range []Outcome{OK, NotFound, Exists, Replaced, Failed, Unknown} {
			if m[out] > 0 {
				parts = append(parts, fmt.Sprintf("%s %d", out, m[out]))
				n += m[out]
			}
		}
		total += n
		fmt.Fprintf(&b, "  %-9s %5d  (%s)\n", k, n, strings.Join(parts, ", "))
	}
	fmt.Fprintf(&b, "  %-9s %5d\n", "total", total)
	counts := map[FaultKind]int{}
	var kinds []FaultKind
	for _, f := range r.Faults {
		if counts[f.Kind] == 0 {
			kinds = append(kinds, f.Kind)
		}
		counts[f.Kind]++
	}
	slices.SortFunc(kinds, func(a, b FaultKind) int { return cmp.Compare(a, b) })
	fmt.Fprintf(&b, "faults: %d\n", len(r.Faults))
	fmt.Fprintf(&b, "  %-20s %5s  %s\n", "kind", "count", "longest gap with no successful op after it: max / median")
	for _, k := range kinds {
		gaps := slices.Clone(r.Unavailable[k])
		slices.Sort(gaps)
		fmt.Fprintf(&b, "  %-20s %5d  %s / %s\n", k, counts[k], gaps[len(gaps)-1].Round(10*time.Millisecond), gaps[len(gaps)/2].Round(10*time.Millisecond))
	}
	fmt.Fprintf(&b, "  %-20s %5s  %s (before the first fault)\n", "none", "-", r.Baseline.Round(10*time.Millisecond))
	for _, f := range r.Faults {
		if f.Err != "" {
			fmt.Fprintf(&b, "  fault error: %s\n", f)
		}
	}
	fmt.Fprintf(&b, "linearizability (porcupine, per name): %s (%d operations, %s)\n", r.Verdict, r.CheckedOps, r.CheckTook.Round(time.Millisecond))
	if len(r.Illegal) > 0 {
		fmt.Fprintf(&b, "  not linearizable: %s\n", strings.Join(r.Illegal, ", "))
	}
	if r.Visualization != "" {
		fmt.Fprintf(&b, "  visualization: %s\n", r.Visualization)
	}
	fmt.Fprintf(&b, "files: %d names read back, %d with an acknowledged version that must survive; %d lost\n", r.Names, r.Survivors, len(r.Lost))
	for _, l := range r.Lost {
		fmt.Fprintf(&b, "  LOST %s\n", l)
	}
	for _, g := range r.Corrupt {
		fmt.Fprintf(&b, "  CORRUPT %s\n", g)
	}
	if len(r.GetErrors) > 0 {
		fmt.Fprintf(&b, "gets that read a manifest but not its data (availability, not correctness): %d\n", len(r.GetErrors))
		for _, g := range r.GetErrors[:min(len(r.GetErrors), 5)] {
			fmt.Fprintf(&b, "  %s\n", g)
		}
	}
	if r.Recovery != "" {
		fmt.Fprintf(&b, "recovery: %s\n", r.Recovery)
	}
	for _, p := range r.Panics {
		fmt.Fprintf(&b, "PANIC %s\n", p)
	}
	if r.Excerpt != "" {
		fmt.Fprintf(&b, "history of %s (last operations):\n%s", r.Illegal[0], r.Excerpt)
	}
	if r.Failed() {
		fmt.Fprintf(&b, "FAILED; replay with NEMESIS_SEED=%d; history: %s; node logs: %s\n", r.Seed, r.History, strings.Join(r.Logs, " "))
	}
	return b.String()
}
