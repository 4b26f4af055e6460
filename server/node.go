// Package server runs one ddstore node: the gRPC API (files, cluster and
// node-to-node services, health and reflection), the Raft member that holds
// the catalog, and the local chunk store. It wires catalog, consensus and
// replica together; the decisions live in those packages.
package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/ddstore/ddstore/catalog"
	"github.com/ddstore/ddstore/chunker"
	"github.com/ddstore/ddstore/consensus"
	"github.com/ddstore/ddstore/internal/grpcpool"
	"github.com/ddstore/ddstore/internal/tlswrite"
	"github.com/ddstore/ddstore/proto/codec"
	pb "github.com/ddstore/ddstore/proto/ddstore/v1"
	"github.com/ddstore/ddstore/replica"
	"github.com/ddstore/ddstore/server/limits"
	"github.com/ddstore/ddstore/server/metrics"
	"github.com/hashicorp/raft"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/experimental"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/reflection"
)

// Node is one running ddstore node.
type Node struct {
	cfg    Config
	log    *slog.Logger
	codecs *chunker.Codecs
	store  replica.Store   // what the node reads and writes through: base behind cached, if any
	base   replica.Store   // the chunk store itself
	cached *replica.Cached // cache tiers in front of base; nil without tiers
	healed healCounters
	fsm    *catalog.FSM
	raft   *consensus.Node
	repl   *replica.Replicator
	avoid  *replica.Health // nodes of this cluster that failed to answer lately
	pins   *pins           // chunks uploads in progress here rely on
	conns  *connPool
	bufs   *grpcpool.Pool // gRPC's buffers, for the server and every connection it dials
	guard  *guard
	limits *limits.Limiter

	// space is the store's own check of its free space; nil if it has none.
	space    replica.SpaceChecker
	writable writable // whether the store and the Raft log can be written

	// streamMem bounds the chunk bytes held for open client streams.
	streamMem *memBudget
	peers     *peerSet
	grpc      *grpc.Server
	pub       *grpc.Server // the gateway's public side; nil without cfg.Public
	health    *health.Server
	lis       net.Listener
	pubLis    net.Listener
	pubAddr   string // the address peers are told: public, API, or none if private

	metrics *metrics.Metrics
	usage   usageCache   // the store's usage as the metrics show it
	http    *http.Server // the HTTP listener (Config.HTTPAddr); nil without one
	httpLis net.Listener

	stop       chan struct{}
	repairKick chan struct{} // a repair pass is due now (a node joined)
	bg         sync.WaitGroup
	closeOnce  sync.Once
	closeErr   error
}

