package limits_test

import (
	"context"
	"fmt"
	"runtime"
	"sync"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"

	"github.com/ddstore/ddstore/server/limits"
)

// fakeStream is a grpc.ServerStream whose calls return at once (or run recv).
type fakeStream struct {
	ctx  context.Context
	recv func(m any) error
}

func newFake(caller string) *fakeStream {
	return &fakeStream{ctx: metadata.NewIncomingContext(context.Background(), metadata.Pairs("caller", caller))}
}

func (f *fakeStream) SetHeader(metadata.MD) error  { return nil }
func (f *fakeStream) SendHeader(metadata.MD) error { return nil }
func (f *fakeStream) SetTrailer(metadata.MD)       {}
func (f *fakeStream) Context() context.Context     { return f.ctx }
func (f *fakeStream) SendMsg(any) error            { return nil }
func (f *fakeStream) RecvMsg(m any) error {
	if f.recv != nil {
		return f.recv(m)
	}
	return nil
}

// mustPanic runs fn and returns what it panicked with.
func mustPanic(t *testing.T, fn func()) (v any) {
	t.Helper()
	defer func() { v = recover() }()
	fn()
	t.Fatal("did not panic")
	return nil
}

// Everything a call took is released when its handler panics, and a panic
// in the underlying RecvMsg reaches the handler's goroutine as it would
// without the idle wrapper.
func TestReleaseOnPanic(t *testing.T) {
	l := limits.New(limits.Config{}, callerFromMD, isHeavy)
	si, ui := l.StreamInterceptor(), l.UnaryInterceptor()
	for _, method := range []string{mStream, mHeavyStream} {
		info := &grpc.StreamServerInfo{FullMethod: method, IsClientStream: true, IsServerStream: true}
		v := mustPanic(t, func() {
			si(nil, newFake("alice"), info, func(any, grpc.ServerStream) error { panic("handler") })
		})
		if v != "handler" {
			t.Fatalf("panic value %v", v)
		}
		fs := newFake("alice")
		fs.recv = func(any) error { panic("codec") }
		v = mustPanic(t, func() {
			si(nil, fs, info, func(_ any, ss grpc.ServerStream) error { return ss.RecvMsg(nil) })
		})
		if v != "codec" {
			t.Fatalf("panic value %v", v)
		}
	}
	uinfo := &grpc.UnaryServerInfo{FullMethod: mHeavy}
	v := mustPanic(t, func() {
		ui(newFake("alice").ctx, nil, uinfo, func(context.Context, any) (any, error) { panic("unary") })
	})
	if v != "unary" {
		t.Fatalf("panic value %v", v)
	}
	wantStats(t, l, limits.Stats{PeakStreams: 1, AdmittedStreams: 4})
	// And the slots are really free again.
	if _, err := ui(newFake("alice").ctx, nil, uinfo, func(context.Context, any) (any, error) { return nil, nil }); err != nil {
		t.Fatal(err)
	}
}

// hold runs n streams through si as the callers named by name(i), each
// parked in its handler until the returned release is called; it returns
// once all n are admitted or refused, with the refusals.
func hold(si grpc.StreamServerInterceptor, method string, n int, name func(int) string) (release func(), refused []error) {
	info := &grpc.StreamServerInfo{FullMethod: method, IsClientStream: true, IsServerStream: true}
	stop := make(chan struct{})
	var admitted, ended sync.WaitGroup
	var mu sync.Mutex
	for i := 0; i < n; i++ {
		admitted.Add(1)
		ended.Add(1)
		go func() {
			defer ended.Done()
			in := false
			err := si(nil, newFake(name(i)), info, func(any, grpc.ServerStream) error {
				in = true
				admitted.Done()
				<-stop
				return nil
			})
			if !in {
				mu.Lock()
				refused = append(refused, err)
				mu.Unlock()
				admitted.Done()
			}
		}()
	}
	admitted.Wait()
	return func() { close(stop); ended.Wait() }, refused
}

// The zero Config means 64 streams per caller, 1024 on the node, 1 heavy
// call per caller.
func TestDefaults(t *testing.T) {
	l := limits.New(limits.Config{}, callerFromMD, isHeavy)
	si := l.StreamInterceptor()

	release, refused := hold(si, mStream, 65, func(int) string { return "alice" })
	if len(refused) != 1 {
		t.Fatalf("%d of 65 streams refused for one caller; want 1", len(refused))
	}
	wantStatus(t, refused[0], codes.ResourceExhausted, "too many open streams for caller alice (64); close some first")
	release()

	release, refused = hold(si, mStream, 1025, func(i int) string { return fmt.Sprint("caller", i%100) })
	if len(refused) != 1 {
		t.Fatalf("%d of 1025 streams refused on the node; want 1", len(refused))
	}
	wantStatus(t, refused[0], codes.ResourceExhausted, "node has 1024 open streams; try again later")
	release()

	release, refused = hold(si, mHeavyStream, 2, func(int) string { return "alice" })
	if len(refused) != 1 {
		t.Fatalf("%d of 2 heavy streams refused for one caller; want 1", len(refused))
	}
	wantStatus(t, refused[0], codes.ResourceExhausted, "caller alice already runs 1 /limitstest.Test/HeavyStream call(s)")
	release()

	wantStats(t, l, limits.Stats{PeakStreams: 1024, AdmittedStreams: 64 + 1024 + 1, RefusedStreams: 2, RefusedHeavy: 1})
}

// Many goroutines taking and releasing slots concurrently leave the books
// balanced, and no more than the caps are ever held.
func TestConcurrentBooks(t *testing.T) {
	const perCaller, node = 3, 8
	l := limits.New(limits.Config{StreamsPerCaller: perCaller, Streams: node, HeavyPerCaller: 1}, callerFromMD, isHeavy)
	si, ui := l.StreamInterceptor(), l.UnaryInterceptor()
	var wg sync.WaitGroup
	var mu sync.Mutex
	inFlight := map[string]int{}
	heavyIn := map[string]int{}
	total := 0
	for g := 0; g < 16; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			who := fmt.Sprint("c", g%4)
			for i := 0; i < 200; i++ {
				if i%3 == 0 {
					ui(newFake(who).ctx, nil, &grpc.UnaryServerInfo{FullMethod: mHeavy}, func(context.Context, any) (any, error) {
						mu.Lock()
						heavyIn[who]++
						n := heavyIn[who]
						mu.Unlock()
						if n > 1 {
							t.Errorf("%s runs %d heavy calls", who, n)
						}
						runtime.Gosched()
						mu.Lock()
						heavyIn[who]--
						mu.Unlock()
						return nil, nil
					})
					continue
				}
				si(nil, newFake(who), &grpc.StreamServerInfo{FullMethod: mStream}, func(any, grpc.ServerStream) error {
					mu.Lock()
					inFlight[who]++
					total++
					mine, all := inFlight[who], total
					mu.Unlock()
					if mine > perCaller || all > node {
						t.Errorf("%s holds %d streams, node %d", who, mine, all)
					}
					runtime.Gosched()
					mu.Lock()
					inFlight[who]--
					total--
					mu.Unlock()
					return nil
				})
			}
		}()
	}
	wg.Wait()
	s := l.Stats()
	if s.OpenStreams != 0 || s.RunningHeavy != 0 || s.Callers != 0 {
		t.Fatalf("books not balanced: %+v", s)
	}
	if s.PeakStreams > node {
		t.Fatalf("peak %d above the node cap %d", s.PeakStreams, node)
	}
	t.Logf("%+v", s)
}
