package server_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net/http"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/ddstore/ddstore/client"
	"github.com/ddstore/ddstore/internal/localcluster"
	"github.com/ddstore/ddstore/internal/testenv"
	pb "github.com/ddstore/ddstore/proto/ddstore/v1"
	"github.com/ddstore/ddstore/server"
	"github.com/ddstore/ddstore/server/auth"
)

// httpsClient trusts cl's CA and presents no client certificate, as a
// Prometheus server or a Kubernetes probe would.
func httpsClient(t testing.TB, cl *localcluster.Cluster) *http.Client {
	t.Helper()
	pool := x509.NewCertPool()
	pool.AddCert(cl.CA().Cert)
	return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
}

// httpGet fetches https://addr+path and returns the status code and body.
func httpGet(t testing.TB, hc *http.Client, addr, path string) (int, string) {
	t.Helper()
	resp, err := hc.Get("https://" + addr + path)
	if err != nil {
		t.Fatalf("GET %s%s: %v", addr, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s%s: %v", addr, path, err)
	}
	return resp.StatusCode, string(b)
}

// scrape is one node's /metrics, parsed.
type scrape struct {
	text     string
	families map[string]*dto.MetricFamily
}

func scrapeNode(t testing.TB, hc *http.Client, addr string) scrape {
	t.Helper()
	code, text := httpGet(t, hc, addr, "/metrics")
	if code != http.StatusOK {
		t.Fatalf("/metrics of %s: %d %s", addr, code, text)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := parser.TextToMetricFamilies(strings.NewReader(text))
	if err != nil {
		t.Fatalf("/metrics of %s does not parse: %v", addr, err)
	}
	return scrape{text: text, families: fams}
}

// value sums the samples of metric name whose labels include the given
// pairs ("k=v"); a histogram gives its count.
func (s scrape) value(name string, labels ...string) float64 {
	f, ok := s.families[name]
	if !ok {
		return 0
	}
	var sum float64
next:
	for _, m := range f.GetMetric() {
		for _, l := range labels {
			k, v, _ := strings.Cut(l, "=")
			found := false
			for _, lp := range m.GetLabel() {
				if lp.GetName() == k && lp.GetValue() == v {
					found = true
				}
			}
			if !found {
				continue next
			}
		}
		switch {
		case m.Counter != nil:
			sum += m.GetCounter().GetValue()
		case m.Gauge != nil:
			sum += m.GetGauge().GetValue()
		case m.Histogram != nil:
			sum += float64(m.GetHistogram().GetSampleCount())
		case m.Untyped != nil:
			sum += m.GetUntyped().GetValue()
		}
	}
	return sum
}

func (s scrape) has(name string) bool { _, ok := s.families[name]; return ok }

// promtoolCheck pipes a scrape into `promtool check metrics`.
func promtoolCheck(t testing.TB, text string) {
	t.Helper()
	promtool, err := testenv.Tool("promtool")
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(promtool, "check", "metrics")
	cmd.Stdin = strings.NewReader(text)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("promtool check metrics: %v\n%s", err, out)
	}
}

// consoleHandler stands in for the web console on the HTTP listener.
func consoleHandler(w http.ResponseWriter, r *http.Request) {
	fmt.Fprintf(w, "console at %s", r.URL.Path)
}

// startMetricsFederation starts cluster A (3 nodes, R=3, an HTTP listener
// each, pprof on node1, a stand-in console at "/") and cluster B (1 node),
// peers of each other.
func startMetricsFederation(t *testing.T) (a, b *localcluster.Cluster) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	out := map[string]*localcluster.Cluster{}
	for _, name := range []string{"A", "B"} {
		other := map[string]string{"A": "B", "B": "A"}[name]
		nodes := map[string]int{"A": 3, "B": 1}[name]
		cl, err := localcluster.New(localcluster.Options{
			Nodes: nodes, Dir: filepath.Join(t.TempDir(), name), Fast: true, Cluster: name, Callers: []string{other},
			Store:  "local", // corrupts a chunk file
			PeerCA: func(peer string) *x509.Certificate { return out[peer].CA().Cert },
			Tune: func(c *server.Config) {
				c.Peers = map[string][]string{other: out[other].Addrs()}
				c.PeerPolicies = map[string]server.PeerPolicy{other: {Role: auth.RoleWrite}}
				c.FilterRefresh = 100 * time.Millisecond
				c.PeerTimeout = time.Second
				c.CacheSize = 64 << 20
				c.RepairInterval, c.ScrubInterval, c.GCInterval = -1, -1, -1
				c.HTTPAddr = "127.0.0.1:0"
				c.Pprof = c.ID == "node1"
				c.HTTPHandler = http.HandlerFunc(consoleHandler)
			}})
		if err != nil {
			t.Fatal(err)
		}
		out[name] = cl
	}
	for _, name := range []string{"A", "B"} {
		if err := out[name].Launch(ctx); err != nil {
			t.Fatalf("cluster %s: %v", name, err)
		}
		t.Cleanup(func() { out[name].Close() })
	}
	return out["A"], out["B"]
}

