package main

import (
	"context"
	"crypto/rand"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ddstore/ddstore/internal/blake3"
	"github.com/ddstore/ddstore/internal/localcluster"
	"github.com/ddstore/ddstore/internal/netlab"
	"github.com/ddstore/ddstore/server/auth"
)

// TestPrivateNetworkGateways: cluster P's three nodes sit in network
// namespaces on a private network that the host cannot reach; two of them
// are gateways with a public address. P keeps two copies of each chunk, so
// a gateway streams some chunks from the other nodes that hold them. Cluster A runs on the host's loopback
// with P as its peer. A client outside stores into P through A, downloads
// P's files through A and through P's gateways, also after P's leader is
// killed; with P hung, A's listings answer in time and name P.
func TestPrivateNetworkGateways(t *testing.T) {
	lab, err := netlab.New("dd")
	if err != nil {
		t.Fatalf("the private-network test needs root and iproute2: %v", err)
	}
	t.Cleanup(func() {
		if err := lab.Close(); err != nil {
			t.Error(err)
		}
	})
	pn, err := lab.PrivateNet(3, []int{0, 1})
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	// Cluster A is planned first: P trusts A's CA, A trusts P's.
	a, err := localcluster.New(localcluster.Options{Dir: filepath.Join(dir, "A"), Exe: exe, Cluster: "A",
		PeerCA: func(string) *x509.Certificate { return loadCert(t, filepath.Join(dir, "pki", "ca.crt")) },
		Args: []string{"--peer", "P=" + pn.Public[0] + ":7402", "--peer", "P=" + pn.Public[1] + ":7402", "--peer-allow", "P=write",
			"--filter-refresh", "200ms", "--peer-timeout", "2s", "--cache-size", "0"},
	})
	if err != nil {
		t.Fatal(err)
	}

	// P's certificates, made as an operator would, with the CLI.
	pki := filepath.Join(dir, "pki")
	mustRun(t, "cert", "ca", "--cluster", "P", "--dir", pki)
	mustRun(t, "cert", "client", "--cluster", "P", "--name", "ops", "--role", "admin", "--ca-dir", pki)
	asP := []string{"--ca", filepath.Join(pki, "ca.crt"), "--cert", filepath.Join(pki, "ops.crt"), "--key", filepath.Join(pki, "ops.key")}
	asA := []string{}
	for k, v := range a.CLIEnv() {
		asA = append(asA, "--"+strings.ToLower(strings.TrimPrefix(k, "DDSTORE_")), v)
	}

	// Cluster P, inside the namespaces.
	procs := make([]*exec.Cmd, 3)
	var gateways []string
	for i := range 3 {
		id := fmt.Sprintf("p%d", i+1)
		internal := pn.Internal[i]
		hosts := internal
		if pub, ok := pn.Public[i]; ok {
			hosts += "," + pub
		}
		mustRun(t, "cert", "node", "--cluster", "P", "--id", id, "--host", hosts, "--ca-dir", pki)
		args := []string{"server", "--id", id, "--cluster", "P", "--listen", internal + ":7400", "--raft-addr", internal + ":7401",
			"--data-dir", filepath.Join(dir, id), "--replicas", "2", "--cache-size", "0", "--shutdown-grace", "1s",
			"--tls-ca", filepath.Join(pki, "ca.crt"), "--tls-cert", filepath.Join(pki, id+".crt"), "--tls-key", filepath.Join(pki, id+".key"),
			"--peer-ca", "A=" + a.CAFile(), "--peer-allow", "A=write"}
		if i == 0 {
			args = append(args, "--bootstrap")
		} else {
			args = append(args, "--join", pn.Internal[0]+":7400")
		}
		if pub, ok := pn.Public[i]; ok {
			args = append(args, "--public", pub+":7402")
			gateways = append(gateways, pub+":7402")
		} else {
			args = append(args, "--private")
		}
		logf, err := os.Create(filepath.Join(dir, id+".log"))
		if err != nil {
			t.Fatal(err)
		}
		cmd := lab.Command(ctx, pn.Namespaces[i], exe, args...)
		cmd.Stdout, cmd.Stderr = logf, logf
		cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		procs[i] = cmd
		t.Cleanup(func() {
			cmd.Process.Signal(syscall.SIGCONT)
			cmd.Process.Kill()
			cmd.Wait()
			logf.Close()
			if t.Failed() {
				b, _ := os.ReadFile(logf.Name())
				t.Logf("%s log (tail):\n%s", id, tail(string(b), 3000))
			}
		})
	}
	viaGateways := strings.Join(gateways, ",")

	// Cluster A, on the host, with P as its peer.
	if err := a.Launch(ctx); err != nil {
		b, _ := os.ReadFile(filepath.Join(dir, "A", "node1.log"))
		t.Fatalf("cluster A: %v; node1's log (tail):\n%s", err, tail(string(b), 3000))
	}
	t.Cleanup(func() { a.Close() })
	viaA := strings.Join(a.Addrs(), ",")

	leaderP := waitLeader(t, asP, viaGateways, "", 3) // all three members, so that every chunk gets its two copies
	t.Logf("cluster P up, leader %s, gateways %v, internal %v", leaderP, gateways, pn.Internal)

	// The host cannot reach P's internal addresses.
	if r := runAs(t, asP, "--addr", pn.Internal[2]+":7400", "--timeout", "3s", "status"); r.code == 0 {
		t.Fatalf("the host reached P's private node at %s: %s", pn.Internal[2], r.stdout)
	}

	src := filepath.Join(dir, "data.bin")
	writeRandom(t, src, 20<<20)
	want := fileHash(t, src)
	if r := runAs(t, asP, "--addr", viaGateways, "put", "--date", "2026-02-02", src, "p/data.bin"); r.code != 0 {
		t.Fatalf("put through P's gateways: %s", r.stderr)
	}
	small := filepath.Join(dir, "small.txt")
	os.WriteFile(small, []byte("stored into P through A's nodes"), 0o644)
	if r := runAs(t, asA, "--addr", viaA, "put", "--cluster", "P", "--date", "2026-02-03", small, "p/via-a.txt"); r.code != 0 {
		t.Fatalf("put --cluster P through A: %s", r.stderr)
	}
	own := filepath.Join(dir, "own.txt")
	os.WriteFile(own, []byte("a file of cluster A"), 0o644)
	if r := runAs(t, asA, "--addr", viaA, "put", "--date", "2026-02-04", own, "a/own.txt"); r.code != 0 {
		t.Fatalf("put into A: %s", r.stderr)
	}

	credsFor := func(via string) []string {
		if via == viaA {
			return asA
		}
		return asP
	}
	get := func(via, name, when string) {
		t.Helper()
		out := filepath.Join(dir, "out-"+strings.ReplaceAll(when, " ", "-"))
		var r result
		deadline := time.Now().Add(20 * time.Second)
		for {
			// A learns of new files in P at its next filter refresh.
			if r = runAs(t, credsFor(via), "--addr", via, "get", name, out); r.code == 0 || time.Now().After(deadline) {
				break
			}
			time.Sleep(200 * time.Millisecond)
		}
		if r.code != 0 {
			t.Fatalf("%s: get %s via %s: %s", when, name, via, r.stderr)
		}
		if fileHash(t, out) != want {
			t.Fatalf("%s: %s differs", when, name)
		}
	}
	get(viaA, "p/data.bin", "through A")
	get(viaGateways, "p/data.bin", "through P's gateways")
	if r := runAs(t, asA, "--addr", viaA, "replicate", "a/own.txt", "--to", "P"); r.code != 0 || !strings.Contains(r.stdout, "1 certainly absent there (filter), 0 checked exactly, 1 sent") {
		t.Fatalf("replicate a/own.txt --to P through A: %s %s", r.stdout, r.stderr)
	}
	if r := runAs(t, asP, "--addr", viaGateways, "stat", "--cluster", "P", "a/own.txt"); r.code != 0 || !strings.Contains(r.stdout, "cluster: P") {
		t.Fatalf("P does not hold the replicated file: %s %s", r.stdout, r.stderr)
	}

	var st struct {
		Cluster string
		Peers   []struct {
			Name          string
			LeaderID      string `json:"leader_id"`
			LeaderAddr    string `json:"leader_addr"`
			Reachable     bool
			FilterVersion uint64 `json:"filter_version"`
		}
	}
	r := runAs(t, asA, "--addr", viaA, "status", "--json")
	if err := json.Unmarshal([]byte(r.stdout), &st); err != nil || len(st.Peers) != 1 || !st.Peers[0].Reachable ||
		st.Peers[0].LeaderID != leaderP || !slices.Contains(gateways, st.Peers[0].LeaderAddr) {
		t.Fatalf("A's status: %v %s", err, r.stdout)
	}
	t.Logf("A sees peer %+v", st.Peers[0])
	if r := runAs(t, asA, "--addr", viaA, "status"); r.code != 0 || !strings.Contains(r.stdout, "PEER CLUSTER") || !strings.Contains(r.stdout, "\nP ") {
		t.Fatalf("A's status table shows no peer P: %s %s", r.stdout, r.stderr)
	}

	// P's leader dies; a new one is elected and P's files still come
	// through A and through the gateway that is left.
	var killed int
	for i := range 3 {
		if fmt.Sprintf("p%d", i+1) == leaderP {
			killed = i
		}
	}
	procs[killed].Process.Kill()
	procs[killed].Wait()
	newLeader := waitLeader(t, asP, viaGateways, leaderP, 0)
	t.Logf("killed P's leader %s; new leader %s", leaderP, newLeader)
	get(viaA, "p/data.bin", "through A after the leader change")
	get(viaGateways, "p/data.bin", "through the gateways after the leader change")
	if r := runAs(t, asA, "--addr", viaA, "stat", "p/via-a.txt"); r.code != 0 || !strings.Contains(r.stdout, "cluster: P") {
		t.Fatalf("stat through A after the leader change: %s %s", r.stdout, r.stderr)
	}
	// Writes still reach P's (new) leader through the gateway that is left.
	if r := runAs(t, asP, "--addr", viaGateways, "put", "--date", "2026-02-05", small, "p/after.txt"); r.code != 0 {
		t.Fatalf("put through P's gateways after the leader change: %s", r.stderr)
	}

	// P hangs (every process stopped): A answers listings within its peer
	// timeout, with its own files and a note naming P.
	for i, p := range procs {
		if i != killed {
			p.Process.Signal(syscall.SIGSTOP)
		}
	}
	// A lookup of P's file (P's filter says maybe) with a deadline shorter
	// than the peer timeout is answered before the caller's deadline, naming
	// P as the cluster that did not answer.
	start := time.Now()
	r = runAs(t, asA, "--addr", viaA, "--timeout", "1s", "stat", "p/data.bin")
	if took := time.Since(start); r.code != 1 || took > 2*time.Second || !strings.Contains(r.stderr, "cluster P did not answer") {
		t.Fatalf("stat through A with P hung: exit %d after %s: %s", r.code, took, r.stderr)
	}
	t.Logf("stat through A with P hung, --timeout 1s: exit 1 after %s: %s", time.Since(start).Round(time.Millisecond), strings.TrimSpace(r.stderr))
	start = time.Now()
	r = runAs(t, asA, "--addr", viaA, "ls", "--from", "2026-02-01", "--to", "2026-02-28")
	took := time.Since(start)
	if r.code != 0 || !strings.Contains(r.stdout, "a/own.txt") || !strings.Contains(r.stderr, "cluster P did not answer") {
		t.Fatalf("ls through A with P hung: exit %d\n%s\n%s", r.code, r.stdout, r.stderr)
	}
	if took > 10*time.Second {
		t.Fatalf("ls with P hung took %s", took)
	}
	t.Logf("ls through A with P hung answered in %s: %s", took.Round(time.Millisecond), strings.TrimSpace(r.stderr))
}

