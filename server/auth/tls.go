package auth

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
)

// Trust is what one node trusts: its cluster's CA for its own nodes and
// clients, and each peer cluster's CAs for that peer's nodes.
type Trust struct {
	Cluster string
	CA      *x509.Certificate              // this cluster's CA
	Cert    tls.Certificate                // this node's certificate and key
	Peers   map[string][]*x509.Certificate // peer cluster name -> CA certificates trusted to vouch for that name
}

// LoadTrust reads a node's CA certificate, its certificate and key, and the
// CA certificates of its peer clusters (name -> PEM file, which may hold
// several). The node certificate must chain to the CA and name a node of
// cluster.
func LoadTrust(cluster, caFile, certFile, keyFile string, peerCAFiles map[string]string) (*Trust, error) {
	if err := checkCluster(cluster); err != nil {
		return nil, err
	}
	ca, err := LoadCA(caFile, "")
	if err != nil {
		return nil, err
	}
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, fmt.Errorf("auth: node certificate %s and key %s: %w", certFile, keyFile, err)
	}
	if cert.Leaf == nil {
		if cert.Leaf, err = x509.ParseCertificate(cert.Certificate[0]); err != nil {
			return nil, fmt.Errorf("auth: node certificate %s: %w", certFile, err)
		}
	}
	t := &Trust{Cluster: cluster, CA: ca.Cert, Cert: cert, Peers: map[string][]*x509.Certificate{}}
	id, err := IdentityFromCert(cert.Leaf)
	if err != nil {
		return nil, fmt.Errorf("auth: node certificate %s: %w", certFile, err)
	}
	if id.Kind != KindNode || id.Cluster != cluster {
		return nil, fmt.Errorf("auth: node certificate %s names %s, not a node of cluster %s", certFile, id, cluster)
	}
	var intermediates []*x509.Certificate
	for _, der := range cert.Certificate[1:] {
		c, err := x509.ParseCertificate(der)
		if err != nil {
			return nil, fmt.Errorf("auth: node certificate %s: %w", certFile, err)
		}
		intermediates = append(intermediates, c)
	}
	for _, usage := range []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth} {
		if err := verify(cert.Leaf, intermediates, t.ownPool(), usage); err != nil {
			return nil, fmt.Errorf("auth: node certificate %s against CA %s: %w", certFile, caFile, err)
		}
	}
	for name, file := range peerCAFiles {
		if err := checkCluster(name); err != nil {
			return nil, fmt.Errorf("auth: peer CA %s: %w", file, err)
		}
		if name == cluster {
			return nil, fmt.Errorf("auth: peer CA %s: peer cluster %s is this cluster's name", file, name)
		}
		data, err := os.ReadFile(file)
		if err != nil {
			return nil, fmt.Errorf("auth: CA of peer cluster %s: %w", name, err)
		}
		certs, err := parseCerts(data)
		if err != nil {
			return nil, fmt.Errorf("auth: CA of peer cluster %s, %s: %w", name, file, err)
		}
		t.Peers[name] = certs
	}
	return t, nil
}

// NodeID returns the node ID t.Cert names ("" if it names none).
func (t *Trust) NodeID() string {
	leaf, err := t.leaf()
	if err != nil {
		return ""
	}
	id, err := IdentityFromCert(leaf)
	if err != nil || id.Kind != KindNode {
		return ""
	}
	return id.Name
}

// ServerTLS is for the gRPC listeners (API and public): it presents the
// node's certificate and verifies a client certificate, if one is given,
// against this cluster's CA and every peer's. Which identity the certificate
// may claim is Identify's decision.
func (t *Trust) ServerTLS() *tls.Config {
	pool := t.ownPool()
	for _, cas := range t.Peers {
		for _, c := range cas {
			pool.AddCert(c)
		}
	}
	return &tls.Config{
		Certificates: []tls.Certificate{t.Cert},
		ClientAuth:   tls.VerifyClientCertIfGiven,
		ClientCAs:    pool,
		MinVersion:   tls.VersionTLS12, // TLS 1.3 is negotiated when the client has it
		NextProtos:   []string{"h2"},
	}
}

