package replica

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/ddstore/ddstore/chunker"
)

// The crash test's child process: TestPackCrashHelper re-executed with these
// variables set.
const (
	crashDirEnv  = "DDSTORE_PACK_CRASH_DIR"
	crashModeEnv = "DDSTORE_PACK_CRASH_MODE" // "writes" or "compaction"
	crashSeedEnv = "DDSTORE_PACK_CRASH_SEED"
)

// crashOptions are the pack options of the crash test: small packs, so that
// packs are sealed (and, with deletes, compacted) many times a second.
func crashOptions(mode string, log *slog.Logger) PackOptions {
	if mode == "compaction" {
		return PackOptions{PackSize: 256 << 10, CompactBelow: 0.7, Logger: log}
	}
	return PackOptions{PackSize: 1 << 20, Logger: log}
}

// TestPackCrash kills a process writing to a pack store with SIGKILL at 20
// random moments (fixed seed) and checks after each kill, by reopening the
// store, that every chunk whose Put returned is there and verifies, that
// every chunk whose Delete returned is gone, and that nothing corrupt is
// served. In the "compaction" mode the child also deletes most of what it
// writes, with small packs compacted in the background all the time, so
// that kills land mid-compaction.
func TestPackCrash(t *testing.T) {
	for _, mode := range []string{"writes", "compaction"} {
		t.Run(mode, func(t *testing.T) { testPackCrash(t, mode) })
	}
}

func testPackCrash(t *testing.T, mode string) {
	const kills = 20
	dir := filepath.Join(t.TempDir(), "chunks")
	rng := rand.New(rand.NewPCG(11, uint64(len(mode))))
	ctx := ctxFor(t)
	live := map[chunker.ID]bool{}    // Put returned, no Delete started
	deleted := map[chunker.ID]bool{} // Delete returned
	var midCompaction, torn, puts, dels int
	for round := range kills {
		acks, err := runCrashChild(t, dir, mode, round, rng)
		if err != nil {
			t.Fatalf("round %d: %v", round, err)
		}
		for _, a := range acks {
			switch a.op {
			case 'P':
				live[a.id] = true
				puts++
			case 'd': // a Delete started: the chunk may be gone or not
				delete(live, a.id)
			case 'D':
				deleted[a.id] = true
				dels++
			}
		}
		if _, err := os.Stat(filepath.Join(dir, packMarkerName)); err == nil {
			midCompaction++
		}
		// No background compaction here: what open itself does is checked.
		opts := crashOptions(mode, slog.New(slog.DiscardHandler))
		opts.CompactBelow = -1
		p, err := OpenPack(ctx, dir, opts)
		if err != nil {
			t.Fatalf("round %d: reopen after the kill: %v", round, err)
		}
		torn += int(p.Stats().TornTails)
		checkAfterCrash(t, p, live, deleted)
		if _, err := os.Stat(filepath.Join(dir, packMarkerName)); err == nil {
			t.Errorf("round %d: the interrupted compaction was not finished at open", round)
		}
		if err := p.Close(); err != nil {
			t.Fatal(err)
		}
		if t.Failed() {
			t.Fatalf("round %d failed", round)
		}
	}
	t.Logf("%d kills: %d acknowledged puts, %d acknowledged deletes, %d live at the end; %d kills mid-compaction, %d torn tails cut",
		kills, puts, dels, len(live), midCompaction, torn)
	if puts == 0 {
		t.Error("no Put was acknowledged before any kill")
	}
	if mode == "compaction" && midCompaction == 0 {
		t.Error("no kill landed mid-compaction")
	}
}

