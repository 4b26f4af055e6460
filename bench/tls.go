package bench

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/ddstore/ddstore/client"
	"github.com/ddstore/ddstore/internal/localcluster"
)

// tlsTarget is the least mutual-TLS throughput, as a fraction of the same
// workload's on an insecure cluster in the same run, for uploads and for
// downloads.
const tlsTarget = 0.85

// tlsSide is one of the two clusters of the TLS scenario.
type tlsSide struct {
	label    string
	insecure bool
	dir      string
	cl       *localcluster.Cluster
	c        *client.Client
	meter    cpuMeter // client and nodes
	name     string   // the file uploaded last

	up, down       []float64 // MB/s, one per run
	upCPU, downCPU []float64 // CPU-seconds per GiB (client + nodes), one per run
}

// tlsCost measures what mutual TLS costs: the same R=3 workload (an
// incompressible file of the middle size uploaded, then downloaded once) on
// two fresh 3-node clusters started alike, one with mutual TLS on every link
// (the default) and one insecure. Both run for the whole scenario; each run
// uploads the same fresh file to both, in alternating order (mTLS first on
// even runs, insecure first on odd ones), so that drift on a shared machine
// hits both; within a run both uploads come first, then both downloads, in
// the same order, so that each pair of figures is measured close together.
// The raw loopback gRPC stream, plain and over TLS, is measured
// in each run too: what TLS costs the transport alone.
func (r *runner) tlsCost(ctx context.Context) error {
	size := r.middleSize()
	runs := r.runsFor(size)
	r.say("TLS: %s random up and down, a mutual-TLS 3-node cluster against an insecure one, %d runs interleaved", human(size), runs)
	sec, ins := &tlsSide{label: "mtls"}, &tlsSide{label: "insecure", insecure: true}
	for _, s := range []*tlsSide{sec, ins} {
		s.dir = filepath.Join(r.dir, "tls-"+s.label)
		cl, err := r.startCluster(ctx, localcluster.Options{Dir: s.dir, Exe: r.cfg.Exe, Replicas: 3, Insecure: s.insecure})
		if err != nil {
			return fmt.Errorf("bench: TLS scenario, %s cluster: %w", s.label, err)
		}
		s.cl = cl
		defer func() { cl.Close(); os.RemoveAll(s.dir) }()
		c, err := cl.Client()
		if err != nil {
			return err
		}
		defer c.Close()
		s.c = c
		s.meter = r.newCPUMeter(cl, "TLS, "+s.label+" cluster")
	}
	var rawUp, rawDown, rawTLSUp, rawTLSDown []float64
	for run := range runs {
		order := []*tlsSide{sec, ins}
		if run%2 == 1 {
			order = []*tlsSide{ins, sec}
		}
		r.say("TLS: run %d/%d (%s first)", run+1, runs, order[0].label)
		path, err := r.file(Random, size)
		if err != nil {
			return err
		}
		// Written back before the clock starts, so that neither cluster
		// pays for the generator's dirty pages.
		if err := syncFile(path); err != nil {
			os.Remove(path)
			return err
		}
		for _, s := range order {
			if err := r.tlsUpload(ctx, s, path, size); err != nil {
				os.Remove(path)
				return fmt.Errorf("bench: TLS scenario, %s cluster: %w", s.label, err)
			}
		}
		os.Remove(path)
		for _, s := range order {
			if err := r.tlsDownload(ctx, s, size); err != nil {
				return fmt.Errorf("bench: TLS scenario, %s cluster: %w", s.label, err)
			}
		}
		for _, withTLS := range []bool{order[0] == sec, order[0] != sec} {
			up, down, err := grpcRate(ctx, size, withTLS)
			if err != nil {
				return fmt.Errorf("bench: TLS scenario, gRPC baseline (TLS %v): %w", withTLS, err)
			}
			if withTLS {
				rawTLSUp, rawTLSDown = append(rawTLSUp, up), append(rawTLSDown, down)
			} else {
				rawUp, rawDown = append(rawUp, up), append(rawDown, down)
			}
		}
	}

	pu := newResult("tls: raw gRPC loopback, plain, upload direction", "", size, "MB/s", rawUp)
	pd := newResult("tls: raw gRPC loopback, plain, download direction", "", size, "MB/s", rawDown)
	tu := newResult("tls: raw gRPC loopback, TLS, upload direction", "", size, "MB/s", rawTLSUp).against("plain gRPC, same run", pu.Median)
	td := newResult("tls: raw gRPC loopback, TLS, download direction", "", size, "MB/s", rawTLSDown).against("plain gRPC, same run", pd.Median)
	tu.Note, td.Note = "1 MiB messages, no work at either end: TLS alone", "1 MiB messages, no work at either end: TLS alone"
	iu := tlsResult("tls: upload, insecure cluster", size, ins.up, ins.upCPU)
	su := tlsResult("tls: upload, mutual-TLS cluster", size, sec.up, sec.upCPU).against("insecure cluster, same run", iu.Median)
	id := tlsResult("tls: download, insecure cluster", size, ins.down, ins.downCPU)
	sd := tlsResult("tls: download, mutual-TLS cluster", size, sec.down, sec.downCPU).against("insecure cluster, same run", id.Median)
	su.Extra["paired_ratio"] = pairedRatio(sec.up, ins.up)
	sd.Extra["paired_ratio"] = pairedRatio(sec.down, ins.down)
	su.Note = "paired_ratio: median of each run's mTLS/insecure"
	sd.Note = su.Note
	r.rep.Results = append(r.rep.Results, pu, tu, pd, td, iu, su, id, sd)

	t := Target{Name: "TLS: upload and download, mTLS / insecure", Want: fmt.Sprintf(">= %.2f x the insecure cluster, both", tlsTarget)}
	t.Value = min(su.Ratio, sd.Ratio)
	t.Pass = su.Ratio >= tlsTarget && sd.Ratio >= tlsTarget
	t.Got = fmt.Sprintf("upload %s / %s MB/s = %s; download %s / %s MB/s = %s (%s, %d runs)",
		num(su.Median), num(iu.Median), num(su.Ratio), num(sd.Median), num(id.Median), num(sd.Ratio), human(size), runs)
	if a, b, c, d := su.Extra["cpu_s_per_GiB"], iu.Extra["cpu_s_per_GiB"], sd.Extra["cpu_s_per_GiB"], id.Extra["cpu_s_per_GiB"]; a > 0 && b > 0 && c > 0 && d > 0 {
		t.Got += fmt.Sprintf("; CPU-s per GiB, mTLS / insecure: upload %s / %s, download %s / %s", num(a), num(b), num(c), num(d))
	}
	r.rep.ExtraTargets = append(r.rep.ExtraTargets, t)
	return nil
}