// RaftServerTLS is for the Raft listener: only nodes of this cluster, with
// certificates of its CA, get through.
func (t *Trust) RaftServerTLS() *tls.Config {
	return &tls.Config{
		Certificates: []tls.Certificate{t.Cert},
		ClientAuth:   tls.RequireAndVerifyClientCert,
		ClientCAs:    t.ownPool(),
		MinVersion:   tls.VersionTLS12,
		VerifyConnection: func(cs tls.ConnectionState) error {
			// The chain is verified by now; check whom it names.
			if len(cs.PeerCertificates) == 0 {
				return fmt.Errorf("%w: no client certificate", ErrUnauthenticated)
			}
			return t.checkNode(cs.PeerCertificates[0], t.Cluster)
		},
	}
}

// DialNodeTLS is for dialing another node of this cluster (gRPC and Raft):
// it presents the node's certificate and accepts a server whose certificate
// chains to this cluster's CA and names a node of this cluster.
//
// Nodes are identified by the identity in their certificate, not by host
// name: InsecureSkipVerify turns off the standard verification, which
// checks host names, and VerifyConnection does the chain verification
// against the CA itself, then the identity check. gRPC adds "h2" to
// NextProtos itself.
func (t *Trust) DialNodeTLS() *tls.Config {
	pool := t.ownPool()
	return t.dialTLS(func(leaf *x509.Certificate, intermediates []*x509.Certificate) error {
		if err := verify(leaf, intermediates, pool, x509.ExtKeyUsageServerAuth); err != nil {
			return fmt.Errorf("auth: server certificate: %w", err)
		}
		return t.checkNode(leaf, t.Cluster)
	})
}

// DialPeerTLS is for dialing a node of the peer cluster peer: it presents
// the node's certificate and accepts a server whose certificate chains to a
// CA trusted for peer and names a node of peer. Like DialNodeTLS, it checks
// identities, not host names.
func (t *Trust) DialPeerTLS(peer string) (*tls.Config, error) {
	pool, err := t.peerPool(peer)
	if err != nil {
		return nil, err
	}
	return t.dialTLS(func(leaf *x509.Certificate, intermediates []*x509.Certificate) error {
		if err := verify(leaf, intermediates, pool, x509.ExtKeyUsageServerAuth); err != nil {
			return fmt.Errorf("auth: server certificate: %w", err)
		}
		return t.checkNode(leaf, peer)
	}), nil
}

func (t *Trust) dialTLS(check func(leaf *x509.Certificate, intermediates []*x509.Certificate) error) *tls.Config {
	return &tls.Config{
		Certificates:       []tls.Certificate{t.Cert},
		MinVersion:         tls.VersionTLS12,
		InsecureSkipVerify: true, // VerifyConnection verifies the chain and the identity instead of the host name
		VerifyConnection: func(cs tls.ConnectionState) error {
			if len(cs.PeerCertificates) == 0 {
				return errors.New("auth: server sent no certificate")
			}
			return check(cs.PeerCertificates[0], cs.PeerCertificates[1:])
		},
	}
}

