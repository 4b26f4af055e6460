package bench

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"text/tabwriter"
)

// Result is one measured figure: a scenario on one data kind and size,
// repeated Runs times.
type Result struct {
	Scenario string    `json:"scenario"`
	Data     string    `json:"data,omitempty"`
	Size     int64     `json:"size,omitempty"`
	Unit     string    `json:"unit"`
	Runs     []float64 `json:"runs"`
	Min      float64   `json:"min"`
	Median   float64   `json:"median"`
	Max      float64   `json:"max"`
	// Baseline names the figure that bounds this one; Ratio is
	// Median / BaselineValue.
	Baseline      string             `json:"baseline,omitempty"`
	BaselineValue float64            `json:"baseline_value,omitempty"`
	Ratio         float64            `json:"ratio,omitempty"`
	Extra         map[string]float64 `json:"extra,omitempty"`
	Note          string             `json:"note,omitempty"`
}

// Target is one of the suite's goals, checked against the run's figures.
type Target struct {
	Name   string  `json:"name"`
	Want   string  `json:"want"`
	Got    string  `json:"got"`
	Value  float64 `json:"value"`
	Pass   bool    `json:"pass"`
	Reason string  `json:"reason,omitempty"` // why it could not be checked
}

// Report is everything a run measured.
type Report struct {
	Command string    `json:"command"`
	Started string    `json:"started"`
	Seconds float64   `json:"seconds"`
	Machine string    `json:"machine"`
	Cluster string    `json:"cluster"`
	Results []*Result `json:"results"`
	// Targets are the suite's five goals, numbered 1 to 5 (a full run
	// always has the five); ExtraTargets are goals of single scenarios
	// added since (the cost of TLS), printed in the same table.
	Targets      []Target       `json:"targets"`
	ExtraTargets []Target       `json:"extra_targets,omitempty"`
	PeakRSSMB    map[string]int `json:"peak_rss_mib,omitempty"`
}

func newResult(scenario, data string, size int64, unit string, runs []float64) *Result {
	r := &Result{Scenario: scenario, Data: data, Size: size, Unit: unit, Runs: runs}
	if len(runs) > 0 {
		s := slices.Clone(runs)
		slices.Sort(s)
		r.Min, r.Max = s[0], s[len(s)-1]
		if len(s)%2 == 1 {
			r.Median = s[len(s)/2]
		} else {
			r.Median = (s[len(s)/2-1] + s[len(s)/2]) / 2
		}
	}
	return r
}

// against sets the result's baseline and ratio.
func (r *Result) against(name string, value float64) *Result {
	r.Baseline, r.BaselineValue = name, value
	if value > 0 {
		r.Ratio = r.Median / value
	}
	return r
}

// find returns the result for a scenario, data kind and size (size 0: the
// largest measured).
func (rep *Report) find(scenario, data string, size int64) *Result {
	var best *Result
	for _, r := range rep.Results {
		if r.Scenario != scenario || r.Data != data {
			continue
		}
		if size > 0 && r.Size == size {
			return r
		}
		if size == 0 && (best == nil || r.Size > best.Size) {
			best = r
		}
	}
	return best
}

// human formats a byte count.
func human(n int64) string {
	switch {
	case n >= 1<<30 && n%(1<<30) == 0:
		return fmt.Sprintf("%d GiB", n>>30)
	case n >= 1<<20:
		return fmt.Sprintf("%d MiB", n>>20)
	case n >= 1<<10:
		return fmt.Sprintf("%d KiB", n>>10)
	}
	return fmt.Sprintf("%d B", n)
}

func num(v float64) string {
	switch {
	case v == 0:
		return "0"
	case math.Abs(v) >= 100:
		return fmt.Sprintf("%.0f", v)
	case math.Abs(v) >= 10:
		return fmt.Sprintf("%.1f", v)
	case math.Abs(v) < 0.1:
		return fmt.Sprintf("%.3g", v)
	}
	return fmt.Sprintf("%.2f", v)
}