// Start opens the node's store and Raft state, starts serving gRPC, and, in
// the background, joins the cluster (cfg.Join) and registers the node's
// addresses in the catalog. It returns once the node serves; use WaitReady to
// wait for a leader.
func Start(ctx context.Context, cfg Config) (*Node, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(cfg.DataDir, 0o755); err != nil {
		return nil, fmt.Errorf("server: %w", err)
	}
	n := &Node{cfg: cfg, log: cfg.Logger.With("node", cfg.ID), codecs: chunker.NewCodecs(), stop: make(chan struct{}), repairKick: make(chan struct{}, 1)}
	cleanup := func() {
		if n.raft != nil {
			n.raft.Close()
		}
		if n.store != nil {
			n.store.Close()
		}
	}

	switch cfg.Store {
	case "local":
		n.store, err = replica.OpenLocal(filepath.Join(cfg.DataDir, "chunks"))
	case "pack":
		// The same directory: a node's chunk files are moved into packs
		// at its first start with --store pack (one way).
		n.store, err = replica.OpenPack(ctx, filepath.Join(cfg.DataDir, "chunks"), replica.PackOptions{Logger: n.log})
	case "gridfs":
		n.store, err = replica.OpenGridFS(ctx, cfg.MongoURI, cfg.MongoDB)
	}
	if err != nil {
		return nil, fmt.Errorf("server: open %s store: %w", cfg.Store, err)
	}
	n.space, _ = n.store.(replica.SpaceChecker)
	n.metrics = metrics.New(metricsSource{n})
	n.store = watchedStore{Store: n.store, n: n}
	n.base = n.store
	var tiers []replica.Tier
	if cfg.CacheSize > 0 {
		tiers = append(tiers, replica.NewMemory(cfg.CacheSize))
	}
	if len(cfg.Memcached) > 0 {
		mc, err := replica.NewMemcache(replica.MemcacheConfig{Servers: cfg.Memcached, MaxItemSize: cfg.MemcachedMaxItem, Timeout: cfg.MemcachedTimeout, Logger: n.log})
		if err != nil {
			n.store.Close()
			return nil, fmt.Errorf("server: %w", err)
		}
		tiers = append(tiers, mc)
	}
	if len(tiers) > 0 {
		n.cached = replica.NewCached(n.base, n.codecs, tiers...)
		n.store = n.cached
	}
	n.avoid = &replica.Health{}
	n.pins = newPins(max(cfg.GCGrace, time.Hour))
	n.repl = &replica.Replicator{
		Local: n.store, Codecs: n.codecs, Logger: n.log, Health: n.avoid,
		CallTimeout: cfg.NodeTimeout, AckTimeout: 3 * cfg.NodeTimeout,
	}

	n.fsm = catalog.NewFSM()
	rc := consensus.Config{
		ID:                 cfg.ID,
		RaftAddr:           cfg.RaftAddr,
		Dir:                filepath.Join(cfg.DataDir, "raft"),
		FSM:                n.fsm,
		Bootstrap:          cfg.Bootstrap,
		Logger:             n.log,
		HeartbeatTimeout:   cfg.HeartbeatTimeout,
		ElectionTimeout:    cfg.ElectionTimeout,
		LeaderLeaseTimeout: cfg.LeaderLeaseTimeout,
		SnapshotThreshold:  cfg.SnapshotThreshold,
		LogSegmentSize:     cfg.RaftLogSegmentSize,
		TermOf:             n.termOf,
	}
	if cfg.TLS != nil {
		rc.ServerTLS, rc.DialTLS = cfg.TLS.RaftServerTLS(), cfg.TLS.DialNodeTLS()
	}
	n.raft, err = consensus.Open(rc)
	if err != nil {
		cleanup()
		return nil, fmt.Errorf("server: %w", err)
	}

	n.lis, err = net.Listen("tcp", cfg.APIAddr)
	if err != nil {
		cleanup()
		return nil, fmt.Errorf("server: listen on %s: %w", cfg.APIAddr, err)
	}
	if cfg.Advertise == cfg.APIAddr {
		n.cfg.Advertise = n.lis.Addr().String()
	}
	switch {
	case cfg.Public != "":
		if n.pubLis, err = net.Listen("tcp", cfg.Public); err != nil {
			n.lis.Close()
			cleanup()
			return nil, fmt.Errorf("server: listen on public address %s: %w", cfg.Public, err)
		}
		n.pubAddr = n.pubLis.Addr().String()
	case !cfg.Private:
		n.pubAddr = n.cfg.Advertise
	}
	n.bufs = grpcpool.New()
	n.conns = newConnPool(n.dialCreds, n.bufs)
	n.peers = newPeerSet(n)
	// A stream waits for memory at most as long as it may stay idle.
	memWait := cfg.Limits.IdleTimeout
	if memWait <= 0 {
		memWait = limits.DefaultIdleTimeout
	}
	n.streamMem = newMemBudget(cfg.StreamMemory, cfg.StreamMemoryPerCaller, memWait)
	n.guard = newGuard(n)
	lc := cfg.Limits
	lc.Exempt = isNode
	n.limits = limits.New(lc, callerKey, func(method string) bool {
		r, _ := ruleFor(method)
		return r.heavy
	})
	// NOT_SERVING until the node hears from a leader (see updateServing).
	n.health = health.NewServer()
	n.writable.notServing = "starting: no leader yet"
	n.health.SetServingStatus("", healthpb.HealthCheckResponse_NOT_SERVING)
	n.health.SetServingStatus(pb.Files_ServiceDesc.ServiceName, healthpb.HealthCheckResponse_NOT_SERVING)
	n.grpc = n.newGRPCServer()
	n.registerPublic(n.grpc)
	pb.RegisterNodeServer(n.grpc, &nodeService{n: n, chunks: &replica.ChunkService{Store: n.store, Codecs: n.codecs}})
	serve := func(s *grpc.Server, lis net.Listener) {
		n.bg.Go(func() {
			if err := s.Serve(lis); err != nil {
				n.log.Error("gRPC server stopped", "addr", lis.Addr(), "err", err)
			}
		})
	}
	if cfg.HTTPAddr != "" {
		if err := n.startHTTP(); err != nil {
			n.lis.Close()
			if n.pubLis != nil {
				n.pubLis.Close()
			}
			cleanup()
			return nil, err
		}
	}
	n.metrics.InitializeMethods(n.grpc.GetServiceInfo())
	serve(n.grpc, n.lis)
	if n.pubLis != nil {
		n.pub = n.newGRPCServer()
		n.registerPublic(n.pub)
		serve(n.pub, n.pubLis)
	}
	n.bg.Go(n.membershipLoop)
	n.bg.Go(n.peers.refreshLoop)
	n.bg.Go(n.healLoops)
	n.bg.Go(n.writableLoop)
	n.bg.Go(n.quorumLoop)
	n.log.Info("node started", "cluster", cfg.Cluster, "api", n.cfg.Advertise, "public", n.pubAddr, "raft", cfg.RaftAddr,
		"store", cfg.Store, "replicas", cfg.Replicas, "peers", n.peers.names(), "http", n.HTTPAddr())
	return n, nil
}

