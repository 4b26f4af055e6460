package nemesis

import (
	"context"
	"flag"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"
)

// TestNemesis runs the fault schedule against a child-process cluster on
// loopback (process faults) and one in network namespaces (process faults
// and partitions), then checks linearizability and the files.
//
// The environment selects the run:
//
//	NEMESIS_DURATION  schedule length per cluster (default 45s; e.g. 20m)
//	NEMESIS_SEED      the seed of the clients' operations and the fault schedule (default 1)
//	NEMESIS_MODE      loopback, netns or both (default both)
//	NEMESIS_OUT       where a failing run's visualization and node logs go
//	                  (default: the test's artifact directory with -artifacts,
//	                  else a new directory under $TMPDIR that is kept)
//	NEMESIS_EXE       a built ddstore binary (default: built from ./cmd/ddstore)
func TestNemesis(t *testing.T) {
	duration := 45 * time.Second
	if s := os.Getenv("NEMESIS_DURATION"); s != "" {
		d, err := time.ParseDuration(s)
		if err != nil {
			t.Fatalf("NEMESIS_DURATION=%q: %v", s, err)
		}
		duration = d
	}
	seed := uint64(1)
	if s := os.Getenv("NEMESIS_SEED"); s != "" {
		v, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			t.Fatalf("NEMESIS_SEED=%q: %v", s, err)
		}
		seed = v
	}
	mode := os.Getenv("NEMESIS_MODE")
	if mode == "" {
		mode = "both"
	}
	if mode != "both" && mode != "loopback" && mode != "netns" {
		t.Fatalf("NEMESIS_MODE=%q: want loopback, netns or both", mode)
	}
	exe := os.Getenv("NEMESIS_EXE")
	if exe == "" {
		exe = filepath.Join(t.TempDir(), "ddstore")
		build := exec.Command("go", "build", "-o", exe, "./cmd/ddstore")
		build.Dir = filepath.Join("..", "..")
		if out, err := build.CombinedOutput(); err != nil {
			t.Fatalf("build ddstore: %v\n%s", err, out)
		}
	} else if abs, err := filepath.Abs(exe); err == nil {
		exe = abs
	}

	for _, partitions := range []bool{false, true} {
		name := "loopback"
		if partitions {
			name = "netns"
		}
		if mode != "both" && mode != name {
			continue
		}
		t.Run(name, func(t *testing.T) {
			log := slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelInfo}))
			ctx, cancel := context.WithTimeout(context.Background(), duration+10*time.Minute)
			defer cancel()
			rep, err := Run(ctx, Config{
				Seed: seed, Duration: duration, Partitions: partitions, Exe: exe,
				Dir: t.TempDir(), OutDir: outDir(t), Logger: log,
			})
			if err != nil {
				t.Fatalf("seed %d: %v", seed, err)
			}
			t.Logf("\n%s", rep)
			if rep.Failed() {
				t.Errorf("the nemesis found a problem; replay with NEMESIS_SEED=%d NEMESIS_MODE=%s", seed, name)
			}
			if rep.Verdict != "Ok" {
				t.Errorf("porcupine's verdict is %s", rep.Verdict)
			}
			if len(rep.Faults) == 0 {
				t.Errorf("no fault was injected")
			}
		})
	}
}

// outDir is where a failing run keeps what it found.
func outDir(t *testing.T) string {
	if d := os.Getenv("NEMESIS_OUT"); d != "" {
		abs, err := filepath.Abs(d)
		if err != nil {
			t.Fatal(err)
		}
		return abs
	}
	if f := flag.Lookup("test.artifacts"); f != nil && f.Value.String() == "true" {
		return t.ArtifactDir()
	}
	// Kept after the test: a failing history is worth more than the space.
	return filepath.Join(os.TempDir(), "ddstore-nemesis-"+strconv.FormatInt(time.Now().UnixNano(), 36))
}
