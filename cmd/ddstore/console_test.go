package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ddstore/ddstore/internal/localcluster"
	"github.com/ddstore/ddstore/server/auth"
)

// TestServerConsole: `ddstore server --metrics ADDR` serves the web console
// at "/" of that HTTPS listener, beside /metrics: login with a token, then
// the cluster page, made through the node's own API with that token.
func TestServerConsole(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	ports, err := localcluster.FreePorts(1)
	if err != nil {
		t.Fatal(err)
	}
	httpAddr := fmt.Sprintf("127.0.0.1:%d", ports[0])
	cl, err := localcluster.Start(ctx, localcluster.Options{Nodes: 1, Dir: filepath.Join(t.TempDir(), "cluster"), Exe: exe,
		Args: []string{"--metrics", httpAddr}})
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	tc, err := auth.ClientTLS(cl.CAFile(), "", "")
	if err != nil {
		t.Fatal(err)
	}
	tc.NextProtos = nil // ClientTLS offers h2 only (gRPC); this is an HTTP/1.1 client
	jar, _ := cookiejar.New(nil)
	hc := &http.Client{Jar: jar, Timeout: 20 * time.Second, Transport: &http.Transport{TLSClientConfig: tc},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	base := "https://" + httpAddr
	get := func(path string) (*http.Response, string) {
		t.Helper()
		resp, err := hc.Get(base + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp, string(b)
	}
	if resp, _ := get("/cluster"); resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/login" {
		t.Fatalf("console without a session: %d %q, want 303 to /login", resp.StatusCode, resp.Header.Get("Location"))
	}
	tok, err := cl.Token(auth.RoleRead, "", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := hc.PostForm(base+"/login", url.Values{"token": {tok}})
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/cluster" {
		t.Fatalf("login: %d %q", resp.StatusCode, resp.Header.Get("Location"))
	}
	if ck := resp.Cookies(); len(ck) != 1 || !ck[0].Secure || !ck[0].HttpOnly {
		t.Errorf("session cookie over HTTPS: %+v, want Secure and HttpOnly", ck)
	}
	resp, body := get("/cluster")
	if resp.StatusCode != http.StatusOK || !strings.Contains(body, `data-node="node1" data-state="up"`) {
		t.Fatalf("cluster page: %d\n%s", resp.StatusCode, body)
	}
	if resp, _ := get("/metrics"); resp.StatusCode != http.StatusOK {
		t.Errorf("/metrics beside the console: %d", resp.StatusCode)
	}
}
