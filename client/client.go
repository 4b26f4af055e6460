// Package client is the Go client of ddstore. It speaks only the wire API
// (proto/ddstore/v1) and cuts files with the chunker: Put streams a file up
// sending only the chunks the cluster lacks, Get and GetFile stream it down,
// verifying every chunk and the whole file, and GetFile resumes a partial
// download from the first chunk that is missing or wrong.
package client

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"sync"
	"time"

	"github.com/ddstore/ddstore/chunker"
	"github.com/ddstore/ddstore/internal/grpcpool"
	"github.com/ddstore/ddstore/internal/tlswrite"
	"github.com/ddstore/ddstore/proto/codec"
	pb "github.com/ddstore/ddstore/proto/ddstore/v1"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/experimental"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// MaxMessageSize bounds one gRPC message: a largest chunk plus framing. It
// matches the server's limit.
const MaxMessageSize = 9 << 20

// Client talks to one cluster through any of its nodes. Calls go to one node
// at a time; when it is unavailable, the client moves on to the next. It is
// safe for concurrent use.
type Client struct {
	addrs   []string
	conns   []*grpc.ClientConn
	logger  *slog.Logger
	codecs  *chunker.Codecs
	cluster string

	tls   *tls.Config // nil: plain text
	token string      // sent with every call when set

	callTimeout     time.Duration // one attempt of a short unary call
	progressTimeout time.Duration // a transfer that moves nothing for this long moves to another node

	mu  sync.Mutex
	cur int
	// started: the first call chose the node to start with (start).
	started sync.Once
	// local: every node address is a loopback one (see GetOptions.Sources).
	local bool
	// avoidUntil: a node whose download stream failed is left out of the
	// extra sources of downloads until then (see GetOptions.Sources).
	avoidUntil []time.Time
}

// avoidFor is how long a node whose download stream failed is left out of
// the extra sources of downloads, as nodes avoid a node that missed a
// deadline.
const avoidFor = 10 * time.Second

// avoid leaves node i out of the extra sources of downloads for avoidFor.
func (c *Client) avoid(i int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.avoidUntil[i] = time.Now().Add(avoidFor)
}

// avoided reports whether node i is left out of extra sources now.
func (c *Client) avoided(i int) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return time.Now().Before(c.avoidUntil[i])
}

// Option configures a Client.
type Option func(*Client)

// WithLogger sets the logger for retries and fail-overs.
func WithLogger(l *slog.Logger) Option { return func(c *Client) { c.logger = l } }

// WithCluster sends every call to the named cluster: the nodes the client
// talks to pass calls on to that peer cluster (a put stores into it, a get
// or a listing answers from it only). Naming the nodes' own cluster keeps
// calls there, without asking peer clusters.
func WithCluster(name string) Option { return func(c *Client) { c.cluster = name } }

// WithTLS makes the client speak TLS, verifying the nodes with cfg (its
// RootCAs: the cluster's CA) and, if cfg has a certificate, presenting it.
func WithTLS(cfg *tls.Config) Option { return func(c *Client) { c.tls = cfg } }

// WithToken sends a signed client token (ddstore token create) with every
// call. Tokens travel only over TLS.
func WithToken(token string) Option { return func(c *Client) { c.token = token } }

// Default timeouts; WithCallTimeout and WithProgressTimeout change them.
const (
	DefaultCallTimeout     = 10 * time.Second
	DefaultProgressTimeout = 30 * time.Second
)

// WithCallTimeout bounds one attempt of a short call (stat, list, rm,
// status, the checks of an upload) on one node: a node that does not answer
// in time is left for the next one. 0 or less: no bound but the caller's
// context. Default DefaultCallTimeout.
func WithCallTimeout(d time.Duration) Option { return func(c *Client) { c.callTimeout = d } }

// WithProgressTimeout bounds how long a transfer may move no bytes on one
// node: a download then resumes on the next node from where it stopped, an
// upload fails with an error for which Retryable is true (a re-run sends only
// what the cluster lacks). 0 or less: no bound. Default
// DefaultProgressTimeout.
func WithProgressTimeout(d time.Duration) Option { return func(c *Client) { c.progressTimeout = d } }

// ErrNoProgress: a transfer moved no bytes for the progress timeout.
var ErrNoProgress = errors.New("client: the node stopped answering")