// newGRPCServer makes a gRPC server with the node's credentials, its guard
// (who may call what) and limits in front of every handler.
func (n *Node) newGRPCServer() *grpc.Server {
	opts := []grpc.ServerOption{
		grpc.MaxRecvMsgSize(MaxMessageSize),
		grpc.MaxSendMsgSize(MaxMessageSize),
		grpc.ForceServerCodecV2(codec.New()), // chunk bytes are not copied
		experimental.BufferPool(n.bufs),      // nor cleared before they are read into
		grpc.InitialWindowSize(8 << 20),
		grpc.InitialConnWindowSize(32 << 20),
		grpc.ReadBufferSize(256 << 10),
		grpc.WriteBufferSize(256 << 10),
		grpc.MaxConcurrentStreams(n.cfg.MaxStreamsPerConn),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 10 * time.Second, PermitWithoutStream: true}),
		// Connections idle for long are closed; a peer that stops answering
		// pings is dropped within 40 s.
		grpc.KeepaliveParams(keepalive.ServerParameters{MaxConnectionIdle: 15 * time.Minute, Time: 30 * time.Second, Timeout: 10 * time.Second}),
		grpc.ConnectionTimeout(10 * time.Second),
		// Metrics first: calls the guard or the limits refuse are counted.
		grpc.ChainUnaryInterceptor(n.metrics.UnaryServerInterceptor(), n.guard.unary, n.limits.UnaryInterceptor()),
		grpc.ChainStreamInterceptor(n.metrics.StreamServerInterceptor(), n.guard.stream, n.limits.StreamInterceptor()),
		grpc.StatsHandler(n.metrics.StatsHandler()),
	}
	if n.cfg.TLS != nil {
		opts = append(opts, grpc.Creds(tlswrite.Credentials(credentials.NewTLS(n.cfg.TLS.ServerTLS()))))
	}
	return grpc.NewServer(opts...)
}

