package main

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/ddstore/ddstore/server/auth"
)

// runRoot runs the CLI in-process and returns its output and error.
func runRoot(t *testing.T, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	root := newRoot()
	var out, errOut bytes.Buffer
	root.SetArgs(args)
	root.SetOut(&out)
	root.SetErr(&errOut)
	err = root.ExecuteContext(context.Background())
	return out.String(), errOut.String(), err
}

// mustRun runs the CLI in-process and wants success with one line on stderr.
func mustRun(t *testing.T, args ...string) (stdout string) {
	t.Helper()
	stdout, stderr, err := runRoot(t, args...)
	if err != nil {
		t.Fatalf("%v: %v", args, err)
	}
	if strings.Count(stderr, "\n") != 1 || !strings.HasSuffix(stderr, "\n") {
		t.Fatalf("%v: stderr %q, want one line", args, stderr)
	}
	return stdout
}

func isUsage(err error) bool {
	var ue usageError
	return errors.As(err, &ue) || (err != nil && isCobraUsage(err))
}

func readCert(t *testing.T, path string) *x509.Certificate {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := pem.Decode(data)
	if b == nil {
		t.Fatalf("%s: no PEM", path)
	}
	c, err := x509.ParseCertificate(b.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestCertCommands(t *testing.T) {
	dir := t.TempDir()
	certs, clients := filepath.Join(dir, "certs"), filepath.Join(dir, "clients")
	mustRun(t, "cert", "ca", "--cluster", "A", "--dir", certs)
	if fi, err := os.Stat(filepath.Join(certs, "ca.key")); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("ca.key: %v, %v; want mode 0600", fi, err)
	}
	if _, _, err := runRoot(t, "cert", "ca", "--cluster", "A", "--dir", certs); !errors.Is(err, fs.ErrExist) || isUsage(err) {
		t.Fatalf("second cert ca: %v; want a refusal to overwrite", err)
	}

	mustRun(t, "cert", "node", "--cluster", "A", "--id", "n1", "--host", "10.0.0.1,db.example.com", "--ca-dir", certs)
	tr, err := auth.LoadTrust("A", filepath.Join(certs, "ca.crt"), filepath.Join(certs, "n1.crt"), filepath.Join(certs, "n1.key"), nil)
	if err != nil {
		t.Fatal(err)
	}
	if tr.NodeID() != "n1" || !slices.Contains(tr.Cert.Leaf.DNSNames, "db.example.com") {
		t.Fatalf("node certificate: ID %q, DNS names %q", tr.NodeID(), tr.Cert.Leaf.DNSNames)
	}

	mustRun(t, "cert", "client", "--cluster", "A", "--name", "alice", "--role", "write", "--prefix", "a b/", "--ca-dir", certs, "--out", clients)
	got, err := auth.IdentityFromCert(readCert(t, filepath.Join(clients, "alice.crt")))
	want := auth.Principal{Kind: auth.KindClient, Cluster: "A", Name: "alice", Role: auth.RoleWrite, Prefix: "a b/", Via: "cert"}
	if err != nil || got != want {
		t.Fatalf("client certificate names %+v, %v; want %+v", got, err, want)
	}
	if fi, err := os.Stat(filepath.Join(clients, "alice.key")); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("alice.key: %v, %v; want mode 0600", fi, err)
	}

	tests := []struct {
		name  string
		args  []string
		usage bool
		want  string
	}{
		{"ca without cluster", []string{"cert", "ca", "--dir", filepath.Join(dir, "x")}, true, "--cluster"},
		{"ca with a bad cluster name", []string{"cert", "ca", "--cluster", "a b", "--dir", filepath.Join(dir, "x")}, true, "cluster name"},
		{"ca with an argument", []string{"cert", "ca", "--cluster", "A", "extra"}, true, "extra"},
		{"unknown subcommand", []string{"cert", "bogus"}, true, "bogus"},
		{"node without id", []string{"cert", "node", "--cluster", "A", "--host", "h", "--ca-dir", certs}, true, "--id"},
		{"node without host", []string{"cert", "node", "--cluster", "A", "--id", "n2", "--ca-dir", certs}, true, "--host"},
		{"node with a slash in its id", []string{"cert", "node", "--cluster", "A", "--id", "a/b", "--host", "h", "--ca-dir", certs}, true, "node id"},
		{"node with a negative ttl", []string{"cert", "node", "--cluster", "A", "--id", "n2", "--host", "h", "--ca-dir", certs, "--ttl", "-1h"}, true, "ttl"},
		{"node without a CA", []string{"cert", "node", "--cluster", "A", "--id", "n2", "--host", "h", "--ca-dir", filepath.Join(dir, "none")}, false, "cert ca"},
		{"node again", []string{"cert", "node", "--cluster", "A", "--id", "n1", "--host", "h", "--ca-dir", certs}, false, "exists"},
		{"client without role", []string{"cert", "client", "--cluster", "A", "--name", "bob", "--ca-dir", certs}, true, "--role"},
		{"client with a bad role", []string{"cert", "client", "--cluster", "A", "--name", "bob", "--role", "root", "--ca-dir", certs}, true, "role"},
		{"unknown flag", []string{"cert", "client", "--bogus"}, true, "bogus"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, _, err := runRoot(t, tt.args...)
			if err == nil || isUsage(err) != tt.usage || !strings.Contains(strings.ToLower(err.Error()), tt.want) {
				t.Fatalf("error %v (usage %v); want one mentioning %q, usage %v", err, isUsage(err), tt.want, tt.usage)
			}
		})
	}
}