// bearer sends the token as gRPC metadata on every call.
type bearer string

func (b bearer) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{"authorization": "Bearer " + string(b)}, nil
}

func (bearer) RequireTransportSecurity() bool { return true }

// New returns a client for the nodes at addrs (host:port). It does not
// connect until the first call, which opens a connection to every node.
func New(addrs []string, opts ...Option) (*Client, error) {
	if len(addrs) == 0 {
		return nil, errors.New("client: no node address given")
	}
	c := &Client{addrs: addrs, logger: slog.New(slog.DiscardHandler), codecs: chunker.NewCodecs(),
		callTimeout: DefaultCallTimeout, progressTimeout: DefaultProgressTimeout}
	for _, o := range opts {
		o(c)
	}
	var target []grpc.DialOption
	if c.cluster != "" {
		md := metadata.Pairs(pb.MetadataCluster, c.cluster)
		target = append(target,
			grpc.WithUnaryInterceptor(func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
				return invoker(metadata.NewOutgoingContext(ctx, md), method, req, reply, cc, opts...)
			}),
			grpc.WithStreamInterceptor(func(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string, streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
				return streamer(metadata.NewOutgoingContext(ctx, md), desc, cc, method, opts...)
			}))
	}
	creds := insecure.NewCredentials()
	if c.tls != nil {
		creds = tlswrite.Credentials(credentials.NewTLS(c.tls))
	}
	if c.token != "" {
		if c.tls == nil {
			return nil, errors.New("client: a token is sent only over TLS: give the cluster's CA certificate too")
		}
		target = append(target, grpc.WithPerRPCCredentials(bearer(c.token)))
	}
	bufs := grpcpool.New()
	for _, a := range addrs {
		conn, err := grpc.NewClient("passthrough:///"+a, append([]grpc.DialOption{
			grpc.WithTransportCredentials(creds),
			experimental.WithBufferPool(bufs), // gRPC's buffers, not cleared before they are read into
			grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(MaxMessageSize), grpc.MaxCallSendMsgSize(MaxMessageSize), grpc.ForceCodecV2(codec.New())),
			grpc.WithInitialWindowSize(8 << 20),
			grpc.WithInitialConnWindowSize(32 << 20),
			grpc.WithReadBufferSize(256 << 10),
			grpc.WithWriteBufferSize(256 << 10),
		}, target...)...)
		if err != nil {
			c.Close()
			return nil, fmt.Errorf("client: node address %q: %w", a, err)
		}
		c.conns = append(c.conns, conn)
	}
	c.avoidUntil = make([]time.Time, len(c.conns))
	c.local = allLoopback(addrs)
	return c, nil
}

// allLoopback reports whether every address (host:port) names this host
// over loopback: localhost or an IP address in 127.0.0.0/8 or ::1.
func allLoopback(addrs []string) bool {
	for _, a := range addrs {
		host, _, err := net.SplitHostPort(a)
		if err != nil {
			host = a
		}
		if ip := net.ParseIP(host); host != "localhost" && (ip == nil || !ip.IsLoopback()) {
			return false
		}
	}
	return true
}

// Close closes the connections.
func (c *Client) Close() error {
	var errs []error
	for _, conn := range c.conns {
		errs = append(errs, conn.Close())
	}
	return errors.Join(errs...)
}

// node returns the connection in use and its index.
func (c *Client) node() (*grpc.ClientConn, int) {
	c.started.Do(c.start)
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.conns[c.cur], c.cur
}

// startWait is how long the first call waits for the first address's
// connection before it starts on another node whose connection is ready.
const startWait = time.Second

