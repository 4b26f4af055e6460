package nemesis

import (
	"cmp"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/anishathalye/porcupine"
)

// input is a porcupine operation's input: one operation on one name. An ls
// becomes one read per name of the key space, with the ls's times.
type input struct {
	Kind    Kind
	Name    string
	Version string // put, overwrite: the version written
}

// output is a porcupine operation's output.
type output struct {
	Outcome  Outcome
	Version  string // reads: the version seen (absent: none)
	Now      string // replaced overwrite: the version the cluster named
	NowKnown bool
}

// step is the catalog's sequential specification for one name, whose
// state is its current version (absent: no file). It returns every state
// the operation may leave; none means the operation could not have
// answered so in state s. An operation whose outcome is unknown may or may
// not have taken effect.
func step(s string, in input, out output) []string {
	switch in.Kind {
	case KindStat, KindGet, KindList:
		if out.Version == s {
			return []string{s}
		}
		return nil
	case KindPut:
		switch out.Outcome {
		case OK:
			if s == absent || s == in.Version {
				return []string{in.Version}
			}
			return nil
		case Exists:
			if s != absent && s != in.Version {
				return []string{s}
			}
			return nil
		case Unknown:
			if s == absent {
				return []string{s, in.Version}
			}
			return []string{s}
		}
		return []string{s} // Failed: changed nothing
	case KindOverwrite:
		switch out.Outcome {
		case OK:
			return []string{in.Version}
		case Replaced:
			if out.NowKnown && out.Now != s {
				return nil
			}
			return []string{s}
		case Unknown:
			return []string{s, in.Version}
		}
		return []string{s}
	case KindDelete:
		switch out.Outcome {
		case OK:
			// client.Delete reports success when the file is gone after
			// a retry of an attempt that got no answer (which may have
			// removed it): from any state, it leaves none.
			return []string{absent}
		case NotFound:
			if s == absent {
				return []string{s}
			}
			return nil
		case Unknown:
			return []string{s, absent}
		}
		return []string{s}
	}
	return nil
}

// model is the porcupine model of the catalog, partitioned by name.
func model() porcupine.Model {
	nm := porcupine.NondeterministicModel{
		Partition: func(history []porcupine.Operation) [][]porcupine.Operation {
			by := map[string][]porcupine.Operation{}
			for _, op := range history {
				n := op.Input.(input).Name
				by[n] = append(by[n], op)
			}
			var out [][]porcupine.Operation
			for _, n := range slices.Sorted(maps.Keys(by)) {
				out = append(out, by[n])
			}
			return out
		},
		Init: func() []any { return []any{absent} },
		Step: func(state, in, out any) []any {
			var next []any
			for _, s := range step(state.(string), in.(input), out.(output)) {
				next = append(next, s)
			}
			return next
		},
		Equal: func(a, b any) bool { return a.(string) == b.(string) },
		DescribeOperation: func(in, out any) string {
			i, o := in.(input), out.(output)
			switch i.Kind {
			case KindStat, KindGet, KindList:
				return fmt.Sprintf("%s(%s) -> %s", i.Kind, i.Name, describeVersion(o.Version))
			case KindDelete:
				return fmt.Sprintf("rm(%s) -> %s", i.Name, o.Outcome)
			case KindOverwrite:
				if o.Outcome == Replaced && o.NowKnown {
					return fmt.Sprintf("overwrite(%s, %s) -> replaced, now %s", i.Name, i.Version, describeVersion(o.Now))
				}
			}
			return fmt.Sprintf("%s(%s, %s) -> %s", i.Kind, i.Name, i.Version, o.Outcome)
		},
		DescribeState: func(s any) string { return describeVersion(s.(string)) },
		DescribeOperationMetadata: func(info any) string {
			if info == nil {
				return ""
			}
			return fmt.Sprint(info)
		},
	}
	return nm.ToModel()
}

func describeVersion(v string) string {
	if v == absent {
		return "(none)"
	}
	return v
}

