package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ddstore/ddstore/client"
	"github.com/ddstore/ddstore/internal/localcluster"
	pb "github.com/ddstore/ddstore/proto/ddstore/v1"
	"github.com/ddstore/ddstore/server/auth"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
)

// rssBudget is a node's peak RSS budget without the cache tier.
const rssBudget = 256 << 20

// TestIdleStreamsBounded is the acceptance test of the stream limits: one
// client (a token, subject "attacker") opens 2,000 idle streams on node 1
// over 10 connections with the smallest flow-control windows: 1,000
// downloads of a 4 MiB file that never read, then 1,000 uploads that send
// nothing. The node's peak RSS stays under rssBudget, another client's put
// and gets through the same node complete, and the idle streams are closed
// within the idle deadline and a margin. Once with the default caps (64
// streams per client), once with caps that admit all 2,000.
func TestIdleStreamsBounded(t *testing.T) {
	if testing.Short() {
		t.Skip("starts two clusters of child processes")
	}
	t.Run("default caps", func(t *testing.T) {
		idleStreamsBounded(t, nil, false)
	})
	t.Run("all admitted", func(t *testing.T) {
		idleStreamsBounded(t, []string{"--max-streams-per-client", "4000", "--max-streams", "5000"}, true)
	})
}

const (
	idleTimeout = 3 * time.Second
	idleMargin  = 5 * time.Second
	attackConns = 10 // one connection carries at most 256 streams
	attackUp    = 1000
	attackDown  = 1000
)

// streamEnd is how one attacker stream ended.
type streamEnd struct {
	download bool
	opened   time.Time
	admitted bool      // the node accepted it (a refusal comes at once)
	ended    time.Time // when the client saw it end
	err      error
}

