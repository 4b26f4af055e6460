package bench

import (
	"fmt"
	"strings"
)

// engineTargets are the storage engine's goals (issue 11), checked against
// the same run's baselines, each with what bounds it: the CPU its work cost
// per GiB (client and nodes) and the rate at which that cost keeps every
// core busy. Where the CPU bound is below the goal, nothing short of
// cheaper work or more cores reaches it.
func (r *runner) engineTargets() []Target {
	rep := r.rep
	down := rep.find("download", Random, 0)
	if down == nil {
		return nil // the sizes scenario did not run
	}
	bound := func(res *Result) string {
		if c := res.Extra["cpu_s_per_GiB"]; c > 0 {
			return fmt.Sprintf("; %s CPU-s/GiB, CPU-bound at %s MB/s", num(c), num(cpuBound(c)))
		}
		return ""
	}

	// 1. The local cluster's links are mutual TLS, a running cluster's are
	// what its client uses: the like-for-like baseline is the gRPC stream
	// over the same transport. The plain stream's ratio is shown too.
	t1 := Target{Name: "engine 1. cold download, incompressible", Want: ">= 0.5 x raw loopback gRPC, same transport"}
	plain := rep.find("baseline: gRPC loopback, download direction", "", down.Size)
	tls := rep.find("baseline: gRPC loopback TLS, download direction", "", down.Size)
	if plain != nil && tls != nil && plain.Median > 0 && tls.Median > 0 {
		same, label := plain.Median, "plain"
		if r.overTLS {
			same, label = tls.Median, "TLS"
		}
		t1.Value, t1.Pass = down.Median/same, down.Median/same >= 0.5
		t1.Got = fmt.Sprintf("%s MB/s = %s x %s gRPC %s MB/s (%s x plain; %s)%s", num(down.Median), num(t1.Value), label, num(same), num(down.Median/plain.Median), human(down.Size), bound(down))
	} else {
		t1.Reason = "no gRPC baseline in this run"
	}

	t2 := Target{Name: "engine 2. upload R=3 / R=1 / text", Want: ">= 0.9 x disk write+fsync / 3; >= 0.7 x disk; >= 0.8 x chunker pipeline"}
	var parts []string
	t2.Pass = true
	check := func(what string, res *Result, want float64) {
		if res == nil || res.Ratio <= 0 {
			parts = append(parts, what+": not measured")
			t2.Pass = false
			return
		}
		parts = append(parts, fmt.Sprintf("%s %s MB/s = %s x (want %s)%s", what, num(res.Median), num(res.Ratio), num(want), bound(res)))
		t2.Pass = t2.Pass && res.Ratio >= want
		if t2.Value == 0 || res.Ratio/want < t2.Value {
			t2.Value = res.Ratio / want
		}
	}
	check("R=3", rep.find("upload", Random, 0), 0.9)
	check("R=1", rep.find("upload, R=1", Random, 0), 0.7)
	check("text", rep.find("upload", Text, 0), 0.8)
	t2.Got = strings.Join(parts, "; ")

	t3 := Target{Name: "engine 3. small files, 16 writers", Want: ">= 1,500 puts/s, >= 5,000 gets/s, put p99 < 50 ms"}
	var put, get *Result
	for _, res := range rep.Results {
		switch {
		case strings.HasPrefix(res.Scenario, "small files put"):
			put = res
		case strings.HasPrefix(res.Scenario, "small files get"):
			get = res
		}
	}
	if put != nil && get != nil {
		p99 := put.Extra["put_ms_p99"]
		t3.Value = put.Median
		t3.Pass = put.Median >= 1500 && get.Median >= 5000 && p99 < 50
		t3.Got = fmt.Sprintf("%s puts/s (p99 %s ms), %s gets/s %s", num(put.Median), num(p99), num(get.Median), strings.TrimPrefix(put.Scenario, "small files put "))
	} else {
		t3.Reason = "the small-files scenario did not run"
	}

	t4 := Target{Name: "engine 4. 4 clients at once, download", Want: ">= 1.5 x one client's"}
	var many *Result
	for _, res := range rep.Results {
		if strings.HasSuffix(res.Scenario, "clients at once, download (aggregate)") {
			many = res
		}
	}
	if many != nil && down.Median > 0 {
		t4.Value = many.Median / down.Median
		t4.Pass = t4.Value >= 1.5
		t4.Got = fmt.Sprintf("%s MB/s = %s x one client's %s MB/s%s", num(many.Median), num(t4.Value), num(down.Median), bound(many))
	} else {
		t4.Reason = "the concurrent scenario did not run"
	}
	return []Target{t1, t2, t3, t4}
}
