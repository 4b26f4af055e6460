package web

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/ddstore/ddstore/client"
	"github.com/ddstore/ddstore/server/auth"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// cookieName names the session cookie.
const cookieName = "ddstore_console"

// maxTokenForm bounds a login form's body (a token is at most
// auth.MaxTokenLen).
const maxTokenForm = 2 * auth.MaxTokenLen

// session is one logged-in user: the token every call carries, through a
// client of its own.
type session struct {
	id      string
	user    user
	client  *client.Client
	expires time.Time // the session's end: its TTL, or the token's expiry

	mu       sync.Mutex
	lastUsed time.Time
}

// user is what a token says of its holder, for display only: the nodes
// verify the token on every call.
type user struct {
	Name    string
	Role    string
	Prefix  string
	Expires time.Time // zero: unknown
}

// sessions are the console's logged-in users, by session ID.
type sessions struct {
	ttl, idle time.Duration

	mu   sync.Mutex
	byID map[string]*session
}

func newSessions(ttl, idle time.Duration) *sessions {
	return &sessions{ttl: ttl, idle: idle, byID: map[string]*session{}}
}

// add starts a session for u calling through cl.
func (s *sessions) add(u user, cl *client.Client) (*session, error) {
	var b [32]byte
	if _, err := rand.Read(b[:]); err != nil {
		return nil, fmt.Errorf("web: session id: %w", err)
	}
	now := time.Now()
	se := &session{id: base64.RawURLEncoding.EncodeToString(b[:]), user: u, client: cl, expires: now.Add(s.ttl), lastUsed: now}
	if !u.Expires.IsZero() && u.Expires.Before(se.expires) {
		se.expires = u.Expires
	}
	s.mu.Lock()
	s.byID[se.id] = se
	stale := s.sweepLocked(now)
	s.mu.Unlock()
	closeAll(stale)
	return se, nil
}

// get returns the live session id names, or nil.
func (s *sessions) get(id string) *session {
	now := time.Now()
	s.mu.Lock()
	se := s.byID[id]
	if se != nil && !se.live(now, s.idle) {
		delete(s.byID, id)
		s.mu.Unlock()
		se.client.Close()
		return nil
	}
	s.mu.Unlock()
	if se != nil {
		se.mu.Lock()
		se.lastUsed = now
		se.mu.Unlock()
	}
	return se
}

// remove ends the session id names, if any.
func (s *sessions) remove(id string) {
	s.mu.Lock()
	se := s.byID[id]
	delete(s.byID, id)
	s.mu.Unlock()
	if se != nil {
		se.client.Close()
	}
}

// sweepLocked drops the sessions that have ended and returns them.
func (s *sessions) sweepLocked(now time.Time) []*session {
	var out []*session
	for id, se := range s.byID {
		if !se.live(now, s.idle) {
			delete(s.byID, id)
			out = append(out, se)
		}
	}
	return out
}

func (s *sessions) closeAll() {
	s.mu.Lock()
	all := make([]*session, 0, len(s.byID))
	for id, se := range s.byID {
		all = append(all, se)
		delete(s.byID, id)
	}
	s.mu.Unlock()
	closeAll(all)
}

func closeAll(ss []*session) {
	for _, se := range ss {
		se.client.Close()
	}
}

func (se *session) live(now time.Time, idle time.Duration) bool {
	se.mu.Lock()
	defer se.mu.Unlock()
	return now.Before(se.expires) && now.Sub(se.lastUsed) < idle
}

// tokenUser reads a token's claims for display, without verifying it (the
// nodes do, on every call).
func tokenUser(token string) user {
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		return user{}
	}
	raw, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return user{}
	}
	var claims struct {
		Sub    string `json:"sub"`
		Role   string `json:"role"`
		Prefix string `json:"prefix"`
		Exp    int64  `json:"exp"`
	}
	if json.Unmarshal(raw, &claims) != nil {
		return user{}
	}
	u := user{Name: claims.Sub, Role: claims.Role, Prefix: claims.Prefix}
	if claims.Exp > 0 {
		u.Expires = time.Unix(claims.Exp, 0)
	}
	return u
}

// errNoSession: the request carries no live session.
var errNoSession = errors.New("web: not logged in")

// current returns the client of r's session (the one client of an insecure
// cluster), or errNoSession.
func (c *Console) current(r *http.Request) (*client.Client, *session, error) {
	if c.open != nil {
		return c.open, nil, nil
	}
	ck, err := r.Cookie(cookieName)
	if err != nil || ck.Value == "" {
		return nil, nil, errNoSession
	}
	se := c.sessions.get(ck.Value)
	if se == nil {
		return nil, nil, errNoSession
	}
	return se.client, se, nil
}

