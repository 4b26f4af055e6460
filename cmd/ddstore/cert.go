package main

import (
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/ddstore/ddstore/server/auth"
	"github.com/spf13/cobra"
)

// newCertCmd is `ddstore cert`: the cluster's CA and the certificates it
// signs.
func newCertCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "cert",
		Short: "Create a cluster's certificate authority and its node and client certificates",
		Long: `Create a cluster's certificate authority (ddstore cert ca), then a
certificate for each node (ddstore cert node) and for clients (ddstore cert
client). Nothing is ever overwritten. Keep ca.key safe: whoever has it can
join the cluster and issue any role.`,
		Args: cobra.ArbitraryArgs,
		RunE: groupRun,
	}
	cmd.AddCommand(newCertCACmd(), newCertNodeCmd(), newCertClientCmd())
	return cmd
}

// newTokenCmd is `ddstore token`: signed client tokens.
func newTokenCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "token",
		Short: "Create client tokens signed by the cluster's CA",
		Args:  cobra.ArbitraryArgs,
		RunE:  groupRun,
	}
	cmd.AddCommand(newTokenCreateCmd())
	return cmd
}

// groupRun shows a command group's help, or refuses an unknown subcommand.
func groupRun(cmd *cobra.Command, args []string) error {
	if len(args) > 0 {
		return usageError{fmt.Errorf("%s: unknown command %q (see ddstore %s --help)", cmd.Name(), args[0], cmd.Name())}
	}
	return cmd.Help()
}

// noArgs refuses arguments to a subcommand as a usage error.
func noArgs(cmd *cobra.Command, args []string) error {
	if len(args) > 0 {
		what := cmd.Parent().Name() + " " + cmd.Name()
		return usageError{fmt.Errorf("%s: unexpected argument %q (see ddstore %s --help)", what, args[0], what)}
	}
	return nil
}

// authError makes an error of bad names or roles a usage error.
func authError(what string, err error) error {
	switch {
	case errors.Is(err, auth.ErrBadName) || errors.Is(err, auth.ErrBadRole):
		return usageError{fmt.Errorf("%s: %w", what, err)}
	case errors.Is(err, fs.ErrExist):
		return fmt.Errorf("%s: %w (refusing to overwrite)", what, err)
	}
	return fmt.Errorf("%s: %w", what, err)
}

// required refuses empty flags as usage errors.
func required(what string, flags ...[2]string) error {
	for _, f := range flags {
		if f[1] == "" {
			return usageError{fmt.Errorf("%s: --%s is required (see ddstore %s --help)", what, f[0], what)}
		}
	}
	return nil
}

func positive(what string, ttl time.Duration) error {
	if ttl <= 0 {
		return usageError{fmt.Errorf("%s: --ttl %v: want a positive duration such as 720h", what, ttl)}
	}
	return nil
}

// loadCA loads the CA and its key from dir.
func loadCA(what, dir string) (*auth.CA, error) {
	ca, err := auth.LoadCA(filepath.Join(dir, "ca.crt"), filepath.Join(dir, "ca.key"))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%s: %w (create the CA with ddstore cert ca, or point --ca-dir at it)", what, err)
	}
	if err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	return ca, nil
}

func day(t time.Time) string { return t.UTC().Format("2006-01-02") }

func newCertCACmd() *cobra.Command {
	var (
		cluster, dir string
		ttl          time.Duration
	)
	cmd := &cobra.Command{
		Use:   "ca",
		Short: "Create the cluster's certificate authority: DIR/ca.crt and DIR/ca.key",
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			const what = "cert ca"
			if err := required(what, [2]string{"cluster", cluster}, [2]string{"dir", dir}); err != nil {
				return err
			}
			if err := positive(what, ttl); err != nil {
				return err
			}
			ca, err := auth.NewCA(cluster, ttl)
			if err != nil {
				return authError(what, err)
			}
			if err := os.MkdirAll(dir, 0o700); err != nil {
				return fmt.Errorf("%s: %w", what, err)
			}
			crt, key := filepath.Join(dir, "ca.crt"), filepath.Join(dir, "ca.key")
			if err := ca.Save(crt, key); err != nil {
				return authError(what, err)
			}
			if jsonFlag(cmd) {
				return printJSON(cmd.OutOrStdout(), certJSON{CertFile: crt, KeyFile: key, Subject: "CA of cluster " + cluster, Expires: ca.Cert.NotAfter.UTC().Format(time.RFC3339)})
			}
			fmt.Fprintf(cmd.ErrOrStderr(), "wrote %s and %s: CA of cluster %s, valid until %s\n", crt, key, cluster, day(ca.Cert.NotAfter))
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&cluster, "cluster", "", "the cluster's name (required)")
	f.StringVar(&dir, "dir", "certs", "directory to write ca.crt and ca.key to")
	f.DurationVar(&ttl, "ttl", auth.DefaultCATTL, "how long the CA is valid")
	return cmd
}