// TestMetrics drives a 3-node cluster (and a 1-node peer cluster) through
// uploads, downloads, a cache hit, a scrub finding and a forwarded lookup,
// and checks that the matching counters moved on each node's /metrics
// (HTTPS with the cluster's certificate, no client certificate), that
// promtool accepts every node's output, and what the HTTP listener serves
// besides: /healthz, /readyz, pprof where enabled, the handler at "/".
func TestMetrics(t *testing.T) {
	A, B := startMetricsFederation(t)
	ctx := context.Background()
	hc := httpsClient(t, A)
	n1 := A.Members[0]
	addr := func(m *localcluster.Member) string { return m.Node.HTTPAddr() }
	// Another part of the process (an S3 gateway beside the node) adds
	// its own metrics to the node's registry.
	extra := prometheus.NewCounter(prometheus.CounterOpts{Name: "ddstore_test_extra_total", Help: "A collector registered beside the node's."})
	n1.Node.MetricsRegistry().MustRegister(extra)
	extra.Inc()
	before := scrapeNode(t, hc, addr(n1))
	if before.value("ddstore_test_extra_total") != 1 {
		t.Error("a collector registered in the node's registry is not scraped")
	}

	// Upload through node1: R=3, so every node stores every chunk.
	const size = 6 << 20
	c := newClient(t, A, n1.APIAddr)
	if _, err := c.Put(ctx, "m/big.bin", randomReader(7, size), client.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	ids := chunkIDs(t, c, "m/big.bin")
	afterPut := scrapeNode(t, hc, addr(n1))
	moved := func(what string, b, a scrape, min float64, name string, labels ...string) {
		t.Helper()
		d := a.value(name, labels...) - b.value(name, labels...)
		t.Logf("%s: %s%v moved by %g", what, name, labels, d)
		if d < min {
			t.Errorf("%s: %s%v moved by %g, want at least %g", what, name, labels, d, min)
		}
	}
	moved("upload", before, afterPut, size, "ddstore_received_bytes_total", "kind=upload")
	moved("upload", before, afterPut, float64(len(ids)), "ddstore_chunks_stored_total")
	moved("upload", before, afterPut, 1, "ddstore_grpc_server_handled_total", "grpc_service=ddstore.v1.Files", "grpc_method=Upload", "grpc_code=OK")
	moved("upload", before, afterPut, 1, "ddstore_grpc_server_handling_seconds", "grpc_service=ddstore.v1.Files", "grpc_method=Commit", "grpc_code=OK")
	for _, m := range A.Members[1:] {
		s := scrapeNode(t, hc, addr(m))
		if got := s.value("ddstore_received_bytes_total", "kind=replication"); got < size {
			t.Errorf("%s received %g replication bytes, want at least %d", m.ID, got, size)
		}
		if got := s.value("ddstore_chunks_stored_total"); got < float64(len(ids)) {
			t.Errorf("%s stored %g chunks, want at least %d", m.ID, got, len(ids))
		}
	}

	// Two downloads through node1: the first fills the in-process tier,
	// the second is served from it.
	want := hashOf(t, randomReader(7, size))
	for i := range 2 {
		if got := download(t, c, "m/big.bin"); !bytes.Equal(got, want) {
			t.Fatalf("download %d differs", i)
		}
		if i == 0 {
			afterPut = scrapeNode(t, hc, addr(n1))
		}
	}
	afterGet := scrapeNode(t, hc, addr(n1))
	moved("downloads", before, afterGet, 2*size, "ddstore_sent_bytes_total", "kind=download")
	moved("downloads", before, afterGet, float64(2*len(ids)), "ddstore_chunks_served_total", "to=download")
	moved("downloads", before, afterGet, 2, "ddstore_grpc_server_handled_total", "grpc_method=Download", "grpc_code=OK")
	moved("second download", afterPut, afterGet, float64(len(ids)), "ddstore_cache_hits_total", "tier=memory")
	if got := afterGet.value("ddstore_store_chunks", "store=local"); got < float64(len(ids)) {
		t.Errorf("ddstore_store_chunks = %g, want at least %d", got, len(ids))
	}
	if afterGet.value("ddstore_store_free_bytes") <= 0 || afterGet.value("ddstore_store_capacity_bytes") <= 0 {
		t.Error("no free space or capacity of the store's file system")
	}

	// A scrub finding: a copy corrupted on node2's disk.
	n2 := A.Members[1]
	path := filepath.Join(n2.DataDir, "chunks", ids[1].String()[:2], ids[1].String())
	if err := corruptAt(path, 100); err != nil {
		t.Fatal(err)
	}
	before2 := scrapeNode(t, hc, addr(n2))
	rep, err := n2.Node.Scrub(ctx)
	if err != nil || rep.Corrupt != 1 {
		t.Fatalf("scrub: %+v %v", rep, err)
	}
	after2 := scrapeNode(t, hc, addr(n2))
	moved("scrub", before2, after2, 1, "ddstore_heal_bad_copies_total")
	moved("scrub", before2, after2, 1, "ddstore_heal_repaired_copies_total")
	moved("scrub", before2, after2, 1, "ddstore_heal_runs_total", "kind=scrub")
	moved("scrub", before2, after2, float64(len(ids)), "ddstore_heal_chunks_checked_total", "kind=scrub")
	if !after2.has("ddstore_heal_last_run_timestamp_seconds") {
		t.Error("no ddstore_heal_last_run_timestamp_seconds after a scrub")
	}

	// A forwarded lookup: a file only cluster B holds, asked for through
	// A's node1; and a name no filter admits, which is not forwarded.
	cb := newClient(t, B)
	put(t, cb, "b/only.txt", "", strings.NewReader("held by B"))
	waitFilters(t, map[string]*localcluster.Cluster{"A": A, "B": B}, "A")
	beforeFwd := scrapeNode(t, hc, addr(n1))
	if m, err := c.Stat(ctx, "b/only.txt", pb.Consistency_CONSISTENCY_LINEARIZABLE); err != nil || m.GetSize() != uint64(len("held by B")) {
		t.Fatalf("stat through A of a file in B: %v %v", m, err)
	}
	if _, err := c.Stat(ctx, "nowhere/at-all.bin", pb.Consistency_CONSISTENCY_LINEARIZABLE); err == nil {
		t.Fatal("stat of a missing file succeeded")
	}
	afterFwd := scrapeNode(t, hc, addr(n1))
	moved("forwarded lookup", beforeFwd, afterFwd, 1, "ddstore_federation_forwarded_calls_total")
	moved("forwarded lookup", beforeFwd, afterFwd, 2, "ddstore_federation_lookups_total")
	moved("lookup ruled out by B's filters", beforeFwd, afterFwd, 1, "ddstore_federation_filter_skips_total")
	if afterFwd.value("ddstore_peer_reachable", "peer=B") != 1 || afterFwd.value("ddstore_peer_filter_version", "peer=B") == 0 {
		t.Errorf("peer B: reachable %g, filter version %g", afterFwd.value("ddstore_peer_reachable", "peer=B"), afterFwd.value("ddstore_peer_filter_version", "peer=B"))
	}
	if !afterFwd.has("ddstore_peer_filter_age_seconds") {
		t.Error("no filter age of peer B")
	}
	bs := scrapeNode(t, httpsClient(t, B), B.Members[0].Node.HTTPAddr())
	if got := bs.value("ddstore_federation_served_forwarded_total"); got < 1 {
		t.Errorf("B served %g forwarded calls, want at least 1", got)
	}

	// Raft and health, and promtool's verdict, on every node of A.
	leaders := 0.0
	for _, m := range A.Members {
		s := scrapeNode(t, hc, addr(m))
		leaders += s.value("ddstore_raft_is_leader")
		if s.value("ddstore_raft_term") < 1 || s.value("ddstore_raft_applied_index") < 1 || s.value("ddstore_raft_voters") != 3 {
			t.Errorf("%s: raft term %g, applied %g, voters %g", m.ID, s.value("ddstore_raft_term"), s.value("ddstore_raft_applied_index"), s.value("ddstore_raft_voters"))
		}
		// Ready and in a quorum; on a loaded machine (the race detector) a
		// follower may miss heartbeats for a moment, so this is awaited.
		for deadline := time.Now().Add(10 * time.Second); s.value("ddstore_ready") != 1 || s.value("ddstore_quorum") != 1; {
			if time.Now().After(deadline) {
				t.Errorf("%s: ready %g, quorum %g", m.ID, s.value("ddstore_ready"), s.value("ddstore_quorum"))
				break
			}
			time.Sleep(50 * time.Millisecond)
			s = scrapeNode(t, hc, addr(m))
		}
		if s.value("ddstore_raft_leader_changes_total") < 1 || !s.has("ddstore_raft_last_contact_seconds") {
			t.Errorf("%s: %g leader changes observed (want at least the first election), last contact present: %v",
				m.ID, s.value("ddstore_raft_leader_changes_total"), s.has("ddstore_raft_last_contact_seconds"))
		}
		if !s.has("go_goroutines") || !s.has("ddstore_process_resident_memory_bytes") {
			t.Errorf("%s: Go or process metrics missing", m.ID)
		}
		promtoolCheck(t, s.text)
		if code, body := httpGet(t, hc, addr(m), "/healthz"); code != http.StatusOK {
			t.Errorf("%s /healthz: %d %s", m.ID, code, body)
		}
		for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
			code, body := httpGet(t, hc, addr(m), "/readyz")
			if code == http.StatusOK {
				break
			}
			if time.Now().After(deadline) {
				t.Errorf("%s /readyz: %d %s", m.ID, code, body)
				break
			}
		}
		code, body := httpGet(t, hc, addr(m), "/debug/pprof/")
		if pprofOn := m.ID == "node1"; pprofOn != (code == http.StatusOK && strings.Contains(body, "goroutine")) {
			t.Errorf("%s /debug/pprof/ (pprof on: %v): %d %.60q", m.ID, pprofOn, code, body)
		}
		if code, body := httpGet(t, hc, addr(m), "/console/x"); code != http.StatusOK || body != "console at /console/x" {
			t.Errorf("%s: the handler mounted at / answered %d %q", m.ID, code, body)
		}
	}
	if leaders != 1 {
		t.Errorf("%g nodes say they lead", leaders)
	}
	promtoolCheck(t, bs.text)
}

// TestMetricsListenerSecurity: an HTTP listener on a non-loopback address
// without TLS is refused unless the node is started insecure, like the gRPC
// listener; pprof needs the listener.
func TestMetricsListenerSecurity(t *testing.T) {
	ctx := context.Background()
	base := server.Config{ID: "n1", APIAddr: "127.0.0.1:0", RaftAddr: "127.0.0.1:0", DataDir: t.TempDir()}
	cfg := base
	cfg.HTTPAddr = "0.0.0.0:0"
	if _, err := server.Start(ctx, cfg); err == nil || !strings.Contains(err.Error(), "0.0.0.0:0 is not a loopback address") {
		t.Fatalf("plain-text HTTP on 0.0.0.0: %v", err)
	}
	cfg = base
	cfg.Pprof = true
	if _, err := server.Start(ctx, cfg); err == nil || !strings.Contains(err.Error(), "pprof") {
		t.Fatalf("pprof without a listener: %v", err)
	}
}
