package bench

import (
	"bytes"
	"encoding/xml"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/ddstore/ddstore/chunker"
)

func TestNewResult(t *testing.T) {
	tests := []struct {
		runs             []float64
		min, median, max float64
	}{
		{[]float64{3}, 3, 3, 3},
		{[]float64{5, 1, 3}, 1, 3, 5},
		{[]float64{4, 1, 3, 2}, 1, 2.5, 4},
	}
	for _, tt := range tests {
		r := newResult("s", Random, 1, "MB/s", tt.runs).against("b", 2)
		if r.Min != tt.min || r.Median != tt.median || r.Max != tt.max || r.Ratio != tt.median/2 {
			t.Errorf("%v: got %v/%v/%v ratio %v", tt.runs, r.Min, r.Median, r.Max, r.Ratio)
		}
	}
}

// TestTextCompresses: the generated weather rows shrink to roughly a fifth
// with ddstore's zstd setting, as the suite claims.
func TestTextCompresses(t *testing.T) {
	path := filepath.Join(t.TempDir(), "text")
	if err := writeData(path, Text, 4<<20, 1); err != nil {
		t.Fatal(err)
	}
	data, _ := os.ReadFile(path)
	e := chunker.NewCodecs().Encode(data)
	ratio := float64(len(e.Data)) / float64(len(data))
	if ratio < 0.08 || ratio > 0.3 {
		t.Fatalf("text compresses to %.2f of its size, want about 0.2", ratio)
	}
	if !bytes.Contains(data[:200], []byte(",ST0")) {
		t.Fatalf("unexpected rows: %q", data[:200])
	}
}

func TestChangeInPlace(t *testing.T) {
	path := filepath.Join(t.TempDir(), "data")
	const size = 250 << 20
	if err := writeData(path, Random, size, 2); err != nil {
		t.Fatal(err)
	}
	before, _ := os.ReadFile(path)
	if err := changeInPlace(path, 0.01, 3); err != nil {
		t.Fatal(err)
	}
	after, _ := os.ReadFile(path)
	diff := 0
	for i := range before {
		if before[i] != after[i] {
			diff++
		}
	}
	if got := float64(diff) / size; math.Abs(got-0.01) > 0.001 {
		t.Fatalf("%.4f of the bytes changed, want 0.01", got)
	}
}

func TestSVG(t *testing.T) {
	rep := &Report{Results: []*Result{
		newResult("upload", Random, 64<<20, "MB/s", []float64{100}),
		newResult("upload", Random, 1<<30, "MB/s", []float64{150}),
		newResult("baseline: disk write+fsync", Random, 64<<20, "MB/s", []float64{900}),
	}}
	if err := xml.Unmarshal([]byte(rep.SVG()), new(struct{})); err != nil {
		t.Fatalf("chart is not well-formed XML: %v", err)
	}
	var buf bytes.Buffer
	rep.WriteTable(&buf)
	if !bytes.Contains(buf.Bytes(), []byte("1 GiB")) {
		t.Fatalf("table: %s", buf.String())
	}
}

func TestPairedRatio(t *testing.T) {
	if got := pairedRatio([]float64{50, 90, 100}, []float64{100, 100, 100}); got != 0.9 {
		t.Fatalf("paired ratio %v, want the median 0.9", got)
	}
	if got := pairedRatio([]float64{1, 2}, []float64{0, 4}); got != 0.5 {
		t.Fatalf("paired ratio %v, want 0.5 (a zero baseline is skipped)", got)
	}
}

// TestExtraTargets: the TLS target is printed with the five, but kept out
// of Targets.
func TestExtraTargets(t *testing.T) {
	rep := &Report{
		Targets:      []Target{{Name: "1. upload", Pass: true}},
		ExtraTargets: []Target{{Name: "TLS: upload and download, mTLS / insecure", Got: "upload 0.8"}},
	}
	var buf bytes.Buffer
	rep.WriteTable(&buf)
	if !bytes.Contains(buf.Bytes(), []byte("1. upload")) || !bytes.Contains(buf.Bytes(), []byte("TLS: upload and download")) || !bytes.Contains(buf.Bytes(), []byte("FAIL")) {
		t.Fatalf("table: %s", buf.String())
	}
}

