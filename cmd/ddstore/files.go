package main

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"github.com/ddstore/ddstore/catalog"
	"io"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/ddstore/ddstore/client"
	pb "github.com/ddstore/ddstore/proto/ddstore/v1"
	"github.com/ddstore/ddstore/server/auth"
	"github.com/ddstore/ddstore/timerange"
	"github.com/schollz/progressbar/v3"
	"github.com/spf13/cobra"
	"golang.org/x/term"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
)

type globalFlags struct {
	addr    string
	json    bool
	stale   bool
	timeout time.Duration
	// callTimeout bounds one node's answer to a short call, progress a
	// transfer's silence on one node: then the next node is tried.
	callTimeout, progress time.Duration
	cluster               string // the cluster calls are meant for (--cluster of put, get, ls, stat, rm)

	ca, cert, key string // TLS: the cluster's CA, and an optional client certificate
	tokenFile     string // a client token (else DDSTORE_TOKEN)
}

// credentials turns the TLS and token flags into client options: TLS when a
// CA is given, a token from --token-file or DDSTORE_TOKEN.
func (g *globalFlags) credentials() ([]client.Option, error) {
	token := strings.TrimSpace(os.Getenv("DDSTORE_TOKEN"))
	if g.tokenFile != "" {
		raw, err := os.ReadFile(g.tokenFile)
		if err != nil {
			return nil, fmt.Errorf("--token-file: %w", err)
		}
		token = strings.TrimSpace(string(raw))
	}
	if g.ca == "" {
		if g.cert != "" || token != "" {
			return nil, usageError{errors.New("a client certificate or token needs the cluster's CA certificate (--ca or DDSTORE_CA) to talk TLS")}
		}
		return nil, nil
	}
	if (g.cert == "") != (g.key == "") {
		return nil, usageError{errors.New("--cert and --key go together")}
	}
	tc, err := auth.ClientTLS(g.ca, g.cert, g.key)
	if err != nil {
		return nil, err
	}
	opts := []client.Option{client.WithTLS(tc)}
	if token != "" {
		opts = append(opts, client.WithToken(token))
	}
	return opts, nil
}

// clusterFlag adds --cluster to a command that talks about files.
func (g *globalFlags) clusterFlag(cmd *cobra.Command, what string) *cobra.Command {
	cmd.Flags().StringVar(&g.cluster, "cluster", "", what+" (a peer of the cluster at --addr, or its own name to ask it alone)")
	return cmd
}

func (g *globalFlags) client() (*client.Client, error) {
	var addrs []string
	for _, a := range strings.Split(g.addr, ",") {
		if a = strings.TrimSpace(a); a != "" {
			addrs = append(addrs, a)
		}
	}
	if len(addrs) == 0 {
		return nil, usageError{errors.New("--addr names no node")}
	}
	opts := []client.Option{client.WithCallTimeout(g.callTimeout), client.WithProgressTimeout(g.progress)}
	if g.cluster != "" {
		opts = append(opts, client.WithCluster(g.cluster))
	}
	sec, err := g.credentials()
	if err != nil {
		return nil, err
	}
	return client.New(addrs, append(opts, sec...)...)
}

func (g *globalFlags) consistency() pb.Consistency {
	if g.stale {
		return pb.Consistency_CONSISTENCY_STALE
	}
	return pb.Consistency_CONSISTENCY_LINEARIZABLE
}

// session runs fn with a client and a context bounded by --timeout (or by
// def when --timeout is not set): the frame of every client command.
func (g *globalFlags) session(parent context.Context, def time.Duration, fn func(context.Context, *client.Client) error) error {
	c, err := g.client()
	if err != nil {
		return err
	}
	defer c.Close()
	ctx, cancel := g.ctx(parent, def)
	defer cancel()
	return asNoAnswer(g.addr, fn(ctx, c))
}

// ctx bounds a call by --timeout, or by def when --timeout is not set.
func (g *globalFlags) ctx(parent context.Context, def time.Duration) (context.Context, context.CancelFunc) {
	d := g.timeout
	if d == 0 {
		d = def
	}
	if d == 0 {
		return context.WithCancel(parent)
	}
	return context.WithTimeout(parent, d)
}