func idleStreamsBounded(t *testing.T, extra []string, allAdmitted bool) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	dir := t.TempDir()
	t0 := time.Now()
	cl, err := localcluster.Start(ctx, localcluster.Options{
		Dir: filepath.Join(dir, "cluster"), Exe: exe, Replicas: 3,
		Args: append([]string{"--cache-size", "0", "--stream-idle-timeout", idleTimeout.String()}, extra...),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := cl.Close(); err != nil {
			t.Errorf("close cluster: %v", err)
		}
		if t.Failed() {
			for _, m := range cl.Members {
				b, _ := os.ReadFile(filepath.Join(dir, "cluster", m.ID+".log"))
				t.Logf("%s log (tail):\n%s", m.ID, lastBytes(string(b), 3000))
			}
		}
	})
	node1 := cl.Members[0]
	t.Logf("cluster of 3 up in %v", time.Since(t0).Round(time.Millisecond))
	var before int64 // node1's peak RSS before the attack
	t.Cleanup(func() {
		// VmHWM: the most node1 ever held resident, whatever failed.
		peak, err := cl.PeakRSS(0)
		if err != nil {
			t.Errorf("node1 peak RSS: %v", err)
			return
		}
		t.Logf("node1 peak RSS (VmHWM) %.1f MiB, budget %d MiB (%.1f MiB before the attack); %v in all",
			mib(peak), rssBudget>>20, mib(before), time.Since(t0).Round(time.Millisecond))
		if peak > rssBudget {
			t.Errorf("node1 peak RSS %.1f MiB exceeds its budget of %d MiB", mib(peak), rssBudget>>20)
		}
	})

	// The admin client talks to node 1 only.
	adm, err := client.New([]string{node1.APIAddr}, cl.ClientOptions()...)
	if err != nil {
		t.Fatal(err)
	}
	defer adm.Close()
	const seedName = "seed/file.bin"
	seed := make([]byte, 4<<20+4321)
	rand.Read(seed)
	if _, err := adm.Put(ctx, seedName, bytes.NewReader(seed), client.PutOptions{}); err != nil {
		t.Fatalf("put %s: %v", seedName, err)
	}
	m, err := adm.Stat(ctx, seedName, pb.Consistency_CONSISTENCY_LINEARIZABLE)
	if err != nil {
		t.Fatal(err)
	}
	if before, err = cl.PeakRSS(0); err != nil {
		t.Fatal(err)
	}
	base := nodeLimits(ctx, t, adm, node1.ID)
	t.Logf("seed file: %d bytes in %d chunks; node1 peak RSS before the attack %.1f MiB; limits %v",
		len(seed), len(m.GetChunks()), mib(before), base)

	// The attacker: one principal (a write token), over attackConns
	// connections to node 1, with the smallest flow-control windows so that
	// what its downloads do not read stays queued on the node.
	tok, err := cl.CA().IssueToken("ddstore", "attacker", auth.RoleWrite, "", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	tc, err := auth.ClientTLS(cl.CAFile(), "", "")
	if err != nil {
		t.Fatal(err)
	}
	var conns []*grpc.ClientConn
	for range attackConns {
		conn, err := grpc.NewClient("passthrough:///"+node1.APIAddr,
			grpc.WithTransportCredentials(credentials.NewTLS(tc)),
			grpc.WithInitialWindowSize(64<<10), grpc.WithInitialConnWindowSize(64<<10),
			grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(client.MaxMessageSize)))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		conn.Connect()
		conns = append(conns, conn)
	}
	actx, acancel := context.WithCancel(metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+tok))
	defer acancel()

	var (
		mu   sync.Mutex
		ends []*streamEnd
		wg   sync.WaitGroup
	)
	record := func(e *streamEnd, err error) {
		mu.Lock()
		e.ended, e.err = time.Now(), err
		mu.Unlock()
	}
	// drain lets the downloads read what the node queued for them, once the
	// node has closed them.
	drain := make(chan struct{})
	downAdmitted := 0
	drained := sync.OnceFunc(func() { close(drain) })
	defer drained()
	// The downloads go first, so that under the per-client cap the streams
	// admitted are the kind that holds memory on the node (chunks read ahead
	// and messages queued behind flow control); then the uploads.
	headers := make(chan bool, attackDown) // a download's answer: admitted?
	tAttack := time.Now()
	for i := range attackDown + attackUp {
		if i == attackDown {
			// Every download has its answer: the node sent the manifest or
			// refused it.
			for range attackDown {
				select {
				case ok := <-headers:
					if ok {
						downAdmitted++
					}
				case <-time.After(idleTimeout):
					t.Fatalf("downloads unanswered after %v", time.Since(tAttack).Round(time.Millisecond))
				}
			}
		}
		conn := conns[i%attackConns]
		e := &streamEnd{download: i < attackDown, opened: time.Now()}
		ends = append(ends, e)
		files := pb.NewFilesClient(conn)
		if !e.download {
			us, err := files.Upload(actx)
			if err != nil {
				t.Fatalf("open upload %d: %v", i, err)
			}
			// An upload that sends nothing: the node answers only when it
			// ends the stream (a refusal at once, the idle deadline later).
			wg.Go(func() { record(e, us.RecvMsg(new(pb.UploadResponse))) })
			continue
		}
		ds, err := files.Download(actx, &pb.DownloadRequest{Name: seedName, Consistency: pb.Consistency_CONSISTENCY_STALE})
		if err != nil {
			t.Fatalf("open download %d: %v", i, err)
		}
		// Header returns once the node sent the manifest (admitted) or
		// refused the stream (no headers); it reads no message.
		wg.Go(func() {
			md, _ := ds.Header()
			mu.Lock()
			e.admitted = md != nil
			mu.Unlock()
			headers <- md != nil
			if md != nil {
				<-drain
			}
			var err error
			for err == nil {
				_, err = ds.Recv()
			}
			record(e, err)
		})
	}
	tOpened := time.Now()
	t.Logf("attacker opened %d downloads (%d admitted), then %d uploads, over %d connections in %v",
		attackDown, downAdmitted, attackUp, attackConns, tOpened.Sub(tAttack).Round(time.Millisecond))

	// Streams still open, closed idle already (when opening them all took
	// longer than the idle timeout) or refused: the node has answered all.
	var open *pb.LimitStatus
	waitFor(ctx, t, adm, node1.ID, tOpened.Add(idleTimeout+idleMargin), "every stream admitted or refused", func(l *pb.LimitStatus) bool {
		open = l
		return l.GetOpenStreams()+l.GetIdleClosed()-base.GetIdleClosed()+l.GetRefusedStreams()-base.GetRefusedStreams() >= attackUp+attackDown
	})
	tSettled := time.Now()
	refused := int(open.GetRefusedStreams() - base.GetRefusedStreams())
	admitted := attackUp + attackDown - refused
	t.Logf("after %v: node1 admitted %d attacker streams (%d downloads) and refused %d; limits %v",
		tSettled.Sub(tAttack).Round(time.Millisecond), admitted, downAdmitted, refused, open)
	wantOpen := 64
	if allAdmitted {
		wantOpen = attackUp + attackDown
	}
	// On a busy machine the first streams may reach the idle deadline just
	// before the last open: 1% may have closed by then.
	if admitted != wantOpen || open.GetPeakStreams() < uint64(wantOpen-wantOpen/100) {
		t.Errorf("node1 admitted %d attacker streams, at most %d open at once; want %d, all open at once", admitted, open.GetPeakStreams(), wantOpen)
	}

	// Meanwhile another principal (the admin) puts and gets through node 1.
	type victimResult struct {
		took string
		err  error
	}
	victimDone := make(chan victimResult, 1)
	go func() {
		took, err := victimPutGet(ctx, adm, seedName, seed)
		victimDone <- victimResult{took, err}
	}()

	// Within the idle deadline and a margin, node 1 closes every attacker
	// stream it admitted. Past that the wait goes on a while, to measure how
	// late the last ones are; the progress is logged each second.
	var closed *pb.LimitStatus
	lastLog := tOpened
	tClosed, ok := waitUntil(ctx, t, adm, node1.ID, tOpened.Add(idleTimeout+idleMargin+25*time.Second), func(l *pb.LimitStatus) bool {
		closed = l
		if time.Since(lastLog) >= time.Second {
			lastLog = time.Now()
			t.Logf("  +%v: node1 open_streams %d, idle_closed %d, refused_memory %d", time.Since(tOpened).Round(100*time.Millisecond),
				l.GetOpenStreams(), l.GetIdleClosed()-base.GetIdleClosed(), l.GetRefusedMemory()-base.GetRefusedMemory())
		}
		// Every stream ended (the victim's too, which take well under a
		// second); a stream may count twice in the counters, closed idle
		// while its read-ahead gave up waiting for memory.
		return l.GetOpenStreams() == 0 && ended(l, base) >= uint64(admitted)
	})
	if !ok {
		t.Errorf("node1 did not close the idle streams within %v: limits %v", time.Since(tOpened).Round(time.Millisecond), closed)
	} else {
		t.Logf("node1 closed the idle streams %v after they were opened: limits %v", tClosed.Sub(tOpened).Round(time.Millisecond), closed)
		// A download that never reads may wait one idle timeout for stream
		// memory held by the others, get it as they close, wait once more
		// for its next chunk, and sit one timeout blocked in Send: three
		// timeouts at the most, each bounded.
		if d, bound := tClosed.Sub(tOpened), 3*idleTimeout+idleMargin/2; d > bound {
			t.Errorf("node1 closed the idle streams %v after they were opened; want within %v", d.Round(time.Millisecond), bound)
		}
	}
	if v := <-victimDone; v.err != nil {
		t.Errorf("victim (admin) through node1 during the attack: %v", v.err)
	} else {
		t.Logf("victim (admin) through node1 during the attack: %s", v.took)
	}
	if !ok {
		return // the streams still open end with the connections
	}
	drained()
	wg.Wait()

	var upIdle, downIdle, upRefused, downRefused, downNoMemory int
	var lastUp time.Duration
	for i, e := range ends {
		st := status.Convert(e.err)
		switch {
		case e.download && e.admitted && st.Code() == codes.ResourceExhausted:
			// An admitted download that waited the idle timeout for stream
			// memory (held by the other idle downloads) and gave up.
			if !strings.Contains(st.Message(), "no stream memory for 3s") {
				t.Errorf("download %d ended with an unclear message: %q", i, st.Message())
			}
			// (When: the downloads read only once node1 has ended them all,
			// which the wait above bounds.)
			downNoMemory++
		case st.Code() == codes.ResourceExhausted:
			if !strings.Contains(st.Message(), "too many open streams") || !strings.Contains(st.Message(), "attacker") {
				t.Errorf("stream %d refused with an unclear message: %q", i, st.Message())
			}
			if e.download {
				downRefused++
			} else {
				upRefused++
			}
		case e.download && !e.admitted:
			t.Errorf("download %d, refused, ended with %v; want ResourceExhausted", i, e.err)
		case st.Code() == codes.DeadlineExceeded:
			if !strings.Contains(st.Message(), "idle for 3s") {
				t.Errorf("stream %d closed with an unclear message: %q", i, st.Message())
			}
			if e.download {
				downIdle++
			} else {
				upIdle++
				if d := e.ended.Sub(e.opened); d > lastUp {
					lastUp = d
				}
				if d := e.ended.Sub(e.opened); d < idleTimeout || d > idleTimeout+idleMargin {
					t.Errorf("upload %d ended %v after it was opened; want within %v..%v", i, d, idleTimeout, idleTimeout+idleMargin)
				}
			}
		default:
			t.Errorf("stream %d (download %v) ended with %v; want ResourceExhausted or DeadlineExceeded", i, e.download, e.err)
		}
	}
	t.Logf("attacker uploads: %d closed idle (the last %v after it was opened), %d refused; downloads: %d closed idle, %d out of stream memory, %d refused",
		upIdle, lastUp.Round(time.Millisecond), upRefused, downIdle, downNoMemory, downRefused)
	if upIdle+downIdle+downNoMemory != admitted || upRefused+downRefused != refused || downIdle+downNoMemory != downAdmitted {
		t.Errorf("client saw %d+%d idle, %d out of memory and %d+%d refused; node1 admitted %d (%d downloads) and refused %d",
			upIdle, downIdle, downNoMemory, upRefused, downRefused, admitted, downAdmitted, refused)
	}

	// ddstore status --json shows the same.
	js := statusJSON(t, cl)
	for _, n := range js.GetNodes() {
		if n.GetId() != node1.ID {
			continue
		}
		l := n.GetLimits()
		t.Logf("status --json: node1 limits %v", l)
		if ended(l, base) < uint64(admitted) || l.GetOpenStreams() != 0 || l.GetStreamMemoryBytes() != 128<<20 {
			t.Errorf("status --json: node1 limits %v; want idle_closed + refused_memory >= %d, open_streams ~0, stream_memory_bytes 128 MiB", l, admitted)
		}
	}

}

