package auth

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"math/big"
	"net"
	"net/url"
	"os"
	"strings"
	"time"
)

// Default lifetimes of certificates.
const (
	DefaultCATTL     = 10 * 365 * 24 * time.Hour
	DefaultNodeTTL   = 365 * 24 * time.Hour
	DefaultClientTTL = 90 * 24 * time.Hour
)

// backdate is how far before now a certificate becomes valid, so that clocks
// a little behind the issuer's accept it at once.
const backdate = 5 * time.Minute

// scheme is the URI scheme of identities in certificates.
const scheme = "ddstore"

// CA is a cluster's certificate authority. Its key signs node and client
// certificates and client tokens.
type CA struct {
	Cert    *x509.Certificate
	Key     crypto.Signer // nil when only the certificate was loaded
	CertPEM []byte
}

// NodeCert asks for a node certificate.
type NodeCert struct {
	Cluster, NodeID string
	// Hosts are the IP addresses and DNS names the node is reached at (API,
	// Raft and public addresses' hosts; a host:port is taken for its host).
	// 127.0.0.1, ::1 and localhost are always added.
	Hosts []string
	TTL   time.Duration // 0: DefaultNodeTTL
}

// ClientCert asks for a client certificate.
type ClientCert struct {
	Cluster, Name string
	Role          Role
	Prefix        string        // file names the client may touch start with this; "" = all
	TTL           time.Duration // 0: DefaultClientTTL
}

// NewCA creates a self-signed ECDSA P-256 certificate authority for the
// cluster, valid for ttl (0: DefaultCATTL).
func NewCA(cluster string, ttl time.Duration) (*CA, error) {
	if err := checkCluster(cluster); err != nil {
		return nil, err
	}
	ttl, err := lifetime(ttl, DefaultCATTL)
	if err != nil {
		return nil, err
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("auth: generate CA key: %w", err)
	}
	serial, err := newSerial()
	if err != nil {
		return nil, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: "ddstore " + cluster + " CA", Organization: []string{cluster}},
		NotBefore:             now.Add(-backdate),
		NotAfter:              now.Add(ttl),
		IsCA:                  true,
		BasicConstraintsValid: true,
		MaxPathLenZero:        true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, fmt.Errorf("auth: create CA certificate: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("auth: parse new CA certificate: %w", err)
	}
	return &CA{Cert: cert, Key: key, CertPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}, nil
}

// LoadCA reads a CA certificate and, unless keyFile is "", its key, both PEM.
func LoadCA(certFile, keyFile string) (*CA, error) {
	certPEM, err := os.ReadFile(certFile)
	if err != nil {
		return nil, fmt.Errorf("auth: CA certificate: %w", err)
	}
	certs, err := parseCerts(certPEM)
	if err != nil {
		return nil, fmt.Errorf("auth: CA certificate %s: %w", certFile, err)
	}
	cert := certs[0]
	if !cert.IsCA {
		return nil, fmt.Errorf("auth: CA certificate %s: not a CA certificate", certFile)
	}
	ca := &CA{Cert: cert, CertPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Raw})}
	if keyFile == "" {
		return ca, nil
	}
	keyPEM, err := os.ReadFile(keyFile)
	if err != nil {
		return nil, fmt.Errorf("auth: CA key: %w", err)
	}
	if ca.Key, err = parseKey(keyPEM); err != nil {
		return nil, fmt.Errorf("auth: CA key %s: %w", keyFile, err)
	}
	if !publicKeysEqual(ca.Key.Public(), cert.PublicKey) {
		return nil, fmt.Errorf("auth: CA key %s does not match certificate %s", keyFile, certFile)
	}
	return ca, nil
}

// Save writes the CA's certificate and key as PEM, the key readable by its
// owner only. It refuses to overwrite either file (the error wraps
// fs.ErrExist).
func (ca *CA) Save(certFile, keyFile string) error {
	key, err := ca.signer()
	if err != nil {
		return err
	}
	keyPEM, err := encodeKey(key)
	if err != nil {
		return err
	}
	return WriteNewFiles(certFile, ca.CertPEM, keyFile, keyPEM)
}

// WriteNewFiles writes a certificate (mode 0644) and its key (mode 0600),
// refusing to overwrite either file (the error wraps fs.ErrExist). If the
// second write fails, the first file is removed.
func WriteNewFiles(certFile string, certPEM []byte, keyFile string, keyPEM []byte) error {
	for _, f := range []string{certFile, keyFile} {
		if _, err := os.Lstat(f); err == nil {
			return fmt.Errorf("auth: %s: %w", f, fs.ErrExist)
		}
	}
	if err := writeNew(keyFile, keyPEM, 0o600); err != nil {
		return err
	}
	if err := writeNew(certFile, certPEM, 0o644); err != nil {
		os.Remove(keyFile)
		return err
	}
	return nil
}

