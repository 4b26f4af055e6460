package main

import (
	"encoding/json"
	"fmt"
	"os"
	"strings"

	"github.com/spf13/cobra"

	"github.com/ddstore/ddstore/bench"
)

func newBenchCmd(g *globalFlags) *cobra.Command {
	var (
		cfg    bench.Config
		quick  bool
		sizes  string
		target string
		out    string
	)
	cmd := &cobra.Command{
		Use:   "bench",
		Short: "Measure throughput against baselines measured in the same run",
		Long: `bench starts a local 3-node cluster on the embedded store (each node a child
process), unless --target names a running cluster, and measures uploads and
downloads of generated files (incompressible and compressible text), re-uploads
of an unchanged and of a 1%-changed file, a download resumed half-way, several
clients at once, many small files, R=1 against R=3, with --mongo-uri the
GridFS store, and three peer clusters (a download forwarded through a peer
against a local one; peer calls per lookup with and without the Bloom
filters; their measured false-positive rate; --federation-only runs just
that), and the cost of TLS: the same upload and download on a mutual-TLS
cluster and an insecure one, interleaved run by run (--tls-only runs just
that), and the S3 gateway: PutObject and GetObject through a gateway against
the Go client's put and get of the same kind of bytes, interleaved run by run
(--s3-only runs just that). --sources-only measures a download from one
node against the same from three at once, as the host is and with each
node's link limited to --link-rate by tc on the loopback device (root only;
not part of the full run). Local clusters are mutual TLS, each with a throwaway CA. Beside each
figure it prints the baseline that bounds it, measured in the same run on
the same bytes (disk write+fsync, raw loopback gRPC in plain text and over
TLS, the chunker pipeline alone, direct GridFS, the insecure cluster), and
the ratio.

A --target cluster is reached with the global TLS flags (--ca, --cert and
--key, or DDSTORE_CA, DDSTORE_CERT and DDSTORE_KEY; a token with
--token-file or DDSTORE_TOKEN); without --ca, in plain text.

Progress goes to stderr, the table to stdout; --json prints the report as JSON
instead, --out DIR also writes DIR/results.json and DIR/throughput.svg.
--quick is a smoke run of under a minute.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if quick {
				q := bench.Quick()
				for _, name := range []string{"runs", "clients", "small-files", "fed-files", "fed-lookups"} {
					if cmd.Flags().Changed(name) {
						continue
					}
					switch name {
					case "runs":
						cfg.Runs = q.Runs
					case "clients":
						cfg.Clients = q.Clients
					case "small-files":
						cfg.SmallFiles = q.SmallFiles
					case "fed-files":
						cfg.FedFiles = q.FedFiles
					case "fed-lookups":
						cfg.FedLookups = q.FedLookups
					}
				}
				if sizes == "" {
					cfg.Sizes = q.Sizes
				}
			}
			if sizes != "" {
				for _, s := range strings.Split(sizes, ",") {
					v, err := ParseSize(s)
					if err != nil || v < 1<<20 {
						return usageError{fmt.Errorf("--sizes: %q is not a size of at least 1MiB", s)}
					}
					cfg.Sizes = append(cfg.Sizes, v)
				}
			}
			if cfg.Runs < 0 || cfg.Clients < 0 || cfg.SmallFiles < 0 || cfg.FedFiles < 0 || cfg.FedLookups < 0 {
				return usageError{fmt.Errorf("--runs, --clients, --small-files, --fed-files and --fed-lookups must not be negative")}
			}
			if cfg.FederationOnly && cfg.TLSOnly {
				return usageError{fmt.Errorf("--federation-only and --tls-only do not go together")}
			}
			if cfg.S3Only && (cfg.FederationOnly || cfg.TLSOnly || target != "") {
				return usageError{fmt.Errorf("--s3-only runs alone on a local cluster: no --federation-only, --tls-only or --target")}
			}
			if cfg.SourcesOnly && (cfg.FederationOnly || cfg.TLSOnly || cfg.S3Only || target != "") {
				return usageError{fmt.Errorf("--sources-only runs alone on a local cluster: no --federation-only, --tls-only, --s3-only or --target")}
			}
			if (cfg.FederationOnly || cfg.TLSOnly) && target != "" {
				return usageError{fmt.Errorf("--federation-only and --tls-only start their own clusters; they do not take --target")}
			}
			if target != "" {
				cfg.Target = strings.Split(target, ",")
				opts, err := g.credentials()
				if err != nil {
					return err
				}
				cfg.ClientOptions = opts
			} else {
				exe, err := os.Executable()
				if err != nil {
					return err
				}
				cfg.Exe = exe
			}
			cfg.Progress = os.Stderr
			cfg.Command = "ddstore " + strings.Join(os.Args[1:], " ")
			rep, err := bench.Run(cmd.Context(), cfg)
			if err != nil {
				return err
			}
			if out != "" {
				if err := rep.WriteFiles(out); err != nil {
					return fmt.Errorf("bench: write results: %w", err)
				}
			}
			if g.json {
				enc := json.NewEncoder(os.Stdout)
				enc.SetIndent("", "  ")
				return enc.Encode(rep)
			}
			fmt.Printf("ddstore bench: %s\n%s; %.0f s\n\n", rep.Machine, rep.Cluster, rep.Seconds)
			rep.WriteTable(os.Stdout)
			return nil
		},
	}
	f := cmd.Flags()
	f.BoolVar(&quick, "quick", false, "smoke run: one 32MiB file of each kind, one run, 200 small files (under a minute)")
	f.StringVar(&sizes, "sizes", "", "comma-separated file sizes (default 64MiB,256MiB,1GiB)")
	f.IntVar(&cfg.Runs, "runs", 0, "repetitions of each measurement (default 3; sizes of 2GiB and more run once)")
	f.IntVar(&cfg.Clients, "clients", 0, "clients at once in the concurrency scenario (default 4)")
	f.IntVar(&cfg.SmallFiles, "small-files", 0, "files in the small-files scenario (default 2000)")
	f.StringVar(&cfg.MongoURI, "mongo-uri", "", "also measure the GridFS store and direct GridFS on this MongoDB")
	f.StringSliceVar(&cfg.Memcached, "memcached", nil, "memcached servers for the local nodes (default: start one if memcached is installed)")
	f.BoolVar(&cfg.NoMemcached, "no-memcached", false, "do not start a memcached for the local nodes")
	f.StringVar(&target, "target", "", "comma-separated API addresses of a running cluster to measure instead of a local one")
	f.IntVar(&cfg.FedFiles, "fed-files", 0, "small files in each of two peer clusters in the federation scenario (default 1000)")
	f.IntVar(&cfg.FedLookups, "fed-lookups", 0, "lookups of missing names counted in the federation scenario (default 2000)")
	f.BoolVar(&cfg.FederationOnly, "federation-only", false, "run only the federation scenario (three local clusters)")
	f.BoolVar(&cfg.S3Only, "s3-only", false, "run only the S3 gateway scenario (size: the largest of --sizes up to 1GiB)")
	f.BoolVar(&cfg.SourcesOnly, "sources-only", false, "run only the sources scenario: a download from 1 node against 3 at once, then with each node's link limited by tc (root; size: the largest of --sizes up to 1GiB)")
	f.StringVar(&cfg.LinkRate, "link-rate", "800mbit", "with --sources-only: each node's link rate, in tc's syntax")
	f.BoolVar(&cfg.TLSOnly, "tls-only", false, "run only the TLS scenario (a mutual-TLS and an insecure local cluster; size: the largest of --sizes up to 1GiB)")
	f.StringVar(&cfg.Store, "store", "", "chunk store of the local clusters' nodes: pack (default) or local")
	f.StringVar(&cfg.Dir, "dir", "", "work directory for generated files and local clusters (default: a temporary one)")
	f.StringVar(&out, "out", "", "write results.json and throughput.svg into this directory")
	return cmd
}