func newCertNodeCmd() *cobra.Command {
	var (
		cluster, id, caDir, out string
		hosts                   []string
		ttl                     time.Duration
	)
	cmd := &cobra.Command{
		Use:   "node",
		Short: "Create a node's certificate: OUT/ID.crt and OUT/ID.key",
		Long: `Create a node's certificate, signed by the CA in --ca-dir. It names the
node as ID of the cluster and is good for both ends of TLS. --host lists the
IP addresses and DNS names the node is reached at (its API, Raft and public
addresses' hosts); 127.0.0.1, ::1 and localhost are always added.`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			const what = "cert node"
			if err := required(what, [2]string{"cluster", cluster}, [2]string{"id", id}, [2]string{"host", strings.Join(hosts, ",")}, [2]string{"ca-dir", caDir}); err != nil {
				return err
			}
			if err := positive(what, ttl); err != nil {
				return err
			}
			ca, err := loadCA(what, caDir)
			if err != nil {
				return err
			}
			certPEM, keyPEM, err := ca.IssueNode(auth.NodeCert{Cluster: cluster, NodeID: id, Hosts: hosts, TTL: ttl})
			if err != nil {
				return authError(what, err)
			}
			return writePair(cmd, what, out, caDir, id, certPEM, keyPEM, fmt.Sprintf("node %s of cluster %s", id, cluster))
		},
	}
	f := cmd.Flags()
	f.StringVar(&cluster, "cluster", "", "the cluster's name (required)")
	f.StringVar(&id, "id", "", "the node's ID, as its --id (required)")
	f.StringSliceVar(&hosts, "host", nil, "IP addresses and DNS names the node is reached at (required; comma-separate or repeat)")
	f.StringVar(&caDir, "ca-dir", "certs", "directory holding ca.crt and ca.key")
	f.StringVar(&out, "out", "", "directory to write the certificate and key to (default --ca-dir)")
	f.DurationVar(&ttl, "ttl", auth.DefaultNodeTTL, "how long the certificate is valid")
	return cmd
}

func newCertClientCmd() *cobra.Command {
	var (
		cluster, name, role, prefix, caDir, out string
		ttl                                     time.Duration
	)
	cmd := &cobra.Command{
		Use:   "client",
		Short: "Create a client's certificate: OUT/NAME.crt and OUT/NAME.key",
		Long: `Create a client's certificate, signed by the CA in --ca-dir. It grants the
role (read, write or admin) on files whose names start with --prefix.`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			const what = "cert client"
			if err := required(what, [2]string{"cluster", cluster}, [2]string{"name", name}, [2]string{"role", role}, [2]string{"ca-dir", caDir}); err != nil {
				return err
			}
			r, err := auth.ParseRole(role)
			if err != nil {
				return authError(what+": --role", err)
			}
			if err := positive(what, ttl); err != nil {
				return err
			}
			ca, err := loadCA(what, caDir)
			if err != nil {
				return err
			}
			certPEM, keyPEM, err := ca.IssueClient(auth.ClientCert{Cluster: cluster, Name: name, Role: r, Prefix: prefix, TTL: ttl})
			if err != nil {
				return authError(what, err)
			}
			p := auth.Principal{Kind: auth.KindClient, Name: name, Role: r, Prefix: prefix}
			return writePair(cmd, what, out, caDir, name, certPEM, keyPEM, fmt.Sprintf("%s of cluster %s", p, cluster))
		},
	}
	f := cmd.Flags()
	f.StringVar(&cluster, "cluster", "", "the cluster's name (required)")
	f.StringVar(&name, "name", "", "the client's name (required)")
	f.StringVar(&role, "role", "", "read, write or admin (required)")
	f.StringVar(&prefix, "prefix", "", "file names the client may touch start with this (default: all)")
	f.StringVar(&caDir, "ca-dir", "certs", "directory holding ca.crt and ca.key")
	f.StringVar(&out, "out", "", "directory to write the certificate and key to (default --ca-dir)")
	f.DurationVar(&ttl, "ttl", auth.DefaultClientTTL, "how long the certificate is valid")
	return cmd
}

