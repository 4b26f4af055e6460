package auth

import (
	"crypto/x509"
	"encoding/pem"
	"errors"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"
)

// newTestCA returns a new CA or fails the test.
func newTestCA(t *testing.T, cluster string) *CA {
	t.Helper()
	ca, err := NewCA(cluster, 0)
	if err != nil {
		t.Fatal(err)
	}
	return ca
}

func parsePEM(t *testing.T, certPEM []byte) *x509.Certificate {
	t.Helper()
	b, _ := pem.Decode(certPEM)
	if b == nil {
		t.Fatal("no PEM block")
	}
	c, err := x509.ParseCertificate(b.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestNewCA(t *testing.T) {
	ca := newTestCA(t, "ddstore")
	c := ca.Cert
	if !c.IsCA || c.KeyUsage&x509.KeyUsageCertSign == 0 || c.Subject.CommonName != "ddstore ddstore CA" || !slices.Equal(c.Subject.Organization, []string{"ddstore"}) {
		t.Fatalf("CA certificate: IsCA %v, key usage %v, subject %v", c.IsCA, c.KeyUsage, c.Subject)
	}
	if d := time.Until(c.NotAfter); d < DefaultCATTL-time.Hour || d > DefaultCATTL {
		t.Errorf("CA valid for %v, want about %v", d, DefaultCATTL)
	}
	if _, err := NewCA("bad name", 0); !errors.Is(err, ErrBadName) {
		t.Errorf("NewCA(bad name): %v, want ErrBadName", err)
	}
	if _, err := NewCA("x", -time.Hour); err == nil {
		t.Error("NewCA with a negative lifetime succeeded")
	}
}

func TestCASaveLoad(t *testing.T) {
	dir := t.TempDir()
	crt, key := filepath.Join(dir, "ca.crt"), filepath.Join(dir, "ca.key")
	ca := newTestCA(t, "A")
	if err := ca.Save(crt, key); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(key); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("key file: %v, %v; want mode 0600", fi.Mode(), err)
	}
	if err := ca.Save(crt, filepath.Join(dir, "other.key")); !errors.Is(err, fs.ErrExist) {
		t.Fatalf("Save over an existing certificate: %v, want fs.ErrExist", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "other.key")); !errors.Is(err, fs.ErrNotExist) {
		t.Fatal("a refused Save left a key behind")
	}

	loaded, err := LoadCA(crt, key)
	if err != nil {
		t.Fatal(err)
	}
	if !loaded.Cert.Equal(ca.Cert) || loaded.Key == nil {
		t.Fatal("loaded CA differs")
	}
	if _, _, err := loaded.IssueNode(NodeCert{Cluster: "A", NodeID: "n1"}); err != nil {
		t.Fatalf("issue with a loaded CA: %v", err)
	}
	certOnly, err := LoadCA(crt, "")
	if err != nil || certOnly.Key != nil {
		t.Fatalf("LoadCA without key: %v, key %v", err, certOnly.Key)
	}
	if _, _, err := certOnly.IssueNode(NodeCert{Cluster: "A", NodeID: "n1"}); err == nil {
		t.Fatal("a CA without its key issued a certificate")
	}

	other := filepath.Join(dir, "other")
	if err := os.Mkdir(other, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := newTestCA(t, "B").Save(filepath.Join(other, "ca.crt"), filepath.Join(other, "ca.key")); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadCA(crt, filepath.Join(other, "ca.key")); err == nil {
		t.Fatal("LoadCA accepted another CA's key")
	}
}

func TestIssueIdentityRoundTrip(t *testing.T) {
	ca := newTestCA(t, "A")
	tests := []struct {
		name  string
		issue func() ([]byte, []byte, error)
		want  Principal
	}{
		{"node", func() ([]byte, []byte, error) {
			return ca.IssueNode(NodeCert{Cluster: "A", NodeID: "node1", Hosts: []string{"10.0.0.1:7400", "db.example.com", "0.0.0.0"}})
		}, Principal{Kind: KindNode, Cluster: "A", Name: "node1", Role: RoleAdmin, Via: "cert"}},
		{"node with odd ID", func() ([]byte, []byte, error) {
			return ca.IssueNode(NodeCert{Cluster: "A", NodeID: "n 1?#%ü"})
		}, Principal{Kind: KindNode, Cluster: "A", Name: "n 1?#%ü", Role: RoleAdmin, Via: "cert"}},
		{"client", func() ([]byte, []byte, error) {
			return ca.IssueClient(ClientCert{Cluster: "A", Name: "alice", Role: RoleRead})
		}, Principal{Kind: KindClient, Cluster: "A", Name: "alice", Role: RoleRead, Via: "cert"}},
		{"client with odd prefix", func() ([]byte, []byte, error) {
			return ca.IssueClient(ClientCert{Cluster: "A", Name: "bob smith", Role: RoleWrite, Prefix: "weather/2026 ?&role=admin&prefix=#%2F+ü/"})
		}, Principal{Kind: KindClient, Cluster: "A", Name: "bob smith", Role: RoleWrite, Prefix: "weather/2026 ?&role=admin&prefix=#%2F+ü/", Via: "cert"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			certPEM, keyPEM, err := tt.issue()
			if err != nil {
				t.Fatal(err)
			}
			if _, err := parseKey(keyPEM); err != nil {
				t.Fatal(err)
			}
			c := parsePEM(t, certPEM)
			got, err := IdentityFromCert(c)
			if err != nil || got != tt.want {
				t.Fatalf("IdentityFromCert = %+v, %v; want %+v", got, err, tt.want)
			}
			if c.Subject.CommonName != tt.want.Name {
				t.Errorf("CN %q, want %q", c.Subject.CommonName, tt.want.Name)
			}
			if _, err := c.Verify(x509.VerifyOptions{Roots: poolOf(ca.Cert), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
				t.Errorf("does not verify as a client: %v", err)
			}
			_, err = c.Verify(x509.VerifyOptions{Roots: poolOf(ca.Cert), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}})
			if (err == nil) != (tt.want.Kind == KindNode) {
				t.Errorf("verify as server: %v", err)
			}
		})
	}
}

func TestNodeCertHosts(t *testing.T) {
	ca := newTestCA(t, "A")
	certPEM, _, err := ca.IssueNode(NodeCert{Cluster: "A", NodeID: "n1", Hosts: []string{"10.0.0.1:7400", "[fd00::1]:7401", "db.example.com", "DB.example.com.", "0.0.0.0:1", "localhost"}})
	if err != nil {
		t.Fatal(err)
	}
	c := parsePEM(t, certPEM)
	if !slices.Equal(c.DNSNames, []string{"db.example.com", "localhost"}) {
		t.Errorf("DNS names %q", c.DNSNames)
	}
	var ips []string
	for _, ip := range c.IPAddresses {
		ips = append(ips, ip.String())
	}
	if !slices.Equal(ips, []string{"10.0.0.1", "fd00::1", "127.0.0.1", "::1"}) {
		t.Errorf("IP addresses %q", ips)
	}
	if d := time.Until(c.NotAfter); d < DefaultNodeTTL-time.Hour || d > DefaultNodeTTL {
		t.Errorf("node certificate valid for %v, want about %v", d, DefaultNodeTTL)
	}
}

func TestIssueRefuses(t *testing.T) {
	ca := newTestCA(t, "A")
	tests := []struct {
		name string
		err  error
		do   func() error
	}{
		{"bad cluster", ErrBadName, func() error { _, _, err := ca.IssueNode(NodeCert{Cluster: "a b", NodeID: "n"}); return err }},
		{"empty node ID", ErrBadName, func() error { _, _, err := ca.IssueNode(NodeCert{Cluster: "A"}); return err }},
		{"node ID with slash", ErrBadName, func() error { _, _, err := ca.IssueNode(NodeCert{Cluster: "A", NodeID: "a/b"}); return err }},
		{"client without role", ErrBadRole, func() error { _, _, err := ca.IssueClient(ClientCert{Cluster: "A", Name: "c"}); return err }},
		{"client with control prefix", ErrBadName, func() error {
			_, _, err := ca.IssueClient(ClientCert{Cluster: "A", Name: "c", Role: RoleRead, Prefix: "a\n"})
			return err
		}},
	}
	for _, tt := range tests {
		if err := tt.do(); !errors.Is(err, tt.err) {
			t.Errorf("%s: %v, want %v", tt.name, err, tt.err)
		}
	}
}

func TestIdentityFromCertRefuses(t *testing.T) {
	tests := []struct {
		name string
		uris []string
	}{
		{"none", nil},
		{"other scheme", []string{"spiffe://A/node/n1"}},
		{"two", []string{"ddstore://A/node/n1", "ddstore://A/node/n2"}},
		{"unknown kind", []string{"ddstore://A/admin/n1"}},
		{"nested name", []string{"ddstore://A/node/a/b"}},
		{"empty name", []string{"ddstore://A/node/"}},
		{"no role", []string{"ddstore://A/client/c"}},
		{"bad role", []string{"ddstore://A/client/c?role=root"}},
		{"port", []string{"ddstore://A:1/node/n1"}},
		{"bad cluster", []string{"ddstore://a~b/node/n1"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := &x509.Certificate{}
			for _, s := range tt.uris {
				u, err := url.Parse(s)
				if err != nil {
					t.Fatal(err)
				}
				c.URIs = append(c.URIs, u)
			}
			if p, err := IdentityFromCert(c); !errors.Is(err, ErrBadCertificate) {
				t.Fatalf("IdentityFromCert = %v, %v; want ErrBadCertificate", p, err)
			}
		})
	}
	if _, err := IdentityFromCert(nil); !errors.Is(err, ErrBadCertificate) {
		t.Fatalf("IdentityFromCert(nil): %v", err)
	}
}

// TestCertOutlivesCA checks a certificate is cut to its CA's lifetime.
func TestCertOutlivesCA(t *testing.T) {
	ca, err := NewCA("A", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	certPEM, _, err := ca.IssueNode(NodeCert{Cluster: "A", NodeID: "n1", TTL: 48 * time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	if c := parsePEM(t, certPEM); c.NotAfter.After(ca.Cert.NotAfter) {
		t.Fatalf("certificate ends %v, after its CA %v", c.NotAfter, ca.Cert.NotAfter)
	}
}

func poolOf(certs ...*x509.Certificate) *x509.CertPool {
	p := x509.NewCertPool()
	for _, c := range certs {
		p.AddCert(c)
	}
	return p
}
