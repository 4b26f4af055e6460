package web_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"html"
	"io"
	"log/slog"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/ddstore/ddstore/client"
	"github.com/ddstore/ddstore/internal/localcluster"
	"github.com/ddstore/ddstore/server/auth"
	"github.com/ddstore/ddstore/server/web"
)

// startCluster starts an in-process cluster of n nodes (mutual TLS) and
// stops it when the test ends.
func startCluster(t *testing.T, ctx context.Context, n int) *localcluster.Cluster {
	t.Helper()
	cl, err := localcluster.Start(ctx, localcluster.Options{Nodes: n, Dir: t.TempDir(), Fast: true})
	if err != nil {
		t.Fatalf("start cluster: %v", err)
	}
	t.Cleanup(func() { cl.Close() })
	return cl
}

// consoleTLS verifies the cluster's nodes and holds the admin client
// certificate, as a node's own TLS client config would hold its node
// certificate: the console must not lend it to its users.
func consoleTLS(t *testing.T, cl *localcluster.Cluster) *tls.Config {
	t.Helper()
	env := cl.CLIEnv()
	cfg, err := auth.ClientTLS(env["DDSTORE_CA"], env["DDSTORE_CERT"], env["DDSTORE_KEY"])
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

// startConsole serves a console of cl with httptest.
func startConsole(t *testing.T, cl *localcluster.Cluster, opts web.Options) *httptest.Server {
	t.Helper()
	opts.Addrs = cl.Addrs()
	if opts.TLS == nil {
		opts.TLS = consoleTLS(t, cl)
	}
	if opts.Logger == nil {
		opts.Logger = testLogger(t)
	}
	c, err := web.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	return httptestServer(t, c)
}

// httptestServer serves console c until the test ends.
func httptestServer(t *testing.T, c *web.Console) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(c)
	t.Cleanup(func() {
		srv.Close()
		c.Close()
	})
	return srv
}

// httpClient is an HTTP client with a cookie jar that does not follow
// redirects, so that tests see them.
func httpClient(t *testing.T) *http.Client {
	t.Helper()
	jar, err := cookiejar.New(nil)
	if err != nil {
		t.Fatal(err)
	}
	return &http.Client{Jar: jar, Timeout: 30 * time.Second, CheckRedirect: func(*http.Request, []*http.Request) error {
		return http.ErrUseLastResponse
	}}
}

func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelWarn}))
}

