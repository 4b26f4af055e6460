package server

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/ddstore/ddstore/chunker"
	"github.com/ddstore/ddstore/server/auth"
	"github.com/ddstore/ddstore/server/limits"
)

// Config is everything one node needs to run.
type Config struct {
	ID       string // stable node ID, unique in the cluster
	APIAddr  string // host:port for gRPC (clients and other nodes)
	RaftAddr string // host:port for Raft
	// Advertise is the API address other nodes and clients are told to use;
	// empty means APIAddr.
	Advertise string
	DataDir   string
	// Bootstrap forms a new cluster with this node as its only member, if the
	// node has no state yet. Exactly one node of a new cluster bootstraps.
	Bootstrap bool
	// Join lists API addresses of existing members to ask for membership
	// when the node has no state yet.
	Join []string

	// Cluster is this cluster's name, the same on all its nodes; peer
	// clusters know it by that name. Default "ddstore".
	Cluster string
	// Public is a second listen address (host:port) for peer clusters and
	// outside clients: the node is a gateway there, serving the Files,
	// Cluster and Federation services, while APIAddr stays on the cluster's
	// own (possibly private) network. Empty: the API address serves both,
	// unless Private is set.
	Public string
	// Private marks a node without Public as reachable only inside its
	// cluster: peers are not told its address.
	Private bool

	// HTTPAddr, if set, is the host:port of the node's HTTP listener
	// (ddstore server --metrics): /metrics (Prometheus), /healthz (the
	// process is up), /readyz (the node can serve linearizable reads and
	// accept writes), /debug/pprof/ with Pprof, and HTTPHandler at "/".
	// Like the gRPC listener it serves HTTPS with the node's certificate
	// when TLS is set (no client certificate is required), and refuses a
	// non-loopback address in plain text unless Insecure is set. Port 0
	// picks a free port (Node.HTTPAddr tells which).
	HTTPAddr string
	// Pprof mounts net/http/pprof at /debug/pprof/ on the HTTP listener.
	// Off by default: profiles show what the node is doing to anyone who
	// reaches the listener.
	Pprof bool
	// HTTPHandler, if set, serves every path of the HTTP listener that the
	// node does not serve itself (everything but /metrics, /healthz,
	// /readyz and /debug/pprof/): the hook for the web console. It receives
	// requests as they arrive; r.TLS holds the client's certificate, if it
	// sent one. The node takes no part in its authentication.
	HTTPHandler http.Handler
	// Peers lists the peer clusters by name with contact addresses (public
	// addresses of any of their nodes; the leader's is learned).
	Peers map[string][]string
	// FilterFPRate is the false-positive rate the Bloom filters are sized
	// for; default 0.01.
	FilterFPRate float64
	// FilterRefresh is how often peers' filters are pulled (only changed
	// filters travel); default 2s.
	FilterRefresh time.Duration
	// PeerTimeout bounds one call to a peer cluster for a lookup, listing or
	// chunk; default 5s.
	PeerTimeout time.Duration
	// HopLimit is how many times a request may be passed from cluster to
	// cluster; default 3.
	HopLimit int
	// AlwaysMaybe ignores the peers' filters (every peer may hold anything);
	// for measuring what the filters save.
	AlwaysMaybe bool

	// TLS holds the node's certificate and the certificate authorities it
	// trusts (its own cluster's and its peers'). With it every link is
	// mutual TLS: clients verify the node, nodes and the Raft port accept
	// only nodes of this cluster, peers only nodes whose certificate names
	// them. Nil runs in plain text, which Start allows only when every
	// address is on loopback, unless Insecure says otherwise.
	TLS *auth.Trust
	// Insecure allows plain text on any address (anyone who reaches the
	// node can do anything).
	Insecure bool
	// PeerPolicies says what calls forwarded by each peer cluster may do
	// here; a peer not listed may read everything and write nothing.
	PeerPolicies map[string]PeerPolicy
	// Limits bound what one caller may hold open (streams, heavy passes)
	// and how long a stream may move no bytes.
	Limits limits.Config
	// MaxStreamsPerConn is gRPC's cap on concurrent streams of one
	// connection; default 256.
	MaxStreamsPerConn uint32
	// StreamMemory bounds the chunk bytes held for all open client streams
	// together (uploads in flight, downloads read ahead); default 128 MiB.
	StreamMemory int64
	// StreamMemoryPerCaller is the most of StreamMemory one caller (a
	// principal) may hold; default a quarter of it, at least 32 MiB.
	StreamMemoryPerCaller int64

	Store    string // "pack" (default: pack files on the local disk, group commit), "local" (a file per chunk) or "gridfs"
	MongoURI string // for the gridfs store
	MongoDB  string // database name; default "ddstore_<id>"
	Replicas int    // R: copies of each chunk; default 3, capped at cluster size

	// Cache tiers in front of the store's reads. CacheSize is the in-process
	// tier's size in bytes: 0 means 256 MiB, negative disables it.
	// Memcached lists memcached servers (host:port) for the second tier.
	CacheSize        int64
	Memcached        []string
	MemcachedMaxItem int           // memcached's item-size limit (-I); 0: 1 MiB
	MemcachedTimeout time.Duration // 0: 2s
	// CacheMaxFile: downloads of files larger than this (bytes stored)
	// neither fill the tiers nor ask memcached, as a cache keeps large
	// objects out (see replica.Scan). 0 means a quarter of CacheSize, at
	// least 64 MiB; negative: every download uses the tiers.
	CacheMaxFile int64

	// Healing. Intervals: 0 takes the default, negative disables the loop.
	// Rates are bytes per second; 0 takes the default.
	RepairInterval time.Duration // leader: restore R copies; default 1m
	RepairRate     int64         // default 64 MiB/s
	ScrubInterval  time.Duration // pause between passes over the store; default 24h
	ScrubRate      int64         // default 32 MiB/s
	GCInterval     time.Duration // leader: garbage collection; default 10m
	// GCGrace is how long a chunk must stay unreferenced before garbage
	// collection removes it; longer than any upload takes. Default 1h.
	GCGrace time.Duration

	// ShutdownGrace is how long Close lets open streams finish before
	// cutting them; default 10s.
	ShutdownGrace time.Duration

	// WriteCheckInterval is how often the node checks that it can write:
	// that its store has room for a largest chunk (the local store
	// reserves one and frees it) and that its Raft log takes entries. While
	// it cannot, its health is NOT_SERVING. Default 1s; negative disables
	// the check (failed writes still count).
	WriteCheckInterval time.Duration
	// RaftLogSegmentSize is the size of the Raft log's segment files,
	// preallocated when the log moves on to one; 0: 64 MiB.
	RaftLogSegmentSize int

	// VerifyReads makes the node check every chunk of its own against its ID
	// before it sends it in a download, as it does for every other read. By
	// default it leaves that to the client, which checks every chunk anyway
	// and asks again, verified, for a bad one.
	VerifyReads bool

	// NodeTimeout bounds a call to another node of this cluster (a question
	// about which chunks it holds, a chunk read, the opening of a copy
	// stream); a copy stream may go 3 × NodeTimeout without an
	// acknowledgement. A node that does not answer in time is skipped
	// (copies go to the next node, reads to the next copy) and avoided for
	// a while. Default 2s.
	NodeTimeout time.Duration

	// Raft timing (see DefaultHeartbeatTimeout); zero values take the
	// defaults.
	HeartbeatTimeout   time.Duration
	ElectionTimeout    time.Duration
	LeaderLeaseTimeout time.Duration
	SnapshotThreshold  uint64

	Logger *slog.Logger
}

