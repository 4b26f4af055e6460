package web_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/browser"
	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/chromedp"
	"github.com/ddstore/ddstore/client"
	"github.com/ddstore/ddstore/internal/localcluster"
	"github.com/ddstore/ddstore/server"
	"github.com/ddstore/ddstore/server/auth"
	"github.com/ddstore/ddstore/server/web"
)

// chromiumPath is where Debian's chromium package (scripts/test-deps.sh)
// puts the browser.
const chromiumPath = "/usr/bin/chromium"

// TestConsoleInBrowser drives headless Chromium through the console of a
// real 3-node cluster (mutual TLS), served by a node on its HTTPS listener
// (Config.HTTPHandler, as ddstore server --metrics mounts it): log in with a read token, see the three
// nodes and the leader, browse to a file by prefix and date range, download
// it through the browser and compare bytes, kill the leader and measure how
// long the cluster page (refreshing itself) takes to show it down.
//
// DDSTORE_SCREENSHOT=docs/console.png (relative to the module's root)
// writes the cluster page's screenshot there, and the one after the kill
// beside it (console-node-down.png).
func TestConsoleInBrowser(t *testing.T) {
	if raceEnabled {
		t.Skip("a browser test under the race detector: too slow to time a page's refresh, and the console's code runs under -race in TestConsoleHandlers")
	}
	if _, err := os.Stat(chromiumPath); err != nil {
		t.Fatalf("no browser at %s (scripts/test-deps.sh installs Debian's chromium): %v", chromiumPath, err)
	}
	start := time.Now()
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()

	// Every node serves the console on its HTTP listener (HTTPS with the
	// node's certificate), as ddstore server --metrics does: a client of the
	// node's own API.
	var cl *localcluster.Cluster
	var consoles []*web.Console
	cl, err := localcluster.New(localcluster.Options{Nodes: 3, Dir: t.TempDir(), Fast: true, Tune: func(c *server.Config) {
		console, err := web.New(web.Options{Addrs: []string{c.APIAddr}, TLS: consoleTLS(t, cl), RefreshInterval: time.Second,
			Logger: testLogger(t).With("console", c.ID), ClientOptions: []client.Option{client.WithCallTimeout(2 * time.Second)}})
		if err != nil {
			panic(err) // only for no address
		}
		consoles = append(consoles, console)
		c.HTTPAddr, c.HTTPHandler = "127.0.0.1:0", console
	}})
	if err != nil {
		t.Fatal(err)
	}
	if err := cl.Launch(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cl.Close()
		for _, c := range consoles {
			c.Close()
		}
	})
	t.Logf("3-node cluster up in %v", time.Since(start).Round(time.Millisecond))

	// A file of several chunks, dated, under a prefix, with a name that
	// needs escaping.
	const name = `experiments/2026/run <7> & "final".bin`
	content := make([]byte, 3<<20+12345)
	rand.Read(content)
	admin, err := cl.Client()
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close()
	if _, err := admin.Put(ctx, name, bytes.NewReader(content), client.PutOptions{Date: "2026-01-15"}); err != nil {
		t.Fatal(err)
	}
	if _, err := admin.Put(ctx, "experiments/2026/other-day.bin", strings.NewReader("x"), client.PutOptions{Date: "2026-03-01"}); err != nil {
		t.Fatal(err)
	}

	tok := token(t, cl, auth.RoleRead, "", time.Hour)

	// The browser uses the console of a follower; the leader is killed
	// later.
	leaderIdx := cl.Leader(ctx)
	if leaderIdx < 0 {
		t.Fatal("no leader")
	}
	leaderID := cl.Members[leaderIdx].ID
	viaIdx := (leaderIdx + 1) % len(cl.Members)
	base := "https://" + cl.Members[viaIdx].Node.HTTPAddr()
	t.Logf("browsing the console of %s at %s", cl.Members[viaIdx].ID, base)
	tc := consoleTLS(t, cl)
	tc.NextProtos = nil // ClientTLS offers only h2 (gRPC); net/http adds it
	https := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{TLSClientConfig: tc, ForceAttemptHTTP2: true},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}

	// The browser (it does not know the cluster's CA: certificate errors
	// are ignored; the Go client above checks the node's certificate).
	profile, err := os.MkdirTemp("", "ddstore-chromium-")
	if err != nil {
		t.Fatal(err)
	}
	defer removeAllRetry(profile)
	downloads := t.TempDir()
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(ctx, append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chromiumPath), chromedp.Headless, chromedp.NoSandbox, chromedp.DisableGPU,
		chromedp.UserDataDir(profile), chromedp.WindowSize(1280, 360), chromedp.Flag("ignore-certificate-errors", true))...)
	defer cancelAlloc()
	bctx, cancelBrowser := chromedp.NewContext(allocCtx, chromedp.WithLogf(t.Logf))
	defer cancelBrowser()
	do := func(what string, steps ...chromedp.Action[chromedp.Void]) {
		t.Helper()
		sctx, cancel := context.WithTimeout(bctx, 20*time.Second)
		defer cancel()
		if err := chromedp.Do(sctx, steps...); err != nil {
			t.Fatalf("browser: %s: %v", what, err)
		}
	}
	text := func(sel string) string {
		t.Helper()
		sctx, cancel := context.WithTimeout(bctx, 10*time.Second)
		defer cancel()
		s, err := chromedp.Run(sctx, chromedp.Text(chromedp.CSS(sel)))
		if err != nil {
			t.Fatalf("browser: text of %s: %v", sel, err)
		}
		return strings.TrimSpace(s)
	}
	nodeStates := func() map[string]string {
		t.Helper()
		sctx, cancel := context.WithTimeout(bctx, 10*time.Second)
		defer cancel()
		rows, err := chromedp.Run(sctx, chromedp.Evaluate[[]string](
			`Array.from(document.querySelectorAll('#nodes tr.node')).map(r => r.dataset.node + '=' + r.dataset.state)`))
		if err != nil {
			t.Fatalf("browser: node rows: %v", err)
		}
		out := map[string]string{}
		for _, r := range rows {
			id, state, _ := strings.Cut(r, "=")
			out[id] = state
		}
		return out
	}
	browserStart := time.Now()
	// The first call starts the browser, bound to the context it gets: bctx,
	// not one of the steps' shorter ones.
	if err := chromedp.Do(bctx); err != nil {
		t.Fatalf("start %s: %v", chromiumPath, err)
	}

	// Not logged in: the login page.
	do("open the console", chromedp.Navigate(base+"/cluster"), chromedp.WaitVisible(chromedp.ID("token")))
	t.Logf("browser up and the login page shown in %v", time.Since(browserStart).Round(time.Millisecond))
	// A bad token is refused.
	do("log in with a bad token", chromedp.SetValue(chromedp.ID("token"), "not-a-token"), submit(chromedp.ID("login")),
		chromedp.WaitVisible(chromedp.ID("error")))
	if msg := text("#error"); !strings.Contains(msg, "token refused") {
		t.Fatalf("bad token: the page says %q", msg)
	}
	// Log in.
	do("log in", chromedp.SetValue(chromedp.ID("token"), tok), submit(chromedp.ID("login")),
		chromedp.WaitVisible(chromedp.CSS(`#nodes tr.node`)))
	if u := text("#user"); !strings.Contains(u, "test-read") {
		t.Errorf("logged in as %q", u)
	}

	// Three nodes, all up, and the leader.
	states := nodeStates()
	if len(states) != 3 {
		t.Fatalf("cluster page shows %d nodes (%v), want 3", len(states), states)
	}
	for _, m := range cl.Members {
		if states[m.ID] != "up" {
			t.Errorf("node %s shown %q, want up", m.ID, states[m.ID])
		}
	}
	// The page shows the leader the cluster has (asked again while they
	// differ: an election may have moved it since, on a busy machine).
	for deadline := time.Now().Add(10 * time.Second); ; {
		got := text("#leader")
		if got == leaderID {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("leader shown %q, want %q", got, leaderID)
		}
		time.Sleep(200 * time.Millisecond)
		if i := cl.Leader(ctx); i >= 0 {
			leaderIdx, leaderID = i, cl.Members[i].ID
		}
	}
	t.Logf("cluster page: nodes %v, leader %s, term %s", states, text("#leader"), text("#term"))
	shot := screenshotPath(t)
	if shot != "" {
		writeScreenshot(t, bctx, shot)
	}

	// The file browser: all files, down the folders to the file's, then
	// that prefix's files of January (the date range), then the file.
	do("list all files", chromedp.Navigate(base+"/files"), chromedp.WaitVisible(chromedp.CSS("#folders a.folder")))
	do("open folder experiments/", submit(chromedp.CSS(`#folders a.folder[href*="prefix=experiments%2f&"]`)),
		chromedp.WaitVisible(chromedp.CSS(`#folders a.folder[href*="prefix=experiments%2f2026%2f&"]`)))
	do("open folder 2026/", submit(chromedp.CSS(`#folders a.folder[href*="prefix=experiments%2f2026%2f&"]`)),
		chromedp.WaitVisible(chromedp.CSS("#files a.file")))
	if p, err := chromedp.Run(bctx, chromedp.Value(chromedp.ID("prefix"))); err != nil || p != "experiments/2026/" {
		t.Fatalf("prefix after browsing the folders: %q %v", p, err)
	}
	do("list January's", chromedp.SetValue(chromedp.ID("from"), "2026-01-01"), chromedp.SetValue(chromedp.ID("to"), "2026-01-31"),
		submit(chromedp.ID("list")), chromedp.WaitVisible(chromedp.CSS("#files a.file")))
	sctx, cancelS := context.WithTimeout(bctx, 10*time.Second)
	listed, err := chromedp.Run(sctx, chromedp.Evaluate[[]string](`Array.from(document.querySelectorAll('#files a.file')).map(a => a.textContent)`))
	cancelS()
	if err != nil {
		t.Fatal(err)
	}
	if len(listed) != 1 || listed[0] != name {
		t.Fatalf("January's files under experiments/: %q, want only %q", listed, name)
	}
	do("open the file", submit(chromedp.CSS("#files a.file")), chromedp.WaitVisible(chromedp.ID("chunks")))
	if got := text("#name"); got != name {
		t.Errorf("file page names %q", got)
	}
	if got := text("#size"); !strings.HasPrefix(got, fmt.Sprint(len(content))+" bytes") {
		t.Errorf("file page size %q, want %d bytes", got, len(content))
	}
	sctx, cancelS = context.WithTimeout(bctx, 10*time.Second)
	copies, err := chromedp.Run(sctx, chromedp.Evaluate[[]string](`Array.from(document.querySelectorAll('#chunks tr.chunk td.copies')).map(td => td.textContent.trim())`))
	cancelS()
	if err != nil {
		t.Fatal(err)
	}
	if len(copies) < 2 {
		t.Errorf("the file page lists %d chunks, want several", len(copies))
	}
	for i, c := range copies {
		if len(strings.Fields(c)) != 3 {
			t.Errorf("chunk %d: copies %q, want 3 nodes (R=3)", i, c)
		}
	}
	t.Logf("file page: %d chunks, copies of the first: %s", len(copies), copies[0])

	// Download through the browser's own download, then compare bytes.
	if _, err := chromedp.CallBrowser(bctx, browser.SetDownloadBehavior, browser.SetDownloadBehaviorParams{
		Behavior: browser.SetDownloadBehaviorBehaviorAllow, DownloadPath: downloads,
	}); err != nil {
		t.Fatalf("browser: allow downloads: %v", err)
	}
	dlStart := time.Now()
	do("click download", chromedp.Click(chromedp.ID("download")))
	got, file := waitDownload(t, ctx, downloads)
	if !bytes.Equal(got, content) {
		t.Fatalf("the browser downloaded %d bytes into %q that differ from the %d uploaded", len(got), file, len(content))
	}
	t.Logf("browser download: %d bytes in %v as %q, identical", len(got), time.Since(dlStart).Round(time.Millisecond), file)

	// The same URL with the browser's session cookie, from Go: identical
	// too; without the cookie, no file.
	dlURL := base + "/download?name=" + url.QueryEscape(name)
	cookies, err := chromedp.Call(bctx, network.GetCookies, network.GetCookiesParams{URLs: []string{base}})
	if err != nil {
		t.Fatal(err)
	}
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, dlURL, nil)
	for _, c := range cookies.Cookies {
		if c.Name == "ddstore_console" && c.HTTPOnly && c.SameSite == network.CookieSameSiteStrict {
			req.AddCookie(&http.Cookie{Name: c.Name, Value: c.Value})
		}
	}
	if len(req.Cookies()) != 1 {
		t.Fatalf("the browser holds no HttpOnly, SameSite=Strict session cookie: %+v", cookies.Cookies)
	}
	resp, err := https.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil || resp.StatusCode != http.StatusOK || !bytes.Equal(body, content) {
		t.Fatalf("download with the session cookie: %d, %d bytes, err %v", resp.StatusCode, len(body), err)
	}
	if resp, err := https.Get(dlURL); err != nil || resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("download without a session: %v %v, want 303 to the login page", resp.Status, err)
	}

	// Kill the leader (another node, should the leader have moved to the
	// one whose console the browser uses); the cluster page, refreshing
	// itself, shows it down.
	do("back to the cluster page", chromedp.Navigate(base+"/cluster"), chromedp.WaitVisible(chromedp.CSS(`#nodes tr.node`)))
	if i := cl.Leader(ctx); i >= 0 {
		leaderIdx, leaderID = i, cl.Members[i].ID
	}
	victim := leaderIdx
	if victim == viaIdx {
		victim = (viaIdx + 1) % len(cl.Members)
	}
	victimID := cl.Members[victim].ID
	killed := time.Now()
	if err := cl.StopNode(victim, true); err != nil {
		t.Fatalf("kill %s: %v", victimID, err)
	}
	var shownDown time.Duration
	for {
		if states := nodeStates(); states[victimID] == "down" {
			shownDown = time.Since(killed)
			break
		}
		if time.Since(killed) > 15*time.Second {
			t.Fatalf("killed node %s still not shown down after %v: %v", victimID, time.Since(killed), nodeStates())
		}
		time.Sleep(100 * time.Millisecond)
	}
	role := "follower"
	if victimID == leaderID {
		role = "leader"
	}
	t.Logf("killed %s %s shown down after %v (page refresh every 1 s)", role, victimID, shownDown.Round(time.Millisecond))
	if shownDown > 8*time.Second {
		t.Errorf("a killed node took %v to show as down, want within a few seconds", shownDown)
	}
	// The leader shown is a live node (a new one, if the leader was killed).
	for {
		if l := text("#leader"); l != victimID && l != "none" {
			t.Logf("leader %s shown %v after the kill", l, time.Since(killed).Round(time.Millisecond))
			break
		}
		if time.Since(killed) > 20*time.Second {
			t.Fatalf("no live leader shown %v after the kill (shown %q)", time.Since(killed), text("#leader"))
		}
		time.Sleep(100 * time.Millisecond)
	}
	if shot != "" {
		writeScreenshot(t, bctx, strings.TrimSuffix(shot, ".png")+"-node-down.png")
	}

	// Log out: back to the login page, and the cookie's session is gone.
	do("log out", submit(chromedp.ID("logout")), chromedp.WaitVisible(chromedp.ID("token")))
	req, _ = http.NewRequestWithContext(ctx, http.MethodGet, dlURL, nil)
	for _, c := range cookies.Cookies {
		req.AddCookie(&http.Cookie{Name: c.Name, Value: c.Value})
	}
	if resp, err := https.Do(req); err != nil || resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("download with the logged-out session: %v %v, want 303", resp.Status, err)
	}
	t.Logf("whole test %v (browser part %v)", time.Since(start).Round(time.Millisecond), time.Since(browserStart).Round(time.Millisecond))
}