// checkAfterCrash checks a store reopened after a kill: whatever it holds
// (acknowledged or not) verifies, it holds every live acknowledged chunk
// and none whose Delete returned.
func checkAfterCrash(t *testing.T, p *Pack, live, deleted map[chunker.ID]bool) {
	t.Helper()
	ctx := ctxFor(t)
	held := map[chunker.ID]bool{}
	var sum int64
	if err := p.Walk(ctx, func(id chunker.ID, size int64) error {
		held[id] = true
		sum += size
		if _, err := p.Get(ctx, id); err != nil {
			t.Errorf("chunk %s held after the crash: %v", id, err)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	for id := range live {
		if !held[id] {
			t.Errorf("acknowledged chunk %s is lost", id)
		}
	}
	for id := range deleted {
		if held[id] {
			t.Errorf("chunk %s whose Delete returned is back", id)
		}
	}
	if u, _ := p.Usage(ctx); u.Chunks != uint64(len(held)) || u.Bytes != uint64(sum) {
		t.Errorf("Usage %+v, Walk %d chunks, %d bytes", u, len(held), sum)
	}
}

type crashAck struct {
	op byte
	id chunker.ID
}

// runCrashChild starts the child on dir, lets it write for a random time
// once it has opened the store, kills it with SIGKILL and returns what it
// acknowledged.
func runCrashChild(t *testing.T, dir, mode string, round int, rng *rand.Rand) ([]crashAck, error) {
	r, w, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	defer r.Close()
	cmd := exec.Command(os.Args[0], "-test.run=^TestPackCrashHelper$", "-test.count=1")
	cmd.Env = append(os.Environ(), crashDirEnv+"="+dir, crashModeEnv+"="+mode, fmt.Sprintf("%s=%d", crashSeedEnv, round))
	cmd.ExtraFiles = []*os.File{w}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		w.Close()
		return nil, err
	}
	w.Close()
	var acks []crashAck
	ready := make(chan struct{})
	done := make(chan error, 1)
	go func() {
		sc := bufio.NewScanner(r)
		for sc.Scan() {
			line := sc.Text()
			if line == "ready" {
				close(ready)
				continue
			}
			op, hexID, ok := strings.Cut(line, " ")
			id, err := chunker.ParseID(hexID)
			if !ok || len(op) != 1 || err != nil {
				done <- fmt.Errorf("bad line from the child: %q", line)
				return
			}
			acks = append(acks, crashAck{op[0], id})
		}
		done <- sc.Err()
	}()
	select {
	case <-ready:
	case err := <-done:
		cmd.Wait()
		return nil, fmt.Errorf("child ended before it was ready (%v): %s", err, stderr.String())
	}
	// The random moment.
	time.Sleep(time.Duration(20+rng.IntN(380)) * time.Millisecond)
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		return nil, err
	}
	werr := cmd.Wait()
	if err := <-done; err != nil {
		return nil, err
	}
	var ee *exec.ExitError
	if !errors.As(werr, &ee) || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
		return nil, fmt.Errorf("child was not killed: %v: %s", werr, stderr.String())
	}
	return acks, nil
}

// TestPackCrashHelper is the child process of TestPackCrash; run directly it
// does nothing. It writes chunks with 4 goroutines until it is killed,
// reporting on file descriptor 3 "P <id>" after each Put that returned, and
// in compaction mode "d <id>" before and "D <id>" after each Delete.
func TestPackCrashHelper(t *testing.T) {
	dir := os.Getenv(crashDirEnv)
	if dir == "" {
		return
	}
	mode := os.Getenv(crashModeEnv)
	var seed uint64
	fmt.Sscan(os.Getenv(crashSeedEnv), &seed)
	out := os.NewFile(3, "acks")
	var outMu sync.Mutex
	report := func(op byte, id chunker.ID) {
		outMu.Lock()
		defer outMu.Unlock()
		if _, err := fmt.Fprintf(out, "%c %s\n", op, id); err != nil {
			os.Exit(3)
		}
	}
	ctx := context.Background()
	p, err := OpenPack(ctx, dir, crashOptions(mode, slog.New(slog.DiscardHandler)))
	if err != nil {
		fmt.Fprintln(os.Stderr, "open:", err)
		os.Exit(2)
	}
	if _, err := io.WriteString(out, "ready\n"); err != nil {
		os.Exit(3)
	}
	codecs := chunker.NewCodecs()
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(seed, uint64(w)))
			var mine []chunker.ID
			for {
				n := 1<<10 + rng.IntN(63<<10)
				if rng.IntN(20) == 0 {
					n = 1 << 20
				}
				raw := make([]byte, n)
				for i := 0; i < n; i += 8 {
					v := rng.Uint64()
					for j := 0; j < 8 && i+j < n; j++ {
						raw[i+j] = byte(v >> (8 * j))
					}
				}
				c := codecs.Encode(raw)
				if _, err := p.Put(ctx, c); err != nil {
					fmt.Fprintln(os.Stderr, "put:", err)
					os.Exit(2)
				}
				report('P', c.ID)
				mine = append(mine, c.ID)
				if mode == "compaction" && len(mine) > 2 && rng.IntN(10) < 7 {
					i := rng.IntN(len(mine) - 1)
					id := mine[i]
					mine = append(mine[:i], mine[i+1:]...)
					report('d', id)
					if err := p.Delete(ctx, id); err != nil {
						fmt.Fprintln(os.Stderr, "delete:", err)
						os.Exit(2)
					}
					report('D', id)
				}
			}
		})
	}
	wg.Wait()
}