// tlsUpload uploads path to s's cluster under a new name.
func (r *runner) tlsUpload(ctx context.Context, s *tlsSide, path string, size int64) error {
	s.name = r.name("tls", s.label, size)
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	sp := s.meter.start()
	res, err := s.c.Put(ctx, s.name, f, client.PutOptions{})
	if err != nil {
		return fmt.Errorf("upload: %w", err)
	}
	s.up = append(s.up, mbps(size, res.Duration))
	if c, ok := sp.perGiB(size); ok {
		s.upCPU = append(s.upCPU, c)
	}
	return nil
}

// tlsDownload downloads the file tlsUpload stored last, once.
func (r *runner) tlsDownload(ctx context.Context, s *tlsSide, size int64) error {
	sp := s.meter.start()
	start := time.Now()
	if _, err := s.c.Get(ctx, s.name, io.Discard, client.GetOptions{}); err != nil {
		return fmt.Errorf("download: %w", err)
	}
	d := time.Since(start)
	s.down = append(s.down, mbps(size, d))
	if c, ok := sp.perGiB(size); ok {
		s.downCPU = append(s.downCPU, c)
	}
	return nil
}

func tlsResult(scenario string, size int64, runs, cpu []float64) *Result {
	res := newResult(scenario, Random, size, "MB/s", runs)
	res.Extra = map[string]float64{}
	if len(cpu) > 0 {
		res.Extra["cpu_s_per_GiB"] = newResult("", "", 0, "", cpu).Median
	}
	return res
}

// pairedRatio is the median over runs of a[i]/b[i].
func pairedRatio(a, b []float64) float64 {
	var q []float64
	for i := range min(len(a), len(b)) {
		if b[i] > 0 {
			q = append(q, a[i]/b[i])
		}
	}
	return newResult("", "", 0, "", q).Median
}

// clockTicks is USER_HZ, the unit of /proc/PID/stat's CPU times: 100 on
// every Linux architecture Go supports.
const clockTicks = 100

// procCPU reads a process's user+system CPU time from /proc/PID/stat.
func procCPU(pid int) (float64, error) {
	f, err := procStat(pid)
	if err != nil {
		return 0, err
	}
	if len(f) < 13 {
		return 0, fmt.Errorf("bench: /proc/%d/stat: %d fields", pid, len(f))
	}
	utime, err1 := strconv.ParseInt(f[11], 10, 64)
	stime, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("bench: /proc/%d/stat: bad CPU times %q %q", pid, f[11], f[12])
	}
	return float64(utime+stime) / clockTicks, nil
}

// procStat returns the fields of /proc/PID/stat after the command name
// (field 3, the state, first).
func procStat(pid int) ([]string, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return nil, err
	}
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return nil, fmt.Errorf("bench: /proc/%d/stat: no command name", pid)
	}
	return strings.Fields(string(b[i+1:])), nil
}

// nodePIDs finds the child processes of this one that run cl's members
// (by their --data-dir). Best effort: nodes not found are not counted.
func nodePIDs(cl *localcluster.Cluster) []int {
	dirs := map[string]bool{}
	for _, m := range cl.Members {
		dirs[m.DataDir] = true
	}
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	self := strconv.Itoa(os.Getpid())
	var out []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		f, err := procStat(pid)
		if err != nil || len(f) < 2 || f[1] != self {
			continue
		}
		cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		if err != nil {
			continue
		}
		args := strings.Split(string(cmdline), "\x00")
		if i := slices.Index(args, "--data-dir"); i >= 0 && i+1 < len(args) && dirs[args[i+1]] {
			out = append(out, pid)
		}
	}
	return out
}

// syncFile flushes a file's data to disk.
func syncFile(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	return f.Sync()
}
