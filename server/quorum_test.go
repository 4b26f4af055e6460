package server_test

import (
	"context"
	"errors"
	"net/http"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/ddstore/ddstore/internal/localcluster"
	"github.com/ddstore/ddstore/internal/testenv"
	pb "github.com/ddstore/ddstore/proto/ddstore/v1"
	"github.com/ddstore/ddstore/server"
)

// healthProbe runs the real grpc-health-probe against addr with the
// cluster's TLS (CA, and the admin client certificate) and returns its exit
// code: 0 SERVING, 4 NOT_SERVING, 2 and 3 connection or RPC failures.
func healthProbe(t testing.TB, probe string, cl *localcluster.Cluster, addr, service string) (int, string) {
	t.Helper()
	env := cl.CLIEnv()
	cmd := exec.Command(probe, "-addr", addr, "-service", service, "-connect-timeout", "2s", "-rpc-timeout", "2s",
		"-tls", "-tls-ca-cert", env["DDSTORE_CA"], "-tls-client-cert", env["DDSTORE_CERT"], "-tls-client-key", env["DDSTORE_KEY"])
	out, err := cmd.CombinedOutput()
	var exit *exec.ExitError
	switch {
	case err == nil:
		return 0, strings.TrimSpace(string(out))
	case errors.As(err, &exit):
		return exit.ExitCode(), strings.TrimSpace(string(out))
	default:
		t.Fatalf("grpc-health-probe: %v", err)
		return -1, ""
	}
}

// TestQuorumLostHealth stops two nodes of a 3-node cluster, leaving first a
// follower, then the leader, alone: the survivor must report NOT_SERVING to
// grpc-health-probe (for the Files service and the server as a whole) and
// fail /readyz within the election timeout, and turn SERVING / ready again
// once the others are back.
func TestQuorumLostHealth(t *testing.T) {
	probe, err := testenv.Tool("grpc-health-probe")
	if err != nil {
		t.Fatal(err)
	}
	var election time.Duration
	cl := startCluster(t, localcluster.Options{Tune: func(c *server.Config) {
		manualHealing(time.Hour)(c)
		c.HTTPAddr = "127.0.0.1:0"
		election = c.ElectionTimeout
	}})
	hc := httpsClient(t, cl)
	files := pb.Files_ServiceDesc.ServiceName

	ready := func(m *localcluster.Member) (int, string) {
		t.Helper()
		resp, err := hc.Get("https://" + m.Node.HTTPAddr() + "/readyz")
		if err != nil {
			t.Fatalf("/readyz of %s: %v", m.ID, err)
		}
		defer resp.Body.Close()
		var b strings.Builder
		buf := make([]byte, 512)
		n, _ := resp.Body.Read(buf)
		b.Write(buf[:n])
		return resp.StatusCode, strings.TrimSpace(b.String())
	}
	// waitFor polls until the probe answers wantProbe for the Files service
	// and /readyz answers wantReady, and returns how long each took.
	waitFor := func(m *localcluster.Member, wantProbe, wantReady int, limit time.Duration) (probeAfter, readyAfter time.Duration) {
		t.Helper()
		start := time.Now()
		probeDone := make(chan time.Duration, 1)
		go func() {
			for time.Since(start) < limit {
				if code, _ := healthProbe(t, probe, cl, m.APIAddr, files); code == wantProbe {
					probeDone <- time.Since(start)
					return
				}
			}
			probeDone <- -1
		}()
		readyAfter = -1
		for time.Since(start) < limit {
			if code, _ := ready(m); code == wantReady {
				readyAfter = time.Since(start)
				break
			}
			time.Sleep(5 * time.Millisecond)
		}
		probeAfter = <-probeDone
		if probeAfter < 0 || readyAfter < 0 {
			code, out := healthProbe(t, probe, cl, m.APIAddr, files)
			rc, body := ready(m)
			t.Fatalf("%s: after %s, grpc-health-probe says %d (%s; want %d), /readyz %d %q (want %d)", m.ID, limit, code, out, wantProbe, rc, body, wantReady)
		}
		return probeAfter, readyAfter
	}

	for _, survivorLeads := range []bool{false, true} {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		leader := cl.Leader(ctx)
		cancel()
		if leader < 0 {
			t.Fatal("no leader")
		}
		survivor := leader
		if !survivorLeads {
			survivor = (leader + 1) % 3
		}
		s := cl.Members[survivor]
		waitFor(s, 0, http.StatusOK, 10*time.Second)
		if code, out := healthProbe(t, probe, cl, s.APIAddr, ""); code != 0 {
			t.Fatalf("%s overall health before: %d %s", s.ID, code, out)
		}

		// Stop the others, the leader last (when the survivor follows),
		// so that quorum is lost when the last one is gone.
		var others []int
		for i := range cl.Members {
			if i != survivor && i != leader {
				others = append(others, i)
			}
		}
		if leader != survivor {
			others = append(others, leader)
		}
		for _, i := range others {
			if err := cl.StopNode(i, true); err != nil {
				t.Fatal(err)
			}
		}
		probeAfter, readyAfter := waitFor(s, 4, http.StatusServiceUnavailable, 10*time.Second)
		_, why := ready(s)
		t.Logf("survivor %s (leader: %v) lost quorum: grpc-health-probe NOT_SERVING after %s, /readyz 503 after %s (election timeout %s): %q",
			s.ID, survivorLeads, probeAfter.Round(time.Millisecond), readyAfter.Round(time.Millisecond), election, why)
		if code, out := healthProbe(t, probe, cl, s.APIAddr, ""); code != 4 {
			t.Errorf("%s overall health without quorum: %d %s", s.ID, code, out)
		}
		if !raceEnabled && (probeAfter > election || readyAfter > election) {
			t.Errorf("%s: NOT_SERVING after %s, /readyz failing after %s: not within the election timeout (%s)", s.ID, probeAfter, readyAfter, election)
		}

		ctx, cancel = context.WithTimeout(context.Background(), 60*time.Second)
		for _, i := range others {
			if err := cl.StartNode(ctx, i); err != nil {
				t.Fatal(err)
			}
		}
		cancel()
		probeAfter, readyAfter = waitFor(s, 0, http.StatusOK, 20*time.Second)
		t.Logf("survivor %s: quorum back: SERVING after %s, /readyz 200 after %s", s.ID, probeAfter.Round(time.Millisecond), readyAfter.Round(time.Millisecond))
		if code, out := healthProbe(t, probe, cl, s.APIAddr, ""); code != 0 {
			t.Errorf("%s overall health with quorum back: %d %s", s.ID, code, out)
		}
		ctx, cancel = context.WithTimeout(context.Background(), 60*time.Second)
		if err := cl.WaitReady(ctx, 3); err != nil {
			t.Fatal(err)
		}
		cancel()
	}
}

