package web_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/x509"
	"net/http"
	"net/url"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/ddstore/ddstore/client"
	"github.com/ddstore/ddstore/internal/localcluster"
	"github.com/ddstore/ddstore/server"
	"github.com/ddstore/ddstore/server/auth"
	"github.com/ddstore/ddstore/server/web"
)

// TestConsolePeersCacheHeal: the console of cluster lyon, whose peer is
// oslo (one node each), shows oslo reachable with its filter version, lists
// and downloads oslo's file through lyon (a forwarded call), shows the
// memory cache tier's hit once the file is read again, and the scrub's
// passes on the heal page.
func TestConsolePeersCacheHeal(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	clusters := map[string]*localcluster.Cluster{}
	peers := map[string][]string{"lyon": {"oslo"}}
	callers := map[string][]string{"oslo": {"lyon"}}
	for _, name := range []string{"lyon", "oslo"} {
		cl, err := localcluster.New(localcluster.Options{
			Nodes: 1, Dir: filepath.Join(t.TempDir(), name), Fast: true, Cluster: name, Callers: callers[name],
			PeerCA: func(peer string) *x509.Certificate { return clusters[peer].CA().Cert },
			Tune: func(c *server.Config) {
				c.Peers = map[string][]string{}
				for _, p := range peers[name] {
					c.Peers[p] = clusters[p].Addrs()
				}
				c.FilterRefresh = 100 * time.Millisecond
				c.PeerTimeout = time.Second
				c.CacheSize = 64 << 20
				c.ScrubInterval = 200 * time.Millisecond
				c.RepairInterval, c.GCInterval = -1, -1
			}})
		if err != nil {
			t.Fatal(err)
		}
		clusters[name] = cl
	}
	for _, name := range []string{"oslo", "lyon"} {
		if err := clusters[name].Launch(ctx); err != nil {
			t.Fatalf("cluster %s: %v", name, err)
		}
		t.Cleanup(func() { clusters[name].Close() })
	}
	lyon, oslo := clusters["lyon"], clusters["oslo"]

	content := make([]byte, 600<<10)
	rand.Read(content)
	put(t, ctx, oslo, "shared/oslo-results.bin", content)
	put(t, ctx, lyon, "shared/lyon-notes.txt", []byte("lyon's own"))
	if err := localcluster.WaitPeerFilters(ctx, clusters, "lyon"); err != nil {
		t.Fatal(err)
	}

	srv := startConsole(t, lyon, web.Options{})
	hc := httpClient(t)
	if resp := login(t, hc, srv.URL, token(t, lyon, auth.RoleRead, "", time.Hour)); resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("login: %d", resp.StatusCode)
	}

	// Peer clusters: oslo, reachable, with a filter version.
	_, body := get(t, hc, srv.URL+"/peers")
	row := regexp.MustCompile(`(?s)<tr>\s*<td>oslo</td>\s*<td>(.*?)</td>.*?</tr>`).FindStringSubmatch(body)
	if row == nil || !strings.Contains(row[1], "yes") {
		t.Fatalf("peers page: no reachable oslo:\n%s", body)
	}
	if strings.Contains(row[0], "none yet") {
		t.Errorf("peers page: oslo has no filter version:\n%s", row[0])
	}

	// Files of both clusters; oslo's through lyon.
	_, body = get(t, hc, srv.URL+"/files?prefix=shared/")
	if !strings.Contains(body, "shared/oslo-results.bin") || !strings.Contains(body, "shared/lyon-notes.txt") || !strings.Contains(body, "<td>oslo</td>") {
		t.Fatalf("files of lyon and oslo:\n%s", body)
	}
	resp, body := get(t, hc, srv.URL+"/file?name="+url.QueryEscape("shared/oslo-results.bin"))
	if resp.StatusCode != http.StatusOK || !strings.Contains(body, "held by peer cluster oslo") {
		t.Fatalf("stat of oslo's file: %d\n%s", resp.StatusCode, body)
	}
	for range 2 { // the second read comes from lyon's cache
		resp, body = get(t, hc, srv.URL+"/download?name="+url.QueryEscape("shared/oslo-results.bin"))
		if resp.StatusCode != http.StatusOK || !bytes.Equal([]byte(body), content) {
			t.Fatalf("download of oslo's file through lyon: %d, %d bytes", resp.StatusCode, len(body))
		}
	}

	// Cache tiers: lyon's memory tier has served a hit.
	_, body = get(t, hc, srv.URL+"/cache")
	hits := regexp.MustCompile(`<td>node1</td><td>memory</td><td>(\d+)</td>`).FindStringSubmatch(body)
	if hits == nil || hits[1] == "0" {
		t.Errorf("cache page: no memory tier with hits:\n%s", body)
	}

	// Heal: the scrub has made passes.
	deadline := time.Now().Add(10 * time.Second)
	for {
		_, body = get(t, hc, srv.URL+"/heal?part=live")
		m := regexp.MustCompile(`<tr><td>node1</td><td>(\d+)</td><td>(\d+)</td>`).FindStringSubmatch(body)
		if m != nil && m[1] != "0" && m[2] != "0" {
			t.Logf("heal page: %s scrub passes, %s chunks scrubbed", m[1], m[2])
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("heal page shows no scrub pass:\n%s", body)
		}
		time.Sleep(200 * time.Millisecond)
	}

}

// TestConsoleInsecureCluster: a cluster without TLS authenticates no one,
// and neither does its console: no login, every page open.
func TestConsoleInsecureCluster(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	cl, err := localcluster.Start(ctx, localcluster.Options{Nodes: 1, Dir: t.TempDir(), Fast: true, Insecure: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cl.Close() })
	put(t, ctx, cl, "open/file.txt", []byte("anyone"))
	c, err := web.New(web.Options{Addrs: cl.Addrs(), Logger: testLogger(t), ClientOptions: []client.Option{client.WithCallTimeout(2 * time.Second)}})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptestServer(t, c)
	hc := httpClient(t)
	resp, body := get(t, hc, srv.URL+"/cluster")
	if resp.StatusCode != http.StatusOK || !strings.Contains(body, `data-node="node1" data-state="up"`) || !strings.Contains(body, "insecure cluster") {
		t.Fatalf("cluster page of an insecure cluster: %d\n%s", resp.StatusCode, body)
	}
	if resp, body := get(t, hc, srv.URL+"/download?name=open/file.txt"); resp.StatusCode != http.StatusOK || body != "anyone" {
		t.Fatalf("download: %d %q", resp.StatusCode, body)
	}
	if resp, _ := get(t, hc, srv.URL+"/login"); resp.StatusCode != http.StatusSeeOther {
		t.Errorf("login page of an insecure cluster: %d, want 303 to the cluster page", resp.StatusCode)
	}
}
