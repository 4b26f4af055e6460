package auth

import (
	"crypto/tls"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// writeFile writes data to dir/name and returns the path.
func writeFile(t *testing.T, dir, name string, data []byte) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// loadNode issues a node certificate of cluster from ca and loads it with
// LoadTrust, trusting the CAs in peers for their names.
func loadNode(t *testing.T, ca *CA, cluster, id string, peers map[string]*CA) *Trust {
	t.Helper()
	dir := t.TempDir()
	certPEM, keyPEM, err := ca.IssueNode(NodeCert{Cluster: cluster, NodeID: id})
	if err != nil {
		t.Fatal(err)
	}
	peerFiles := map[string]string{}
	for name, pca := range peers {
		peerFiles[name] = writeFile(t, dir, name+".crt", pca.CertPEM)
	}
	tr, err := LoadTrust(cluster, writeFile(t, dir, "ca.crt", ca.CertPEM), writeFile(t, dir, id+".crt", certPEM), writeFile(t, dir, id+".key", keyPEM), peerFiles)
	if err != nil {
		t.Fatal(err)
	}
	return tr
}

// clientTLS issues a client certificate and returns ClientTLS's
// configuration for it, trusting ca's nodes.
func clientTLS(t *testing.T, ca *CA, cluster, name string, role Role, prefix string) *tls.Config {
	t.Helper()
	dir := t.TempDir()
	certPEM, keyPEM, err := ca.IssueClient(ClientCert{Cluster: cluster, Name: name, Role: role, Prefix: prefix})
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := ClientTLS(writeFile(t, dir, "ca.crt", ca.CertPEM), writeFile(t, dir, "c.crt", certPEM), writeFile(t, dir, "c.key", keyPEM))
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

// presenting is a client that presents cert, whatever CAs the server asks
// for, and trusts any server.
func presenting(cert tls.Certificate) *tls.Config {
	return &tls.Config{
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &cert, nil },
		InsecureSkipVerify:   true,
	}
}

// onlyCert is a server that presents cert and asks nothing of clients.
func onlyCert(cert tls.Certificate) *tls.Config {
	return &tls.Config{Certificates: []tls.Certificate{cert}}
}

type dialer func(addr string) (io.Closer, error)

func tlsDial(cfg *tls.Config) dialer {
	return func(addr string) (io.Closer, error) {
		c, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", addr, cfg)
		if err != nil {
			return nil, err
		}
		return c, nil
	}
}

// plainDial speaks something other than TLS.
func plainDial(addr string) (io.Closer, error) {
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return nil, err
	}
	_, err = c.Write([]byte("GET / HTTP/1.0\r\n\r\n"))
	return c, err
}

// handshake runs one TLS handshake over 127.0.0.1 between a server with
// config server and dial, and returns the server's connection state and
// both sides' errors.
func handshake(t *testing.T, server *tls.Config, dial dialer) (state tls.ConnectionState, serverErr, clientErr error) {
	t.Helper()
	ln, err := tls.Listen("tcp", "127.0.0.1:0", server)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	type result struct {
		state tls.ConnectionState
		err   error
	}
	done := make(chan result, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			done <- result{err: err}
			return
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(5 * time.Second))
		tc := c.(*tls.Conn)
		err = tc.Handshake()
		done <- result{tc.ConnectionState(), err}
	}()
	conn, clientErr := dial(ln.Addr().String())
	res := <-done
	if conn != nil {
		conn.Close()
	}
	return res.state, res.err, clientErr
}

// world is the test's world: clusters A, B and C; B and C share one CA;
// A's nodes trust it for both.
type world struct {
	caA, caBC, caEvil *CA
	a1, a2, b1, c1    *Trust
	evil              *Trust // claims to be a node of A, with another CA
}