// printJSON writes one of the structs of jsonout.go as one indented JSON
// object (docs/JSON.md). Protocol buffer messages are refused: their JSON
// (protojson) is not the documented shape.
func printJSON(w io.Writer, v any) error {
	if _, ok := v.(proto.Message); ok {
		return fmt.Errorf("internal error: %T printed as protojson", v)
	}
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// progress returns a byte progress bar on stderr when it is a terminal and
// output is not JSON, else nil.
func progress(g *globalFlags, total int64, desc string) *progressbar.ProgressBar {
	if g.json || !term.IsTerminal(int(os.Stderr.Fd())) {
		return nil
	}
	return progressbar.NewOptions64(total,
		progressbar.OptionSetWriter(os.Stderr),
		progressbar.OptionSetDescription(desc),
		progressbar.OptionShowBytes(true),
		progressbar.OptionSetPredictTime(true),
		progressbar.OptionThrottle(100*time.Millisecond),
		progressbar.OptionShowCount(),
		progressbar.OptionOnCompletion(func() { fmt.Fprintln(os.Stderr) }),
		progressbar.OptionFullWidth(),
	)
}

func mbps(bytes int64, d time.Duration) float64 {
	if d <= 0 {
		return 0
	}
	return float64(bytes) / 1e6 / d.Seconds()
}

func newPutCmd(g *globalFlags) *cobra.Command {
	var (
		opts    client.PutOptions
		meta    []string
		retries int
		span    putRange
	)
	cmd := &cobra.Command{
		Use:   "put FILE [NAME]",
		Short: "Upload a file (- for standard input); re-running it sends only what is missing",
		Args:  cobra.RangeArgs(1, 2),
		RunE: func(cmd *cobra.Command, args []string) error {
			path, name := args[0], filepath.Base(args[0])
			if len(args) == 2 {
				name = args[1]
			} else if path == "-" {
				return usageError{errors.New("put: name the file when reading standard input: ddstore put - NAME")}
			}
			if opts.Date != "" {
				if err := catalog.ValidateDate(opts.Date); err != nil {
					return usageError{fmt.Errorf("put: --date %q: want a calendar day written YYYY-MM-DD", opts.Date)}
				}
			}
			if err := span.apply(&opts); err != nil {
				return err
			}
			for _, kv := range meta {
				k, v, ok := strings.Cut(kv, "=")
				if !ok || k == "" {
					return usageError{fmt.Errorf("put: --meta %q: want key=value", kv)}
				}
				if opts.Metadata == nil {
					opts.Metadata = map[string]string{}
				}
				opts.Metadata[k] = v
			}
			var in io.Reader = os.Stdin
			var size int64 = -1
			var seek io.Seeker
			if path != "-" {
				f, err := os.Open(path)
				if err != nil {
					return err
				}
				defer f.Close()
				if st, err := f.Stat(); err == nil && st.Mode().IsRegular() {
					size, seek = st.Size(), f
				}
				in = f
			}
			return g.session(cmd.Context(), 0, func(ctx context.Context, c *client.Client) error {
				bar := progress(g, size, "put "+name)
				if bar != nil {
					opts.Progress = func(done int64) { bar.Set64(done) }
				}
				var (
					res     *client.PutResult
					err     error
					retried int
				)
				notes := newRetryLog(os.Stderr, time.Now)
				for attempt := 0; ; attempt++ {
					src := span.scan(name, in, &opts) // a fresh scan of each attempt's read
					res, err = c.Put(ctx, name, src, opts)
					if err == nil || seek == nil || attempt >= retries || !client.Retryable(err) || ctx.Err() != nil {
						break
					}
					retried++
					msg := oneLine(err)
					var na noAnswer
					if errors.As(asNoAnswer(g.addr, err), &na) {
						msg = na.short()
					}
					notes.retry(msg)
					if _, serr := seek.Seek(0, io.SeekStart); serr != nil {
						break
					}
					if !sleepCtx(ctx, retryBackoff(attempt)) {
						break
					}
				}
				notes.flush()
				if bar != nil {
					bar.Finish()
				}
				if err != nil {
					return fmt.Errorf("put %s: %w", name, err)
				}
				if g.json {
					r := catalog.FileRange(res.Manifest)
					return printJSON(os.Stdout, putJSON{
						Name: name, Size: res.Size, Chunks: res.Chunks, ChunksSent: res.ChunksSent, ChunksKnown: res.ChunksKnown,
						BytesSent: res.BytesSent, Retries: retried, Seconds: res.Duration.Seconds(),
						Blake3: hex.EncodeToString(res.Manifest.GetBlake3()), Date: res.Manifest.GetDate(),
						TimeFrom: timerange.Format(r.From), TimeTo: timerange.Format(r.To), TimeSource: span.source(),
						Created: rfc3339(res.Manifest.GetCreatedUnixNano()),
					})
				}
				if s := span.found(); s != "" {
					fmt.Println(s)
				}
				fmt.Printf("stored %s: %s in %d chunks; sent %d chunks (%s), %d already stored; %.1f MB/s\n",
					name, humanSize(res.Size), res.Chunks, res.ChunksSent, humanSize(res.BytesSent), res.ChunksKnown, mbps(res.Size, res.Duration))
				return nil
			})
		},
	}
	cmd.Flags().StringVar(&opts.Date, "date", "", "calendar day the file's data covers, YYYY-MM-DD (default: the range read from the data, else today)")
	cmd.Flags().StringVar(&span.from, "from", "", "start of the UTC time range the file's data covers: RFC 3339 (2018-04-13T00:00:00Z, 2018-04-13T00:00Z) or a day (its start); with --to")
	cmd.Flags().StringVar(&span.to, "to", "", "end of the time range, inclusive: RFC 3339 or a day (its end)")
	cmd.Flags().BoolVar(&span.fromData, "time-from-data", false, "read the time range from the data while uploading (Mesonet header, CSV timestamp column); without --date/--from/--to this is tried anyway, and a file with no times gets today")
	cmd.Flags().StringVar(&span.column, "time-column", "", "CSV column holding the observation times (implies --time-from-data)")
	cmd.Flags().StringArrayVar(&meta, "meta", nil, "user metadata key=value (repeatable)")
	cmd.Flags().BoolVar(&opts.Overwrite, "overwrite", false, "replace an existing file of that name")
	cmd.Flags().IntVar(&retries, "retries", 3, "retries after a node becomes unavailable (files only)")
	return cmd
}

func newGetCmd(g *globalFlags) *cobra.Command {
	var (
		resume   bool
		force    bool
		span     client.ListOptions
		parallel int
		sources  int
	)
	cmd := &cobra.Command{
		Use:   "get NAME [FILE] | get --from T1 --to T2 DIR",
		Short: "Download a file (FILE - for standard output; --resume continues a partial download), or every file of a time range into DIR",
		Long: `Download NAME into FILE (default: the last part of NAME; - for standard output),
every chunk verified. An existing FILE is refused (exit 2) unless --force
(overwrite it) or --resume (keep its verified chunks, fetch the rest).
Ctrl-C keeps what arrived, prints the command that resumes
(ddstore get --resume NAME FILE) and exits 130.

With --from/--to, every file of this cluster and its peers whose time range
overlaps is downloaded into DIR; a rerun skips the files already there and
verified, and resumes partial ones.`,
		Args: cobra.RangeArgs(1, 2),
		RunE: func(cmd *cobra.Command, args []string) error {
			if span.DateFrom != "" || span.DateTo != "" {
				if len(args) != 1 || resume {
					return usageError{errors.New("get --from/--to: name one directory (ddstore get --from T1 --to T2 DIR); a rerun resumes by itself")}
				}
				if _, err := timerange.Parse(span.DateFrom, span.DateTo); err != nil {
					return usageError{fmt.Errorf("get: --from/--to: %s", syntaxMessage(err))}
				}
				if parallel < 1 {
					return usageError{errors.New("get: --parallel must be at least 1")}
				}
				span.Consistency = g.consistency()
				rg := &rangeGet{g: g, dir: args[0], parallel: parallel}
				return g.session(cmd.Context(), 0, func(ctx context.Context, c *client.Client) error {
					return rg.run(ctx, c, span)
				})
			}
			name, path := args[0], filepath.Base(args[0])
			if len(args) == 2 {
				path = args[1]
			}
			if sources < 0 || sources > pb.MaxDownloadStep {
				return usageError{fmt.Errorf("get: --sources must be between 0 (automatic) and %d", pb.MaxDownloadStep)}
			}
			if path != "-" && !resume && !force {
				if _, err := os.Lstat(path); err == nil {
					return usageError{fmt.Errorf("get: %s exists: give --force to overwrite it, or --resume to finish a partial download of %s", path, name)}
				}
			}
			return g.session(cmd.Context(), 0, func(ctx context.Context, c *client.Client) error {
				opts := client.GetOptions{Consistency: g.consistency(), Sources: sources}
				var bar *progressbar.ProgressBar
				opts.Progress = func(done, total int64) {
					if bar == nil {
						bar = progress(g, total, "get "+name)
						if bar == nil {
							opts.Progress = nil
							return
						}
					}
					bar.Set64(done)
				}
				var (
					res *client.GetResult
					err error
				)
				if path == "-" {
					if resume {
						return usageError{errors.New("get: --resume needs an output file, not standard output")}
					}
					opts.Progress = nil
					res, err = c.Get(ctx, name, os.Stdout, opts)
				} else {
					res, err = c.GetFile(ctx, name, path, resume, opts)
				}
				if bar != nil {
					bar.Finish()
				}
				if err != nil {
					if cmd.Context().Err() != nil && path != "-" && res != nil {
						// Interrupted (Ctrl-C, SIGTERM): the verified part stays.
						return interruptedError{fmt.Errorf("get %s: interrupted; what arrived is kept in %s: resume with ddstore get --resume %s %s",
							name, path, shellQuote(name), shellQuote(path))}
					}
					return fmt.Errorf("get %s: %w", name, err)
				}
				size := int64(res.Manifest.GetSize())
				if g.json {
					return printJSON(os.Stdout, getJSON{
						Name: name, Path: path, Size: uint64(size), Blake3: hex.EncodeToString(res.Manifest.GetBlake3()), ResumedAtChunk: res.ResumedAt,
						KeptBytes: res.KeptBytes, BytesReceived: res.BytesReceived, Seconds: res.Duration.Seconds(),
					})
				}
				if path != "-" {
					fmt.Fprintf(os.Stderr, "got %s: %s, verified; %s%.1f MB/s\n", name, humanSize(size),
						resumedNote(res), mbps(size-res.KeptBytes, res.Duration))
				}
				return nil
			})
		},
	}
	cmd.Flags().BoolVar(&resume, "resume", false, "keep the verified chunks of a partial FILE and fetch the rest")
	cmd.Flags().BoolVar(&force, "force", false, "overwrite FILE if it exists (without --force or --resume an existing FILE is refused)")
	cmd.Flags().StringVar(&span.DateFrom, "from", "", "download every file whose time range ends at or after this time (RFC 3339 or a day) into DIR")
	cmd.Flags().StringVar(&span.DateTo, "to", "", "... and starts at or before this time (RFC 3339 or a day, its end)")
	cmd.Flags().IntVar(&parallel, "parallel", 4, "with --from/--to: files downloaded at a time")
	cmd.Flags().IntVar(&sources, "sources", 0, fmt.Sprintf("nodes read from at once, each sending every n-th chunk, at most the --addr nodes given and %d (0: %d, or 1 when every --addr is a loopback address)", pb.MaxDownloadStep, client.DefaultSources))
	return cmd
}

func resumedNote(res *client.GetResult) string {
	if res.KeptBytes == 0 {
		return ""
	}
	return fmt.Sprintf("resumed at chunk %d, kept %s; ", res.ResumedAt, humanSize(res.KeptBytes))
}

func newLsCmd(g *globalFlags) *cobra.Command {
	var opts client.ListOptions
	cmd := &cobra.Command{
		Use:   "ls [PREFIX]",
		Short: "List files",
		Args:  cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(args) == 1 {
				opts.Prefix = args[0]
			}
			opts.Consistency = g.consistency()
			if _, err := timerange.Parse(opts.DateFrom, opts.DateTo); err != nil {
				return usageError{fmt.Errorf("ls: --from/--to: %s", syntaxMessage(err))}
			}
			return g.session(cmd.Context(), 30*time.Second, func(ctx context.Context, c *client.Client) error {
				listing, err := c.List(ctx, opts)
				if err != nil {
					return fmt.Errorf("ls: %w", err)
				}
				for _, n := range listing.Unanswered {
					fmt.Fprintf(os.Stderr, "ddstore: ls: cluster %s did not answer; its files are missing here: %s\n", n.GetCluster(), n.GetError())
				}
				if g.json {
					return printJSON(os.Stdout, listJSON(listing.Files, listing.Truncated, listing.Unanswered))
				}
				tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "NAME\tCLUSTER\tSIZE\tSTORED\tCHUNKS\tDATE\tRANGE\tCREATED")
				for _, f := range listing.Files {
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%s\t%s\t%s\n", f.GetName(), f.GetCluster(), humanSize(int64(f.GetSize())), humanSize(int64(f.GetStoredSize())), f.GetChunks(),
						f.GetDate(), rangeText(catalog.InfoRange(f)), time.Unix(0, f.GetCreatedUnixNano()).UTC().Format(time.RFC3339))
				}
				return tw.Flush()
			})
		},
	}
	cmd.Flags().StringVar(&opts.DateFrom, "from", "", "only files whose time range ends at or after this time: RFC 3339 (2018-04-13T00:00Z) or a day (its start)")
	cmd.Flags().StringVar(&opts.DateTo, "to", "", "only files whose time range starts at or before this time: RFC 3339 or a day (its end)")
	return cmd
}