// TestStoreUnreachableHealth: a node whose chunk store stops answering (its
// MongoDB, a real FerretDB, frozen with SIGSTOP) turns NOT_SERVING for
// grpc-health-probe and fails /readyz, saying why, and serves again once the
// store answers.
func TestStoreUnreachableHealth(t *testing.T) {
	probe, err := testenv.Tool("grpc-health-probe")
	if err != nil {
		t.Fatal(err)
	}
	mongo, err := testenv.StartMongo()
	if err != nil {
		t.Fatal(err)
	}
	defer mongo.Stop()
	cl := startCluster(t, localcluster.Options{Nodes: 1, Replicas: 1, Store: "gridfs", MongoURI: mongo.URI, Tune: func(c *server.Config) {
		manualHealing(time.Hour)(c)
		c.HTTPAddr = "127.0.0.1:0"
		c.WriteCheckInterval = 200 * time.Millisecond
		c.NodeTimeout = 500 * time.Millisecond
	}})
	hc := httpsClient(t, cl)
	m := cl.Members[0]
	files := pb.Files_ServiceDesc.ServiceName
	wait := func(wantProbe, wantReady int) (time.Duration, string) {
		t.Helper()
		start := time.Now()
		for {
			code, out := healthProbe(t, probe, cl, m.APIAddr, files)
			rc, body := httpGet(t, hc, m.Node.HTTPAddr(), "/readyz")
			if code == wantProbe && rc == wantReady {
				return time.Since(start), strings.TrimSpace(body)
			}
			if time.Since(start) > 20*time.Second {
				t.Fatalf("grpc-health-probe %d (%s), /readyz %d %q; want %d and %d", code, out, rc, body, wantProbe, wantReady)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	wait(0, http.StatusOK)
	if err := mongo.Pause(); err != nil {
		t.Fatal(err)
	}
	resumed := false
	defer func() {
		if !resumed {
			mongo.Resume()
		}
	}()
	d, why := wait(4, http.StatusServiceUnavailable)
	t.Logf("store frozen: NOT_SERVING after %s: %q", d.Round(time.Millisecond), why)
	if !strings.Contains(why, "chunk store does not answer") {
		t.Errorf("/readyz says %q, want it to say the store does not answer", why)
	}
	s := scrapeNode(t, hc, m.Node.HTTPAddr())
	if s.value("ddstore_store_writable") != 0 || s.value("ddstore_ready") != 0 {
		t.Errorf("store frozen: ddstore_store_writable %g, ddstore_ready %g", s.value("ddstore_store_writable"), s.value("ddstore_ready"))
	}
	if err := mongo.Resume(); err != nil {
		t.Fatal(err)
	}
	resumed = true
	d, _ = wait(0, http.StatusOK)
	t.Logf("store answers again: SERVING after %s", d.Round(time.Millisecond))
}
