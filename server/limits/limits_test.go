package limits_test

import (
	"context"
	"io"
	"sync/atomic"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/ddstore/ddstore/server/limits"
)

// countingEcho is an echo stream handler that counts how many times it ran,
// so a test can tell a refusal came before the handler.
func countingEcho(n *atomic.Int64) func(grpc.ServerStream) error {
	return func(ss grpc.ServerStream) error {
		n.Add(1)
		return echoStream(ss)
	}
}

// (d) Caller A opening StreamsPerCaller+1 streams is refused the last one
// while caller B still opens streams; closing one of A's lets A open again.
func TestStreamsPerCaller(t *testing.T) {
	var ran atomic.Int64
	l, conn := start(t, limits.Config{StreamsPerCaller: 3}, &handlers{stream: countingEcho(&ran)})

	var alice []grpc.ClientStream
	for i := 0; i < 3; i++ {
		alice = append(alice, mustAdmit(t, conn, mStream, "alice"))
	}
	err := roundTrip(openStream(t, conn, mStream, "alice"))
	wantStatus(t, err, codes.ResourceExhausted, "too many open streams for caller alice (3); close some first")
	if n := ran.Load(); n != 3 {
		t.Fatalf("handler ran %d times; the refused stream must not reach it", n)
	}

	// Another caller is not affected, on the same connection.
	for i := 0; i < 3; i++ {
		mustAdmit(t, conn, mStream, "bob")
	}
	// Heavy streams count against the same cap.
	err = roundTrip(openStream(t, conn, mHeavyStream, "alice"))
	wantStatus(t, err, codes.ResourceExhausted, "too many open streams for caller alice (3)")

	wantStats(t, l, limits.Stats{OpenStreams: 6, PeakStreams: 6, AdmittedStreams: 6, RefusedStreams: 2, Callers: 2})

	closeStream(t, alice[0])
	mustAdmit(t, conn, mStream, "alice")
	wantStats(t, l, limits.Stats{OpenStreams: 6, PeakStreams: 6, AdmittedStreams: 7, RefusedStreams: 2, Callers: 2})
}

// (d) The node-wide cap refuses any caller once the node holds Streams.
func TestNodeStreams(t *testing.T) {
	var ran atomic.Int64
	l, conn := start(t, limits.Config{Streams: 3}, &handlers{stream: countingEcho(&ran)})

	a := mustAdmit(t, conn, mStream, "alice")
	mustAdmit(t, conn, mStream, "alice")
	mustAdmit(t, conn, mStream, "bob")
	err := roundTrip(openStream(t, conn, mStream, "carol"))
	wantStatus(t, err, codes.ResourceExhausted, "node has 3 open streams; try again later")
	if n := ran.Load(); n != 3 {
		t.Fatalf("handler ran %d times; the refused stream must not reach it", n)
	}
	wantStats(t, l, limits.Stats{OpenStreams: 3, PeakStreams: 3, AdmittedStreams: 3, RefusedStreams: 1, Callers: 2})

	closeStream(t, a)
	mustAdmit(t, conn, mStream, "carol")
	wantStats(t, l, limits.Stats{OpenStreams: 3, PeakStreams: 3, AdmittedStreams: 4, RefusedStreams: 1, Callers: 3})
}

// Without a caller name the remote IP is the caller.
func TestCallerFallsBackToPeerIP(t *testing.T) {
	l, conn := start(t, limits.Config{StreamsPerCaller: 1}, &handlers{})
	mustAdmit(t, conn, mStream, "")
	err := roundTrip(openStream(t, conn, mStream, ""))
	wantStatus(t, err, codes.ResourceExhausted, "too many open streams for caller 127.0.0.1 (1); close some first")
	mustAdmit(t, conn, mStream, "alice")
	wantStats(t, l, limits.Stats{OpenStreams: 2, PeakStreams: 2, AdmittedStreams: 2, RefusedStreams: 1, Callers: 2})
}

// Negative caps mean unlimited.
func TestUnlimitedStreams(t *testing.T) {
	l, conn := start(t, limits.Config{StreamsPerCaller: -1, Streams: -1}, &handlers{})
	const n = 100 // more than a small cap, fewer than gRPC's per-connection limit
	for i := 0; i < n; i++ {
		mustAdmit(t, conn, mStream, "alice")
	}
	wantStats(t, l, limits.Stats{OpenStreams: n, PeakStreams: n, AdmittedStreams: n, Callers: 1})
}

