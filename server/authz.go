package server

import (
	"context"
	"net"
	"strings"
	"sync/atomic"
	"time"

	pb "github.com/ddstore/ddstore/proto/ddstore/v1"
	"github.com/ddstore/ddstore/server/auth"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
)

// MetadataAuthorization carries a client's token: "Bearer <token>".
const MetadataAuthorization = "authorization"

// PeerPolicy is what the calls a peer cluster forwards may do here: read
// (stat, get, ls, filters, chunks) or also write (put, rm), within Prefix.
// RoleNone shuts the peer out.
type PeerPolicy struct {
	Role   auth.Role
	Prefix string
}

// rule is who may call one RPC.
type rule struct {
	need     auth.Role // least role of a client or peer
	nodeOnly bool      // only a node of this cluster (the internal API)
	clients  bool      // clients may call it (else only nodes and peers)
	peers    bool      // peer clusters may call it (under their policy)
	audit    string    // the operation's name in the audit log, if it changes something
	heavy    bool      // a whole-store pass: limited per caller
}

// ruleFor returns the rule of a full method name. Unknown methods are
// refused, so a new RPC must be given a rule here before anyone can call it.
func ruleFor(method string) (rule, bool) {
	service, name, _ := strings.Cut(strings.TrimPrefix(method, "/"), "/")
	switch service {
	case "grpc.health.v1.Health", "grpc.reflection.v1.ServerReflection", "grpc.reflection.v1alpha.ServerReflection":
		return rule{need: auth.RoleNone, clients: true, peers: true}, true
	case pb.Node_ServiceDesc.ServiceName:
		return rule{nodeOnly: true}, true
	case pb.Federation_ServiceDesc.ServiceName:
		return rule{need: auth.RoleRead, peers: true}, true
	case pb.Files_ServiceDesc.ServiceName:
		r := rule{need: auth.RoleRead, clients: true, peers: true}
		switch name {
		case "Upload", "MissingChunks":
			r.need = auth.RoleWrite
		case "Commit", "CommitParts":
			r.need, r.audit = auth.RoleWrite, "put"
		case "Delete":
			r.need, r.audit = auth.RoleWrite, "rm"
		}
		return r, true
	case pb.Cluster_ServiceDesc.ServiceName:
		switch name {
		case "Status":
			return rule{need: auth.RoleRead, clients: true}, true
		case "Join":
			return rule{nodeOnly: true, audit: "join"}, true
		case "Leave":
			return rule{need: auth.RoleAdmin, clients: true, audit: "leave"}, true
		case "Collect":
			return rule{need: auth.RoleAdmin, clients: true, audit: "gc", heavy: true}, true
		case "Repair":
			return rule{need: auth.RoleAdmin, clients: true, audit: "repair", heavy: true}, true
		case "Replicate":
			return rule{need: auth.RoleAdmin, clients: true, audit: "replicate"}, true
		case "SnapshotSave": // streams: the handler audits the calls that run
			return rule{need: auth.RoleAdmin, clients: true, audit: "snapshot-save", heavy: true}, true
		case "SnapshotRestore":
			return rule{need: auth.RoleAdmin, clients: true, audit: "snapshot-restore", heavy: true}, true
		}
	}
	return rule{}, false
}

// guard authenticates every call (a node, peer or client certificate, or a
// client token) and authorizes it by its method's rule and the names it
// touches; mutations leave one audit line each.
type guard struct {
	n      *Node
	trust  *auth.Trust // nil: insecure, every caller is trusted
	tokens *auth.TokenVerifier
	known  *auth.Cache   // principals of chains and tokens that verified lately
	denied atomic.Uint64 // calls refused: no or insufficient credentials
}

func newGuard(n *Node) *guard {
	g := &guard{n: n, trust: n.cfg.TLS, known: auth.NewCache(4096, time.Minute)}
	if g.trust != nil {
		g.tokens = auth.NewTokenVerifier(n.cfg.Cluster, g.trust.CA)
	}
	return g
}