// waitLeader polls a cluster's status until it names a leader other than
// not and (if members > 0) that many members answer, and returns the leader.
func waitLeader(t *testing.T, creds []string, addrs, not string, members int) string {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		r := runAs(t, creds, "--addr", addrs, "--timeout", "5s", "status", "--json")
		var st struct {
			LeaderID string `json:"leader_id"`
			Nodes    []struct{ State string }
		}
		if r.code == 0 && json.Unmarshal([]byte(r.stdout), &st) == nil && st.LeaderID != "" && st.LeaderID != not {
			live := 0
			for _, n := range st.Nodes {
				if n.State == "Leader" || n.State == "Follower" {
					live++
				}
			}
			if live >= members {
				return st.LeaderID
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no leader via %s: %s %s", addrs, r.stdout, r.stderr)
		}
		time.Sleep(250 * time.Millisecond)
	}
}

func writeRandom(t *testing.T, path string, n int64) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := io.CopyN(f, rand.Reader, n); err != nil {
		t.Fatal(err)
	}
}

func fileHash(t *testing.T, path string) string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := blake3.New()
	io.Copy(h, f)
	return fmt.Sprintf("%x", h.Sum(nil))
}

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

// runAs runs the CLI with the credentials creds (--ca, --cert, --key).
func runAs(t *testing.T, creds []string, args ...string) result {
	t.Helper()
	return run(t, append(slices.Clone(creds), args...)...)
}

// loadCert reads a PEM certificate file.
func loadCert(t *testing.T, path string) *x509.Certificate {
	ca, err := auth.LoadCA(path, "")
	if err != nil {
		t.Errorf("load %s: %v", path, err)
		return nil
	}
	return ca.Cert
}