// operations turns recorded ops into porcupine's history. Reads whose
// outcome is unknown are left out (they changed nothing and said nothing);
// writes whose outcome is unknown get end as their return time: they may
// have taken effect at any moment until the cluster was healed and settled.
func operations(ops []*Op, names []string, end int64) []porcupine.Operation {
	var out []porcupine.Operation
	for _, o := range ops {
		ret := o.Return
		if o.Outcome == Unknown {
			if !o.mutates() {
				continue
			}
			ret = max(end, o.Call)
		}
		meta := fmt.Sprintf("op %d, worker %d, %s: %s", o.ID, o.Worker, time.Duration(o.Return-o.Call).Round(time.Millisecond), o.Outcome)
		if o.Err != "" {
			meta += ": " + o.Err
		}
		if o.Kind == KindList {
			if o.Outcome != OK {
				continue
			}
			for _, n := range names {
				out = append(out, porcupine.Operation{ClientId: o.Worker, Call: o.Call, Return: ret, Metadata: meta,
					Input: input{Kind: KindList, Name: n}, Output: output{Outcome: OK, Version: o.Listed[n]}})
			}
			continue
		}
		in := input{Kind: o.Kind, Name: o.Name}
		outp := output{Outcome: o.Outcome, Now: o.Now, NowKnown: o.NowKnown}
		switch o.Kind {
		case KindPut, KindOverwrite:
			in.Version = o.Version
		case KindStat, KindGet:
			if o.Outcome != OK && o.Outcome != NotFound {
				continue
			}
			outp.Version = o.Version
		}
		out = append(out, porcupine.Operation{ClientId: o.Worker, Call: o.Call, Return: ret, Metadata: meta, Input: in, Output: outp})
	}
	slices.SortStableFunc(out, func(a, b porcupine.Operation) int { return cmp.Compare(a.Call, b.Call) })
	return out
}

// verdict is the outcome of the linearizability check.
type verdict struct {
	Result  porcupine.CheckResult
	Illegal []string                    // names whose history is not linearizable
	Info    porcupine.LinearizationInfo // the first illegal name's, for the visualization
	Ops     int                         // porcupine operations checked
	Took    time.Duration
}

// checkLinearizable runs porcupine on the history, one name at a time (so
// that at most one name's search holds memory), each within its share of
// timeout. Ok needs every name Ok; one Illegal name makes it Illegal.
func checkLinearizable(ops []*Op, names []string, end int64, timeout time.Duration) verdict {
	start := time.Now()
	v := verdict{Result: porcupine.Ok}
	for _, n := range names {
		var mine []*Op
		for _, o := range ops {
			if o.Name == n || o.Kind == KindList {
				mine = append(mine, o)
			}
		}
		hist := operations(mine, []string{n}, end)
		v.Ops += len(hist)
		res, info := porcupine.CheckOperationsVerbose(model(), hist, timeout/time.Duration(len(names)))
		switch {
		case res == porcupine.Illegal:
			if v.Illegal == nil {
				v.Info = info
			}
			v.Result = porcupine.Illegal
			v.Illegal = append(v.Illegal, n)
		case res == porcupine.Unknown && v.Result == porcupine.Ok:
			v.Result = porcupine.Unknown
		}
	}
	v.Took = time.Since(start)
	return v
}

// describeOps prints ops one a line, for a report's excerpt.
func describeOps(ops []*Op) string {
	var b strings.Builder
	for _, o := range ops {
		fmt.Fprintf(&b, "  #%d w%d [%.3fs, %.3fs] %s %s", o.ID, o.Worker, float64(o.Call)/1e9, float64(o.Return)/1e9, o.Kind, o.Name)
		if o.Version != "" || o.Kind == KindStat || o.Kind == KindGet {
			fmt.Fprintf(&b, " %s", describeVersion(o.Version))
		}
		fmt.Fprintf(&b, " -> %s", o.Outcome)
		if o.Outcome == Replaced && o.NowKnown {
			fmt.Fprintf(&b, " (now %s)", describeVersion(o.Now))
		}
		if o.Err != "" {
			fmt.Fprintf(&b, ": %s", o.Err)
		}
		b.WriteByte('\n')
	}
	return b.String()
}