// principal authenticates the caller of ctx.
func (g *guard) principal(ctx context.Context) (auth.Principal, error) {
	if g.trust == nil {
		return auth.Principal{Kind: auth.KindLocal, Cluster: g.n.cfg.Cluster, Name: remoteHost(ctx), Role: auth.RoleAdmin, Via: "insecure"}, nil
	}
	if md, ok := metadata.FromIncomingContext(ctx); ok {
		if v := md.Get(MetadataAuthorization); len(v) > 0 {
			tok, ok := strings.CutPrefix(v[0], "Bearer ")
			if !ok {
				return auth.Principal{}, status.Error(codes.Unauthenticated, "the authorization metadata must be \"Bearer <token>\"")
			}
			p, err := g.known.VerifyToken(g.tokens, strings.TrimSpace(tok))
			if err != nil {
				return auth.Principal{}, status.Errorf(codes.Unauthenticated, "token refused: %v", err)
			}
			return p, nil
		}
	}
	pr, ok := peer.FromContext(ctx)
	if !ok {
		return auth.Principal{Kind: auth.KindAnonymous}, nil
	}
	info, ok := pr.AuthInfo.(credentials.TLSInfo)
	if !ok {
		return auth.Principal{Kind: auth.KindAnonymous}, nil
	}
	p, err := g.known.Identify(g.trust, info.State)
	if err != nil {
		return auth.Principal{}, status.Errorf(codes.Unauthenticated, "certificate refused: %v", err)
	}
	if p.Kind == auth.KindPeer {
		pol := g.n.cfg.policy(p.Cluster)
		p.Role, p.Prefix = pol.Role, pol.Prefix
	}
	return p, nil
}

// allow decides whether p may call a method of rule r.
func (g *guard) allow(p auth.Principal, r rule, method string) error {
	switch p.Kind {
	case auth.KindLocal:
		return nil
	case auth.KindNode:
		return nil // a node of this cluster runs the cluster
	case auth.KindAnonymous:
		if r.need == auth.RoleNone && !r.nodeOnly {
			return nil
		}
		return status.Error(codes.Unauthenticated, "no credentials: present a client certificate or a token (--token-file, DDSTORE_TOKEN)")
	}
	switch {
	case r.nodeOnly:
		return status.Errorf(codes.PermissionDenied, "%s is served only to nodes of cluster %s; %s is not one", method, g.n.cfg.Cluster, p)
	case p.Kind == auth.KindPeer && !r.peers, p.Kind == auth.KindClient && !r.clients:
		return status.Errorf(codes.PermissionDenied, "%s may not call %s", p, method)
	case p.Role < r.need:
		return status.Errorf(codes.PermissionDenied, "%s needs the %s role; %s has %s", method, r.need, p, p.Role)
	}
	return nil
}

// requestNames returns the file names a request touches (a listing's prefix
// is narrowed by scope instead).
func requestNames(req any) []string {
	switch r := req.(type) {
	case *pb.CommitRequest:
		return []string{r.GetManifest().GetName()}
	case *pb.MissingChunksRequest:
		if in := r.GetIntent(); in != nil {
			return []string{in.GetName()}
		}
	case *pb.DeleteRequest:
		return []string{r.GetName()}
	case *pb.StatRequest:
		return []string{r.GetName()}
	case *pb.DownloadRequest:
		return []string{r.GetName()}
	case *pb.ReplicateRequest:
		return []string{r.GetName()}
	}
	return nil
}

// scope checks that a request stays inside the caller's prefix; a listing
// (List, DownloadRange) is narrowed to it.
func scope(p auth.Principal, req any) error {
	if p.Prefix == "" {
		return nil
	}
	// A listing, or the download of what one lists (DownloadRange).
	var prefix *string
	switch l := req.(type) {
	case *pb.ListRequest:
		prefix = &l.Prefix
	case *pb.DownloadRangeRequest:
		prefix = &l.Prefix
	}
	if prefix != nil {
		switch {
		case strings.HasPrefix(*prefix, p.Prefix):
		case strings.HasPrefix(p.Prefix, *prefix):
			*prefix = p.Prefix
		default:
			return status.Errorf(codes.PermissionDenied, "%s may list only names under %q, not %q", p, p.Prefix, *prefix)
		}
		return nil
	}
	for _, name := range requestNames(req) {
		if !p.Covers(name) {
			return status.Errorf(codes.PermissionDenied, "%s may touch only names under %q, not %q", p, p.Prefix, name)
		}
	}
	return nil
}

