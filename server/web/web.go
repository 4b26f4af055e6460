// Package web is ddstore's web console: server-rendered pages of a cluster
// (nodes, leader, term, health, store usage), its peer clusters, cache
// tiers and heal counters, and a file browser (list by prefix and date,
// stat with chunk placement, download).
//
// The console is a client of the cluster like any other: it calls the
// nodes' gRPC API through client.Client, for the logged-in user. A user
// logs in with a client token (ddstore token create); the console keeps it
// in a server-side session, named by a random ID in an HttpOnly,
// SameSite=Strict cookie, and every call it makes for that user carries the
// token, so the nodes authenticate and authorize each page exactly as they
// would the same call from the CLI. The console never calls with a
// certificate of its own: a TLS client certificate in Options.TLS is
// dropped, so a console served by a node cannot lend the node's identity to
// its users.
//
// Login and logout are POSTs; cross-origin POSTs are refused
// (http.CrossOriginProtection) besides the SameSite cookie. Every value
// shown (file names are user input) is escaped by html/template, and a
// Content-Security-Policy allows only the console's own script and style.
// The cluster-wide pages refresh themselves every RefreshInterval through a
// small plain-JS file that fetches the page's live part again.
package web

import (
	"context"
	"crypto/tls"
	"embed"
	"errors"
	"fmt"
	"html/template"
	"io/fs"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/ddstore/ddstore/client"
)

//go:embed templates/*.html static/*
var assets embed.FS

// Options configure a Console.
type Options struct {
	// Addrs are gRPC API addresses of the cluster's nodes (a node serving
	// the console lists its own first). Required.
	Addrs []string
	// TLS verifies the nodes (its RootCAs: the cluster's CA). Any client
	// certificate in it is dropped: calls carry only the user's token. Nil:
	// the cluster is insecure (plain text, no authentication), and the
	// console needs no login either.
	TLS *tls.Config
	// Cluster, if set, sends every call to that cluster (client.WithCluster).
	Cluster string
	// Base is the path the console is mounted under ("" for "/"), for its
	// links and its cookie's path; the handler itself expects the prefix
	// already stripped (http.StripPrefix).
	Base string
	// RefreshInterval is how often the cluster pages refresh themselves.
	// Default 1.5 s.
	RefreshInterval time.Duration
	// SessionTTL bounds a session's life (and the token's expiry does too).
	// Default 12 h.
	SessionTTL time.Duration
	// IdleTimeout ends a session unused that long. Default 1 h.
	IdleTimeout time.Duration
	// ListPage is how many files one page of the file browser lists.
	// Default 1000.
	ListPage int
	// CallTimeout bounds the cluster calls behind one page. Default 5 s.
	CallTimeout time.Duration
	// Logger; default: discard.
	Logger *slog.Logger
	// ClientOptions are added to every client the console makes (tests:
	// shorter timeouts).
	ClientOptions []client.Option
}

// Console is the web console's http.Handler. Close ends its sessions.
type Console struct {
	opts     Options
	log      *slog.Logger
	tls      *tls.Config // Options.TLS without client certificates
	pages    map[string]*template.Template
	handler  http.Handler
	sessions *sessions
	open     *client.Client // insecure cluster: the one client, no login

	closeOnce sync.Once
}

// New returns a console for the cluster at opts.Addrs.
func New(opts Options) (*Console, error) {
	if len(opts.Addrs) == 0 {
		return nil, errors.New("web: no node address given")
	}
	if opts.RefreshInterval <= 0 {
		opts.RefreshInterval = 1500 * time.Millisecond
	}
	if opts.SessionTTL <= 0 {
		opts.SessionTTL = 12 * time.Hour
	}
	if opts.IdleTimeout <= 0 {
		opts.IdleTimeout = time.Hour
	}
	if opts.ListPage <= 0 {
		opts.ListPage = 1000
	}
	if opts.CallTimeout <= 0 {
		opts.CallTimeout = 5 * time.Second
	}
	opts.Base = strings.TrimSuffix(opts.Base, "/")
	c := &Console{opts: opts, log: opts.Logger}
	if c.log == nil {
		c.log = slog.New(slog.DiscardHandler)
	}
	if opts.TLS != nil {
		c.tls = opts.TLS.Clone()
		c.tls.Certificates = nil
		c.tls.GetClientCertificate = nil
	}
	pages, err := parsePages()
	if err != nil {
		return nil, err
	}
	c.pages = pages
	c.sessions = newSessions(opts.SessionTTL, opts.IdleTimeout)
	if c.tls == nil {
		cl, err := c.newClient("")
		if err != nil {
			return nil, err
		}
		c.open = cl
	}
	c.handler = c.routes()
	return c, nil
}

// ServeHTTP serves the console.
func (c *Console) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h.Set("Content-Security-Policy", "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("X-Frame-Options", "DENY")
	h.Set("Referrer-Policy", "no-referrer")
	c.handler.ServeHTTP(w, r)
}

// Close ends every session and closes the console's connections.
func (c *Console) Close() error {
	c.closeOnce.Do(func() {
		c.sessions.closeAll()
		if c.open != nil {
			c.open.Close()
		}
	})
	return nil
}

// newClient returns a client of the cluster calling with token.
func (c *Console) newClient(token string) (*client.Client, error) {
	opts := []client.Option{client.WithLogger(c.log), client.WithCallTimeout(c.opts.CallTimeout)}
	if c.tls != nil {
		opts = append(opts, client.WithTLS(c.tls))
	}
	if token != "" {
		opts = append(opts, client.WithToken(token))
	}
	if c.opts.Cluster != "" {
		opts = append(opts, client.WithCluster(c.opts.Cluster))
	}
	opts = append(opts, c.opts.ClientOptions...)
	cl, err := client.New(c.opts.Addrs, opts...)
	if err != nil {
		return nil, fmt.Errorf("web: client: %w", err)
	}
	return cl, nil
}

func (c *Console) routes() http.Handler {
	mux := http.NewServeMux()
	static, _ := fs.Sub(assets, "static")
	mux.Handle("GET /static/", http.StripPrefix("/static/", http.FileServerFS(static)))
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, c.opts.Base+"/cluster", http.StatusSeeOther)
	})
	mux.HandleFunc("GET /login", c.loginPage)
	mux.HandleFunc("POST /login", c.login)
	mux.HandleFunc("POST /logout", c.logout)
	mux.HandleFunc("GET /cluster", c.authed(c.clusterPage))
	mux.HandleFunc("GET /peers", c.authed(c.peersPage))
	mux.HandleFunc("GET /cache", c.authed(c.cachePage))
	mux.HandleFunc("GET /heal", c.authed(c.healPage))
	mux.HandleFunc("GET /files", c.authed(c.filesPage))
	mux.HandleFunc("GET /file", c.authed(c.filePage))
	mux.HandleFunc("GET /download", c.authed(c.download))
	return http.NewCrossOriginProtection().Handler(mux)
}

// callCtx bounds the calls behind one page.
func (c *Console) callCtx(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, c.opts.CallTimeout)
}