// writePair writes OUT/base.crt and OUT/base.key (OUT defaulting to caDir)
// and says on stderr that they are for whom.
func writePair(cmd *cobra.Command, what, out, caDir, base string, certPEM, keyPEM []byte, whom string) error {
	if out == "" {
		out = caDir
	}
	if err := os.MkdirAll(out, 0o700); err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	crt, key := filepath.Join(out, base+".crt"), filepath.Join(out, base+".key")
	if err := auth.WriteNewFiles(crt, certPEM, key, keyPEM); err != nil {
		return authError(what, err)
	}
	until, expires := "?", ""
	if b, _ := pem.Decode(certPEM); b != nil {
		if c, err := x509.ParseCertificate(b.Bytes); err == nil {
			until, expires = day(c.NotAfter), c.NotAfter.UTC().Format(time.RFC3339)
		}
	}
	if jsonFlag(cmd) {
		return printJSON(cmd.OutOrStdout(), certJSON{CertFile: crt, KeyFile: key, Subject: whom, Expires: expires})
	}
	fmt.Fprintf(cmd.ErrOrStderr(), "wrote %s and %s: %s, valid until %s\n", crt, key, whom, until)
	return nil
}

func newTokenCreateCmd() *cobra.Command {
	var (
		cluster, name, role, prefix, caDir string
		ttl                                time.Duration
	)
	cmd := &cobra.Command{
		Use:   "create",
		Short: "Print a client token signed by the cluster's CA",
		Long: `Print a client token, signed by the CA in --ca-dir, granting the role
(read, write or admin) on files whose names start with --prefix until --ttl
from now. Clients present it with --token-file or DDSTORE_TOKEN.`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			const what = "token create"
			if err := required(what, [2]string{"cluster", cluster}, [2]string{"role", role}, [2]string{"name", name}, [2]string{"ca-dir", caDir}); err != nil {
				return err
			}
			r, err := auth.ParseRole(role)
			if err != nil {
				return authError(what+": --role", err)
			}
			if ttl == 0 {
				return usageError{fmt.Errorf("%s: --ttl is required (e.g. 720h)", what)}
			}
			if err := positive(what, ttl); err != nil {
				return err
			}
			ca, err := loadCA(what, caDir)
			if err != nil {
				return err
			}
			tok, err := ca.IssueToken(cluster, name, r, prefix, ttl)
			if err != nil {
				return authError(what, err)
			}
			expires := time.Now().Add(ttl).UTC().Format(time.RFC3339)
			if jsonFlag(cmd) {
				return printJSON(cmd.OutOrStdout(), tokenJSON{Token: tok, Cluster: cluster, Name: name, Role: r.String(), Prefix: prefix, Expires: expires})
			}
			if _, err := fmt.Fprintln(cmd.OutOrStdout(), tok); err != nil {
				return err
			}
			p := auth.Principal{Kind: auth.KindClient, Name: name, Role: r, Prefix: prefix}
			fmt.Fprintf(cmd.ErrOrStderr(), "token for %s of cluster %s, valid until %s\n", p, cluster, expires)
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&cluster, "cluster", "", "the cluster's name (required)")
	f.StringVar(&name, "name", "client", "the token's subject, named in the nodes' logs")
	f.StringVar(&role, "role", "", "read, write or admin (required)")
	f.StringVar(&prefix, "prefix", "", "file names the client may touch start with this (default: all)")
	f.StringVar(&caDir, "ca-dir", "certs", "directory holding ca.crt and ca.key")
	f.DurationVar(&ttl, "ttl", 0, "how long the token is valid (required, e.g. 720h)")
	return cmd
}

// jsonFlag reports whether the global --json flag is set, for commands made
// without the global flags.
func jsonFlag(cmd *cobra.Command) bool {
	v, _ := cmd.Flags().GetBool("json")
	return v
}