// request is what a page handler gets: the user's client and session.
type request struct {
	client  *client.Client
	session *session // nil: insecure cluster
}

// authed wraps a page that needs a logged-in user: without one, a page
// request is sent to the login page and a live-part request (the
// auto-refresh) gets 401.
func (c *Console) authed(h func(http.ResponseWriter, *http.Request, request)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		cl, se, err := c.current(r)
		if err != nil {
			if isLive(r) {
				http.Error(w, "not logged in", http.StatusUnauthorized)
				return
			}
			http.Redirect(w, r, c.opts.Base+"/login", http.StatusSeeOther)
			return
		}
		h(w, r, request{client: cl, session: se})
	}
}

// isLive tells a request for a page's live part (the auto-refresh).
func isLive(r *http.Request) bool { return r.URL.Query().Get("part") == "live" }

func (c *Console) cookiePath() string {
	if c.opts.Base == "" {
		return "/"
	}
	return c.opts.Base + "/"
}

func (c *Console) loginPage(w http.ResponseWriter, r *http.Request) {
	if _, _, err := c.current(r); err == nil {
		http.Redirect(w, r, c.opts.Base+"/cluster", http.StatusSeeOther)
		return
	}
	c.render(w, r, http.StatusOK, "login", page{Title: "Log in"})
}

// login checks a token by asking the cluster for its status with it (the
// read role at least), then starts a session.
func (c *Console) login(w http.ResponseWriter, r *http.Request) {
	if c.open != nil {
		http.Redirect(w, r, c.opts.Base+"/cluster", http.StatusSeeOther)
		return
	}
	r.Body = http.MaxBytesReader(w, r.Body, maxTokenForm)
	if err := r.ParseForm(); err != nil {
		c.render(w, r, http.StatusBadRequest, "login", page{Title: "Log in", Error: "bad form: " + err.Error()})
		return
	}
	token := strings.TrimSpace(r.PostForm.Get("token"))
	refuse := func(code int, msg string) {
		c.log.Info("console login refused", "remote", r.RemoteAddr, "reason", msg)
		c.render(w, r, code, "login", page{Title: "Log in", Error: msg})
	}
	if token == "" {
		refuse(http.StatusBadRequest, "paste a token (ddstore token create ...)")
		return
	}
	if len(token) > auth.MaxTokenLen {
		refuse(http.StatusBadRequest, "that token is too long")
		return
	}
	cl, err := c.newClient(token)
	if err != nil {
		refuse(http.StatusInternalServerError, err.Error())
		return
	}
	ctx, cancel := c.callCtx(r.Context())
	defer cancel()
	if err := checkToken(ctx, cl); err != nil {
		cl.Close()
		code := http.StatusUnauthorized
		switch status.Code(err) {
		case codes.PermissionDenied:
			code = http.StatusForbidden
		case codes.Unavailable, codes.DeadlineExceeded:
			code = http.StatusServiceUnavailable
		}
		refuse(code, "token refused: "+status.Convert(err).Message())
		return
	}
	u := tokenUser(token)
	se, err := c.sessions.add(u, cl)
	if err != nil {
		cl.Close()
		refuse(http.StatusInternalServerError, err.Error())
		return
	}
	c.log.Info("console login", "user", u.Name, "role", u.Role, "prefix", u.Prefix, "remote", r.RemoteAddr)
	http.SetCookie(w, &http.Cookie{
		Name: cookieName, Value: se.id, Path: c.cookiePath(), Expires: se.expires,
		HttpOnly: true, SameSite: http.SameSiteStrictMode, Secure: r.TLS != nil,
	})
	http.Redirect(w, r, c.opts.Base+"/cluster", http.StatusSeeOther)
}

// checkToken makes one call that needs the read role with the token.
func checkToken(ctx context.Context, cl *client.Client) error {
	_, err := cl.Status(ctx)
	return err
}

func (c *Console) logout(w http.ResponseWriter, r *http.Request) {
	if ck, err := r.Cookie(cookieName); err == nil {
		c.sessions.remove(ck.Value)
	}
	http.SetCookie(w, &http.Cookie{
		Name: cookieName, Value: "", Path: c.cookiePath(), MaxAge: -1,
		HttpOnly: true, SameSite: http.SameSiteStrictMode, Secure: r.TLS != nil,
	})
	http.Redirect(w, r, c.opts.Base+"/login", http.StatusSeeOther)
}