func newWorld(t *testing.T) *world {
	w := &world{caA: newTestCA(t, "A"), caBC: newTestCA(t, "B"), caEvil: newTestCA(t, "A")}
	peersOfA := map[string]*CA{"B": w.caBC, "C": w.caBC}
	w.a1 = loadNode(t, w.caA, "A", "a1", peersOfA)
	w.a2 = loadNode(t, w.caA, "A", "a2", peersOfA)
	w.b1 = loadNode(t, w.caBC, "B", "b1", map[string]*CA{"A": w.caA})
	w.c1 = loadNode(t, w.caBC, "C", "c1", map[string]*CA{"A": w.caA})
	w.evil = loadNode(t, w.caEvil, "A", "a9", nil)
	return w
}

// issueNodeCert issues a node certificate of cluster from ca.
func issueNodeCert(t *testing.T, ca *CA, cluster, id string) tls.Certificate {
	t.Helper()
	certPEM, keyPEM, err := ca.IssueNode(NodeCert{Cluster: cluster, NodeID: id})
	if err != nil {
		t.Fatal(err)
	}
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	return cert
}

// peerDial is tr.DialPeerTLS(peer), or fails the test.
func peerDial(t *testing.T, tr *Trust, peer string) *tls.Config {
	t.Helper()
	cfg, err := tr.DialPeerTLS(peer)
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

func TestHandshakes(t *testing.T) {
	w := newWorld(t)
	aliceCfg := clientTLS(t, w.caA, "A", "alice", RoleWrite, "a/")
	caOnly, err := ClientTLS(writeFile(t, t.TempDir(), "ca.crt", w.caA.CertPEM), "", "")
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name        string
		server      *tls.Config
		dial        dialer
		refusedBy   string // "", "server" or "client"
		refusalText string
	}{
		{"raft: node of the cluster", w.a1.RaftServerTLS(), tlsDial(w.a2.DialNodeTLS()), "", ""},
		{"raft: plain TCP", w.a1.RaftServerTLS(), plainDial, "server", ""},
		{"raft: TLS without a certificate", w.a1.RaftServerTLS(), tlsDial(caOnly), "server", ""},
		{"raft: node certificate of another CA", w.a1.RaftServerTLS(), tlsDial(presenting(w.evil.Cert)), "server", ""},
		{"raft: client certificate of the CA", w.a1.RaftServerTLS(), tlsDial(presenting(aliceCfg.Certificates[0])), "server", "not a node"},
		{"raft: peer node", w.a1.RaftServerTLS(), tlsDial(presenting(w.b1.Cert)), "server", "unknown authority"},
		{"raft: node certificate of the CA claiming a peer", w.a1.RaftServerTLS(), tlsDial(presenting(issueNodeCert(t, w.caA, "B", "b9"))), "server", "not a node of cluster A"},
		{"node dial: node of the cluster", onlyCert(w.a2.Cert), tlsDial(w.a1.DialNodeTLS()), "", ""},
		{"node dial: server of another CA", onlyCert(w.evil.Cert), tlsDial(w.a1.DialNodeTLS()), "client", ""},
		{"node dial: node of a peer", onlyCert(w.b1.Cert), tlsDial(w.a1.DialNodeTLS()), "client", ""},
		{"node dial: client certificate as server", onlyCert(aliceCfg.Certificates[0]), tlsDial(w.a1.DialNodeTLS()), "client", ""},
		{"peer dial: node of B", w.b1.ServerTLS(), tlsDial(peerDial(t, w.a1, "B")), "", ""},
		{"peer dial: node of C, same CA as B", w.c1.ServerTLS(), tlsDial(peerDial(t, w.a1, "B")), "client", "not a node of cluster B"},
		{"peer dial: node of own cluster", onlyCert(w.a2.Cert), tlsDial(peerDial(t, w.a1, "B")), "client", ""},
		{"client: hostname verification", w.a1.ServerTLS(), tlsDial(aliceCfg), "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, serverErr, clientErr := handshake(t, tt.server, tt.dial)
			var refusal error
			switch tt.refusedBy {
			case "":
				if serverErr != nil || clientErr != nil {
					t.Fatalf("refused: server %v, client %v", serverErr, clientErr)
				}
				return
			case "server":
				refusal = serverErr
			case "client":
				refusal = clientErr
			}
			if refusal == nil {
				t.Fatalf("not refused by the %s (server %v, client %v)", tt.refusedBy, serverErr, clientErr)
			}
			t.Logf("refused by the %s: %v", tt.refusedBy, refusal)
			if !strings.Contains(refusal.Error(), tt.refusalText) {
				t.Fatalf("refused with %v, want %q", refusal, tt.refusalText)
			}
		})
	}
	if _, err := w.a1.DialPeerTLS("Z"); err == nil {
		t.Error("DialPeerTLS of an unknown peer succeeded")
	}
}