// (e) Heavy unary calls beyond HeavyPerCaller are refused while one runs and
// allowed after it ends; light calls and other callers are not affected; a
// heavy streaming method takes a heavy slot too.
func TestHeavy(t *testing.T) {
	started := make(chan string, 4)
	release := make(chan struct{})
	var ran atomic.Int64
	heavy := func(ctx context.Context, in *wrapperspb.BytesValue) (*wrapperspb.BytesValue, error) {
		ran.Add(1)
		started <- string(in.GetValue())
		<-release
		return in, nil
	}
	l, conn := start(t, limits.Config{}, &handlers{heavy: heavy}) // HeavyPerCaller 0 -> 1

	call := func(method, caller string) error {
		out := new(wrapperspb.BytesValue)
		return conn.Invoke(asCaller(context.Background(), caller), method, wrapperspb.Bytes([]byte(caller)), out)
	}
	done := make(chan error, 4)
	go func() { done <- call(mHeavy, "alice") }()
	within(t, started, slack, "alice's first heavy call")

	const refusal = "caller alice already runs 1 /limitstest.Test/Heavy call(s); wait for it to finish"
	wantStatus(t, call(mHeavy, "alice"), codes.ResourceExhausted, refusal)
	if n := ran.Load(); n != 1 {
		t.Fatalf("heavy handler ran %d times; the refused call must not reach it", n)
	}
	// A heavy streaming method counts as heavy.
	err := roundTrip(openStream(t, conn, mHeavyStream, "alice"))
	wantStatus(t, err, codes.ResourceExhausted, refusal)
	// Light calls and streams are not held back.
	if err := call(mUnary, "alice"); err != nil {
		t.Fatal(err)
	}
	s := mustAdmit(t, conn, mStream, "alice")
	closeStream(t, s)
	// Another caller may run its own heavy call meanwhile.
	go func() { done <- call(mHeavy, "bob") }()
	within(t, started, slack, "bob's heavy call")
	wantStats(t, l, limits.Stats{PeakStreams: 1, AdmittedStreams: 1, RunningHeavy: 2, RefusedHeavy: 2, Callers: 2})

	close(release)
	for i := 0; i < 2; i++ {
		if err := within(t, done, slack, "heavy calls ending"); err != nil {
			t.Fatal(err)
		}
	}
	wantStats(t, l, limits.Stats{PeakStreams: 1, AdmittedStreams: 1, RefusedHeavy: 2})

	// Once it ended, alice may run another.
	if err := call(mHeavy, "alice"); err != nil {
		t.Fatal(err)
	}
	<-started

	// A heavy stream holds the slot against heavy unary calls.
	hs := mustAdmit(t, conn, mHeavyStream, "alice")
	wantStatus(t, call(mHeavy, "alice"), codes.ResourceExhausted,
		"caller alice already runs 1 /limitstest.Test/HeavyStream call(s); wait for it to finish")
	closeStream(t, hs)
	if err := call(mHeavy, "alice"); err != nil {
		t.Fatal(err)
	}
	wantStats(t, l, limits.Stats{PeakStreams: 1, AdmittedStreams: 2, RefusedHeavy: 3})
}

// HeavyPerCaller above 1 lets that many run; the refusal names them all.
func TestHeavyPerCaller(t *testing.T) {
	release := make(chan struct{})
	started := make(chan struct{}, 3)
	l, conn := start(t, limits.Config{HeavyPerCaller: 2}, &handlers{
		heavy: func(ctx context.Context, in *wrapperspb.BytesValue) (*wrapperspb.BytesValue, error) {
			started <- struct{}{}
			<-release
			return in, nil
		},
		stream: func(ss grpc.ServerStream) error {
			started <- struct{}{}
			<-release
			return nil
		},
	})
	ctx := asCaller(context.Background(), "alice")
	done := make(chan error, 2)
	go func() { done <- conn.Invoke(ctx, mHeavy, wrapperspb.Bytes(nil), new(wrapperspb.BytesValue)) }()
	within(t, started, slack, "first heavy call")
	hs := openStream(t, conn, mHeavyStream, "alice")
	within(t, started, slack, "heavy stream")

	err := conn.Invoke(ctx, mHeavy, wrapperspb.Bytes(nil), new(wrapperspb.BytesValue))
	wantStatus(t, err, codes.ResourceExhausted,
		"caller alice already runs 1 /limitstest.Test/Heavy, 1 /limitstest.Test/HeavyStream call(s); wait for one to finish")
	wantStats(t, l, limits.Stats{OpenStreams: 1, PeakStreams: 1, AdmittedStreams: 1, RunningHeavy: 2, RefusedHeavy: 1, Callers: 1})

	close(release)
	if err := within(t, done, slack, "heavy call ending"); err != nil {
		t.Fatal(err)
	}
	if err := recvErr(hs); err != io.EOF {
		t.Fatal(err)
	}
	wantStats(t, l, limits.Stats{PeakStreams: 1, AdmittedStreams: 1, RefusedHeavy: 1})
}

// Exempt callers (a cluster's own nodes) are held to the node-wide cap
// only, and run heavy calls without a per-caller cap.
func TestExempt(t *testing.T) {
	exempt := func(ctx context.Context) bool { return callerFromMD(ctx) == "node" }
	l, conn := start(t, limits.Config{StreamsPerCaller: 2, Streams: 6, Exempt: exempt}, &handlers{})
	for i := 0; i < 5; i++ {
		mustAdmit(t, conn, mStream, "node")
	}
	mustAdmit(t, conn, mStream, "alice")
	err := roundTrip(openStream(t, conn, mStream, "node"))
	wantStatus(t, err, codes.ResourceExhausted, "node has 6 open streams; try again later")
	wantStats(t, l, limits.Stats{OpenStreams: 6, PeakStreams: 6, AdmittedStreams: 6, RefusedStreams: 1, Callers: 2})
}