// check authenticates and authorizes a call; it returns the context the
// handler runs with (carrying the principal).
func (g *guard) check(ctx context.Context, method string) (context.Context, auth.Principal, rule, error) {
	r, ok := ruleFor(method)
	if !ok {
		return ctx, auth.Principal{}, r, status.Errorf(codes.Unimplemented, "unknown method %s", method)
	}
	p, err := g.principal(ctx)
	if err != nil {
		g.denied.Add(1)
		return ctx, p, r, err
	}
	if err := g.allow(p, r, method); err != nil {
		g.denied.Add(1)
		return ctx, p, r, err
	}
	return auth.NewContext(ctx, p), p, r, nil
}

func (g *guard) unary(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	ctx, p, r, err := g.check(ctx, info.FullMethod)
	if err == nil {
		if err = scope(p, req); err != nil {
			g.denied.Add(1)
		}
	}
	if err != nil {
		g.audit(r, p, req, err, 0)
		return nil, err
	}
	start := time.Now()
	resp, err := handler(ctx, req)
	g.audit(r, p, req, err, time.Since(start))
	return resp, err
}

func (g *guard) stream(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	ctx, p, r, err := g.check(ss.Context(), info.FullMethod)
	if err != nil {
		g.audit(r, p, nil, err, 0) // a refused call that would change something
		return err
	}
	return handler(srv, &guardedStream{ServerStream: ss, ctx: ctx, p: p, g: g})
}

// guardedStream carries the principal and checks the names of the
// messages it receives (a download's request comes as its first message).
type guardedStream struct {
	grpc.ServerStream
	ctx context.Context
	p   auth.Principal
	g   *guard
}

func (s *guardedStream) Context() context.Context { return s.ctx }

func (s *guardedStream) RecvMsg(m any) error {
	if err := s.ServerStream.RecvMsg(m); err != nil {
		return err
	}
	if err := scope(s.p, m); err != nil {
		s.g.denied.Add(1)
		return err
	}
	return nil
}

// audit logs one line for a call that changes something (or tried to).
func (g *guard) audit(r rule, p auth.Principal, req any, err error, took time.Duration) {
	op := r.audit
	if q, ok := req.(*pb.MissingChunksRequest); ok && q.GetIntent() != nil && err != nil {
		op = "put" // a put refused before its upload ends here; an accepted one is audited at its commit
	}
	if op == "" {
		return
	}
	attrs := []any{"op", op, "principal", p.String(), "outcome", status.Code(err).String(), "took", took.Round(time.Millisecond)}
	switch q := req.(type) {
	case *pb.JoinRequest:
		attrs = append(attrs, "node", q.GetId())
	case *pb.LeaveRequest:
		attrs = append(attrs, "node", q.GetId())
	case *pb.ReplicateRequest:
		attrs = append(attrs, "name", q.GetName(), "to", q.GetTo())
	case *pb.CollectRequest:
		attrs = append(attrs, "dry_run", q.GetDryRun(), "now", q.GetNow())
	default:
		if names := requestNames(req); len(names) > 0 {
			attrs = append(attrs, "name", names[0])
		}
	}
	if err != nil {
		attrs = append(attrs, "err", status.Convert(err).Message())
	}
	g.n.log.Info("audit", attrs...)
}

// remoteHost is the caller's host, for callers with no other identity.
func remoteHost(ctx context.Context) string {
	if pr, ok := peer.FromContext(ctx); ok && pr.Addr != nil {
		if h, _, err := net.SplitHostPort(pr.Addr.String()); err == nil {
			return h
		}
		return pr.Addr.String()
	}
	return "unknown"
}

// callerKey names who a call acts for, for the per-caller limits.
func callerKey(ctx context.Context) string {
	if p, ok := auth.FromContext(ctx); ok && p.Kind != auth.KindLocal && p.Kind != auth.KindAnonymous {
		return p.String()
	}
	return "host " + remoteHost(ctx)
}

// isNode reports whether the caller of ctx is a node of this cluster (held
// only to the node-wide limits: its streams carry every client's copies).
func isNode(ctx context.Context) bool {
	p, ok := auth.FromContext(ctx)
	return ok && p.Kind == auth.KindNode
}

// isAdmin reports whether the caller of ctx may see internal addresses.
func isAdmin(ctx context.Context) bool {
	p, ok := auth.FromContext(ctx)
	return !ok || p.Kind == auth.KindLocal || p.Kind == auth.KindNode || p.Role >= auth.RoleAdmin
}
