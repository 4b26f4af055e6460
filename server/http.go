package server

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/pprof"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// startHTTP opens the node's HTTP listener (Config.HTTPAddr) and serves
// /metrics, /healthz, /readyz, pprof if asked, and Config.HTTPHandler at
// "/" on it, in the background.
func (n *Node) startHTTP() error {
	lis, err := net.Listen("tcp", n.cfg.HTTPAddr)
	if err != nil {
		return fmt.Errorf("server: listen on HTTP address %s: %w", n.cfg.HTTPAddr, err)
	}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", n.metrics.Handler())
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("GET /readyz", n.serveReady)
	if n.cfg.Pprof {
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	}
	if n.cfg.HTTPHandler != nil {
		mux.Handle("/", n.cfg.HTTPHandler)
	}
	srv := &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
	}
	if n.cfg.TLS != nil {
		tc := n.cfg.TLS.ServerTLS() // a client certificate is checked if sent, never required
		tc.NextProtos = []string{"h2", "http/1.1"}
		srv.TLSConfig = tc
		lis = tls.NewListener(lis, tc)
	}
	n.http, n.httpLis = srv, lis
	n.bg.Go(func() {
		if err := srv.Serve(lis); err != nil && !errors.Is(err, http.ErrServerClosed) {
			n.log.Error("HTTP server stopped", "addr", lis.Addr(), "err", err)
		}
	})
	return nil
}

// stopHTTP closes the HTTP listener: at once, or after letting requests in
// progress finish (at most ShutdownGrace).
func (n *Node) stopHTTP(graceful bool) {
	if n.http == nil {
		return
	}
	if !graceful {
		n.http.Close()
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), n.cfg.ShutdownGrace)
	defer cancel()
	if err := n.http.Shutdown(ctx); err != nil {
		n.http.Close()
	}
}

// serveReady answers /readyz: 200 when the node can serve linearizable
// reads and accept writes (it has a leader it heard from within the
// election timeout, its store answers and has room, its Raft log takes
// entries), else 503 and one line saying why.
func (n *Node) serveReady(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	if why := n.notServing(); why != "" {
		w.WriteHeader(http.StatusServiceUnavailable)
		fmt.Fprintln(w, "not ready: "+why)
		return
	}
	fmt.Fprintln(w, "ready")
}

// HTTPAddr is the address of the node's HTTP listener ("" without one).
func (n *Node) HTTPAddr() string {
	if n.httpLis == nil {
		return ""
	}
	return n.httpLis.Addr().String()
}

// MetricsRegistry is the node's Prometheus registry (what /metrics serves):
// a part of the process that runs beside the node, such as an S3 gateway
// started with it, registers its collectors here to be scraped with the
// node's.
func (n *Node) MetricsRegistry() *prometheus.Registry { return n.metrics.Registry() }