func token(t *testing.T, cl *localcluster.Cluster, role auth.Role, prefix string, ttl time.Duration) string {
	t.Helper()
	tok, err := cl.Token(role, prefix, ttl)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func login(t *testing.T, hc *http.Client, base, tok string) *http.Response {
	t.Helper()
	resp, err := hc.PostForm(base+"/login", url.Values{"token": {tok}})
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp
}

func get(t *testing.T, hc *http.Client, u string) (*http.Response, string) {
	t.Helper()
	resp, err := hc.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, string(b)
}

func put(t *testing.T, ctx context.Context, cl *localcluster.Cluster, name string, data []byte) {
	t.Helper()
	c, err := cl.Client()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Put(ctx, name, bytes.NewReader(data), client.PutOptions{}); err != nil {
		t.Fatalf("put %q: %v", name, err)
	}
}

func TestConsoleHandlers(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	cl := startCluster(t, ctx, 1)
	srv := startConsole(t, cl, web.Options{})
	base := srv.URL

	const evil = `team/<script>alert("x")</script>&'q'.txt`
	content := []byte("hello from the console test\n")
	put(t, ctx, cl, evil, content)
	put(t, ctx, cl, "other/secret.txt", []byte("not for team tokens"))

	t.Run("login required", func(t *testing.T) {
		hc := httpClient(t)
		for _, p := range []string{"/", "/cluster", "/peers", "/cache", "/heal", "/files", "/file?name=x", "/download?name=x"} {
			resp, _ := get(t, hc, base+p)
			want := "/login"
			if p == "/" {
				want = "/cluster"
			}
			if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != want {
				t.Errorf("GET %s without a session: %d %q, want 303 to %s", p, resp.StatusCode, resp.Header.Get("Location"), want)
			}
		}
		if resp, _ := get(t, hc, base+"/cluster?part=live"); resp.StatusCode != http.StatusUnauthorized {
			t.Errorf("auto-refresh without a session: %d, want 401", resp.StatusCode)
		}
		// A made-up session ID is no session.
		u, _ := url.Parse(base)
		hc.Jar.SetCookies(u, []*http.Cookie{{Name: "ddstore_console", Value: "made-up"}})
		if resp, _ := get(t, hc, base+"/cluster"); resp.StatusCode != http.StatusSeeOther {
			t.Errorf("made-up session: %d, want 303", resp.StatusCode)
		}
	})

	t.Run("bad tokens refused", func(t *testing.T) {
		other, err := auth.NewCA("ddstore", time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		forged, err := other.IssueToken("ddstore", "mallory", auth.RoleAdmin, "", time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		for name, tok := range map[string]string{
			"garbage":  "not-a-token",
			"forged":   forged,
			"empty":    "",
			"too long": strings.Repeat("a", 20<<10),
		} {
			hc := httpClient(t)
			resp, err := hc.PostForm(base+"/login", url.Values{"token": {tok}})
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusSeeOther || len(resp.Cookies()) != 0 {
				t.Errorf("%s token: %d with cookies %v, want refused without a session", name, resp.StatusCode, resp.Cookies())
			}
			if name == "forged" && (resp.StatusCode != http.StatusUnauthorized || !strings.Contains(string(body), "token refused")) {
				t.Errorf("forged token: %d %q", resp.StatusCode, body)
			}
			if r2, _ := get(t, hc, base+"/cluster"); r2.StatusCode != http.StatusSeeOther {
				t.Errorf("%s token: /cluster answered %d after the refused login", name, r2.StatusCode)
			}
		}
	})

	t.Run("cross-origin login refused", func(t *testing.T) {
		req, _ := http.NewRequest(http.MethodPost, base+"/login", strings.NewReader(url.Values{"token": {token(t, cl, auth.RoleRead, "", time.Hour)}}.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.Header.Set("Sec-Fetch-Site", "cross-site")
		resp, err := httpClient(t).Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusForbidden || len(resp.Cookies()) != 0 {
			t.Errorf("cross-site login: %d, cookies %v; want 403 and none", resp.StatusCode, resp.Cookies())
		}
		if resp, _ := get(t, httpClient(t), base+"/logout"); resp.StatusCode != http.StatusMethodNotAllowed {
			t.Errorf("GET /logout: %d, want 405 (POST only)", resp.StatusCode)
		}
	})

	t.Run("session, escaping, download, logout", func(t *testing.T) {
		hc := httpClient(t)
		resp := login(t, hc, base, token(t, cl, auth.RoleRead, "team/", time.Hour))
		if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/cluster" {
			t.Fatalf("login: %d %q", resp.StatusCode, resp.Header.Get("Location"))
		}
		var ck *http.Cookie
		for _, c := range resp.Cookies() {
			if c.Name == "ddstore_console" {
				ck = c
			}
		}
		if ck == nil || !ck.HttpOnly || ck.SameSite != http.SameSiteStrictMode || ck.Path != "/" {
			t.Fatalf("session cookie %+v: want HttpOnly, SameSite=Strict, Path=/", ck)
		}

		resp, body := get(t, hc, base+"/cluster")
		if resp.StatusCode != http.StatusOK || !strings.Contains(body, `id="nodes"`) || !strings.Contains(body, "test-read") {
			t.Fatalf("cluster page: %d\n%s", resp.StatusCode, body)
		}
		if csp := resp.Header.Get("Content-Security-Policy"); !strings.Contains(csp, "script-src 'self'") {
			t.Errorf("Content-Security-Policy %q", csp)
		}
		if _, live := get(t, hc, base+"/cluster?part=live"); strings.Contains(live, "<html") || !strings.Contains(live, `data-node="node1"`) {
			t.Errorf("live part:\n%s", live)
		}
		for _, p := range []string{"/peers", "/cache", "/heal"} {
			if resp, body := get(t, hc, base+p); resp.StatusCode != http.StatusOK {
				t.Errorf("%s: %d\n%s", p, resp.StatusCode, body)
			}
		}

		// The listing is narrowed to the token's prefix; names are escaped.
		resp, body = get(t, hc, base+"/files?prefix=")
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("files: %d\n%s", resp.StatusCode, body)
		}
		if strings.Contains(body, "<script>alert") || strings.Contains(body, "other/secret") {
			t.Fatalf("files page shows an unescaped name or a file outside the prefix:\n%s", body)
		}
		if !strings.Contains(body, html.EscapeString(evil)) && !strings.Contains(body, "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;&amp;&#39;q&#39;.txt") {
			t.Fatalf("files page lacks the escaped name:\n%s", body)
		}
		if !strings.Contains(strings.ToLower(body), strings.ToLower("/file?name="+url.QueryEscape(evil))) {
			t.Errorf("the file's link does not carry its name query-escaped (%s):\n%s", url.QueryEscape(evil), body)
		}

		resp, body = get(t, hc, base+"/file?name="+url.QueryEscape(evil))
		if resp.StatusCode != http.StatusOK || strings.Contains(body, "<script>alert") || !strings.Contains(body, `class="chunk"`) || !strings.Contains(body, "node1") {
			t.Fatalf("file page: %d\n%s", resp.StatusCode, body)
		}
		if resp, _ := get(t, hc, base+"/file?name=other/secret.txt"); resp.StatusCode != http.StatusForbidden {
			t.Errorf("stat outside the prefix: %d, want 403", resp.StatusCode)
		}
		if resp, _ := get(t, hc, base+"/file?name=team/nothing"); resp.StatusCode != http.StatusNotFound {
			t.Errorf("stat of a missing file: %d, want 404", resp.StatusCode)
		}
		if resp, _ := get(t, hc, base+"/download?name=other/secret.txt"); resp.StatusCode != http.StatusForbidden {
			t.Errorf("download outside the prefix: %d, want 403", resp.StatusCode)
		}
		if resp, body := get(t, hc, base+"/files?from=yesterday"); resp.StatusCode != http.StatusBadRequest || !strings.Contains(body, "YYYY-MM-DD") {
			t.Errorf("bad date: %d", resp.StatusCode)
		}

		resp, body = get(t, hc, base+"/download?name="+url.QueryEscape(evil))
		if resp.StatusCode != http.StatusOK || body != string(content) {
			t.Fatalf("download: %d %q", resp.StatusCode, body)
		}
		if cd := resp.Header.Get("Content-Disposition"); !strings.HasPrefix(cd, "attachment;") || !strings.Contains(cd, "txt") {
			t.Errorf("Content-Disposition %q", cd)
		}

		// Logout is a POST; the old session is gone for good.
		resp, err := hc.PostForm(base+"/logout", nil)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusSeeOther {
			t.Fatalf("logout: %d", resp.StatusCode)
		}
		old := &http.Client{CheckRedirect: hc.CheckRedirect}
		req, _ := http.NewRequest(http.MethodGet, base+"/cluster", nil)
		req.AddCookie(ck)
		resp, err = old.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusSeeOther {
			t.Errorf("the logged-out session still works: %d", resp.StatusCode)
		}
	})

	t.Run("mounted under a prefix", func(t *testing.T) {
		c, err := web.New(web.Options{Addrs: cl.Addrs(), TLS: consoleTLS(t, cl), Base: "/console/", Logger: testLogger(t)})
		if err != nil {
			t.Fatal(err)
		}
		mux := http.NewServeMux()
		mux.Handle("/console/", http.StripPrefix("/console", c))
		srv := httptest.NewServer(mux)
		defer srv.Close()
		defer c.Close()
		hc := httpClient(t)
		if resp, _ := get(t, hc, srv.URL+"/console/cluster"); resp.Header.Get("Location") != "/console/login" {
			t.Fatalf("redirect to %q, want /console/login", resp.Header.Get("Location"))
		}
		resp := login(t, hc, srv.URL+"/console", token(t, cl, auth.RoleRead, "", time.Hour))
		if resp.Header.Get("Location") != "/console/cluster" || len(resp.Cookies()) != 1 || resp.Cookies()[0].Path != "/console/" {
			t.Fatalf("login under /console: %q, cookies %v", resp.Header.Get("Location"), resp.Cookies())
		}
		resp, body := get(t, hc, srv.URL+"/console/cluster")
		if resp.StatusCode != http.StatusOK || !strings.Contains(body, `src="/console/static/console.js"`) || !strings.Contains(body, `href="/console/files"`) {
			t.Fatalf("cluster page under /console: %d\n%s", resp.StatusCode, body)
		}
		if resp, _ := get(t, hc, srv.URL+"/console/static/console.js"); resp.StatusCode != http.StatusOK {
			t.Errorf("script under /console: %d", resp.StatusCode)
		}
	})

	t.Run("pages of a listing", func(t *testing.T) {
		for _, n := range []string{"pages/a", "pages/b", "pages/c", "pages/d", "pages/e"} {
			put(t, ctx, cl, n, []byte(n))
		}
		srv := startConsole(t, cl, web.Options{ListPage: 2})
		hc := httpClient(t)
		login(t, hc, srv.URL, token(t, cl, auth.RoleRead, "", time.Hour))
		var seen []string
		next := srv.URL + "/files?prefix=pages/"
		for page := 0; next != ""; page++ {
			if page > 5 {
				t.Fatal("the pages do not end")
			}
			resp, body := get(t, hc, next)
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("page %d: %d", page, resp.StatusCode)
			}
			for _, m := range regexp.MustCompile(`class="file" href="[^"]*">([^<]*)</a>`).FindAllStringSubmatch(body, -1) {
				seen = append(seen, m[1])
			}
			next = ""
			if m := regexp.MustCompile(`id="next" href="([^"]*)"`).FindStringSubmatch(body); m != nil {
				next = srv.URL + html.UnescapeString(m[1])
			}
		}
		if got := strings.Join(seen, ","); got != "pages/a,pages/b,pages/c,pages/d,pages/e" {
			t.Errorf("pages listed %s", got)
		}
	})

	t.Run("write role cannot see past its prefix either", func(t *testing.T) {
		hc := httpClient(t)
		login(t, hc, base, token(t, cl, auth.RoleWrite, "other/", time.Hour))
		_, body := get(t, hc, base+"/files")
		if !strings.Contains(body, "other/secret.txt") || strings.Contains(body, "team/") {
			t.Errorf("listing for other/:\n%s", body)
		}
	})
}
