package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"runtime/debug"
	"strings"
	"time"

	"github.com/ddstore/ddstore/replica"
	"github.com/ddstore/ddstore/replica/ferretpg"
	"github.com/ddstore/ddstore/server"
	"github.com/ddstore/ddstore/server/auth"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"gopkg.in/yaml.v3"
)

func newServerCmd() *cobra.Command {
	var (
		cfg        server.Config
		join       []string
		peers      []string
		configFile string
		logLevel   string
		logFormat  string
		ferretPG   string
		sec        securityFlags
	)
	cmd := &cobra.Command{
		Use:   "server",
		Short: "Run a ddstore node",
		Long: `Run a ddstore node until SIGINT or SIGTERM.

Every flag can also be set in the environment as DDSTORE_<FLAG> (upper case,
dashes as underscores, e.g. DDSTORE_DATA_DIR) or in a YAML config file given
with --config, whose keys are the flag names (data-dir: /var/lib/ddstore).
A flag on the command line wins over the environment, which wins over the file.

Start a new cluster with --bootstrap on its first node; start the others with
--join pointing at any member.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := applyEnvAndFile(cmd.Flags(), configFile); err != nil {
				return usageError{err}
			}
			logger, err := newLogger(os.Stderr, logLevel, logFormat)
			if err != nil {
				return usageError{err}
			}
			cfg.Logger = logger
			cfg.Join = join
			if cfg.Peers, err = parsePeers(peers); err != nil {
				return usageError{err}
			}
			if err := sec.apply(&cfg); err != nil {
				return err
			}
			switch {
			case cfg.Store != "local" && cfg.Store != "pack" && cfg.Store != "gridfs":
				return usageError{fmt.Errorf("--store %q: want pack, local or gridfs", cfg.Store)}
			case cfg.Store == "gridfs" && cfg.MongoURI == "":
				return usageError{errors.New("--store gridfs needs --mongo-uri")}
			case ferretPG != "" && cfg.Store != "gridfs":
				return usageError{errors.New("--ferretdb-postgres is for --store gridfs on FerretDB")}
			case cfg.Replicas < 1:
				return usageError{fmt.Errorf("--replicas %d: want at least 1", cfg.Replicas)}
			case cfg.ID == "":
				return usageError{errors.New("--id must not be empty")}
			}
			if cfg.CacheSize == 0 {
				cfg.CacheSize = -1 // --cache-size 0: no in-process tier
			}
			if cfg.DataDir == "" {
				cfg.DataDir = filepath.Join(defaultDataRoot(), cfg.ID)
			}
			if abs, err := filepath.Abs(cfg.DataDir); err == nil {
				cfg.DataDir = abs // logged and reported as the node will use it
			}
			return runServer(cmd.Context(), cfg, ferretPG)
		},
	}
	f := cmd.Flags()
	f.StringVar(&configFile, "config", "", "YAML config file (keys are flag names)")
	f.StringVar(&cfg.ID, "id", hostnameOr("node1"), "node ID, unique in the cluster")
	f.StringVar(&cfg.APIAddr, "listen", "127.0.0.1:7400", "gRPC API address to listen on")
	f.StringVar(&cfg.RaftAddr, "raft-addr", "127.0.0.1:7401", "Raft address to listen on and advertise")
	f.StringVar(&cfg.Advertise, "advertise", "", "API address to tell others (default: --listen)")
	f.StringVar(&cfg.DataDir, "data-dir", "", "where the node keeps its data (default /var/lib/ddstore/<id> as root, else $XDG_DATA_HOME/ddstore/<id> or ~/.local/share/ddstore/<id>)")
	f.BoolVar(&cfg.Bootstrap, "bootstrap", false, "form a new cluster with this node, if it has no state yet")
	f.StringSliceVar(&join, "join", nil, "API addresses of existing members to join through")
	f.StringVar(&cfg.Cluster, "cluster", "ddstore", "this cluster's name, the same on all its nodes")
	f.StringVar(&cfg.HTTPAddr, "metrics", "", "HTTP address for /metrics (Prometheus), /healthz, /readyz and the web console at /; HTTPS with the node's certificate when it has one (a non-loopback address needs TLS or --insecure); empty: no HTTP listener")
	f.BoolVar(&cfg.Pprof, "pprof", false, "serve net/http/pprof at /debug/pprof/ on the --metrics listener")
	f.StringVar(&cfg.Public, "public", "", "public address to listen on as a gateway for peer clusters and outside clients (default: the API address serves them)")
	f.BoolVar(&cfg.Private, "private", false, "the API address is on a private network: without --public, peer clusters are not told it")
	f.StringSliceVar(&peers, "peer", nil, "peer cluster as NAME=ADDR (repeat, or comma-separate, for more addresses and clusters)")
	f.Float64Var(&cfg.FilterFPRate, "filter-fp-rate", 0.01, "false-positive rate the Bloom filters are sized for")
	f.DurationVar(&cfg.FilterRefresh, "filter-refresh", 2*time.Second, "how often peer clusters' filters are pulled (only changed ones travel)")
	f.DurationVar(&cfg.PeerTimeout, "peer-timeout", 5*time.Second, "bound on one call to a peer cluster")
	f.BoolVar(&cfg.VerifyReads, "verify-reads", false, "check every chunk this node sends in a download against its ID (by default the client does, and asks again for a bad one; scrub checks data at rest)")
	f.DurationVar(&cfg.NodeTimeout, "node-timeout", 2*time.Second, "bound on one call to another node of this cluster; a node that misses it is skipped (copies and reads go elsewhere) and avoided for 10s")
	f.DurationVar(&cfg.HeartbeatTimeout, "raft-heartbeat-timeout", server.DefaultHeartbeatTimeout, "a follower that hears nothing from the leader for this long (up to twice it) stands for election")
	f.DurationVar(&cfg.ElectionTimeout, "raft-election-timeout", server.DefaultElectionTimeout, "how long a candidate waits for votes before trying again")
	f.DurationVar(&cfg.LeaderLeaseTimeout, "raft-leader-lease", server.DefaultLeaderLeaseTimeout, "a leader that reaches no majority for this long steps down (at most --raft-heartbeat-timeout)")
	f.IntVar(&cfg.HopLimit, "hop-limit", 3, "how many times a request may pass from cluster to cluster")
	f.BoolVar(&cfg.AlwaysMaybe, "ignore-filters", false, "ask every peer cluster, whatever its filters say (for measurements)")
	f.StringVar(&cfg.Store, "store", "pack", "chunk store: pack (chunks appended to pack files, one fsync for many writes; converts a directory of the local store at first start, one way), local (a file per chunk) or gridfs")
	f.StringVar(&cfg.MongoURI, "mongo-uri", "", "MongoDB URI for the gridfs store")
	f.StringVar(&cfg.MongoDB, "mongo-db", "", "MongoDB database for the gridfs store (default ddstore_<id>)")
	f.StringVar(&ferretPG, "ferretdb-postgres", "", "FerretDB's PostgreSQL database (postgres://user@host/ferretdb) when --mongo-uri is FerretDB on PostgreSQL: once the store is open, give its tables the indexes reads need, as ddstore gridfs index does")
	f.IntVar(&cfg.Replicas, "replicas", 3, "copies of each chunk (capped at the cluster size)")
	f.DurationVar(&cfg.ShutdownGrace, "shutdown-grace", 10*time.Second, "how long open streams may finish at shutdown")
	f.Int64Var(&cfg.CacheSize, "cache-size", 256<<20, "bytes of the in-process chunk cache (0 disables it)")
	f.StringSliceVar(&cfg.Memcached, "memcached", nil, "memcached servers (host:port) for the second cache tier")
	f.IntVar(&cfg.MemcachedMaxItem, "memcached-max-item", 1<<20, "memcached's item-size limit (its -I); larger chunks are not cached")
	f.DurationVar(&cfg.MemcachedTimeout, "memcached-timeout", 2*time.Second, "timeout of one memcached call")
	f.Int64Var(&cfg.CacheMaxFile, "cache-max-file", 0, "downloads of files storing more than this many bytes neither fill the cache tiers nor ask memcached: a scan of a large file would push out what is hot and gain nothing (0: a quarter of --cache-size, at least 64 MiB; negative: no limit)")
	f.DurationVar(&cfg.RepairInterval, "repair-interval", time.Minute, "how often the leader restores R copies of every chunk (negative disables)")
	f.Int64Var(&cfg.RepairRate, "repair-rate", 64<<20, "bytes per second repair may copy")
	f.DurationVar(&cfg.ScrubInterval, "scrub-interval", 24*time.Hour, "pause between passes re-hashing every stored chunk (negative disables)")
	f.Int64Var(&cfg.ScrubRate, "scrub-rate", 32<<20, "bytes per second scrub may read")
	f.DurationVar(&cfg.GCInterval, "gc-interval", 10*time.Minute, "how often the leader collects unreferenced chunks (negative disables)")
	f.DurationVar(&cfg.GCGrace, "gc-grace", time.Hour, "how long a chunk stays unreferenced before it is collected")
	f.DurationVar(&cfg.WriteCheckInterval, "write-check-interval", time.Second, "how often the node checks that its store has room for a chunk and its Raft log takes entries; health is NOT_SERVING while not (negative disables the check)")
	f.IntVar(&cfg.RaftLogSegmentSize, "raft-log-segment-size", 64<<20, "bytes of each Raft log segment file, preallocated when the log moves on to it")
	f.StringVar(&logLevel, "log-level", "info", "debug, info, warn or error")
	f.StringVar(&logFormat, "log-format", "text", "text (key=value lines) or json (one object per line)")
	sec.register(f, &cfg)
	return cmd
}

// securityFlags are the server's TLS, peer trust and limit flags.
type securityFlags struct {
	ca, cert, key string
	peerCAs       []string
	peerAllow     []string
}

func (s *securityFlags) register(f *pflag.FlagSet, cfg *server.Config) {
	f.StringVar(&s.ca, "tls-ca", "", "this cluster's CA certificate (ddstore cert ca); with --tls-cert and --tls-key every link is mutual TLS")
	f.StringVar(&s.cert, "tls-cert", "", "this node's certificate (ddstore cert node)")
	f.StringVar(&s.key, "tls-key", "", "this node's private key")
	f.StringSliceVar(&s.peerCAs, "peer-ca", nil, "CA certificate trusted for a peer cluster, as NAME=FILE (repeat for more); a cluster that only calls this one needs it too")
	f.StringSliceVar(&s.peerAllow, "peer-allow", nil, "what a peer cluster's forwarded calls may do here, as NAME=read|write|none[:PREFIX] (default read, all names)")
	f.BoolVar(&cfg.Insecure, "insecure", false, "allow plain text (no TLS, no authentication) on non-loopback addresses: anyone who reaches the node can do anything")
	f.DurationVar(&cfg.Limits.IdleTimeout, "stream-idle-timeout", 60*time.Second, "close a stream that moves no bytes for this long")
	f.IntVar(&cfg.Limits.StreamsPerCaller, "max-streams-per-client", 64, "concurrent streams one client (principal) may hold open")
	f.IntVar(&cfg.Limits.Streams, "max-streams", 1024, "concurrent streams the node serves in all")
	f.IntVar(&cfg.Limits.HeavyPerCaller, "max-heavy-per-client", 1, "concurrent gc/repair runs one client may start")
	f.Uint32Var(&cfg.MaxStreamsPerConn, "max-streams-per-conn", 256, "concurrent streams of one connection (gRPC MaxConcurrentStreams)")
	f.Int64Var(&cfg.StreamMemory, "stream-memory", 128<<20, "bytes of chunk data held for all open client streams together")
	f.Int64Var(&cfg.StreamMemoryPerCaller, "stream-memory-per-client", 0, "the most of --stream-memory one client may hold (default a quarter, at least 32 MiB); a stream that waits --stream-idle-timeout for memory fails")
}

// apply loads the certificates and peer policies into cfg.
func (s *securityFlags) apply(cfg *server.Config) error {
	peerCAs := map[string]string{}
	for _, e := range s.peerCAs {
		name, file, ok := strings.Cut(e, "=")
		if !ok || name == "" || file == "" {
			return usageError{fmt.Errorf("--peer-ca %q: want NAME=FILE", e)}
		}
		peerCAs[name] = file
	}
	for _, e := range s.peerAllow {
		name, rest, ok := strings.Cut(e, "=")
		role, prefix, _ := strings.Cut(rest, ":")
		if !ok || name == "" {
			return usageError{fmt.Errorf("--peer-allow %q: want NAME=read|write|none[:PREFIX]", e)}
		}
		var r auth.Role
		if role != "none" {
			var err error
			if r, err = auth.ParseRole(role); err != nil || r == auth.RoleAdmin {
				return usageError{fmt.Errorf("--peer-allow %q: the role must be read, write or none", e)}
			}
		}
		if cfg.PeerPolicies == nil {
			cfg.PeerPolicies = map[string]server.PeerPolicy{}
		}
		cfg.PeerPolicies[name] = server.PeerPolicy{Role: r, Prefix: prefix}
	}
	switch set := btoi(s.ca != "") + btoi(s.cert != "") + btoi(s.key != ""); {
	case set == 0:
		if len(peerCAs) > 0 {
			return usageError{errors.New("--peer-ca needs this node's own certificates (--tls-ca, --tls-cert, --tls-key)")}
		}
		return nil
	case set < 3:
		return usageError{errors.New("TLS needs all three of --tls-ca, --tls-cert and --tls-key")}
	}
	if cfg.Insecure {
		return usageError{errors.New("--insecure and --tls-* contradict each other")}
	}
	trust, err := auth.LoadTrust(cfg.Cluster, s.ca, s.cert, s.key, peerCAs)
	if err != nil {
		return err
	}
	cfg.TLS = trust
	return nil
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}

// parsePeers reads NAME=ADDR entries into peer clusters and their addresses.
func parsePeers(entries []string) (map[string][]string, error) {
	peers := map[string][]string{}
	for _, e := range entries {
		name, addr, ok := strings.Cut(strings.TrimSpace(e), "=")
		if !ok || name == "" || addr == "" {
			return nil, fmt.Errorf("--peer %q: want NAME=HOST:PORT", e)
		}
		if _, _, err := net.SplitHostPort(addr); err != nil {
			return nil, fmt.Errorf("--peer %q: %w", e, err)
		}
		peers[name] = append(peers[name], addr)
	}
	return peers, nil
}

func hostnameOr(def string) string {
	if h, err := os.Hostname(); err == nil && h != "" {
		return h
	}
	return def
}

// applyEnvAndFile fills flags not set on the command line from DDSTORE_*
// variables, then from the config file.
func applyEnvAndFile(fs *pflag.FlagSet, file string) error {
	values := map[string]string{}
	if file != "" {
		raw, err := os.ReadFile(file)
		if err != nil {
			return fmt.Errorf("config file: %w", err)
		}
		var m map[string]any
		if err := yaml.Unmarshal(raw, &m); err != nil {
			return fmt.Errorf("config file %s: %w", file, err)
		}
		for k, v := range m {
			if fs.Lookup(k) == nil {
				return fmt.Errorf("config file %s: unknown key %q", file, k)
			}
			switch v := v.(type) {
			case []any:
				parts := make([]string, len(v))
				for i := range v {
					parts[i] = fmt.Sprint(v[i])
				}
				values[k] = strings.Join(parts, ",")
			default:
				values[k] = fmt.Sprint(v)
			}
		}
	}
	var errs []string
	fs.VisitAll(func(fl *pflag.Flag) {
		if fl.Changed || fl.Name == "config" {
			return
		}
		env := "DDSTORE_" + strings.ToUpper(strings.ReplaceAll(fl.Name, "-", "_"))
		v, ok := os.LookupEnv(env)
		src := env
		if !ok {
			v, ok = values[fl.Name]
			src = "config key " + fl.Name
		}
		if ok {
			if err := fs.Set(fl.Name, v); err != nil {
				errs = append(errs, fmt.Sprintf("%s: %v", src, err))
			}
		}
	})
	if len(errs) > 0 {
		return fmt.Errorf("%s", strings.Join(errs, "; "))
	}
	return nil
}

func runServer(ctx context.Context, cfg server.Config, ferretPG string) error {
	// The in-process cache tier is live heap on top of the bounded working
	// set: raise the soft heap limit by its size, or the garbage collector
	// would run without pause once the cache fills. Not by more: the heap
	// grows to its soft limit, so every byte of headroom given here shows in
	// the node's RSS (a 256 MiB cache with a quarter more headroom took the
	// node from 154 to 493 MiB; with 15/16 of the cache, 409-415 MiB, within
	// the base plus 1.1x the cache).
	if os.Getenv("GOMEMLIMIT") == "" && cfg.CacheSize > 0 {
		debug.SetMemoryLimit(memoryLimit + cfg.CacheSize - cfg.CacheSize/16)
	}
	if cfg.HTTPAddr != "" && cfg.HTTPHandler == nil {
		console, err := webConsole(cfg)
		if err != nil {
			return err
		}
		defer console.Close()
		cfg.HTTPHandler = console // the web console at "/" of the --metrics listener
	}
	n, err := server.Start(ctx, cfg)
	if err != nil {
		return err
	}
	if c, ok := n.Store().(*replica.Cached); ok && os.Getenv("GOMEMLIMIT") == "" && os.Getenv("GOGC") == "" && cfg.CacheSize > 0 {
		go tuneGC(ctx, memoryTierBytes(c))
	}
	indexed := make(chan struct{})
	if ferretPG != "" { // the store has created its collections: index them
		go func() {
			defer close(indexed)
			ensureFerretIndexes(ctx, cfg.Logger.With("node", cfg.ID), ferretPG)
		}()
	} else {
		close(indexed)
	}
	<-ctx.Done()
	cfg.Logger.Info("signal received; shutting down")
	<-indexed // cancelled with ctx
	return n.Close()
}

// ensureFerretIndexes runs ferretpg.EnsureIndexes on FerretDB's PostgreSQL
// database at dsn and logs what it did. A failure is logged, not fatal: the
// node serves without the indexes, only slower.
func ensureFerretIndexes(ctx context.Context, log *slog.Logger, dsn string) {
	t0 := time.Now()
	rep, err := ferretpg.EnsureIndexes(ctx, dsn, ferretpg.Options{})
	if err != nil {
		if ctx.Err() == nil {
			log.Error("gridfs: FerretDB's PostgreSQL indexes not made; reads scan whole collections (run ddstore gridfs index)", "err", err)
		}
		return
	}
	names := func(ts []ferretpg.Table) []string {
		out := make([]string, len(ts))
		for i, t := range ts {
			out[i] = t.String()
		}
		return out
	}
	log.Info("gridfs: FerretDB's PostgreSQL indexes in place", "database", rep.Database, "indexed", names(rep.Indexed),
		"rebuilt", names(rep.Rebuilt), "existing", len(rep.Existing), "took", time.Since(t0).Round(time.Millisecond).String())
	if len(rep.SettingsChanged) > 0 {
		settings := make([]string, len(rep.SettingsChanged))
		for i, s := range rep.SettingsChanged {
			settings[i] = s.String()
		}
		log.Warn("gridfs: database settings set for FerretDB's indexes: restart FerretDB so that its connections use them", "database", rep.Database, "settings", settings)
	}
}

// defaultDataRoot is where nodes keep their data when --data-dir is not
// given: an absolute place that does not depend on where the node is
// started — /var/lib/ddstore for root (as packaged daemons do), else the
// user's XDG data directory.
func defaultDataRoot() string {
	if os.Geteuid() == 0 {
		return "/var/lib/ddstore"
	}
	if d := os.Getenv("XDG_DATA_HOME"); filepath.IsAbs(d) {
		return filepath.Join(d, "ddstore")
	}
	if home, err := os.UserHomeDir(); err == nil {
		return filepath.Join(home, ".local", "share", "ddstore")
	}
	return filepath.Join(os.TempDir(), "ddstore")
}

// newLogger returns the node's logger: slog's text or JSON handler on w at
// the given level.
func newLogger(w io.Writer, level, format string) (*slog.Logger, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("--log-level %q: want debug, info, warn or error", level)
	}
	opts := &slog.HandlerOptions{Level: l}
	switch format {
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	}
	return nil, fmt.Errorf("--log-format %q: want text or json", format)
}