func newStatCmd(g *globalFlags) *cobra.Command {
	return &cobra.Command{
		Use:   "stat NAME",
		Short: "Show a file's manifest",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return g.session(cmd.Context(), 30*time.Second, func(ctx context.Context, c *client.Client) error {
				resp, err := c.Lookup(ctx, args[0], g.consistency())
				if err != nil {
					return fmt.Errorf("stat %s: %w", args[0], err)
				}
				m := resp.GetManifest()
				if g.json {
					return printJSON(os.Stdout, statOf(m, resp.GetCluster()))
				}
				fmt.Printf("name:    %s\ncluster: %s\nsize:    %s (%d bytes)\nstored:  %s (%d bytes)\nchunks:  %d\nblake3:  %x\ndate:    %s\nrange:   %s\ncreated: %s\n",
					m.GetName(), resp.GetCluster(), humanSize(int64(m.GetSize())), m.GetSize(), humanSize(int64(m.GetStoredSize())), m.GetStoredSize(), len(m.GetChunks()), m.GetBlake3(), m.GetDate(), rangeText(catalog.FileRange(m)),
					time.Unix(0, m.GetCreatedUnixNano()).UTC().Format(time.RFC3339Nano))
				for k, v := range m.GetMetadata() {
					fmt.Printf("meta:    %s=%s\n", k, v)
				}
				return nil
			})
		},
	}
}