// dialCreds returns the credentials for dialling a node of cluster ("" for
// this one).
func (n *Node) dialCreds(cluster string) (credentials.TransportCredentials, error) {
	if n.cfg.TLS == nil {
		return insecure.NewCredentials(), nil
	}
	if cluster == "" {
		return tlswrite.Credentials(credentials.NewTLS(n.cfg.TLS.DialNodeTLS())), nil
	}
	tc, err := n.cfg.TLS.DialPeerTLS(cluster)
	if err != nil {
		return nil, err
	}
	return tlswrite.Credentials(credentials.NewTLS(tc)), nil
}

// registerPublic registers what clients and peer clusters call: the Files,
// Cluster and Federation services, health and reflection.
func (n *Node) registerPublic(s *grpc.Server) {
	pb.RegisterFilesServer(s, &filesService{n: n})
	pb.RegisterClusterServer(s, &clusterService{n: n})
	pb.RegisterFederationServer(s, &federationService{n: n})
	healthpb.RegisterHealthServer(s, n.health)
	reflection.Register(s)
}

// IgnorePeerFilters makes the node ask every peer cluster, whatever its
// filters say (Config.AlwaysMaybe), or go back to trusting them.
func (n *Node) IgnorePeerFilters(ignore bool) { n.peers.ignore.Store(ignore) }

// Federation returns the node's federation counters.
func (n *Node) Federation() *pb.FederationStatus { return n.peers.counters() }

// Addr is the API address the node advertises.
func (n *Node) Addr() string { return n.cfg.Advertise }

// ID is the node's ID.
func (n *Node) ID() string { return n.cfg.ID }

// IsLeader reports whether this node leads the cluster now.
func (n *Node) IsLeader() bool { return n.raft.IsLeader() }

// Store is the node's local chunk store.
func (n *Node) Store() replica.Store { return n.store }