func TestIdentify(t *testing.T) {
	w := newWorld(t)
	forged := issueNodeCert(t, w.caA, "B", "b9") // A's CA is not trusted for B
	anonymous := &tls.Config{RootCAs: poolOf(w.caA.Cert)}
	tests := []struct {
		name   string
		client *tls.Config
		want   Principal
		err    bool
	}{
		{"no certificate", anonymous, Principal{Kind: KindAnonymous}, false},
		{"node of the cluster", w.a2.DialNodeTLS(), Principal{Kind: KindNode, Cluster: "A", Name: "a2", Role: RoleAdmin, Via: "cert"}, false},
		{"node of B", peerDial(t, w.b1, "A"), Principal{Kind: KindPeer, Cluster: "B", Name: "b1", Role: RoleNone, Via: "cert"}, false},
		{"node of C", peerDial(t, w.c1, "A"), Principal{Kind: KindPeer, Cluster: "C", Name: "c1", Role: RoleNone, Via: "cert"}, false},
		{"client of the cluster", clientTLS(t, w.caA, "A", "alice", RoleWrite, "a/"), Principal{Kind: KindClient, Cluster: "A", Name: "alice", Role: RoleWrite, Prefix: "a/", Via: "cert"}, false},
		{"client of B", clientTLS(t, w.caBC, "B", "bob", RoleAdmin, ""), Principal{}, true},
		{"node of B signed by A's CA", presenting(forged), Principal{}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.client.RootCAs != nil {
				tt.client.RootCAs.AddCert(w.caA.Cert)
			}
			state, serverErr, clientErr := handshake(t, w.a1.ServerTLS(), tlsDial(tt.client))
			if serverErr != nil || clientErr != nil {
				t.Fatalf("handshake: server %v, client %v", serverErr, clientErr)
			}
			// The cache answers as Identify does, when it verifies and when
			// it remembers (the second call); refusals are never kept.
			cache := NewCache(16, time.Minute)
			for _, identify := range []func() (Principal, error){
				func() (Principal, error) { return w.a1.Identify(state) },
				func() (Principal, error) { return cache.Identify(w.a1, state) },
				func() (Principal, error) { return cache.Identify(w.a1, state) },
			} {
				got, err := identify()
				if tt.err {
					if !errors.Is(err, ErrUnauthenticated) {
						t.Fatalf("Identify = %v, %v; want ErrUnauthenticated", got, err)
					}
					continue
				}
				if err != nil || got != tt.want {
					t.Fatalf("Identify = %+v, %v; want %+v", got, err, tt.want)
				}
			}
			if tt.err && len(cache.m) != 0 {
				t.Fatalf("the cache kept a refused chain")
			}
		})
	}
}

func TestTrustNodeID(t *testing.T) {
	w := newWorld(t)
	if got := w.a1.NodeID(); got != "a1" {
		t.Fatalf("NodeID = %q, want a1", got)
	}
	if got := (&Trust{}).NodeID(); got != "" {
		t.Fatalf("NodeID of no certificate = %q", got)
	}
}