func writeNew(name string, data []byte, mode os.FileMode) error {
	f, err := os.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode)
	if err != nil {
		return fmt.Errorf("auth: %w", err)
	}
	_, err = f.Write(data)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(name)
		return fmt.Errorf("auth: write %s: %w", name, err)
	}
	return nil
}

// IssueNode signs a certificate for a node of req.Cluster, for both ends of
// TLS, naming it as ddstore://<cluster>/node/<nodeID>.
func (ca *CA) IssueNode(req NodeCert) (certPEM, keyPEM []byte, err error) {
	if err := checkCluster(req.Cluster); err != nil {
		return nil, nil, err
	}
	if err := checkName("node ID", req.NodeID); err != nil {
		return nil, nil, err
	}
	ttl, err := lifetime(req.TTL, DefaultNodeTTL)
	if err != nil {
		return nil, nil, err
	}
	tmpl := &x509.Certificate{
		Subject:     pkix.Name{CommonName: req.NodeID, Organization: []string{req.Cluster}},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		URIs:        []*url.URL{nodeURI(req.Cluster, req.NodeID)},
	}
	for _, h := range append(append([]string(nil), req.Hosts...), "127.0.0.1", "::1", "localhost") {
		addHost(tmpl, h)
	}
	return ca.issue(tmpl, ttl)
}

// IssueClient signs a client certificate naming it as
// ddstore://<cluster>/client/<name>?role=<role>&prefix=<prefix>.
func (ca *CA) IssueClient(req ClientCert) (certPEM, keyPEM []byte, err error) {
	if err := checkCluster(req.Cluster); err != nil {
		return nil, nil, err
	}
	if err := checkName("client name", req.Name); err != nil {
		return nil, nil, err
	}
	if err := checkPrefix(req.Prefix); err != nil {
		return nil, nil, err
	}
	if _, err := ParseRole(req.Role.String()); err != nil {
		return nil, nil, err
	}
	ttl, err := lifetime(req.TTL, DefaultClientTTL)
	if err != nil {
		return nil, nil, err
	}
	tmpl := &x509.Certificate{
		Subject:     pkix.Name{CommonName: req.Name, Organization: []string{req.Cluster}},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		URIs:        []*url.URL{clientURI(req.Cluster, req.Name, req.Role, req.Prefix)},
	}
	return ca.issue(tmpl, ttl)
}

// issue completes tmpl, generates its key and signs it.
func (ca *CA) issue(tmpl *x509.Certificate, ttl time.Duration) (certPEM, keyPEM []byte, err error) {
	signer, err := ca.signer()
	if err != nil {
		return nil, nil, err
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("auth: generate key: %w", err)
	}
	if tmpl.SerialNumber, err = newSerial(); err != nil {
		return nil, nil, err
	}
	now := time.Now()
	tmpl.NotBefore, tmpl.NotAfter = now.Add(-backdate), now.Add(ttl)
	if tmpl.NotAfter.After(ca.Cert.NotAfter) {
		tmpl.NotAfter = ca.Cert.NotAfter // a certificate cannot outlive its CA
	}
	tmpl.KeyUsage = x509.KeyUsageDigitalSignature
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, key.Public(), signer)
	if err != nil {
		return nil, nil, fmt.Errorf("auth: create certificate: %w", err)
	}
	if _, err := x509.ParseCertificate(der); err != nil {
		return nil, nil, fmt.Errorf("auth: new certificate does not parse: %w", err)
	}
	keyPEM, err = encodeKey(key)
	if err != nil {
		return nil, nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), keyPEM, nil
}

func (ca *CA) signer() (crypto.Signer, error) {
	if ca == nil || ca.Cert == nil {
		return nil, errors.New("auth: no CA certificate")
	}
	if ca.Key == nil {
		return nil, errors.New("auth: the CA's key was not loaded")
	}
	return ca.Key, nil
}

// IdentityFromCert reads the one ddstore:// URI of a certificate: a node of
// a cluster (KindNode, RoleAdmin) or a client with its role and prefix
// (KindClient). It does not check who signed the certificate.
func IdentityFromCert(cert *x509.Certificate) (Principal, error) {
	if cert == nil {
		return Principal{}, fmt.Errorf("%w: no certificate", ErrBadCertificate)
	}
	var id *url.URL
	for _, u := range cert.URIs {
		if strings.EqualFold(u.Scheme, scheme) {
			if id != nil {
				return Principal{}, fmt.Errorf("%w: more than one %s:// URI", ErrBadCertificate, scheme)
			}
			id = u
		}
	}
	if id == nil {
		return Principal{}, fmt.Errorf("%w: no %s:// URI", ErrBadCertificate, scheme)
	}
	p, err := parseIdentity(id)
	if err != nil {
		return Principal{}, fmt.Errorf("%w: %s: %w", ErrBadCertificate, id.Redacted(), err)
	}
	return p, nil
}