// start chooses the node the client starts with, at its first call: the
// first address, unless its connection is not ready within startWait while
// another's is. Every connection is opened at once. A node that accepts
// connections but never completes a handshake (hung, or stopped with
// SIGSTOP: the kernel still accepts for it) would otherwise cost the first
// call a whole call timeout (10 s), or a download its progress timeout,
// and the first call of a short-lived client (each CLI command) every time.
func (c *Client) start() {
	if len(c.conns) < 2 {
		return
	}
	for _, conn := range c.conns {
		conn.Connect()
	}
	ctx, cancel := context.WithTimeout(context.Background(), startWait)
	defer cancel()
	first := c.conns[0]
	for {
		st := first.GetState()
		if st == connectivity.Ready || st == connectivity.TransientFailure || st == connectivity.Shutdown {
			// Ready, or refused at once: a failed call moves on as usual.
			return
		}
		if !first.WaitForStateChange(ctx, st) {
			break
		}
	}
	for i, conn := range c.conns[1:] {
		if conn.GetState() == connectivity.Ready {
			c.mu.Lock()
			c.cur = i + 1
			c.mu.Unlock()
			c.logger.Warn("first node not ready; starting on another", "slow", c.addrs[0], "start", c.addrs[i+1], "waited", startWait)
			return
		}
	}
}

// failover moves to the next node if the failed one is still current.
func (c *Client) failover(failed int, err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.cur == failed && len(c.conns) > 1 {
		c.cur = (c.cur + 1) % len(c.conns)
		c.logger.Warn("node unavailable; trying the next one", "failed", c.addrs[failed], "next", c.addrs[c.cur], "err", err)
	}
}

// retryable reports errors worth another try on another node: not those
// where the node answered that a peer cluster was unavailable.
func retryable(err error) bool {
	if errors.Is(err, ErrNoProgress) {
		return true
	}
	switch status.Code(err) {
	case codes.Unavailable:
		return !peerUnavailable(err)
	case codes.Aborted:
		return true
	}
	return false
}

// peerUnavailable reports an Unavailable answer caused by a peer cluster.
func peerUnavailable(err error) bool { return hasReason(err, pb.ReasonPeerClusterUnavailable) }

// hasReason reports whether err is a status carrying a ddstore ErrorInfo
// reason.
func hasReason(err error, reason string) bool {
	for _, d := range status.Convert(err).Details() {
		if info, ok := d.(*errdetails.ErrorInfo); ok && info.GetReason() == reason {
			return true
		}
	}
	return false
}

// call runs a unary call, moving to another node while the one in use is
// unavailable or does not answer within the call timeout, for up to two
// rounds of all nodes.
func (c *Client) call(ctx context.Context, fn func(context.Context, *grpc.ClientConn) error) error {
	return c.callFor(ctx, c.callTimeout, fn)
}

// callFor is call with each attempt bounded by timeout (0: only by ctx), for
// calls that take long by nature (a garbage collection, a repair pass).
func (c *Client) callFor(ctx context.Context, timeout time.Duration, fn func(context.Context, *grpc.ClientConn) error) error {
	attempts := 2*len(c.conns) + 1
	backoff := 20 * time.Millisecond
	var err error
	for i := 0; i < attempts; i++ {
		conn, idx := c.node()
		err = c.attempt(ctx, timeout, conn, fn)
		if err == nil || !retryable(err) || ctx.Err() != nil {
			return err
		}
		c.failover(idx, err)
		select {
		case <-ctx.Done():
			return err
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 500*time.Millisecond)
	}
	return err
}

// attempt runs fn once against conn, bounded by timeout. A node that does
// not answer in time is reported as unavailable, so that the caller moves on.
func (c *Client) attempt(ctx context.Context, timeout time.Duration, conn *grpc.ClientConn, fn func(context.Context, *grpc.ClientConn) error) error {
	if timeout <= 0 {
		return fn(ctx, conn)
	}
	actx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	err := fn(actx, conn)
	if err != nil && ctx.Err() == nil && actx.Err() != nil {
		return status.Errorf(codes.Unavailable, "node %s did not answer within %s (%v)", conn.Target(), timeout, err)
	}
	return err
}

// Stat returns a file's manifest, from whichever cluster holds it.
func (c *Client) Stat(ctx context.Context, name string, consistency pb.Consistency) (*pb.FileManifest, error) {
	resp, err := c.Lookup(ctx, name, consistency)
	return resp.GetManifest(), err
}

// Lookup returns a file's manifest and the cluster that holds it.
func (c *Client) Lookup(ctx context.Context, name string, consistency pb.Consistency) (*pb.StatResponse, error) {
	var resp *pb.StatResponse
	err := c.call(ctx, func(ctx context.Context, conn *grpc.ClientConn) error {
		var err error
		resp, err = stat(ctx, pb.NewFilesClient(conn), &pb.StatRequest{Name: name, Consistency: consistency})
		return err
	})
	return resp, err
}

