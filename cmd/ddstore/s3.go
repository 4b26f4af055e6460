package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/ddstore/ddstore/client"
	"github.com/ddstore/ddstore/server"
	"github.com/ddstore/ddstore/server/s3"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/spf13/cobra"
)

// defaultKeysFile is where s3 key create writes and the gateway reads keys.
const defaultKeysFile = "s3-keys.json"

func newS3Cmd(g *globalFlags) *cobra.Command {
	var (
		listen, keysFile, metricsAddr, tlsCert, tlsKey string
		anonymous                                      []string
		insecure                                       bool
		maxUploads                                     int
	)
	cmd := &cobra.Command{
		Use:   "s3",
		Short: "Serve the S3 API (a gateway that is a client of the cluster)",
		Long: `s3 runs an S3-compatible gateway: a separate process that talks to the cluster at
--addr as a client (TLS with --ca, and --cert/--key for its own identity). S3
clients sign requests with access keys made by "ddstore s3 key create"; each key
is bound to a ddstore token, which the gateway sends with every request the key
signs, so the cluster grants the key exactly that token's role and prefix.
Buckets are name prefixes: s3://bucket/key is the ddstore file "bucket/key".
Path-style addressing only (http://host:port/bucket/key).`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if !server.Loopback(listen) && (tlsCert == "" || tlsKey == "") && !insecure {
				return usageError{fmt.Errorf("s3: --listen %s is not a loopback address and the gateway has no --tls-cert/--tls-key: S3 signatures do not hide the data; give it a certificate or start it with --insecure", listen)}
			}
			if (tlsCert == "") != (tlsKey == "") {
				return usageError{errors.New("s3: --tls-cert and --tls-key go together")}
			}
			var addrs []string
			for _, a := range strings.Split(g.addr, ",") {
				if a = strings.TrimSpace(a); a != "" {
					addrs = append(addrs, a)
				}
			}
			opts := []client.Option{client.WithCallTimeout(g.callTimeout), client.WithProgressTimeout(g.progress)}
			sec, err := g.credentials()
			if err != nil {
				return err
			}
			opts = append(opts, sec...)
			if _, err := os.Stat(keysFile); err != nil && len(anonymous) == 0 {
				return fmt.Errorf("s3: keys file: %w (make one with ddstore s3 key create)", err)
			} else if err != nil {
				keysFile = ""
			}
			log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
			reg := prometheus.NewRegistry()
			reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
			gw, err := s3.New(s3.Config{
				Addrs: addrs, ClientOptions: opts, TLS: g.ca != "", KeysFile: keysFile,
				AnonymousRead: anonymous, MaxUploads: maxUploads, Registry: reg, Logger: log,
			})
			if err != nil {
				return err
			}
			defer gw.Close()
			return serveS3(cmd.Context(), log, gw, reg, listen, metricsAddr, tlsCert, tlsKey)
		},
	}
	f := cmd.Flags()
	f.StringVar(&listen, "listen", "127.0.0.1:9000", "address the S3 API listens on")
	f.StringVar(&keysFile, "keys", defaultKeysFile, "keys file (ddstore s3 key create); read again when an unknown key signs")
	f.StringSliceVar(&anonymous, "anonymous-read", nil, "buckets anyone may read without signing (comma-separated), served with the gateway's own --cert")
	f.StringVar(&metricsAddr, "metrics", "", "HTTP address for the gateway's Prometheus /metrics; empty: none")
	f.StringVar(&tlsCert, "tls-cert", "", "serve HTTPS with this certificate")
	f.StringVar(&tlsKey, "tls-key", "", "the HTTPS certificate's key")
	f.BoolVar(&insecure, "insecure", false, "allow plain HTTP on a non-loopback --listen")
	f.IntVar(&maxUploads, "max-uploads", 4, "uploads (PutObject, UploadPart) streamed at once; more wait (bounds memory)")
	cmd.AddCommand(newS3KeyCmd(g))
	return cmd
}

func newS3KeyCmd(g *globalFlags) *cobra.Command {
	cmd := &cobra.Command{Use: "key", Short: "Manage the gateway's S3 access keys", Args: cobra.ArbitraryArgs, RunE: groupRun}
	var keysFile, tokenFile, comment string
	create := &cobra.Command{
		Use:   "create",
		Short: "Make an S3 access key bound to a ddstore token and append it to the keys file",
		Long: `create makes a random access key ID and secret, binds them to the ddstore client
token in --token-file (ddstore token create: its role and prefix are what the
key may do) and appends them to the keys file (created with mode 0600). It
prints the access key ID and secret for the S3 client's configuration.`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := required("s3 key create", [2]string{"token-file", tokenFile}); err != nil {
				return err
			}
			raw, err := os.ReadFile(tokenFile)
			if err != nil {
				return fmt.Errorf("s3 key create: --token-file: %w", err)
			}
			k, err := s3.NewKey(string(raw), comment)
			if err != nil {
				return err
			}
			if err := s3.AppendKey(keysFile, k); err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			if g.json {
				return printJSON(out, map[string]string{"access_key_id": k.AccessKeyID, "secret_access_key": k.Secret, "keys_file": keysFile})
			}
			fmt.Fprintf(out, "AWS_ACCESS_KEY_ID=%s\nAWS_SECRET_ACCESS_KEY=%s\n", k.AccessKeyID, k.Secret)
			return nil
		},
	}
	create.Flags().StringVar(&keysFile, "keys", defaultKeysFile, "keys file to append to")
	create.Flags().StringVar(&tokenFile, "token-file", "", "the ddstore client token the key acts with (ddstore token create)")
	create.Flags().StringVar(&comment, "comment", "", "a note kept with the key")
	cmd.AddCommand(create)
	return cmd
}

// serveS3 serves the gateway (and its metrics) until ctx ends.
func serveS3(ctx context.Context, log *slog.Logger, gw http.Handler, reg *prometheus.Registry, listen, metricsAddr, certFile, keyFile string) error {
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return fmt.Errorf("s3: %w", err)
	}
	srv := &http.Server{Handler: gw, ReadHeaderTimeout: 30 * time.Second, IdleTimeout: 2 * time.Minute}
	if certFile != "" {
		cert, err := tls.LoadX509KeyPair(certFile, keyFile)
		if err != nil {
			ln.Close()
			return fmt.Errorf("s3: --tls-cert/--tls-key: %w", err)
		}
		srv.TLSConfig = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
		ln = tls.NewListener(ln, srv.TLSConfig)
	}
	errc := make(chan error, 2)
	go func() { errc <- srv.Serve(ln) }()
	var msrv *http.Server
	if metricsAddr != "" {
		mln, err := net.Listen("tcp", metricsAddr)
		if err != nil {
			srv.Close()
			return fmt.Errorf("s3: --metrics: %w", err)
		}
		mux := http.NewServeMux()
		mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))
		msrv = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
		go func() { errc <- msrv.Serve(mln) }()
		log.Info("s3 gateway metrics", "addr", mln.Addr().String())
	}
	scheme := "http"
	if certFile != "" {
		scheme = "https"
	}
	log.Info("s3 gateway listening", "url", scheme+"://"+ln.Addr().String())
	select {
	case <-ctx.Done():
	case err := <-errc:
		return fmt.Errorf("s3: %w", err)
	}
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if msrv != nil {
		msrv.Shutdown(sctx)
	}
	return srv.Shutdown(sctx)
}