func newRmCmd(g *globalFlags) *cobra.Command {
	return &cobra.Command{
		Use:   "rm NAME...",
		Short: "Delete files",
		Long: `Delete each named file. Prints one line per file removed (--json: one object
listing removed, not_found and failed names); each name not removed gets one
line on stderr, and the exit status is 1 if any was not removed.`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return g.session(cmd.Context(), 30*time.Second, func(ctx context.Context, c *client.Client) error {
				out := rmJSON{Removed: []string{}, NotFound: []string{}, Failed: []nameErrorJSON{}}
				for _, name := range args {
					err := c.Delete(ctx, name)
					switch {
					case err == nil:
						out.Removed = append(out.Removed, name)
						if !g.json {
							fmt.Printf("removed %s\n", name)
						}
						continue
					case status.Code(err) == codes.NotFound:
						out.NotFound = append(out.NotFound, name)
					case ctx.Err() != nil || !perFile(err):
						return fmt.Errorf("rm %s: %w", name, err) // the cluster, not the file: no use going on
					default:
						out.Failed = append(out.Failed, nameErrorJSON{Name: name, Error: oneLine(err)})
					}
					fmt.Fprintf(os.Stderr, "ddstore: rm %s: %s\n", name, oneLine(err))
				}
				if g.json {
					if err := printJSON(os.Stdout, out); err != nil {
						return err
					}
				}
				if n := len(out.NotFound) + len(out.Failed); n > 0 {
					return reportedError{fmt.Errorf("rm: %d of %d files not removed", n, len(args))}
				}
				return nil
			})
		},
	}
}