func parseIdentity(u *url.URL) (Principal, error) {
	if u.Opaque != "" || u.User != nil || u.Port() != "" || u.Fragment != "" {
		return Principal{}, errors.New("unexpected URI parts")
	}
	if err := checkCluster(u.Hostname()); err != nil {
		return Principal{}, err
	}
	kind, name, ok := strings.Cut(strings.TrimPrefix(u.Path, "/"), "/")
	if !ok || !strings.HasPrefix(u.Path, "/") {
		return Principal{}, errors.New("want /node/<id> or /client/<name>")
	}
	p := Principal{Cluster: u.Hostname(), Name: name, Via: "cert"}
	switch kind {
	case "node":
		if err := checkName("node ID", name); err != nil {
			return Principal{}, err
		}
		p.Kind, p.Role = KindNode, RoleAdmin
	case "client":
		if err := checkName("client name", name); err != nil {
			return Principal{}, err
		}
		q, err := url.ParseQuery(u.RawQuery)
		if err != nil {
			return Principal{}, err
		}
		if p.Role, err = ParseRole(q.Get("role")); err != nil {
			return Principal{}, err
		}
		p.Prefix = q.Get("prefix")
		if err := checkPrefix(p.Prefix); err != nil {
			return Principal{}, err
		}
		p.Kind = KindClient
	default:
		return Principal{}, errors.New("want /node/<id> or /client/<name>")
	}
	return p, nil
}

func nodeURI(cluster, id string) *url.URL {
	return &url.URL{Scheme: scheme, Host: cluster, Path: "/node/" + id}
}

func clientURI(cluster, name string, role Role, prefix string) *url.URL {
	q := url.Values{"role": {role.String()}}
	if prefix != "" {
		q.Set("prefix", prefix)
	}
	return &url.URL{Scheme: scheme, Host: cluster, Path: "/client/" + name, RawQuery: q.Encode()}
}

// addHost adds an IP address or DNS name (or the host of a host:port) to the
// certificate's names, once. Unspecified addresses (0.0.0.0, ::) name no
// one and are skipped.
func addHost(c *x509.Certificate, h string) {
	h = strings.TrimSpace(h)
	if host, _, err := net.SplitHostPort(h); err == nil {
		h = host
	}
	h = strings.TrimSuffix(strings.Trim(h, "[]"), ".")
	if h == "" {
		return
	}
	if ip := net.ParseIP(h); ip != nil {
		if ip.IsUnspecified() {
			return
		}
		for _, have := range c.IPAddresses {
			if have.Equal(ip) {
				return
			}
		}
		c.IPAddresses = append(c.IPAddresses, ip)
		return
	}
	for _, have := range c.DNSNames {
		if strings.EqualFold(have, h) {
			return
		}
	}
	c.DNSNames = append(c.DNSNames, h)
}

func lifetime(ttl, def time.Duration) (time.Duration, error) {
	switch {
	case ttl < 0:
		return 0, fmt.Errorf("auth: negative lifetime %v", ttl)
	case ttl == 0:
		return def, nil
	}
	return ttl, nil
}

func newSerial() (*big.Int, error) {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, fmt.Errorf("auth: serial number: %w", err)
	}
	return n.Add(n, big.NewInt(1)), nil
}

// parseCerts reads every CERTIFICATE block of a PEM file; there must be one.
func parseCerts(data []byte) ([]*x509.Certificate, error) {
	var certs []*x509.Certificate
	for {
		var b *pem.Block
		b, data = pem.Decode(data)
		if b == nil {
			break
		}
		if b.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			return nil, err
		}
		certs = append(certs, c)
	}
	if len(certs) == 0 {
		return nil, errors.New("no PEM certificate")
	}
	return certs, nil
}

// parseKey reads a PKCS #8 or SEC 1 EC private key.
func parseKey(data []byte) (crypto.Signer, error) {
	for {
		var b *pem.Block
		b, data = pem.Decode(data)
		if b == nil {
			return nil, errors.New("no PEM private key")
		}
		switch b.Type {
		case "PRIVATE KEY":
			k, err := x509.ParsePKCS8PrivateKey(b.Bytes)
			if err != nil {
				return nil, err
			}
			s, ok := k.(crypto.Signer)
			if !ok {
				return nil, fmt.Errorf("unsupported key type %T", k)
			}
			return s, nil
		case "EC PRIVATE KEY":
			return x509.ParseECPrivateKey(b.Bytes)
		}
	}
}

func encodeKey(key crypto.Signer) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("auth: encode key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

func publicKeysEqual(a, b crypto.PublicKey) bool {
	ak, ok := a.(interface{ Equal(crypto.PublicKey) bool })
	return ok && ak.Equal(b)
}