// WriteTable prints the results and targets as aligned text.
func (rep *Report) WriteTable(w io.Writer) {
	tw := tabwriter.NewWriter(w, 2, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "scenario\tdata\tsize\tmin\tmedian\tmax\tunit\tbaseline\tbaseline value\tratio\tnotes")
	for _, r := range rep.Results {
		size := ""
		if r.Size > 0 {
			size = human(r.Size)
		}
		ratio, base := "", ""
		if r.Baseline != "" {
			base, ratio = r.Baseline, num(r.Ratio)
		}
		baseVal := ""
		if r.BaselineValue > 0 {
			baseVal = num(r.BaselineValue)
		}
		var notes []string
		keys := make([]string, 0, len(r.Extra))
		for k := range r.Extra {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		for _, k := range keys {
			notes = append(notes, k+"="+num(r.Extra[k]))
		}
		if r.Note != "" {
			notes = append(notes, r.Note)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", r.Scenario, r.Data, size,
			num(r.Min), num(r.Median), num(r.Max), r.Unit, base, baseVal, ratio, strings.Join(notes, " "))
	}
	tw.Flush()
	if targets := append(slices.Clone(rep.Targets), rep.ExtraTargets...); len(targets) > 0 {
		fmt.Fprintln(w)
		tw = tabwriter.NewWriter(w, 2, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "target\twant\tgot\tresult")
		for _, t := range targets {
			res := "FAIL"
			switch {
			case t.Reason != "":
				res = "n/a: " + t.Reason
			case t.Pass:
				res = "PASS"
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", t.Name, t.Want, t.Got, res)
		}
		tw.Flush()
	}
	if len(rep.PeakRSSMB) > 0 {
		var parts []string
		for _, k := range slices.Sorted(mapsKeys(rep.PeakRSSMB)) {
			parts = append(parts, fmt.Sprintf("%s %d MiB", k, rep.PeakRSSMB[k]))
		}
		fmt.Fprintf(w, "\npeak RSS: %s\n", strings.Join(parts, ", "))
	}
}

func mapsKeys[V any](m map[string]V) func(func(string) bool) {
	return func(yield func(string) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	}
}

// WriteFiles writes results.json and, when the run swept file sizes,
// throughput.svg into dir.
func (rep *Report) WriteFiles(dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	b, err := json.MarshalIndent(rep, "", "  ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "results.json"), append(b, '\n'), 0o644); err != nil {
		return err
	}
	if rep.find("upload", Random, 0) == nil {
		return nil // nothing to draw (e.g. --federation-only)
	}
	return os.WriteFile(filepath.Join(dir, "throughput.svg"), []byte(rep.SVG()), 0o644)
}

// series is one line of the chart.
type series struct {
	name   string
	color  string
	dashed bool
	points [][2]float64 // size in bytes, MB/s
}

// SVG draws throughput against file size (log scale) for the size-swept
// scenarios and their baselines.
func (rep *Report) SVG() string {
	lines := []struct {
		scenario, data, color string
		dashed                bool
	}{
		{"upload", Random, "#1f77b4", false},
		{"download", Random, "#ff7f0e", false},
		{"upload", Text, "#2ca02c", false},
		{"download", Text, "#d62728", false},
		{"baseline: disk write+fsync", Random, "#7f7f7f", true},
		{"baseline: gRPC loopback, download direction", "", "#9467bd", true},
		{"baseline: chunker pipeline", Random, "#1f77b4", true},
		{"baseline: chunker pipeline", Text, "#2ca02c", true},
	}
	var all []series
	for _, l := range lines {
		s := series{name: strings.TrimSpace(l.scenario + " " + l.data), color: l.color, dashed: l.dashed}
		for _, r := range rep.Results {
			if r.Scenario == l.scenario && r.Data == l.data && r.Size > 0 {
				s.points = append(s.points, [2]float64{float64(r.Size), r.Median})
			}
		}
		slices.SortFunc(s.points, func(a, b [2]float64) int { return int(a[0] - b[0]) })
		if len(s.points) > 0 {
			all = append(all, s)
		}
	}
	const W, H, left, right, top, bottom = 900, 520, 70, 260, 30, 50
	minX, maxX, maxY := math.Inf(1), math.Inf(-1), 0.0
	for _, s := range all {
		for _, p := range s.points {
			minX, maxX, maxY = min(minX, p[0]), max(maxX, p[0]), max(maxY, p[1])
		}
	}
	if len(all) == 0 {
		minX, maxX, maxY = 1<<20, 1<<30, 100
	}
	if minX == maxX {
		minX, maxX = minX/2, maxX*2
	}
	maxY = niceCeil(maxY * 1.05)
	x := func(v float64) float64 {
		return left + (math.Log(v)-math.Log(minX))/(math.Log(maxX)-math.Log(minX))*(W-left-right)
	}
	y := func(v float64) float64 { return H - bottom - v/maxY*(H-top-bottom) }
	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" font-family="sans-serif" font-size="12">`+"\n", W, H)
	fmt.Fprintf(&b, `<rect width="100%%" height="100%%" fill="white"/>`+"\n")
	fmt.Fprintf(&b, `<text x="%d" y="18" font-size="14">ddstore throughput against file size (median MB/s; dashed: baselines)</text>`+"\n", left)
	for i := 0; i <= 5; i++ {
		v := maxY * float64(i) / 5
		fmt.Fprintf(&b, `<line x1="%d" x2="%d" y1="%.1f" y2="%.1f" stroke="#ddd"/><text x="%d" y="%.1f" text-anchor="end">%s</text>`+"\n",
			left, W-right, y(v), y(v), left-6, y(v)+4, num(v))
	}
	for s := minX; s <= maxX*1.001; s *= 2 {
		fmt.Fprintf(&b, `<line x1="%.1f" x2="%.1f" y1="%d" y2="%d" stroke="#eee"/><text x="%.1f" y="%d" text-anchor="middle">%s</text>`+"\n",
			x(s), x(s), top, H-bottom, x(s), H-bottom+16, human(int64(s)))
	}
	fmt.Fprintf(&b, `<text x="%d" y="%d" text-anchor="middle">file size</text>`+"\n", (W-right+left)/2, H-12)
	fmt.Fprintf(&b, `<text x="16" y="%d" transform="rotate(-90 16 %d)" text-anchor="middle">MB/s</text>`+"\n", (H)/2, H/2)
	for i, s := range all {
		dash := ""
		if s.dashed {
			dash = ` stroke-dasharray="6 4"`
		}
		var pts []string
		for _, p := range s.points {
			pts = append(pts, fmt.Sprintf("%.1f,%.1f", x(p[0]), y(p[1])))
		}
		fmt.Fprintf(&b, `<polyline fill="none" stroke="%s" stroke-width="2"%s points="%s"/>`+"\n", s.color, dash, strings.Join(pts, " "))
		for _, p := range s.points {
			fmt.Fprintf(&b, `<circle cx="%.1f" cy="%.1f" r="3" fill="%s"/>`+"\n", x(p[0]), y(p[1]), s.color)
		}
		ly := top + 10 + i*20
		fmt.Fprintf(&b, `<line x1="%d" x2="%d" y1="%d" y2="%d" stroke="%s" stroke-width="2"%s/><text x="%d" y="%d">%s</text>`+"\n",
			W-right+12, W-right+40, ly, ly, s.color, dash, W-right+46, ly+4, s.name)
	}
	b.WriteString("</svg>\n")
	return b.String()
}

func niceCeil(v float64) float64 {
	if v <= 0 {
		return 1
	}
	p := math.Pow(10, math.Floor(math.Log10(v)))
	for _, m := range []float64{1, 2, 2.5, 5, 10} {
		if m*p >= v {
			return m * p
		}
	}
	return 10 * p
}