func newStatusCmd(g *globalFlags) *cobra.Command {
	var wait int
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Show the cluster: nodes, leader, term, applied index, store usage, limits",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return g.session(cmd.Context(), 30*time.Second, func(ctx context.Context, c *client.Client) error {
				st, err := c.Status(ctx)
				for wait > 0 && !ready(st, err, wait) {
					select {
					case <-ctx.Done():
						return fmt.Errorf("status: no leader with %d members answering (%v): %w", wait, err, ctx.Err())
					case <-time.After(250 * time.Millisecond):
					}
					st, err = c.Status(ctx)
				}
				if err != nil {
					return fmt.Errorf("status: %w", err)
				}
				if g.json {
					return printJSON(os.Stdout, statusOf(st))
				}
				fmt.Printf("cluster: %s  leader: %s  term: %d  replicas: %d  files: %d  size: %s\n",
					st.GetCluster(), orNone(st.GetLeaderId()), st.GetTerm(), st.GetReplicas(), st.GetFiles(), humanSize(int64(st.GetBytes())))
				return printStatus(os.Stdout, st)
			})
		},
	}
	cmd.Flags().IntVar(&wait, "wait", 0, "first wait (within --timeout, default 30s) until the cluster has a leader and this many members answering")
	return cmd
}

// ready reports whether a status shows a leader and at least want members
// answering.
func ready(st *pb.StatusResponse, err error, want int) bool {
	if err != nil || st.GetLeaderId() == "" {
		return false
	}
	up := 0
	for _, n := range st.GetNodes() {
		if n.GetState() != "unreachable" && n.GetState() != "unknown" {
			up++
		}
	}
	return up >= want
}