// stat asks one node for a file's whole manifest, page after page when its
// chunk list is longer than one message holds.
func stat(ctx context.Context, fc pb.FilesClient, req *pb.StatRequest) (*pb.StatResponse, error) {
	resp, err := fc.Stat(ctx, req)
	if err != nil {
		return nil, err
	}
	m := resp.GetManifest()
	for len(m.GetChunks()) < int(resp.GetChunksTotal()) {
		page, err := fc.Stat(ctx, &pb.StatRequest{Name: req.GetName(), Consistency: req.GetConsistency(), ChunksFrom: uint32(len(m.GetChunks()))})
		if err != nil {
			return nil, err
		}
		pm := page.GetManifest()
		if pm.GetCreatedUnixNano() != m.GetCreatedUnixNano() || !bytes.Equal(pm.GetBlake3(), m.GetBlake3()) || len(pm.GetChunks()) == 0 {
			return nil, status.Errorf(codes.Aborted, "%q changed while its manifest was read; try again", m.GetName())
		}
		m.Chunks = append(m.Chunks, pm.GetChunks()...)
	}
	return resp, nil
}

// ListOptions selects files to list.
type ListOptions struct {
	Prefix string
	// DateFrom, DateTo bound the files' time ranges: each a day
	// (YYYY-MM-DD: from its first instant, to its last) or an RFC 3339
	// timestamp (2018-04-13T00:00:00Z, 2018-04-13T00:00Z); inclusive.
	// Files whose range overlaps are listed.
	DateFrom, DateTo string
	Consistency      pb.Consistency
	PageSize         uint32
	// StartAfter lists only names after this one.
	StartAfter string
	// Limit, if positive, stops the listing once it holds this many files
	// (Truncated then says whether more follow). 0: every match.
	Limit int
}

// Listing is the answer to List.
type Listing struct {
	Files []*pb.FileInfo // by name, then cluster
	// Unanswered names the peer clusters that may hold matches but did not
	// answer in time.
	Unanswered []*pb.ClusterNote
	// Truncated: the listing stopped at ListOptions.Limit and more names
	// follow; ask again with StartAfter the last name.
	Truncated bool
}

// List returns every file matching opts, in name order, following pages;
// with the files of peer clusters that may hold matches.
func (c *Client) List(ctx context.Context, opts ListOptions) (*Listing, error) {
	all := &Listing{}
	bounds, err := parseListBounds(opts)
	if err != nil {
		return nil, err
	}
	after := opts.StartAfter
	for {
		var resp *pb.ListResponse
		pageSize := opts.PageSize
		if opts.Limit > 0 && (pageSize == 0 || int(pageSize) > opts.Limit-len(all.Files)) {
			pageSize = uint32(opts.Limit - len(all.Files))
		}
		err := c.call(ctx, func(ctx context.Context, conn *grpc.ClientConn) error {
			var err error
			resp, err = pb.NewFilesClient(conn).List(ctx, &pb.ListRequest{
				Prefix: opts.Prefix, StartAfter: after, Limit: pageSize, Consistency: opts.Consistency,
				DateFrom: bounds.dateFrom, DateTo: bounds.dateTo,
				TimeFromUnixNano: bounds.from, TimeToUnixNano: bounds.to,
			})
			return err
		})
		if err != nil {
			return nil, err
		}
		all.Files = append(all.Files, resp.GetFiles()...)
		for _, note := range resp.GetUnanswered() {
			if !slices.ContainsFunc(all.Unanswered, func(n *pb.ClusterNote) bool { return n.GetCluster() == note.GetCluster() }) {
				all.Unanswered = append(all.Unanswered, note)
			}
		}
		if !resp.GetTruncated() || len(resp.GetFiles()) == 0 {
			return all, nil
		}
		if opts.Limit > 0 && len(all.Files) >= opts.Limit {
			all.Truncated = true
			return all, nil
		}
		after = resp.GetFiles()[len(resp.GetFiles())-1].GetName()
	}
}

