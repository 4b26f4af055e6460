// Command ddstore runs a ddstore node and talks to a cluster: put and get
// files, list them, look at the cluster, run the demo and the benchmark suite.
package main

import (
	"context"
	"errors"
	"fmt"
	"github.com/ddstore/ddstore/client"
	"os"
	"os/signal"
	"runtime/debug"
	"strings"
	"syscall"

	"github.com/spf13/cobra"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Exit codes.
const (
	exitOK    = 0
	exitError = 1 // the operation failed
	exitUsage = 2 // bad command line
)

// usageError marks errors in the command line itself.
type usageError struct{ err error }

func (e usageError) Error() string { return e.err.Error() }
func (e usageError) Unwrap() error { return e.err }

// memoryLimit is the Go heap's soft limit unless GOMEMLIMIT says otherwise:
// ddstore's buffers are bounded, and this keeps the garbage collector from
// letting short-lived chunk buffers pile up past the 256 MiB RSS budget.
const memoryLimit = 160 << 20

func main() {
	if os.Getenv("GOMEMLIMIT") == "" {
		debug.SetMemoryLimit(memoryLimit)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	err := newRoot().ExecuteContext(ctx)
	if err == nil {
		os.Exit(exitOK)
	}
	if !errors.As(err, new(reportedError)) {
		fmt.Fprintf(os.Stderr, "ddstore: %s\n", oneLine(err))
	}
	if errors.As(err, new(interruptedError)) {
		os.Exit(exitInterrupted)
	}
	var ue usageError
	if errors.As(err, &ue) || isCobraUsage(err) {
		os.Exit(exitUsage)
	}
	os.Exit(exitError)
}

// isCobraUsage recognizes the command-line errors cobra reports itself
// (unknown commands, flags and argument counts).
func isCobraUsage(err error) bool {
	msg := err.Error()
	for _, p := range []string{"unknown command", "unknown flag", "unknown shorthand flag", "flag needs an argument", "accepts ", "requires at least", "requires at most", "required flag"} {
		if strings.HasPrefix(msg, p) {
			return true
		}
	}
	return false
}

// oneLine renders an error as a single line a person can read, with the gRPC
// code spelled out.
func oneLine(err error) string {
	msg := err.Error()
	if st, ok := status.FromError(err); ok && st.Code() != codes.OK && st.Code() != codes.Unknown {
		msg = strings.Replace(msg, "rpc error: code = "+st.Code().String()+" desc = ", strings.ToLower(codeName(st.Code()))+": ", 1)
	}
	return strings.Join(strings.Fields(tidy(msg)+hint(msg)), " ")
}

// hint adds what to do about a connection that failed in a way that names
// TLS only obliquely.
func hint(msg string) string {
	switch {
	case strings.Contains(msg, "error reading server preface"), strings.Contains(msg, "first record does not look like a TLS handshake"):
		return " (does the node speak TLS? give its cluster's CA certificate with --ca or DDSTORE_CA; a node without TLS takes no --ca)"
	case strings.Contains(msg, "authentication handshake failed"):
		return " (TLS handshake failed: check that --ca is this cluster's CA certificate and that the client certificate, if any, is one of its)"
	}
	return ""
}

func codeName(c codes.Code) string {
	switch c {
	case codes.NotFound:
		return "not found"
	case codes.InvalidArgument:
		return "invalid argument"
	case codes.AlreadyExists:
		return "already exists"
	case codes.FailedPrecondition:
		return "failed precondition"
	case codes.Unavailable:
		return "unavailable"
	case codes.DataLoss:
		return "data loss"
	case codes.DeadlineExceeded:
		return "deadline exceeded"
	case codes.ResourceExhausted:
		return "resource exhausted"
	case codes.OutOfRange:
		return "out of range"
	case codes.Canceled:
		return "canceled"
	case codes.PermissionDenied:
		return "permission denied"
	case codes.Unauthenticated:
		return "unauthenticated"
	}
	return c.String()
}

func newRoot() *cobra.Command {
	root := &cobra.Command{
		Use:           "ddstore",
		Short:         "ddstore stores large files in a Raft-coordinated cluster",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageError{err} })
	g := &globalFlags{}
	root.PersistentFlags().StringVar(&g.addr, "addr", envOr("DDSTORE_ADDR", "127.0.0.1:7400"), "comma-separated node API addresses (env DDSTORE_ADDR)")
	root.PersistentFlags().BoolVar(&g.json, "json", false, "print results as JSON")
	root.PersistentFlags().BoolVar(&g.stale, "stale", false, "allow stale catalog reads from the node asked")
	root.PersistentFlags().DurationVar(&g.timeout, "timeout", 0, "give up after this long (0: no limit for transfers, 30s for other calls)")
	root.PersistentFlags().DurationVar(&g.callTimeout, "call-timeout", client.DefaultCallTimeout, "a node that does not answer a short call (stat, ls, rm, status) in this long is left for the next --addr")
	root.PersistentFlags().DurationVar(&g.progress, "progress-timeout", client.DefaultProgressTimeout, "a transfer that moves nothing for this long on one node moves to the next --addr, resuming")
	root.PersistentFlags().StringVar(&g.ca, "ca", os.Getenv("DDSTORE_CA"), "the cluster's CA certificate: talk TLS and verify the nodes (env DDSTORE_CA)")
	root.PersistentFlags().StringVar(&g.cert, "cert", os.Getenv("DDSTORE_CERT"), "client certificate (ddstore cert client; env DDSTORE_CERT)")
	root.PersistentFlags().StringVar(&g.key, "key", os.Getenv("DDSTORE_KEY"), "client certificate's key (env DDSTORE_KEY)")
	root.PersistentFlags().StringVar(&g.tokenFile, "token-file", "", "file holding a client token (ddstore token create); else DDSTORE_TOKEN")
	root.AddCommand(
		newServerCmd(),
		g.clusterFlag(newPutCmd(g), "store into this cluster"), g.clusterFlag(newGetCmd(g), "download from this cluster"),
		g.clusterFlag(newLsCmd(g), "list this cluster's files only"), g.clusterFlag(newStatCmd(g), "ask this cluster"),
		g.clusterFlag(newRmCmd(g), "delete from this cluster"), newReplicateCmd(g),
		newStatusCmd(g), newJoinCmd(g), newLeaveCmd(g), newGCCmd(g), newRepairCmd(g),
		newDemoCmd(), newBenchCmd(g),
		newCertCmd(), newTokenCmd(), newS3Cmd(g), newVersionCmd(g),
		newSnapshotCmd(g), newGridFSCmd(g),
	)
	root.Version = readBuildInfo().String()
	root.SetVersionTemplate("{{.Version}}\n")
	for _, c := range root.Commands() {
		c.SetFlagErrorFunc(root.FlagErrorFunc())
		if c.Args == nil {
			continue
		}
		args := c.Args
		c.Args = func(cmd *cobra.Command, a []string) error {
			if err := args(cmd, a); err != nil {
				return usageError{fmt.Errorf("%s: %w (see ddstore %s --help)", cmd.Name(), err, cmd.Name())}
			}
			return nil
		}
	}
	return root
}

func envOr(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
}