// printStatus writes a cluster's status as tables: nodes, peer clusters,
// federation counters, cache tiers, healing.
func printStatus(w io.Writer, st *pb.StatusResponse) error {
	var nodes, peers, fed, cache, heal, limits [][]any
	for _, n := range st.GetNodes() {
		note := n.GetError()
		if why := n.GetNotServing(); why != "" {
			// The node answers but cannot do its job (health NOT_SERVING).
			note = strings.TrimPrefix(note+"; NOT SERVING: "+why, "; ")
		}
		nodes = append(nodes, []any{n.GetId(), n.GetState(), n.GetApiAddr(), orNone(n.GetPublicAddr()), n.GetRaftAddr(), n.GetTerm(),
			n.GetAppliedIndex(), n.GetCommitIndex(), n.GetStore(), n.GetChunks(), humanSize(int64(n.GetStoredBytes())), note})
		if f := n.GetFederation(); f != nil {
			fed = append(fed, []any{n.GetId(), f.GetLookups(), f.GetPeerCalls(), f.GetFilterSkips(), f.GetServedForwarded()})
		}
		for _, t := range n.GetCache() {
			cache = append(cache, []any{n.GetId(), t.GetTier(), t.GetHits(), t.GetMisses(), humanSize(int64(t.GetBytesServed())), t.GetEntries(),
				t.GetEvictions(), t.GetSkipped(), t.GetErrors(), t.GetCorrupt()})
		}
		if l := n.GetLimits(); l != nil {
			limits = append(limits, []any{n.GetId(), l.GetOpenStreams(), l.GetPeakStreams(), l.GetRefusedStreams(), l.GetIdleClosed(),
				l.GetRefusedHeavy(), l.GetRefusedMemory(), l.GetDenied()})
		}
		if h := n.GetHeal(); h != nil {
			heal = append(heal, []any{n.GetId(), h.GetScrubbedChunks(), h.GetScrubCorrupt(), h.GetScrubPasses(), h.GetRepairedCopies(),
				h.GetLostChunks(), h.GetGcDeleted()})
		}
	}
	for _, p := range st.GetPeers() {
		peers = append(peers, []any{p.GetName(), p.GetReachable(), orNone(p.GetLeaderId()), orNone(p.GetLeaderAddr()), p.GetFilterVersion(),
			age(p.GetFilterAgeMs()), age(p.GetLastContactMs()), orNone(strings.Join(p.GetBeyond(), ",")), strings.Join(p.GetAddrs(), ","), p.GetError()})
	}
	tables := []struct {
		header string
		rows   [][]any
	}{
		{"NODE\tSTATE\tAPI\tPUBLIC\tRAFT\tTERM\tAPPLIED\tCOMMIT\tSTORE\tCHUNKS\tSTORED\tNOTE", nodes},
		{"PEER CLUSTER\tREACHABLE\tLEADER\tLEADER ADDR\tFILTER VERSION\tFILTER AGE\tLAST CONTACT\tBEYOND\tADDRESSES\tNOTE", peers},
		{"NODE\tLOOKUPS FORWARDED\tPEER CALLS\tFILTER SKIPS\tSERVED FOR PEERS", fed},
		{"NODE\tCACHE TIER\tHITS\tMISSES\tBYTES SERVED\tENTRIES\tEVICTIONS\tSKIPPED\tERRORS\tCORRUPT", cache},
		{"NODE\tSCRUBBED\tCORRUPT FOUND\tSCRUB PASSES\tREPAIRED COPIES\tLOST\tGC DELETED", heal},
		{"NODE\tOPEN STREAMS\tPEAK STREAMS\tREFUSED STREAMS\tIDLE CLOSED\tREFUSED GC/REPAIR\tOUT OF MEMORY\tDENIED CALLS", limits},
	}
	for i, t := range tables {
		if len(t.rows) == 0 && i > 0 {
			continue
		}
		if i > 0 {
			fmt.Fprintln(w)
		}
		tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, t.header)
		for _, row := range t.rows {
			for j, cell := range row {
				if j > 0 {
					fmt.Fprint(tw, "\t")
				}
				fmt.Fprint(tw, cell)
			}
			fmt.Fprintln(tw)
		}
		if err := tw.Flush(); err != nil {
			return err
		}
	}
	return nil
}

