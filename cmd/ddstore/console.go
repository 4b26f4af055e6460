package main

import (
	"net"

	"github.com/ddstore/ddstore/server"
	"github.com/ddstore/ddstore/server/web"
)

// webConsole is the web console a node serves at "/" of its --metrics
// listener: a client of the node's own API that calls with each logged-in
// user's token (the node's certificate only identifies the node it dials:
// web.New drops it from the client's TLS config).
func webConsole(cfg server.Config) (*web.Console, error) {
	addr := cfg.Advertise
	if addr == "" {
		addr = cfg.APIAddr
	}
	// A node listening on every interface is reached on loopback.
	if host, port, err := net.SplitHostPort(addr); err == nil {
		if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
			addr = net.JoinHostPort("127.0.0.1", port)
		}
	}
	opts := web.Options{Addrs: []string{addr}}
	if cfg.Logger != nil {
		opts.Logger = cfg.Logger.With("component", "console")
	}
	if cfg.TLS != nil {
		// The node is verified by the identity in its certificate, as
		// nodes verify each other, whatever host name it is dialed by.
		opts.TLS = cfg.TLS.DialNodeTLS()
	}
	return web.New(opts)
}
