package bench

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/ddstore/ddstore/client"
	"github.com/ddstore/ddstore/internal/localcluster"
)

// sourcesScenario measures a download read from one node against the same
// download read from three at once (client.GetOptions.Sources), on a local
// 3-node cluster: first as the host is, then with what each node sends
// from its API port limited to cfg.LinkRate by a tc HTB class on the
// loopback device, as if each node sat behind its own link of that rate.
// The limit needs root and tc; it is removed at the end. Uploads and the
// nodes' copies to each other are not limited (they leave from other
// ports).
func (r *runner) sourcesScenario(ctx context.Context) error {
	size := r.middleSize()
	runs := r.runsFor(size)
	dir := filepath.Join(r.dir, "sources")
	cl, err := r.startCluster(ctx, localcluster.Options{Dir: dir, Exe: r.cfg.Exe, Replicas: 3})
	if err != nil {
		return fmt.Errorf("bench: sources scenario: %w", err)
	}
	defer func() { cl.Close(); os.RemoveAll(dir) }()
	c, err := cl.Client()
	if err != nil {
		return err
	}
	defer c.Close()
	name := r.name("sources", size)
	if err := r.putRandom(ctx, c, name, size); err != nil {
		return fmt.Errorf("bench: sources scenario: upload: %w", err)
	}
	measure := func(label string) error {
		one, three := []float64{}, []float64{}
		for run := range runs {
			order := []int{1, 3}
			if run%2 == 1 {
				order = []int{3, 1}
			}
			for _, n := range order {
				r.say("sources: %s, run %d/%d, %d source(s)", label, run+1, runs, n)
				start := time.Now()
				if _, err := c.Get(ctx, name, io.Discard, client.GetOptions{Sources: n}); err != nil {
					return fmt.Errorf("bench: sources scenario: download from %d nodes: %w", n, err)
				}
				if v := mbps(size, time.Since(start)); n == 1 {
					one = append(one, v)
				} else {
					three = append(three, v)
				}
			}
		}
		o := newResult("sources: download from 1 node, "+label, Random, size, "MB/s", one)
		t := newResult("sources: download from 3 nodes at once, "+label, Random, size, "MB/s", three).against("1 node, same run", o.Median)
		r.rep.Results = append(r.rep.Results, o, t)
		return nil
	}
	if err := measure("host as is"); err != nil {
		return err
	}
	undo, err := limitLinks(cl, r.cfg.LinkRate)
	if err != nil {
		return err
	}
	defer undo()
	return measure("each node's link " + r.cfg.LinkRate)
}

// limitLinks limits what each member sends from its API port over the
// loopback device to rate (tc syntax, e.g. 800mbit). undo restores the
// device.
func limitLinks(cl *localcluster.Cluster, rate string) (undo func(), err error) {
	tc := func(args ...string) error {
		if out, err := exec.Command("tc", args...).CombinedOutput(); err != nil {
			return fmt.Errorf("bench: tc %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
		}
		return nil
	}
	undo = func() { tc("qdisc", "del", "dev", "lo", "root") }
	if err := tc("qdisc", "add", "dev", "lo", "root", "handle", "1:", "htb", "default", "99"); err != nil {
		return nil, fmt.Errorf("%w (the link limit needs root, tc and no qdisc of its own on lo)", err)
	}
	steps := [][]string{{"class", "add", "dev", "lo", "parent", "1:", "classid", "1:99", "htb", "rate", "100gbit"}}
	for i, m := range cl.Members {
		_, port, err := net.SplitHostPort(m.APIAddr)
		if err != nil {
			undo()
			return nil, err
		}
		id := fmt.Sprintf("1:%d", 10+i)
		steps = append(steps,
			[]string{"class", "add", "dev", "lo", "parent", "1:", "classid", id, "htb", "rate", rate, "burst", "256k"},
			[]string{"filter", "add", "dev", "lo", "protocol", "ip", "parent", "1:", "prio", "1", "u32", "match", "ip", "sport", port, "0xffff", "flowid", id})
	}
	for _, s := range steps {
		if err := tc(s...); err != nil {
			undo()
			return nil, err
		}
	}
	return undo, nil
}