func newGCCmd(g *globalFlags) *cobra.Command {
	var dryRun, now bool
	cmd := &cobra.Command{
		Use:   "gc",
		Short: "Collect chunks no file refers to (after the cluster's grace period, or --now)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return g.session(cmd.Context(), 10*time.Minute, func(ctx context.Context, c *client.Client) error {
				resp, err := c.CollectWith(ctx, client.CollectOptions{DryRun: dryRun, Now: now})
				if err != nil {
					return fmt.Errorf("gc: %w", err)
				}
				if g.json {
					return printJSON(os.Stdout, gcOf(resp))
				}
				verb := "deleted"
				if dryRun {
					verb = "would delete"
				}
				fmt.Printf("%d unreferenced chunks; %d unreferenced for longer than %s (%s); %s %d copies\n",
					resp.GetUnreferenced(), resp.GetEligible(), resp.GetGrace(), humanSize(int64(resp.GetEligibleBytes())), verb,
					map[bool]uint64{true: resp.GetEligible(), false: resp.GetDeletedCopies()}[dryRun])
				if p := resp.GetPinned(); p > 0 {
					fmt.Printf("%d unreferenced chunks spared: uploads in progress rely on them\n", p)
				}
				return nil
			})
		},
	}
	cmd.Flags().BoolVar(&dryRun, "dry-run", false, "only report what would be deleted")
	cmd.Flags().BoolVar(&now, "now", false, "collect every chunk unreferenced now, without waiting out the grace period (admin); chunks uploads in progress rely on are spared")
	return cmd
}