// Raft's default timing: a follower that hears nothing from the leader for
// 0.5–1 s stands for election, so a dead leader is replaced in about a
// second (hashicorp/raft's own defaults take twice as long). The leader
// steps down when it has not reached a majority for the lease.
const (
	DefaultHeartbeatTimeout   = 500 * time.Millisecond
	DefaultElectionTimeout    = 500 * time.Millisecond
	DefaultLeaderLeaseTimeout = 400 * time.Millisecond
)

// MaxMessageSize bounds one gRPC message: a largest chunk plus framing.
const MaxMessageSize = 9 << 20

// validClusterName accepts 1 to 64 letters, digits, '.', '_' and '-'.
func validClusterName(name string) error {
	if name == "" || len(name) > 64 {
		return fmt.Errorf("cluster name %q must be 1 to 64 characters", name)
	}
	for _, r := range name {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '.' || r == '_' || r == '-') {
			return fmt.Errorf("cluster name %q: only letters, digits, '.', '_' and '-' are allowed", name)
		}
	}
	return nil
}

func (c *Config) withDefaults() (Config, error) {
	out := *c
	var errs []error
	if out.ID == "" {
		errs = append(errs, errors.New("a node ID is required (--id)"))
	}
	if out.APIAddr == "" {
		errs = append(errs, errors.New("an API address is required (--listen)"))
	}
	if out.RaftAddr == "" {
		errs = append(errs, errors.New("a Raft address is required (--raft-addr)"))
	}
	if out.DataDir == "" {
		errs = append(errs, errors.New("a data directory is required (--data-dir)"))
	}
	if out.Cluster == "" {
		out.Cluster = "ddstore"
	}
	if err := validClusterName(out.Cluster); err != nil {
		errs = append(errs, err)
	}
	for name, addrs := range out.Peers {
		if err := validClusterName(name); err != nil {
			errs = append(errs, fmt.Errorf("peer: %w", err))
		}
		if name == out.Cluster {
			errs = append(errs, fmt.Errorf("peer %q has this cluster's own name", name))
		}
		if len(addrs) == 0 {
			errs = append(errs, fmt.Errorf("peer cluster %q has no contact address", name))
		}
	}
	if out.FilterFPRate == 0 {
		out.FilterFPRate = 0.01
	}
	if out.FilterFPRate <= 0 || out.FilterFPRate >= 0.5 {
		errs = append(errs, fmt.Errorf("filter false-positive rate must be between 0 and 0.5, not %g", out.FilterFPRate))
	}
	if out.HopLimit == 0 {
		out.HopLimit = 3
	}
	if out.Store == "" {
		out.Store = "pack"
	}
	switch out.Store {
	case "local", "pack":
	case "gridfs":
		if out.MongoURI == "" {
			errs = append(errs, errors.New("the gridfs store needs a MongoDB URI (--mongo-uri)"))
		}
	default:
		errs = append(errs, fmt.Errorf("unknown store %q (want pack, local or gridfs)", out.Store))
	}
	if out.MongoDB == "" {
		out.MongoDB = "ddstore_" + out.ID
	}
	if out.Replicas == 0 {
		out.Replicas = 3
	}
	if out.Replicas < 0 || out.Replicas > 7 {
		errs = append(errs, fmt.Errorf("replicas must be 1 to 7, not %d", out.Replicas))
	}
	if out.Advertise == "" {
		out.Advertise = out.APIAddr
	}
	if out.CacheSize == 0 {
		out.CacheSize = 256 << 20
	}
	if out.CacheMaxFile == 0 {
		out.CacheMaxFile = max(out.CacheSize/4, 64<<20)
	}
	def := func(d *time.Duration, v time.Duration) {
		if *d == 0 {
			*d = v
		}
	}
	def(&out.FilterRefresh, 2*time.Second)
	def(&out.PeerTimeout, 5*time.Second)
	def(&out.NodeTimeout, 2*time.Second)
	def(&out.HeartbeatTimeout, DefaultHeartbeatTimeout)
	def(&out.ElectionTimeout, DefaultElectionTimeout)
	def(&out.LeaderLeaseTimeout, DefaultLeaderLeaseTimeout)
	if out.LeaderLeaseTimeout > out.HeartbeatTimeout {
		errs = append(errs, fmt.Errorf("the Raft leader lease (%s) must not be longer than the heartbeat timeout (%s)", out.LeaderLeaseTimeout, out.HeartbeatTimeout))
	}
	def(&out.RepairInterval, time.Minute)
	def(&out.ScrubInterval, 24*time.Hour)
	def(&out.GCInterval, 10*time.Minute)
	def(&out.GCGrace, time.Hour)
	def(&out.WriteCheckInterval, time.Second)
	def(&out.MemcachedTimeout, 2*time.Second)
	if out.RepairRate <= 0 {
		out.RepairRate = 64 << 20
	}
	if out.ScrubRate <= 0 {
		out.ScrubRate = 32 << 20
	}
	if out.GCGrace < 0 {
		errs = append(errs, errors.New("the garbage-collection grace period must not be negative"))
	}
	if out.ShutdownGrace == 0 {
		out.ShutdownGrace = 10 * time.Second
	}
	if out.MaxStreamsPerConn == 0 {
		out.MaxStreamsPerConn = 256
	}
	if out.StreamMemory == 0 {
		out.StreamMemory = 128 << 20
	}
	if out.StreamMemoryPerCaller == 0 {
		out.StreamMemoryPerCaller = min(out.StreamMemory, max(out.StreamMemory/4, 32<<20))
	}
	if out.StreamMemoryPerCaller < chunker.MaxRawSize {
		errs = append(errs, fmt.Errorf("stream memory per client %d is less than one largest chunk (%d bytes)", out.StreamMemoryPerCaller, chunker.MaxRawSize))
	}
	if out.StreamMemory < chunker.MaxRawSize {
		errs = append(errs, fmt.Errorf("stream memory %d is less than one largest chunk (%d bytes)", out.StreamMemory, chunker.MaxRawSize))
	}
	if out.Pprof && out.HTTPAddr == "" {
		errs = append(errs, errors.New("pprof is served on the HTTP listener: give it an address (--metrics)"))
	}
	if out.TLS == nil && !out.Insecure {
		for _, a := range []string{out.APIAddr, out.RaftAddr, out.Public, out.Advertise, out.HTTPAddr} {
			if a != "" && !Loopback(a) {
				errs = append(errs, fmt.Errorf("%s is not a loopback address and no TLS is configured: give the node its certificates (--tls-ca, --tls-cert, --tls-key; see ddstore cert) or start it with --insecure", a))
				break
			}
		}
	}
	if out.TLS != nil {
		if out.TLS.Cluster != out.Cluster {
			errs = append(errs, fmt.Errorf("the node certificate is for cluster %q, the node is in cluster %q", out.TLS.Cluster, out.Cluster))
		}
		if id := out.TLS.NodeID(); id != out.ID {
			errs = append(errs, fmt.Errorf("the node certificate is for node %q, the node's ID is %q", id, out.ID))
		}
		for name := range out.Peers {
			if _, ok := out.TLS.Peers[name]; !ok {
				errs = append(errs, fmt.Errorf("peer cluster %q has no trusted CA (--peer-ca %s=FILE)", name, name))
			}
		}
	}
	for name := range out.PeerPolicies {
		_, peer := out.Peers[name]
		trusted := false
		if out.TLS != nil {
			_, trusted = out.TLS.Peers[name]
		}
		if !peer && !trusted {
			errs = append(errs, fmt.Errorf("a policy names cluster %q, which is neither a peer nor trusted (--peer-ca)", name))
		}
	}
	if out.Logger == nil {
		out.Logger = slog.Default()
	}
	if len(errs) > 0 {
		return out, fmt.Errorf("server: bad config: %w", errors.Join(errs...))
	}
	return out, nil
}

// Loopback reports whether host:port names a loopback address (the only
// addresses a node, or the S3 gateway, serves in plain text without
// --insecure).
func Loopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// policy returns what calls forwarded by peer cluster name may do.
func (c *Config) policy(name string) PeerPolicy {
	if p, ok := c.PeerPolicies[name]; ok {
		return p
	}
	return PeerPolicy{Role: auth.RoleRead}
}