// Identify returns the principal of a TLS client whose handshake a
// ServerTLS listener completed. No certificate is KindAnonymous. A
// certificate must chain to a CA trusted for the cluster it claims: this
// cluster's CA for this cluster, the peer's CAs for a peer. A node of this
// cluster is KindNode; a node of a peer is KindPeer with RoleNone (the
// operator's policy decides what a peer may do); a client of this cluster is
// KindClient. A client of another cluster is refused. Errors wrap
// ErrUnauthenticated.
func (t *Trust) Identify(cs tls.ConnectionState) (Principal, error) {
	if len(cs.PeerCertificates) == 0 {
		return Principal{Kind: KindAnonymous}, nil
	}
	leaf := cs.PeerCertificates[0]
	p, err := IdentityFromCert(leaf)
	if err != nil {
		return Principal{}, fmt.Errorf("%w: %w", ErrUnauthenticated, err)
	}
	pool := t.ownPool()
	peer := p.Cluster != t.Cluster
	if peer {
		if p.Kind != KindNode {
			return Principal{}, fmt.Errorf("%w: %s is a client of cluster %s, not of %s", ErrUnauthenticated, p, p.Cluster, t.Cluster)
		}
		if pool, err = t.peerPool(p.Cluster); err != nil {
			return Principal{}, fmt.Errorf("%w: %s: %w", ErrUnauthenticated, p, err)
		}
	}
	if err := verify(leaf, cs.PeerCertificates[1:], pool, x509.ExtKeyUsageClientAuth); err != nil {
		return Principal{}, fmt.Errorf("%w: %s: %w", ErrUnauthenticated, p, err)
	}
	if peer {
		p.Kind, p.Role = KindPeer, RoleNone
	}
	return p, nil
}

// ClientTLS is for the CLI and other clients: it trusts the CAs in caFile
// (required), checks the server's host name as usual, and presents the
// client certificate in certFile and keyFile if they are given.
func ClientTLS(caFile, certFile, keyFile string) (*tls.Config, error) {
	if caFile == "" {
		return nil, errors.New("auth: client TLS needs a CA certificate file")
	}
	data, err := os.ReadFile(caFile)
	if err != nil {
		return nil, fmt.Errorf("auth: CA certificate: %w", err)
	}
	certs, err := parseCerts(data)
	if err != nil {
		return nil, fmt.Errorf("auth: CA certificate %s: %w", caFile, err)
	}
	pool := x509.NewCertPool()
	for _, c := range certs {
		pool.AddCert(c)
	}
	cfg := &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12, NextProtos: []string{"h2"}}
	if certFile != "" || keyFile != "" {
		if certFile == "" || keyFile == "" {
			return nil, errors.New("auth: a client certificate needs both its certificate and its key file")
		}
		cert, err := tls.LoadX509KeyPair(certFile, keyFile)
		if err != nil {
			return nil, fmt.Errorf("auth: client certificate %s and key %s: %w", certFile, keyFile, err)
		}
		cfg.Certificates = []tls.Certificate{cert}
	}
	return cfg, nil
}

// checkNode refuses a certificate that does not name a node of cluster.
func (t *Trust) checkNode(leaf *x509.Certificate, cluster string) error {
	p, err := IdentityFromCert(leaf)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrUnauthenticated, err)
	}
	if p.Kind != KindNode || p.Cluster != cluster {
		return fmt.Errorf("%w: %s is not a node of cluster %s", ErrUnauthenticated, p, cluster)
	}
	return nil
}

func (t *Trust) leaf() (*x509.Certificate, error) {
	if t.Cert.Leaf != nil {
		return t.Cert.Leaf, nil
	}
	if len(t.Cert.Certificate) == 0 {
		return nil, errors.New("auth: no node certificate")
	}
	return x509.ParseCertificate(t.Cert.Certificate[0])
}

func (t *Trust) ownPool() *x509.CertPool {
	pool := x509.NewCertPool()
	if t.CA != nil {
		pool.AddCert(t.CA)
	}
	return pool
}

func (t *Trust) peerPool(peer string) (*x509.CertPool, error) {
	cas := t.Peers[peer]
	if len(cas) == 0 {
		return nil, fmt.Errorf("auth: no CA is trusted for peer cluster %q", peer)
	}
	pool := x509.NewCertPool()
	for _, c := range cas {
		pool.AddCert(c)
	}
	return pool, nil
}

// verify checks that leaf chains to a CA in roots, through intermediates,
// for usage.
func verify(leaf *x509.Certificate, intermediates []*x509.Certificate, roots *x509.CertPool, usage x509.ExtKeyUsage) error {
	inter := x509.NewCertPool()
	for _, c := range intermediates {
		inter.AddCert(c)
	}
	_, err := leaf.Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{usage}})
	return err
}