func newRepairCmd(g *globalFlags) *cobra.Command {
	return &cobra.Command{
		Use:   "repair",
		Short: "Bring every chunk back to R copies on live nodes now",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return g.session(cmd.Context(), time.Hour, func(ctx context.Context, c *client.Client) error {
				resp, err := c.Repair(ctx)
				if err != nil {
					return fmt.Errorf("repair: %w", err)
				}
				if g.json {
					if err := printJSON(os.Stdout, repairOf(resp)); err != nil {
						return err
					}
				} else {
					fmt.Printf("checked %d chunks: %d under-replicated, %d copies made, %d lost\n",
						resp.GetChunksChecked(), resp.GetUnderReplicated(), resp.GetCopiesMade(), resp.GetLost())
				}
				if resp.GetLost() > 0 {
					return fmt.Errorf("repair: %d chunks are on no live node", resp.GetLost())
				}
				return nil
			})
		},
	}
}

func orNone(s string) string {
	if s == "" {
		return "(none)"
	}
	return s
}

func newJoinCmd(g *globalFlags) *cobra.Command {
	return &cobra.Command{
		Use:   "join ID API_ADDR RAFT_ADDR",
		Short: "Add a running node to an insecure cluster (nodes started with --join do this themselves; with TLS only a node's own certificate may join it)",
		Args:  cobra.ExactArgs(3),
		RunE: func(cmd *cobra.Command, args []string) error {
			return g.session(cmd.Context(), 30*time.Second, func(ctx context.Context, c *client.Client) error {
				if err := c.Join(ctx, args[0], args[1], args[2]); err != nil {
					return fmt.Errorf("join %s: %w", args[0], err)
				}
				if g.json {
					return printJSON(os.Stdout, joinJSON{ID: args[0], APIAddr: args[1], RaftAddr: args[2]})
				}
				fmt.Printf("node %s joined (API %s, Raft %s)\n", args[0], args[1], args[2])
				return nil
			})
		},
	}
}

func newLeaveCmd(g *globalFlags) *cobra.Command {
	return &cobra.Command{
		Use:   "leave ID",
		Short: "Remove a node from the cluster",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return g.session(cmd.Context(), 30*time.Second, func(ctx context.Context, c *client.Client) error {
				if err := c.Leave(ctx, args[0]); err != nil {
					return fmt.Errorf("leave %s: %w", args[0], err)
				}
				if g.json {
					return printJSON(os.Stdout, leaveJSON{ID: args[0]})
				}
				fmt.Printf("node %s left the cluster\n", args[0])
				return nil
			})
		},
	}
}

// age renders milliseconds since something, or "never" for -1.
func age(ms int64) string {
	if ms < 0 {
		return "never"
	}
	return (time.Duration(ms) * time.Millisecond).Round(100 * time.Millisecond).String()
}

func newReplicateCmd(g *globalFlags) *cobra.Command {
	var (
		to        string
		overwrite bool
	)
	cmd := &cobra.Command{
		Use:   "replicate NAME --to CLUSTER",
		Short: "Copy a file to a peer cluster, sending only the chunks it lacks",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if to == "" {
				return usageError{errors.New("replicate: --to names no cluster")}
			}
			return g.session(cmd.Context(), 0, func(ctx context.Context, c *client.Client) error {
				resp, err := c.Replicate(ctx, args[0], to, overwrite)
				if err != nil {
					return fmt.Errorf("replicate: %w", err)
				}
				if g.json {
					return printJSON(os.Stdout, replicateOf(args[0], to, resp))
				}
				fmt.Printf("replicated %s to cluster %s: %d chunks, %d certainly absent there (filter), %d checked exactly, %d sent (%s)\n",
					args[0], to, resp.GetChunks(), resp.GetFilterAbsent(), resp.GetChecked(), resp.GetSentChunks(), humanSize(int64(resp.GetSentBytes())))
				return nil
			})
		},
	}
	cmd.Flags().StringVar(&to, "to", "", "the peer cluster to copy the file to")
	cmd.Flags().BoolVar(&overwrite, "overwrite", false, "replace a file of that name there")
	return cmd
}

// perFile reports whether a failure concerns one file (its name, its
// prefix's permission) rather than the cluster or the connection.
func perFile(err error) bool {
	switch status.Code(err) {
	case codes.Unavailable, codes.Unauthenticated, codes.DeadlineExceeded, codes.Canceled:
		return false
	}
	return true
}