func TestTokenCommand(t *testing.T) {
	certs := filepath.Join(t.TempDir(), "certs")
	mustRun(t, "cert", "ca", "--cluster", "A", "--dir", certs)
	out := mustRun(t, "token", "create", "--cluster", "A", "--role", "read", "--prefix", "weather/", "--ttl", "720h", "--ca-dir", certs)
	if strings.Count(out, "\n") != 1 {
		t.Fatalf("token create printed %q, want one line", out)
	}
	ca, err := auth.LoadCA(filepath.Join(certs, "ca.crt"), "")
	if err != nil {
		t.Fatal(err)
	}
	got, err := auth.NewTokenVerifier("A", ca.Cert).Verify(strings.TrimSpace(out))
	want := auth.Principal{Kind: auth.KindClient, Cluster: "A", Name: "client", Role: auth.RoleRead, Prefix: "weather/", Via: "token"}
	if err != nil || got != want {
		t.Fatalf("token names %+v, %v; want %+v", got, err, want)
	}

	tests := []struct {
		name  string
		args  []string
		usage bool
		want  string
	}{
		{"without ttl", []string{"--cluster", "A", "--role", "read", "--ca-dir", certs}, true, "--ttl"},
		{"negative ttl", []string{"--cluster", "A", "--role", "read", "--ttl", "-1h", "--ca-dir", certs}, true, "--ttl"},
		{"without role", []string{"--cluster", "A", "--ttl", "1h", "--ca-dir", certs}, true, "--role"},
		{"bad role", []string{"--cluster", "A", "--role", "god", "--ttl", "1h", "--ca-dir", certs}, true, "role"},
		{"without cluster", []string{"--role", "read", "--ttl", "1h", "--ca-dir", certs}, true, "--cluster"},
		{"bad subject", []string{"--cluster", "A", "--role", "read", "--name", "a/b", "--ttl", "1h", "--ca-dir", certs}, true, "subject"},
		{"without a CA", []string{"--cluster", "A", "--role", "read", "--ttl", "1h", "--ca-dir", filepath.Join(certs, "none")}, false, "cert ca"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, _, err := runRoot(t, append([]string{"token", "create"}, tt.args...)...)
			if err == nil || isUsage(err) != tt.usage || !strings.Contains(strings.ToLower(err.Error()), tt.want) {
				t.Fatalf("error %v (usage %v); want one mentioning %q, usage %v", err, isUsage(err), tt.want, tt.usage)
			}
		})
	}
}
