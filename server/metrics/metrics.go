// Package metrics holds one ddstore node's Prometheus metrics: a registry of
// its own (never the global default, so that several nodes can run in one
// process), gRPC server interceptors and a stats handler that count calls,
// latencies and bytes, counters the node bumps as it stores and serves
// chunks, and a collector that reads the node's state (Raft, store, cache
// tiers, healing, federation) at scrape time through Source.
//
// Every metric is named ddstore_* and follows Prometheus conventions (base
// units, _total for counters); docs/OPERATIONS.md lists them all.
package metrics

import (
	"context"
	"net/http"
	"strings"
	"time"

	pb "github.com/ddstore/ddstore/proto/ddstore/v1"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/stats"
	"google.golang.org/grpc/status"
)

// Namespace prefixes every metric name.
const Namespace = "ddstore"

// Metrics are one node's metrics. Create them with New; the zero value is
// not usable.
type Metrics struct {
	reg *prometheus.Registry

	rpcStarted *prometheus.CounterVec
	rpcHandled *prometheus.CounterVec
	rpcSeconds *prometheus.HistogramVec
	bytesIn    *prometheus.CounterVec
	bytesOut   *prometheus.CounterVec
	stored     prometheus.Counter
	served     *prometheus.CounterVec
}

// New makes a node's metrics: the Go runtime and process collectors, the
// RPC and transfer counters, and a collector that asks src for the node's
// state at each scrape (src may be nil: no state metrics).
func New(src Source) *Metrics {
	reg := prometheus.NewRegistry()
	m := &Metrics{
		reg: reg,
		rpcStarted: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: Namespace, Name: "grpc_server_started_total",
			Help: "gRPC calls started on the node, by service and method.",
		}, []string{"grpc_service", "grpc_method"}),
		rpcHandled: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: Namespace, Name: "grpc_server_handled_total",
			Help: "gRPC calls completed on the node, by service, method and status code.",
		}, []string{"grpc_service", "grpc_method", "grpc_code"}),
		rpcSeconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: Namespace, Name: "grpc_server_handling_seconds",
			Help:    "Time from a gRPC call's start to its end on the node (a stream's whole life), by service, method and status code.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 300},
		}, []string{"grpc_service", "grpc_method", "grpc_code"}),
		bytesIn: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: Namespace, Name: "received_bytes_total",
			Help: "gRPC message bytes the node received, by kind: upload (clients' chunks and commits), replication (copies from other nodes), other.",
		}, []string{"kind"}),
		bytesOut: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: Namespace, Name: "sent_bytes_total",
			Help: "gRPC message bytes the node sent, by kind: download (files to clients), replication (chunks read by other nodes and peer clusters), other.",
		}, []string{"kind"}),
		stored: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: Namespace, Name: "chunks_stored_total",
			Help: "Chunks written to the node's store (a chunk already held is not counted).",
		}),
		served: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: Namespace, Name: "chunks_served_total",
			Help: "Chunks the node sent: to clients in downloads (download), to other nodes (node), to peer clusters (peer).",
		}, []string{"to"}),
	}
	for _, kind := range []string{"upload", "replication", "other"} {
		m.bytesIn.WithLabelValues(kind)
	}
	for _, kind := range []string{"download", "replication", "other"} {
		m.bytesOut.WithLabelValues(kind)
	}
	for _, to := range []string{"download", "node", "peer"} {
		m.served.WithLabelValues(to)
	}
	reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{Namespace: Namespace}),
		m.rpcStarted, m.rpcHandled, m.rpcSeconds, m.bytesIn, m.bytesOut, m.stored, m.served,
	)
	if src != nil {
		reg.MustRegister(&stateCollector{src: src, d: newStateDescs()})
	}
	return m
}

// Registry is the node's registry, for tests and for other parts of the
// node that want to add metrics of their own.
func (m *Metrics) Registry() *prometheus.Registry { return m.reg }

// Handler serves the registry in Prometheus' text (or OpenMetrics) format.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{Registry: m.reg, EnableOpenMetrics: true})
}

// ChunkStored counts a chunk written to the node's store.
func (m *Metrics) ChunkStored() { m.stored.Inc() }