// WaitReady waits until the cluster has a leader and this node's addresses
// are in the catalog.
func (n *Node) WaitReady(ctx context.Context) error {
	t := time.NewTicker(20 * time.Millisecond)
	defer t.Stop()
	for {
		if n.registered() {
			if id, _ := n.raft.Leader(); id != "" {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("server: node %s not ready: %w", n.cfg.ID, ctx.Err())
		case <-t.C:
		}
	}
}

// Close shuts the node down cleanly: health turns NOT_SERVING, no new calls
// are accepted, open streams get ShutdownGrace to finish before they are cut
// (failing with Unavailable), a leader hands leadership over, then Raft and the
// store are closed.
func (n *Node) Close() error { return n.shutdown(true) }

// Kill stops the node at once, as a crash looks to its peers: streams are cut
// and leadership is not handed over. Its data stays on disk.
func (n *Node) Kill() error { return n.shutdown(false) }

func (n *Node) shutdown(graceful bool) error {
	n.closeOnce.Do(func() {
		n.log.Info("node shutting down", "graceful", graceful)
		n.health.Shutdown()
		close(n.stop)
		n.stopHTTP(graceful)
		servers := []*grpc.Server{n.grpc}
		if n.pub != nil {
			servers = append(servers, n.pub)
		}
		if graceful {
			done := make(chan struct{})
			go func() {
				var wg sync.WaitGroup
				for _, s := range servers {
					wg.Go(s.GracefulStop)
				}
				wg.Wait()
				close(done)
			}()
			select {
			case <-done:
			case <-time.After(n.cfg.ShutdownGrace):
				n.log.Warn("streams still open after the grace period; cutting them")
				for _, s := range servers {
					s.Stop()
				}
				<-done
			}
			if n.raft.IsLeader() {
				if err := n.raft.TransferLeadership(); err != nil {
					n.log.Warn("could not hand leadership over", "err", err)
				}
			}
		} else {
			for _, s := range servers {
				s.Stop()
			}
		}
		n.bg.Wait()
		n.conns.Close()
		n.closeErr = errors.Join(n.raft.Close(), n.store.Close())
	})
	return n.closeErr
}

// membershipLoop joins the cluster if asked to and keeps this node's
// addresses in the catalog.
func (n *Node) membershipLoop() {
	t := time.NewTicker(250 * time.Millisecond)
	defer t.Stop()
	// A node joins through --join only as a new node: one that has been a
	// member (its Raft log holds entries) and is not one now was removed
	// (ddstore leave), and must not put itself back.
	joined := n.raft.Status().LastIndex > 0
	warned := false
	for {
		select {
		case <-n.stop:
			return
		case <-t.C:
		}
		member := n.isMember()
		joined = joined || member
		if len(n.cfg.Join) > 0 && !member {
			if !joined {
				n.tryJoin()
			} else if !warned {
				warned = true
				n.log.Warn("this node was removed from the cluster (ddstore leave) and does not rejoin by itself; to join again, start it with an empty data directory")
			}
			continue
		}
		if !n.registered() {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			_, err := n.propose(ctx, &pb.Command{Op: &pb.Command_SetNode{SetNode: &pb.SetNode{Node: n.self()}}})
			cancel()
			if err != nil {
				n.log.Debug("could not register addresses yet", "err", err)
			}
		}
	}
}

func (n *Node) self() *pb.NodeInfo {
	return &pb.NodeInfo{Id: n.cfg.ID, ApiAddr: n.cfg.Advertise, RaftAddr: n.cfg.RaftAddr, PublicAddr: n.pubAddr}
}

func (n *Node) isMember() bool { return n.hasMember(n.cfg.ID) }

// hasMember reports whether node id is in the Raft configuration.
func (n *Node) hasMember(id string) bool {
	servers, err := n.raft.Servers()
	if err != nil {
		return false
	}
	return slices.ContainsFunc(servers, func(s raft.Server) bool { return string(s.ID) == id })
}

func (n *Node) registered() bool {
	var ok bool
	n.fsm.Read(func(s *catalog.State) {
		cur, found := s.Node(n.cfg.ID)
		ok = found && cur.GetApiAddr() == n.cfg.Advertise && cur.GetRaftAddr() == n.cfg.RaftAddr && cur.GetPublicAddr() == n.pubAddr
	})
	return ok
}

func (n *Node) tryJoin() {
	for _, addr := range n.cfg.Join {
		if addr == n.cfg.Advertise {
			continue
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		_, err := pb.NewClusterClient(n.conns.Get(addr)).Join(ctx, &pb.JoinRequest{Id: n.cfg.ID, ApiAddr: n.cfg.Advertise, RaftAddr: n.cfg.RaftAddr})
		cancel()
		if err == nil {
			n.log.Info("joined the cluster", "via", addr)
			return
		}
		n.log.Warn("join failed; will retry", "via", addr, "err", err)
	}
}

// placement returns the peers that may hold copies (the other voters whose
// addresses are known) and the number of copies to keep, R capped at the
// cluster's size.
func (n *Node) placement() ([]replica.Peer, int) {
	servers, err := n.raft.Servers()
	if err != nil {
		return nil, 1
	}
	peers, _ := n.voters()
	return peers, max(1, min(n.cfg.Replicas, len(servers)))
}

// leaderClient returns a Node client for the current leader.
func (n *Node) leaderConn() (*grpc.ClientConn, error) {
	id, _ := n.raft.Leader()
	if id == "" {
		return nil, consensus.ErrNoLeader
	}
	var addr string
	n.fsm.Read(func(s *catalog.State) {
		if info, ok := s.Node(id); ok {
			addr = info.GetApiAddr()
		}
	})
	if addr == "" {
		return nil, fmt.Errorf("%w: leader %s has no known API address yet", consensus.ErrNoLeader, id)
	}
	return n.conns.Get(addr), nil
}
