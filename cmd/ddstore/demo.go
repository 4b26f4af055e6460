package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"

	"github.com/ddstore/ddstore/client"
	"github.com/ddstore/ddstore/internal/blake3"
	"github.com/ddstore/ddstore/internal/localcluster"
	"github.com/spf13/cobra"
)

func newDemoCmd() *cobra.Command {
	var (
		size SizeFlag = 1 << 30
		dir  string
		keep bool

		nodeArgs []string
	)
	cmd := &cobra.Command{
		Use:   "demo",
		Short: "Start a local 3-node cluster, stream a generated file up and down (interrupting and resuming), verify it",
		Long: `demo starts a 3-node cluster on loopback with the embedded on-disk store (each
node a child process), generates a file of --size random bytes, uploads it,
uploads it again (nothing is sent twice), downloads it with an interruption
half-way and a resume, verifies every byte, prints throughput and each
process's peak memory, and stops the cluster.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runDemo(cmd.Context(), int64(size), dir, keep, nodeArgs)
		},
	}
	cmd.Flags().Var(&size, "size", "size of the generated file (e.g. 64MiB, 1GiB, 4GiB)")
	cmd.Flags().StringVar(&dir, "dir", "", "work directory (default: a new temporary one)")
	cmd.Flags().BoolVar(&keep, "keep", false, "keep the work directory")
	cmd.Flags().StringArrayVar(&nodeArgs, "node-arg", nil, "extra `ddstore server` flag for every node (repeatable), e.g. --node-arg=--cache-size=0")
	return cmd
}

func runDemo(ctx context.Context, size int64, dir string, keep bool, nodeArgs []string) error {
	exe, err := os.Executable()
	if err != nil {
		return err
	}
	if dir == "" {
		if dir, err = os.MkdirTemp("", "ddstore-demo-"); err != nil {
			return err
		}
	}
	if !keep {
		defer os.RemoveAll(dir)
	}
	say := func(format string, a ...any) { fmt.Printf("demo: "+format+"\n", a...) }

	say("starting 3 nodes on loopback (embedded store) in %s", dir)
	cl, err := localcluster.Start(ctx, localcluster.Options{Dir: filepath.Join(dir, "cluster"), Exe: exe, Args: nodeArgs})
	if err != nil {
		return err
	}
	defer cl.Close()
	say("cluster ready: %v", cl.Addrs())
	say("every link is mutual TLS, with a throwaway CA in %s; the demo's client holds an admin certificate", filepath.Dir(cl.CAFile()))
	c, err := cl.Client()
	if err != nil {
		return err
	}
	defer c.Close()

	in := filepath.Join(dir, "input.bin")
	say("generating %s of random data", humanSize(size))
	want, err := generate(in, size)
	if err != nil {
		return err
	}

	f, err := os.Open(in)
	if err != nil {
		return err
	}
	defer f.Close()
	put, err := c.Put(ctx, "demo.bin", f, client.PutOptions{})
	if err != nil {
		return fmt.Errorf("upload: %w", err)
	}
	say("upload: %s in %d chunks, %.2fs, %.0f MB/s", humanSize(put.Size), put.Chunks, put.Duration.Seconds(), mbps(put.Size, put.Duration))

	f.Seek(0, io.SeekStart)
	again, err := c.Put(ctx, "demo.bin", f, client.PutOptions{})
	if err != nil {
		return fmt.Errorf("second upload: %w", err)
	}
	say("upload again: %d chunk bytes sent (all %d chunks already stored), %.2fs", again.BytesSent, again.ChunksKnown, again.Duration.Seconds())
	if again.BytesSent != 0 {
		return errors.New("second upload sent chunk bytes")
	}

	out := filepath.Join(dir, "output.bin")
	cut, cancel := context.WithCancel(ctx)
	_, err = c.GetFile(cut, "demo.bin", out, false, client.GetOptions{Progress: func(done, total int64) {
		if done >= total/2 {
			cancel()
		}
	}})
	cancel()
	if err == nil {
		return errors.New("the interrupted download did not stop")
	}
	st, _ := os.Stat(out)
	say("download interrupted on purpose after %s", humanSize(st.Size()))
	get, err := c.GetFile(ctx, "demo.bin", out, true, client.GetOptions{})
	if err != nil {
		return fmt.Errorf("resumed download: %w", err)
	}
	say("resumed download: kept %s (chunks 0-%d verified), fetched the rest in %.2fs",
		humanSize(get.KeptBytes), get.ResumedAt-1, get.Duration.Seconds())

	full := filepath.Join(dir, "output2.bin")
	get2, err := c.GetFile(ctx, "demo.bin", full, false, client.GetOptions{})
	if err != nil {
		return fmt.Errorf("download: %w", err)
	}
	for _, p := range []string{out, full} {
		got, err := hashFile(p)
		if err != nil {
			return err
		}
		if !bytes.Equal(got, want) {
			return fmt.Errorf("%s differs from the input", p)
		}
	}
	say("verified: both downloads are byte-identical to the input (BLAKE3 %x…)", want[:8])

	for i := range cl.Members {
		if rss, err := cl.PeakRSS(i); err == nil {
			say("peak RSS %s: %s", cl.Members[i].ID, humanSize(rss))
		}
	}
	if rss, err := localcluster.PeakRSS(os.Getpid()); err == nil {
		say("peak RSS client (this process, including the file generator): %s", humanSize(rss))
	}
	if err := cl.Close(); err != nil {
		return fmt.Errorf("stopping the cluster: %w", err)
	}
	say("throughput: upload %.0f MB/s, download %.0f MB/s (%s, 3 nodes, R=3, one host)",
		mbps(put.Size, put.Duration), mbps(int64(get2.Manifest.GetSize()), get2.Duration), humanSize(size))
	return nil
}

// generate writes size pseudo-random bytes to path and returns their BLAKE3.
func generate(path string, size int64) ([]byte, error) {
	f, err := os.Create(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	h := blake3.New()
	rng := rand.NewChaCha8([32]byte{'d', 'd', 's', 't', 'o', 'r', 'e'})
	buf := make([]byte, 1<<20)
	for left := size; left > 0; {
		n := int(min(left, int64(len(buf))))
		rng.Read(buf[:n])
		if _, err := f.Write(buf[:n]); err != nil {
			return nil, err
		}
		h.Write(buf[:n])
		left -= int64(n)
	}
	return h.Sum(nil), f.Close()
}

func hashFile(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	h := blake3.New()
	if _, err := io.Copy(h, f); err != nil {
		return nil, err
	}
	return h.Sum(nil), nil
}