// ChunksServed counts n chunks sent; to is "download", "node" or "peer".
func (m *Metrics) ChunksServed(to string, n int) { m.served.WithLabelValues(to).Add(float64(n)) }

// InitializeMethods creates the call counters of every method of services
// (grpc.Server.GetServiceInfo) at zero, with code OK, so that they are
// scraped, and rates computed, before the first call.
func (m *Metrics) InitializeMethods(services map[string]grpc.ServiceInfo) {
	for svc, info := range services {
		for _, meth := range info.Methods {
			m.rpcStarted.WithLabelValues(svc, meth.Name)
			m.rpcHandled.WithLabelValues(svc, meth.Name, "OK")
		}
	}
}

// splitMethod turns "/pkg.Service/Method" into its service and method.
func splitMethod(full string) (service, method string) {
	full = strings.TrimPrefix(full, "/")
	if i := strings.LastIndexByte(full, '/'); i >= 0 {
		return full[:i], full[i+1:]
	}
	return "unknown", full
}

// UnaryServerInterceptor counts and times unary calls.
func (m *Metrics) UnaryServerInterceptor() grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		svc, meth := splitMethod(info.FullMethod)
		m.rpcStarted.WithLabelValues(svc, meth).Inc()
		start := time.Now()
		resp, err := handler(ctx, req)
		m.done(svc, meth, err, start)
		return resp, err
	}
}

// StreamServerInterceptor counts and times streams.
func (m *Metrics) StreamServerInterceptor() grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		svc, meth := splitMethod(info.FullMethod)
		m.rpcStarted.WithLabelValues(svc, meth).Inc()
		start := time.Now()
		err := handler(srv, ss)
		m.done(svc, meth, err, start)
		return err
	}
}

func (m *Metrics) done(svc, meth string, err error, start time.Time) {
	code := status.Code(err).String()
	m.rpcHandled.WithLabelValues(svc, meth, code).Inc()
	m.rpcSeconds.WithLabelValues(svc, meth, code).Observe(time.Since(start).Seconds())
}

// StatsHandler counts the bytes of every message the node's gRPC servers
// receive and send, by kind of transfer (see received_bytes_total).
func (m *Metrics) StatsHandler() stats.Handler { return &byteCounter{m: m} }

type kindKey struct{}

type kinds struct{ in, out prometheus.Counter }

type byteCounter struct{ m *Metrics }

// TagRPC notes which kind of transfer the call's messages are.
func (b *byteCounter) TagRPC(ctx context.Context, info *stats.RPCTagInfo) context.Context {
	in, out := transferKinds(info.FullMethodName)
	return context.WithValue(ctx, kindKey{}, kinds{in: b.m.bytesIn.WithLabelValues(in), out: b.m.bytesOut.WithLabelValues(out)})
}

// HandleRPC adds a message's bytes to its kind's counter.
func (b *byteCounter) HandleRPC(ctx context.Context, s stats.RPCStats) {
	k, ok := ctx.Value(kindKey{}).(kinds)
	if !ok {
		return
	}
	switch p := s.(type) {
	case *stats.InPayload:
		k.in.Add(float64(p.Length))
	case *stats.OutPayload:
		k.out.Add(float64(p.Length))
	}
}

// TagConn implements stats.Handler.
func (b *byteCounter) TagConn(ctx context.Context, _ *stats.ConnTagInfo) context.Context { return ctx }

// HandleConn implements stats.Handler.
func (b *byteCounter) HandleConn(context.Context, stats.ConnStats) {}

// transferKinds says what the bytes a method receives and sends are.
func transferKinds(full string) (in, out string) {
	in, out = "other", "other"
	switch full {
	case pb.Files_Upload_FullMethodName, pb.Files_Commit_FullMethodName, pb.Files_CommitParts_FullMethodName:
		in = "upload"
	case pb.Files_Download_FullMethodName, pb.Files_DownloadRange_FullMethodName:
		out = "download"
	case pb.Node_PutChunks_FullMethodName:
		in = "replication"
	case pb.Node_GetChunk_FullMethodName, pb.Federation_GetChunk_FullMethodName:
		out = "replication"
	}
	return in, out
}
