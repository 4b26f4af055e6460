package localcluster

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/ddstore/ddstore/client"
	"github.com/ddstore/ddstore/server/auth"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
)

// security is a local cluster's throwaway certificate authority and the
// files its child-process nodes and CLI calls read.
type security struct {
	cluster string
	ca      *auth.CA
	dir     string // Dir/certs: ca.crt, <node>.crt/.key, admin.crt/.key

	nodeOnce sync.Once // the "localcluster" node credentials, issued once
	node     credentials.TransportCredentials
	nodeErr  error
}

func newSecurity(cluster, dir string) (*security, error) {
	ca, err := auth.NewCA(cluster, 24*time.Hour)
	if err != nil {
		return nil, err
	}
	s := &security{cluster: cluster, ca: ca, dir: filepath.Join(dir, "certs")}
	if err := os.MkdirAll(s.dir, 0o700); err != nil {
		return nil, err
	}
	if err := os.WriteFile(s.caFile(), ca.CertPEM, 0o644); err != nil {
		return nil, err
	}
	cert, key, err := ca.IssueClient(auth.ClientCert{Cluster: cluster, Name: "admin", Role: auth.RoleAdmin})
	if err != nil {
		return nil, err
	}
	if err := writePair(s.file("admin"), cert, key); err != nil {
		return nil, err
	}
	return s, nil
}

func (s *security) caFile() string          { return filepath.Join(s.dir, "ca.crt") }
func (s *security) file(name string) string { return filepath.Join(s.dir, name) }

func writePair(base string, cert, key []byte) error {
	if err := os.WriteFile(base+".crt", cert, 0o644); err != nil {
		return err
	}
	return os.WriteFile(base+".key", key, 0o600)
}

// nodeTrust issues member id's certificate and returns its trust, with
// peerCA giving the CA of each peer cluster named.
func (s *security) nodeTrust(id string, peers []string, peerCA func(string) *x509.Certificate) (*auth.Trust, error) {
	certPEM, keyPEM, err := s.ca.IssueNode(auth.NodeCert{Cluster: s.cluster, NodeID: id, Hosts: []string{"127.0.0.1"}})
	if err != nil {
		return nil, err
	}
	if err := writePair(s.file(id), certPEM, keyPEM); err != nil {
		return nil, err
	}
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, err
	}
	t := &auth.Trust{Cluster: s.cluster, CA: s.ca.Cert, Cert: pair, Peers: map[string][]*x509.Certificate{}}
	for _, p := range peers {
		if peerCA == nil || peerCA(p) == nil {
			return nil, fmt.Errorf("localcluster: no CA known for peer cluster %s (Options.PeerCA)", p)
		}
		t.Peers[p] = []*x509.Certificate{peerCA(p)}
	}
	return t, nil
}

// args are the `ddstore server` flags of a child-process member's TLS.
func (s *security) args(id string, names []string, peerCA func(string) *x509.Certificate) ([]string, error) {
	if _, err := s.nodeTrust(id, names, peerCA); err != nil {
		return nil, err
	}
	out := []string{"--cluster", s.cluster, "--tls-ca", s.caFile(), "--tls-cert", s.file(id) + ".crt", "--tls-key", s.file(id) + ".key"}
	for _, p := range names {
		// Written whole and renamed into place: every member rewrites it,
		// and a member started before reads it while the next starts.
		f := s.file("peer-" + p + ".crt")
		if err := os.WriteFile(f+"."+id, pemOf(peerCA(p)), 0o644); err != nil {
			return nil, err
		}
		if err := os.Rename(f+"."+id, f); err != nil {
			return nil, err
		}
		out = append(out, "--peer-ca", p+"="+f)
	}
	return out, nil
}

// clientTLS is the TLS config of a client holding the cluster's admin
// certificate.
func (s *security) clientTLS() (*tls.Config, error) {
	return auth.ClientTLS(s.caFile(), s.file("admin")+".crt", s.file("admin")+".key")
}

// nodeCreds are credentials of a node of this cluster ("localcluster"),
// for calls on the internal and federation APIs; issued once.
func (s *security) nodeCreds() (credentials.TransportCredentials, error) {
	s.nodeOnce.Do(func() {
		t, err := s.nodeTrust("localcluster", nil, nil)
		if err != nil {
			s.nodeErr = err
			return
		}
		s.node = credentials.NewTLS(t.DialNodeTLS())
	})
	return s.node, s.nodeErr
}

// CA is the cluster's throwaway certificate authority; nil for an insecure
// cluster.
func (c *Cluster) CA() *auth.CA {
	if c.sec == nil {
		return nil
	}
	return c.sec.ca
}

// ClientOptions are what a client of this cluster needs: TLS and the
// admin certificate (nothing for an insecure cluster).
func (c *Cluster) ClientOptions() []client.Option {
	if c.sec == nil {
		return nil
	}
	tc, err := c.sec.clientTLS()
	if err != nil {
		panic(fmt.Sprintf("localcluster: client TLS: %v", err)) // the files were just written
	}
	return []client.Option{client.WithTLS(tc)}
}

// TLSOnly are client options that verify the nodes but present no
// credentials (add a token with client.WithToken).
func (c *Cluster) TLSOnly() []client.Option {
	if c.sec == nil {
		return nil
	}
	tc, err := auth.ClientTLS(c.sec.caFile(), "", "")
	if err != nil {
		panic(fmt.Sprintf("localcluster: client TLS: %v", err))
	}
	return []client.Option{client.WithTLS(tc)}
}

// CLIEnv is the environment of a ddstore CLI run as an admin of this
// cluster: DDSTORE_CA, DDSTORE_CERT and DDSTORE_KEY (nothing for an
// insecure cluster).
func (c *Cluster) CLIEnv() map[string]string {
	if c.sec == nil {
		return nil
	}
	return map[string]string{"DDSTORE_CA": c.sec.caFile(), "DDSTORE_CERT": c.sec.file("admin") + ".crt", "DDSTORE_KEY": c.sec.file("admin") + ".key"}
}

// CAFile is the path of the cluster's CA certificate ("" when insecure).
func (c *Cluster) CAFile() string {
	if c.sec == nil {
		return ""
	}
	return c.sec.caFile()
}

// Token returns a client token of this cluster.
func (c *Cluster) Token(role auth.Role, prefix string, ttl time.Duration) (string, error) {
	return c.sec.ca.IssueToken(c.sec.cluster, "test-"+role.String(), role, prefix, ttl)
}

func pemOf(cert *x509.Certificate) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Raw})
}

// Dial opens a raw gRPC connection to addr, holding the cluster's admin
// client certificate, or a node certificate of the cluster when asNode is
// set (for the internal and federation APIs); plain text when insecure.
func (c *Cluster) Dial(addr string, asNode bool, opts ...grpc.DialOption) (*grpc.ClientConn, error) {
	creds := insecure.NewCredentials()
	if c.sec != nil {
		var err error
		if asNode {
			creds, err = c.sec.nodeCreds()
		} else {
			var tc *tls.Config
			tc, err = c.sec.clientTLS()
			creds = credentials.NewTLS(tc)
		}
		if err != nil {
			return nil, err
		}
	}
	return grpc.NewClient("passthrough:///"+addr, append([]grpc.DialOption{grpc.WithTransportCredentials(creds)}, opts...)...)
}
