package server_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/tls"
	"crypto/x509"
	"io"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/ddstore/ddstore/catalog"
	"github.com/ddstore/ddstore/client"
	"github.com/ddstore/ddstore/internal/localcluster"
	pb "github.com/ddstore/ddstore/proto/ddstore/v1"
	"github.com/ddstore/ddstore/server/auth"
	"github.com/golang-jwt/jwt/v5"
	"github.com/hashicorp/raft"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// caller is a raw gRPC connection to one node with some credentials, to
// call every RPC the way an attacker would.
type caller struct {
	conn  *grpc.ClientConn
	token string
}

func dialAs(t *testing.T, addr string, tc *tls.Config, token string) caller {
	t.Helper()
	conn, err := grpc.NewClient("passthrough:///"+addr, grpc.WithTransportCredentials(credentials.NewTLS(tc)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return caller{conn: conn, token: token}
}

func (c caller) ctx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	if c.token != "" {
		ctx = metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+c.token)
	}
	return ctx
}

// every calls each RPC of every public and internal service once and
// returns the code each one got.
func (c caller) every(t *testing.T) map[string]codes.Code {
	t.Helper()
	files, cluster, fed, node := pb.NewFilesClient(c.conn), pb.NewClusterClient(c.conn), pb.NewFederationClient(c.conn), pb.NewNodeClient(c.conn)
	id := make([]byte, 32)
	out := map[string]codes.Code{}
	unary := func(name string, err error) { out[name] = status.Code(err) }
	ctx := c.ctx(t)
	up, err := files.Upload(ctx)
	if err == nil {
		_, err = up.CloseAndRecv()
	}
	unary("Files/Upload", err)
	_, err = files.MissingChunks(ctx, &pb.MissingChunksRequest{Ids: [][]byte{id}})
	unary("Files/MissingChunks", err)
	_, err = files.Commit(ctx, &pb.CommitRequest{Manifest: &pb.FileManifest{Name: "x"}})
	unary("Files/Commit", err)
	cp, err := files.CommitParts(ctx)
	if err == nil {
		_, err = cp.CloseAndRecv()
	}
	unary("Files/CommitParts", err)
	dl, err := files.Download(ctx, &pb.DownloadRequest{Name: "x"})
	if err == nil {
		_, err = dl.Recv()
	}
	unary("Files/Download", err)
	from := int64(0)
	dr, err := files.DownloadRange(ctx, &pb.DownloadRangeRequest{TimeFromUnixNano: &from})
	if err == nil {
		_, err = dr.Recv()
	}
	unary("Files/DownloadRange", err)
	_, err = files.Stat(ctx, &pb.StatRequest{Name: "x"})
	unary("Files/Stat", err)
	_, err = files.List(ctx, &pb.ListRequest{})
	unary("Files/List", err)
	_, err = files.Delete(ctx, &pb.DeleteRequest{Name: "x"})
	unary("Files/Delete", err)
	_, err = cluster.Status(ctx, &pb.StatusRequest{})
	unary("Cluster/Status", err)
	_, err = cluster.Join(ctx, &pb.JoinRequest{Id: "rogue", ApiAddr: "127.0.0.1:1", RaftAddr: "127.0.0.1:2"})
	unary("Cluster/Join", err)
	_, err = cluster.Leave(ctx, &pb.LeaveRequest{Id: "no-such-node"})
	unary("Cluster/Leave", err)
	_, err = cluster.Collect(ctx, &pb.CollectRequest{DryRun: true})
	unary("Cluster/Collect", err)
	_, err = cluster.Repair(ctx, &pb.RepairRequest{})
	unary("Cluster/Repair", err)
	_, err = cluster.Replicate(ctx, &pb.ReplicateRequest{Name: "x", To: "nowhere"})
	unary("Cluster/Replicate", err)
	_, err = fed.Filters(ctx, &pb.FiltersRequest{FromCluster: "evil"})
	unary("Federation/Filters", err)
	_, err = fed.GetChunk(ctx, &pb.GetChunkRequest{Id: id})
	unary("Federation/GetChunk", err)
	cmd, _ := catalog.EncodeCommand(&pb.Command{Op: &pb.Command_RemoveNode{RemoveNode: &pb.RemoveNode{Id: "node2"}}})
	_, err = node.Propose(ctx, &pb.ProposeRequest{Command: cmd})
	unary("Node/Propose", err)
	_, err = node.ReadIndex(ctx, &pb.ReadIndexRequest{})
	unary("Node/ReadIndex", err)
	_, err = node.Term(ctx, &pb.TermRequest{})
	unary("Node/Term", err)
	_, err = node.HasChunks(ctx, &pb.HasChunksRequest{Ids: [][]byte{id}})
	unary("Node/HasChunks", err)
	pc, err := node.PutChunks(ctx)
	if err == nil {
		pc.CloseSend()
		_, err = pc.Recv()
	}
	unary("Node/PutChunks", err)
	_, err = node.PutChunk(ctx, &pb.PutChunksRequest{Chunk: &pb.Chunk{Id: id}})
	unary("Node/PutChunk", err)
	_, err = node.GetChunk(ctx, &pb.GetChunkRequest{Id: id})
	unary("Node/GetChunk", err)
	_, err = node.LocalStatus(ctx, &pb.LocalStatusRequest{})
	unary("Node/LocalStatus", err)
	lc, err := node.ListChunks(ctx, &pb.ListChunksRequest{})
	if err == nil {
		_, err = lc.Recv()
	}
	unary("Node/ListChunks", err)
	_, err = node.DeleteChunks(ctx, &pb.DeleteChunksRequest{Ids: [][]byte{id}})
	unary("Node/DeleteChunks", err)
	return out
}