func TestLoadTrustRefuses(t *testing.T) {
	dir := t.TempDir()
	caA, caB := newTestCA(t, "A"), newTestCA(t, "B")
	caFile := writeFile(t, dir, "ca.crt", caA.CertPEM)
	issue := func(name string, ca *CA, cluster string, client bool) (string, string) {
		var certPEM, keyPEM []byte
		var err error
		if client {
			certPEM, keyPEM, err = ca.IssueClient(ClientCert{Cluster: cluster, Name: name, Role: RoleAdmin})
		} else {
			certPEM, keyPEM, err = ca.IssueNode(NodeCert{Cluster: cluster, NodeID: name})
		}
		if err != nil {
			t.Fatal(err)
		}
		return writeFile(t, dir, name+".crt", certPEM), writeFile(t, dir, name+".key", keyPEM)
	}
	goodCrt, goodKey := issue("good", caA, "A", false)
	otherClusterCrt, otherClusterKey := issue("othercluster", caA, "B", false)
	otherCACrt, otherCAKey := issue("otherca", caB, "A", false)
	clientCrt, clientKey := issue("client", caA, "A", true)
	peerB := writeFile(t, dir, "b.crt", caB.CertPEM)
	tests := []struct {
		name                  string
		cluster, ca, crt, key string
		peers                 map[string]string
		want                  string
	}{
		{"bad cluster name", "a b", caFile, goodCrt, goodKey, nil, "cluster name"},
		{"missing CA", "A", filepath.Join(dir, "none.crt"), goodCrt, goodKey, nil, "none.crt"},
		{"CA is not a CA", "A", goodCrt, goodCrt, goodKey, nil, "not a CA"},
		{"key of another certificate", "A", caFile, goodCrt, clientKey, nil, "good.crt"},
		{"node of another cluster", "A", caFile, otherClusterCrt, otherClusterKey, nil, "not a node of cluster A"},
		{"node of another CA", "A", caFile, otherCACrt, otherCAKey, nil, "otherca.crt"},
		{"client certificate", "A", caFile, clientCrt, clientKey, nil, "not a node"},
		{"peer named like the cluster", "A", caFile, goodCrt, goodKey, map[string]string{"A": peerB}, "this cluster"},
		{"missing peer CA", "A", caFile, goodCrt, goodKey, map[string]string{"B": filepath.Join(dir, "nob.crt")}, "nob.crt"},
		{"peer CA without certificates", "A", caFile, goodCrt, goodKey, map[string]string{"B": goodKey}, "no PEM certificate"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := LoadTrust(tt.cluster, tt.ca, tt.crt, tt.key, tt.peers)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("LoadTrust: %v, want an error mentioning %q", err, tt.want)
			}
		})
	}
	if _, err := LoadTrust("A", caFile, goodCrt, goodKey, map[string]string{"B": peerB}); err != nil {
		t.Fatalf("LoadTrust of a good node: %v", err)
	}
}

func TestClientTLSRefuses(t *testing.T) {
	dir := t.TempDir()
	ca := newTestCA(t, "A")
	caFile := writeFile(t, dir, "ca.crt", ca.CertPEM)
	tests := []struct{ name, ca, crt, key string }{
		{"no CA", "", "", ""},
		{"missing CA", filepath.Join(dir, "none"), "", ""},
		{"certificate without key", caFile, caFile, ""},
		{"missing key pair", caFile, filepath.Join(dir, "c.crt"), filepath.Join(dir, "c.key")},
	}
	for _, tt := range tests {
		if _, err := ClientTLS(tt.ca, tt.crt, tt.key); err == nil {
			t.Errorf("%s: ClientTLS succeeded", tt.name)
		}
	}
	cfg, err := ClientTLS(caFile, "", "")
	if err != nil || len(cfg.NextProtos) != 1 || cfg.NextProtos[0] != "h2" || cfg.InsecureSkipVerify {
		t.Fatalf("ClientTLS = %+v, %v", cfg, err)
	}
}