// submit clicks what sel selects and waits for the page it leads to.
func submit[S chromedp.Selectable](sel S) chromedp.Action[chromedp.Void] {
	wait := chromedp.WaitEvent(page.LoadEventFired, nil, chromedp.Click(sel))
	return func(ctx context.Context, t *chromedp.Target) (chromedp.Void, error) {
		_, err := wait(ctx, t)
		return chromedp.Void{}, err
	}
}

// waitDownload waits for the browser to finish a download into dir and
// returns its bytes and file name.
func waitDownload(t *testing.T, ctx context.Context, dir string) ([]byte, string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) && ctx.Err() == nil {
		entries, _ := os.ReadDir(dir)
		for _, e := range entries {
			if strings.HasSuffix(e.Name(), ".crdownload") || e.IsDir() {
				continue
			}
			b, err := os.ReadFile(filepath.Join(dir, e.Name()))
			if err != nil {
				t.Fatal(err)
			}
			return b, e.Name()
		}
		time.Sleep(50 * time.Millisecond)
	}
	entries, _ := os.ReadDir(dir)
	t.Fatalf("no finished download in %s after 30 s (%d entries)", dir, len(entries))
	return nil, ""
}

// screenshotPath is DDSTORE_SCREENSHOT, relative to the module's root, or
// "" when it is not set.
func screenshotPath(t *testing.T) string {
	p := os.Getenv("DDSTORE_SCREENSHOT")
	if p == "" || filepath.IsAbs(p) {
		return p
	}
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return filepath.Join(dir, p)
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatal("DDSTORE_SCREENSHOT: no go.mod above the test's directory")
		}
		dir = parent
	}
}

func writeScreenshot(t *testing.T, bctx context.Context, path string) {
	t.Helper()
	sctx, cancel := context.WithTimeout(bctx, 20*time.Second)
	defer cancel()
	png, err := chromedp.Run(sctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatalf("screenshot: %v", err)
	}
	if err := os.WriteFile(path, png, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshot of the cluster page: %s (%d bytes)", path, len(png))
}

// removeAllRetry removes a browser profile, which Chromium's child
// processes may still write to for a moment after it stops.
func removeAllRetry(dir string) {
	for range 50 {
		if err := os.RemoveAll(dir); err == nil || errors.Is(err, os.ErrNotExist) {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
}