// TestSecurity replays the attacks of an outsider on the same network
// against a 3-node cluster with mutual TLS, and checks the roles of client
// tokens and certificates.
func TestSecurity(t *testing.T) {
	var logs syncBuffer
	cl := startCluster(t, localcluster.Options{Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	ca := cl.CA()
	addr := cl.Members[1].APIAddr
	roots := x509.NewCertPool()
	roots.AddCert(ca.Cert)
	anon := &tls.Config{RootCAs: roots}
	token := func(role auth.Role, prefix string) string {
		tok, err := cl.Token(role, prefix, time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	admin := newClient(t, cl)
	if _, err := admin.Put(context.Background(), "a/x", strings.NewReader("kept"), client.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := admin.Put(context.Background(), "b/x", strings.NewReader("kept too"), client.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	before := raftState(t, admin)

	t.Run("NoCredentials", func(t *testing.T) {
		for rpc, code := range dialAs(t, addr, anon, "").every(t) {
			if code != codes.Unauthenticated {
				t.Errorf("%s without credentials: %v, want Unauthenticated", rpc, code)
			}
		}
	})

	t.Run("ClientsNeverReachTheInternalAPI", func(t *testing.T) {
		// An admin token and an admin client certificate: the most a client
		// can hold. The internal API and Join stay shut.
		certPEM, keyPEM, err := ca.IssueClient(auth.ClientCert{Cluster: "ddstore", Name: "ops", Role: auth.RoleAdmin})
		if err != nil {
			t.Fatal(err)
		}
		pair, err := tls.X509KeyPair(certPEM, keyPEM)
		if err != nil {
			t.Fatal(err)
		}
		withCert := &tls.Config{RootCAs: roots, Certificates: []tls.Certificate{pair}}
		for name, c := range map[string]caller{"admin token": dialAs(t, addr, anon, token(auth.RoleAdmin, "")), "admin certificate": dialAs(t, addr, withCert, "")} {
			for rpc, code := range c.every(t) {
				internal := strings.HasPrefix(rpc, "Node/") || strings.HasPrefix(rpc, "Federation/") || rpc == "Cluster/Join"
				if internal && code != codes.PermissionDenied {
					t.Errorf("%s with an %s: %v, want PermissionDenied", rpc, name, code)
				}
				if !internal && (code == codes.PermissionDenied || code == codes.Unauthenticated) {
					t.Errorf("%s with an %s: %v, want it allowed", rpc, name, code)
				}
			}
		}
	})

	t.Run("Roles", func(t *testing.T) {
		read := client.WithToken(token(auth.RoleRead, ""))
		c, err := client.New([]string{addr}, append(cl.TLSOnly(), read)...)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		var buf bytes.Buffer
		if _, err := c.Get(context.Background(), "a/x", &buf, client.GetOptions{}); err != nil || buf.String() != "kept" {
			t.Fatalf("read token get: %q, %v", buf.String(), err)
		}
		if _, err := c.Put(context.Background(), "a/new", strings.NewReader("no"), client.PutOptions{}); status.Code(err) != codes.PermissionDenied {
			t.Errorf("read token put: %v, want PermissionDenied", err)
		}
		if err := c.Delete(context.Background(), "a/x"); status.Code(err) != codes.PermissionDenied {
			t.Errorf("read token rm: %v, want PermissionDenied", err)
		}
		if _, err := c.Collect(context.Background(), true); status.Code(err) != codes.PermissionDenied {
			t.Errorf("read token gc: %v, want PermissionDenied", err)
		}
		st, err := c.Status(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		for _, n := range st.GetNodes() {
			if n.GetApiAddr() != "" || n.GetRaftAddr() != "" {
				t.Errorf("status for a read token shows internal addresses: %v", n)
			}
		}
		if st, err := admin.Status(context.Background()); err != nil || st.GetNodes()[0].GetRaftAddr() == "" {
			t.Errorf("status for an admin lacks internal addresses: %v", err)
		}

		write := client.WithToken(token(auth.RoleWrite, "a/"))
		w, err := client.New([]string{addr}, append(cl.TLSOnly(), write)...)
		if err != nil {
			t.Fatal(err)
		}
		defer w.Close()
		if _, err := w.Put(context.Background(), "a/new", strings.NewReader("yes"), client.PutOptions{}); err != nil {
			t.Errorf("write token put inside its prefix: %v", err)
		}
		if _, err := w.Put(context.Background(), "b/x", strings.NewReader("no"), client.PutOptions{Overwrite: true}); status.Code(err) != codes.PermissionDenied {
			t.Errorf("write token for a/ put b/x: %v, want PermissionDenied", err)
		}
		if err := w.Delete(context.Background(), "b/x"); status.Code(err) != codes.PermissionDenied {
			t.Errorf("write token for a/ rm b/x: %v, want PermissionDenied", err)
		}
		if _, err := w.Stat(context.Background(), "b/x", 0); status.Code(err) != codes.PermissionDenied {
			t.Errorf("write token for a/ stat b/x: %v, want PermissionDenied", err)
		}
		if _, err := w.Repair(context.Background()); status.Code(err) != codes.PermissionDenied {
			t.Errorf("write token repair: %v, want PermissionDenied", err)
		}
		listing, err := w.List(context.Background(), client.ListOptions{})
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range listing.Files {
			if !strings.HasPrefix(f.GetName(), "a/") {
				t.Errorf("write token for a/ lists %s", f.GetName())
			}
		}
		if got, err := admin.Stat(context.Background(), "b/x", 0); err != nil || got.GetSize() != uint64(len("kept too")) {
			t.Errorf("b/x changed: %v, %v", got, err)
		}
		// Each mutation, allowed or not, left one audit line naming who,
		// what and how it ended.
		for _, want := range []string{
			`op=put principal=client:test-write(write,prefix=a/,token) outcome=OK`,
			`op=put principal=client:test-write(write,prefix=a/,token) outcome=PermissionDenied`,
			`op=rm principal=client:test-write(write,prefix=a/,token) outcome=PermissionDenied`,
			`op=rm principal=client:test-read(read,token) outcome=PermissionDenied`,
			`op=gc principal=client:test-read(read,token) outcome=PermissionDenied`,
			`op=repair principal=client:test-write(write,prefix=a/,token) outcome=PermissionDenied`,
		} {
			if n := countAudit(logs.String(), want); n != 1 {
				t.Errorf("%d audit lines with %s, want 1; audit lines:\n%s", n, want, grepAudit(logs.String()))
			}
		}
	})

	t.Run("BadTokens", func(t *testing.T) {
		other, err := auth.NewCA("ddstore", time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		forged, err := other.IssueToken("ddstore", "mallory", auth.RoleAdmin, "", time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		expired := signToken(t, ca, jwt.MapClaims{"iss": "ddstore", "aud": "ddstore", "sub": "old", "role": "admin",
			"iat": time.Now().Add(-2 * time.Hour).Unix(), "exp": time.Now().Add(-time.Hour).Unix()})
		otherCluster, err := ca.IssueToken("elsewhere", "x", auth.RoleAdmin, "", time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		for name, tok := range map[string]string{"signed by another CA": forged, "expired": expired, "for another cluster": otherCluster, "garbage": "not.a.token"} {
			_, err := pb.NewFilesClient(dialAs(t, addr, anon, tok).conn).List(dialAs(t, addr, anon, tok).ctx(t), &pb.ListRequest{})
			if status.Code(err) != codes.Unauthenticated {
				t.Errorf("token %s: %v, want Unauthenticated", name, err)
			}
		}
	})

	t.Run("RaftPortTakesOnlyNodesOfThisCluster", func(t *testing.T) {
		leader := cl.Members[max(0, cl.Leader(context.Background()))]
		target := raft.ServerAddress(leader.RaftAddr)
		req := &raft.AppendEntriesRequest{RPCHeader: raft.RPCHeader{ProtocolVersion: raft.ProtocolVersionMax, ID: []byte("rogue"), Addr: []byte("127.0.0.1:1")},
			Term: 1 << 40, PrevLogEntry: 0, PrevLogTerm: 0, LeaderCommitIndex: 1 << 40}
		stranger, err := auth.NewCA("ddstore", time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		certPEM, keyPEM, err := stranger.IssueNode(auth.NodeCert{Cluster: "ddstore", NodeID: "node9", Hosts: []string{"127.0.0.1"}})
		if err != nil {
			t.Fatal(err)
		}
		pair, _ := tls.X509KeyPair(certPEM, keyPEM)
		layers := map[string]raft.StreamLayer{
			"plain TCP": &dialLayer{closed: make(chan struct{}), dial: func(a string, d time.Duration) (net.Conn, error) { return net.DialTimeout("tcp", a, d) }},
			"TLS with a certificate of another CA": &dialLayer{closed: make(chan struct{}), dial: func(a string, d time.Duration) (net.Conn, error) {
				return tls.DialWithDialer(&net.Dialer{Timeout: d}, "tcp", a, &tls.Config{InsecureSkipVerify: true, Certificates: []tls.Certificate{pair}})
			}},
		}
		for name, layer := range layers {
			tr := raft.NewNetworkTransport(layer, 1, 2*time.Second, io.Discard)
			var resp raft.AppendEntriesResponse
			if err := tr.AppendEntries(raft.ServerID(leader.ID), target, req, &resp); err == nil {
				t.Errorf("%s: AppendEntries with term 2^40 was answered: %+v", name, resp)
			}
			var ir raft.InstallSnapshotResponse
			if err := tr.InstallSnapshot(raft.ServerID(leader.ID), target, &raft.InstallSnapshotRequest{RPCHeader: req.RPCHeader, Term: 1 << 40, LastLogIndex: 1 << 40, Size: 1}, &ir, strings.NewReader("x")); err == nil {
				t.Errorf("%s: InstallSnapshot was answered: %+v", name, ir)
			}
			tr.Close()
		}
		after := raftState(t, admin)
		if after.term != before.term || after.members != before.members {
			t.Errorf("raft state moved after the attacks: %+v -> %+v", before, after)
		}
		if got, err := admin.Stat(context.Background(), "a/x", 0); err != nil || got.GetSize() != 4 {
			t.Errorf("a/x after the attacks: %v, %v", got, err)
		}
	})
}

type raftSnapshot struct {
	term    uint64
	members string
}

// raftState reads the cluster's term and membership.
func raftState(t *testing.T, c *client.Client) raftSnapshot {
	t.Helper()
	st, err := c.Status(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, n := range st.GetNodes() {
		ids = append(ids, n.GetId()+"@"+n.GetRaftAddr())
	}
	return raftSnapshot{term: st.GetTerm(), members: strings.Join(ids, ",")}
}

// dialLayer is an attacker's raft.StreamLayer: it only dials.
type dialLayer struct {
	dial   func(addr string, timeout time.Duration) (net.Conn, error)
	closed chan struct{}
}

func (l *dialLayer) Accept() (net.Conn, error) { <-l.closed; return nil, net.ErrClosed }
func (l *dialLayer) Close() error              { close(l.closed); return nil }
func (l *dialLayer) Addr() net.Addr            { return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 1} }
func (l *dialLayer) Dial(a raft.ServerAddress, d time.Duration) (net.Conn, error) {
	return l.dial(string(a), d)
}

// signToken signs claims with the CA's key, as ddstore token create would,
// to make tokens the CLI refuses to make (already expired).
func signToken(t *testing.T, ca *auth.CA, claims jwt.MapClaims) string {
	t.Helper()
	s, err := jwt.NewWithClaims(jwt.SigningMethodES256, claims).SignedString(ca.Key.(*ecdsa.PrivateKey))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// countAudit counts the audit lines of logs that hold want.
func countAudit(logs, want string) int {
	n := 0
	for _, l := range strings.Split(logs, "\n") {
		if strings.Contains(l, "msg=audit") && strings.Contains(strings.ReplaceAll(l, `"`, ""), want) {
			n++
		}
	}
	return n
}

func grepAudit(logs string) string {
	var out []string
	for _, l := range strings.Split(logs, "\n") {
		if strings.Contains(l, "msg=audit") {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
