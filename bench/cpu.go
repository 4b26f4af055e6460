package bench

import (
	"runtime"
	"syscall"
	"time"

	"github.com/ddstore/ddstore/internal/localcluster"
)

// cpuMeter reads the CPU time spent by the bench process (the client; with
// in-process nodes, every node too) and by a local cluster's child-process
// nodes. It is what bounds a figure on a host as small as ours: a workload
// that costs c CPU-seconds per GiB cannot run faster than cores/c GiB/s.
type cpuMeter struct {
	pids []int // child-process nodes
	off  bool  // their CPU time cannot be read
}

// newCPUMeter returns a meter for the bench process and cl's child-process
// nodes (nil cl, or in-process nodes: the bench process alone). It is off,
// and says why, when not every node process is found.
func (r *runner) newCPUMeter(cl *localcluster.Cluster, what string) cpuMeter {
	if cl == nil || r.cfg.Exe == "" {
		return cpuMeter{}
	}
	m := cpuMeter{pids: nodePIDs(cl)}
	if len(m.pids) != len(cl.Members) {
		r.say("%s: found %d of the cluster's %d node processes: no CPU times", what, len(m.pids), len(cl.Members))
		m.off = true
	}
	return m
}

// read returns the CPU-seconds used so far; false when they cannot be read.
func (m cpuMeter) read() (float64, bool) {
	if m.off {
		return 0, false
	}
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0, false
	}
	total := time.Duration(ru.Utime.Nano() + ru.Stime.Nano()).Seconds()
	for _, pid := range m.pids {
		v, err := procCPU(pid)
		if err != nil {
			return 0, false
		}
		total += v
	}
	return total, true
}

// span measures the CPU time of one piece of work.
type span struct {
	m     cpuMeter
	start float64
	ok    bool
}

func (m cpuMeter) start() span {
	v, ok := m.read()
	return span{m: m, start: v, ok: ok}
}

// perGiB returns the CPU-seconds the work since start cost per GiB of
// size bytes.
func (s span) perGiB(size int64) (float64, bool) {
	v, ok := s.m.read()
	if !ok || !s.ok || size <= 0 {
		return 0, false
	}
	return (v - s.start) / (float64(size) / (1 << 30)), true
}

// addCPU records, for a row, what its work cost in CPU-seconds per GiB
// (cpu_s_per_GiB) and the rate at which that cost would take every core of
// the host (cpu_bound_MB/s): the row's ceiling here, whatever else is
// made faster.
func (r *runner) addCPU(scenario, data string, size int64, s span) {
	c, ok := s.perGiB(size)
	if !ok || c <= 0 {
		return
	}
	r.addExtra(scenario, data, size, "cpu_s_per_GiB", c)
	r.addExtra(scenario, data, size, "cpu_bound_MB/s", cpuBound(c))
}

// cpuBound is the rate, in MB/s, at which work costing c CPU-seconds per
// GiB keeps every core busy.
func cpuBound(c float64) float64 {
	return float64(runtime.NumCPU()) * (1 << 30) / 1e6 / c
}