// nodeLimits returns the limit counters of node id.
func nodeLimits(ctx context.Context, t *testing.T, c *client.Client, id string) *pb.LimitStatus {
	t.Helper()
	sctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	st, err := c.Status(sctx)
	if err != nil {
		t.Fatalf("status: %v", err)
	}
	for _, n := range st.GetNodes() {
		if n.GetId() == id {
			return n.GetLimits()
		}
	}
	t.Fatalf("status lists no node %s", id)
	return nil
}

// waitFor polls node id's limits until ok holds, failing at deadline.
func waitFor(ctx context.Context, t *testing.T, c *client.Client, id string, deadline time.Time, what string, ok func(*pb.LimitStatus) bool) {
	t.Helper()
	var last *pb.LimitStatus
	if _, done := waitUntil(ctx, t, c, id, deadline, func(l *pb.LimitStatus) bool { last = l; return ok(l) }); !done {
		t.Fatalf("%s: not by the deadline; %s limits %v", what, id, last)
	}
}

// waitUntil polls node id's limits until ok holds, and says when it did;
// false if it did not by deadline.
func waitUntil(ctx context.Context, t *testing.T, c *client.Client, id string, deadline time.Time, ok func(*pb.LimitStatus) bool) (time.Time, bool) {
	t.Helper()
	for {
		if ok(nodeLimits(ctx, t, c, id)) {
			return time.Now(), true
		}
		if time.Now().After(deadline) {
			return time.Time{}, false
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// victimPutGet puts a fresh file through c, gets it and the seed file back
// and checks both are byte-identical; it says how long each step took.
func victimPutGet(ctx context.Context, c *client.Client, seedName string, seed []byte) (string, error) {
	data := make([]byte, 3<<20+777)
	rand.Read(data)
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	start := time.Now()
	if _, err := c.Put(ctx, "victim/file.bin", bytes.NewReader(data), client.PutOptions{}); err != nil {
		return "", fmt.Errorf("put, after %v: %w", time.Since(start).Round(time.Millisecond), err)
	}
	put := time.Since(start)
	var got bytes.Buffer
	if _, err := c.Get(ctx, "victim/file.bin", &got, client.GetOptions{}); err != nil {
		return "", fmt.Errorf("get, after %v: %w", time.Since(start).Round(time.Millisecond), err)
	}
	get := time.Since(start) - put
	var got2 bytes.Buffer
	if _, err := c.Get(ctx, seedName, &got2, client.GetOptions{}); err != nil {
		return "", fmt.Errorf("get %s, after %v: %w", seedName, time.Since(start).Round(time.Millisecond), err)
	}
	if !bytes.Equal(got.Bytes(), data) || !bytes.Equal(got2.Bytes(), seed) {
		return "", errors.New("got back different bytes")
	}
	return fmt.Sprintf("put 3 MiB in %v, got it back in %v and the seed file in %v: byte-identical",
		put.Round(time.Millisecond), get.Round(time.Millisecond), (time.Since(start) - put - get).Round(time.Millisecond)), nil
}

// statusJSON runs `ddstore status --json` as the cluster's admin.
func statusJSON(t *testing.T, cl *localcluster.Cluster) *pb.StatusResponse {
	t.Helper()
	cmd := exec.Command(exe, "--addr", strings.Join(cl.Addrs(), ","), "--json", "status")
	cmd.Env = os.Environ()
	for k, v := range cl.CLIEnv() {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("status --json: %v: %s", err, stderr.String())
	}
	var st pb.StatusResponse
	if err := (protojson.UnmarshalOptions{DiscardUnknown: true}).Unmarshal(out, &st); err != nil {
		t.Fatalf("status --json: %v:\n%s", err, out)
	}
	return &st
}

func mib(b int64) float64 { return float64(b) / (1 << 20) }

// lastBytes is the end of s, at most n bytes.
func lastBytes(s string, n int) string {
	if len(s) > n {
		return "..." + s[len(s)-n:]
	}
	return s
}

// ended counts the admitted streams node1 ended since base: closed idle, or
// failed after waiting the idle timeout for stream memory.
func ended(l, base *pb.LimitStatus) uint64 {
	return l.GetIdleClosed() - base.GetIdleClosed() + l.GetRefusedMemory() - base.GetRefusedMemory()
}