// TestCPUMeter: a span around work reports its CPU cost per GiB, and the
// rate at which that cost takes every core.
func TestCPUMeter(t *testing.T) {
	sp := cpuMeter{}.start()
	data := make([]byte, 64<<20)
	for range 8 {
		chunker.Sum(data)
	}
	c, ok := sp.perGiB(512 << 20)
	if !ok || c <= 0 || c > 60 {
		t.Fatalf("perGiB = %v, %v", c, ok)
	}
	if got, want := cpuBound(float64(runtime.NumCPU())), 1073.741824; math.Abs(got-want) > 1e-6 {
		t.Errorf("cpuBound = %v, want %v", got, want)
	}
	if _, ok := (cpuMeter{off: true}).start().perGiB(1); ok {
		t.Error("an off meter reads")
	}
}

func TestProcCPU(t *testing.T) {
	v, err := procCPU(os.Getpid())
	if err != nil || v < 0 {
		t.Fatalf("procCPU: %v, %v", v, err)
	}
}

// TestEngineTargets: the storage engine's goals are checked against the
// same run's baselines (the download against gRPC over the cluster's own
// transport) and each says what bounds it.
func TestEngineTargets(t *testing.T) {
	withCPU := func(res *Result, c float64) *Result {
		res.Extra = map[string]float64{"cpu_s_per_GiB": c}
		return res
	}
	r := &runner{cfg: Config{ClientOptions: nil}, rep: &Report{Results: []*Result{
		withCPU(newResult("download", Random, 1<<30, "MB/s", []float64{574}), 2.6),
		newResult("baseline: gRPC loopback, download direction", "", 1<<30, "MB/s", []float64{1285}),
		newResult("baseline: gRPC loopback TLS, download direction", "", 1<<30, "MB/s", []float64{1009}),
		withCPU(newResult("upload", Random, 1<<30, "MB/s", []float64{143}).against("disk", 343), 12),
		newResult("upload, R=1", Random, 1<<30, "MB/s", []float64{241}).against("disk", 1107),
		newResult("upload", Text, 1<<30, "MB/s", []float64{136}).against("pipeline", 317),
		{Scenario: "small files put (4 KiB each, 16 at once)", Median: 2383, Extra: map[string]float64{"put_ms_p99": 15.2}},
		{Scenario: "small files get (4 KiB each, 16 at once)", Median: 7453},
		newResult("4 clients at once, download (aggregate)", Random, 1<<30, "MB/s", []float64{716}),
	}}}
	got := r.engineTargets()
	if len(got) != 4 {
		t.Fatalf("%d targets, want 4", len(got))
	}
	// A plain-text cluster: its download against plain gRPC.
	if g := got[0]; g.Pass || math.Abs(g.Value-574.0/1285) > 1e-9 || !strings.Contains(g.Got, "CPU-bound at 826 MB/s") {
		t.Errorf("download target %+v", g)
	}
	if g := got[1]; g.Pass || !strings.Contains(g.Got, "R=3 143 MB/s = 0.42 x (want 0.90); 12.0 CPU-s/GiB") || !strings.Contains(g.Got, "text 136") {
		t.Errorf("upload target %+v", g)
	}
	if g := got[2]; !g.Pass || g.Value != 2383 {
		t.Errorf("small files target %+v", g)
	}
	if g := got[3]; g.Pass || math.Abs(g.Value-716.0/574) > 1e-9 {
		t.Errorf("4 clients target %+v", g)
	}
	// A local cluster is mutual TLS (so is a running one reached with
	// client certificates): the download is compared with gRPC over TLS.
	r.overTLS = true
	if g := r.engineTargets()[0]; !g.Pass || math.Abs(g.Value-574.0/1009) > 1e-9 || !strings.Contains(g.Got, "TLS gRPC 1009 MB/s (0.45 x plain; 1 GiB)") {
		t.Errorf("download target over TLS %+v", g)
	}
}