// Delete removes a file from the catalog. It succeeds when the file is gone
// afterwards: if an attempt failed without an answer (the node died, say)
// and the next one finds no such file, the first may well have removed it,
// and Delete reports success rather than NotFound.
func (c *Client) Delete(ctx context.Context, name string) error {
	unanswered := false
	err := c.call(ctx, func(ctx context.Context, conn *grpc.ClientConn) error {
		_, err := pb.NewFilesClient(conn).Delete(ctx, &pb.DeleteRequest{Name: name})
		if retryable(err) {
			unanswered = true
		}
		return err
	})
	if unanswered && status.Code(err) == codes.NotFound {
		return nil
	}
	return err
}

// Status returns the cluster's status as one node sees it.
func (c *Client) Status(ctx context.Context) (*pb.StatusResponse, error) {
	var resp *pb.StatusResponse
	err := c.call(ctx, func(ctx context.Context, conn *grpc.ClientConn) error {
		var err error
		resp, err = pb.NewClusterClient(conn).Status(ctx, &pb.StatusRequest{})
		return err
	})
	return resp, err
}

// Join asks the cluster to add a node.
func (c *Client) Join(ctx context.Context, id, apiAddr, raftAddr string) error {
	return c.call(ctx, func(ctx context.Context, conn *grpc.ClientConn) error {
		_, err := pb.NewClusterClient(conn).Join(ctx, &pb.JoinRequest{Id: id, ApiAddr: apiAddr, RaftAddr: raftAddr})
		return err
	})
}

// Leave asks the cluster to remove a node.
func (c *Client) Leave(ctx context.Context, id string) error {
	return c.call(ctx, func(ctx context.Context, conn *grpc.ClientConn) error {
		_, err := pb.NewClusterClient(conn).Leave(ctx, &pb.LeaveRequest{Id: id})
		return err
	})
}

// Retryable reports whether err is worth another try: the node was
// unavailable or the operation was aborted. Put of a file may be re-run; it
// sends only what the cluster still lacks.
func Retryable(err error) bool { return retryable(err) }

// Replicate copies a file of the cluster to the peer cluster to: its
// manifest and only the chunks the peer lacks.
func (c *Client) Replicate(ctx context.Context, name, to string, overwrite bool) (*pb.ReplicateResponse, error) {
	var resp *pb.ReplicateResponse
	err := c.callFor(ctx, 0, func(ctx context.Context, conn *grpc.ClientConn) error {
		var err error
		resp, err = pb.NewClusterClient(conn).Replicate(ctx, &pb.ReplicateRequest{Name: name, To: to, Overwrite: overwrite})
		return err
	})
	return resp, err
}

// Collect runs one garbage-collection sweep on the cluster's leader; with
// dryRun it only reports what would go.
func (c *Client) Collect(ctx context.Context, dryRun bool) (*pb.CollectResponse, error) {
	return c.CollectWith(ctx, CollectOptions{DryRun: dryRun})
}

// CollectOptions tune a garbage-collection sweep.
type CollectOptions struct {
	DryRun bool // only report what would go
	// Now collects every chunk unreferenced now, without waiting out the
	// cluster's grace period (admins only). An upload racing it commits
	// whole or fails with FailedPrecondition; then upload again.
	Now bool
}

// CollectWith runs one garbage-collection sweep on the cluster's leader.
func (c *Client) CollectWith(ctx context.Context, opts CollectOptions) (*pb.CollectResponse, error) {
	var resp *pb.CollectResponse
	err := c.callFor(ctx, 0, func(ctx context.Context, conn *grpc.ClientConn) error {
		var err error
		resp, err = pb.NewClusterClient(conn).Collect(ctx, &pb.CollectRequest{DryRun: opts.DryRun, Now: opts.Now})
		return err
	})
	return resp, err
}

// Repair runs one repair pass on the cluster's leader: every chunk a file
// refers to is brought back to R copies on live nodes.
func (c *Client) Repair(ctx context.Context) (*pb.RepairResponse, error) {
	var resp *pb.RepairResponse
	err := c.callFor(ctx, 0, func(ctx context.Context, conn *grpc.ClientConn) error {
		var err error
		resp, err = pb.NewClusterClient(conn).Repair(ctx, &pb.RepairRequest{})
		return err
	})
	return resp, err
}

// GetFiles returns the listed files; nil-safe.
func (l *Listing) GetFiles() []*pb.FileInfo {
	if l == nil {
		return nil
	}
	return l.Files
}
