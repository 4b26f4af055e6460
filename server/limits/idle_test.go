package limits_test

import (
	"context"
	"io"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/ddstore/ddstore/server/limits"
)

const idle = 200 * time.Millisecond

const idleMsg = "stream idle for 200ms: no bytes moved; closed"

// slack bounds how late an idle close may come on a loaded (-race) machine.
const slack = 3 * time.Second

// what a handler saw when the idle deadline hit it
type seen struct {
	err    error         // from the call the deadline ended
	ctxErr error         // the stream context's Err right then
	cause  error         // and its cause
	waited time.Duration // how long the call waited
}

// (a) A client that opens a stream and sends nothing is closed after the idle
// timeout with DeadlineExceeded, and the handler's context is cancelled.
func TestIdleRecv(t *testing.T) {
	cases := []struct {
		name    string
		handler func(ss grpc.ServerStream, report chan<- seen) error
	}{{
		// The handler waits in RecvMsg and returns its error.
		name: "blocked in RecvMsg",
		handler: func(ss grpc.ServerStream, report chan<- seen) error {
			began := time.Now()
			err := ss.RecvMsg(new(wrapperspb.BytesValue))
			ctx := ss.Context()
			report <- seen{err, ctx.Err(), context.Cause(ctx), time.Since(began)}
			return err
		},
	}, {
		// The handler only watches its context; another goroutine
		// receives. It stops because the deadline cancels the context.
		name: "watching ctx",
		handler: func(ss grpc.ServerStream, report chan<- seen) error {
			began := time.Now()
			errc := make(chan error, 1)
			go func() { errc <- ss.RecvMsg(new(wrapperspb.BytesValue)) }()
			ctx := ss.Context()
			<-ctx.Done()
			waited := time.Since(began)
			report <- seen{<-errc, ctx.Err(), context.Cause(ctx), waited}
			return context.Cause(ctx)
		},
	}, {
		// The handler swallows the error and returns nil; the client is
		// still told why its stream ended.
		name: "returns nil",
		handler: func(ss grpc.ServerStream, report chan<- seen) error {
			began := time.Now()
			err := ss.RecvMsg(new(wrapperspb.BytesValue))
			ctx := ss.Context()
			report <- seen{err, ctx.Err(), context.Cause(ctx), time.Since(began)}
			return nil
		},
	}}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			report := make(chan seen, 1)
			l, conn := start(t, limits.Config{IdleTimeout: idle}, &handlers{
				stream: func(ss grpc.ServerStream) error { return tc.handler(ss, report) },
			})
			began := time.Now()
			cs := openStream(t, conn, mStream, "alice")

			s := within(t, report, idle+slack, "idle close")
			wantStatus(t, s.err, codes.DeadlineExceeded, idleMsg)
			if s.ctxErr == nil {
				t.Fatal("handler's context not cancelled when RecvMsg gave up")
			}
			wantStatus(t, s.cause, codes.DeadlineExceeded, idleMsg)
			if s.waited < idle {
				t.Fatalf("closed after %v, before the %v idle timeout", s.waited, idle)
			}

			err := recvErr(cs)
			wantStatus(t, err, codes.DeadlineExceeded, idleMsg)
			if d := time.Since(began); d < idle || d > idle+slack {
				t.Fatalf("client saw the close after %v; want about %v", d, idle)
			}
			wantStats(t, l, limits.Stats{PeakStreams: 1, AdmittedStreams: 1, IdleClosed: 1})
			waitNoLeftBehind(t)
		})
	}
}

// (b) A client that does not read a server that keeps sending: flow control
// blocks SendMsg, and the stream is closed after the idle timeout.
func TestIdleSend(t *testing.T) {
	type flood struct {
		sent int
		seen
	}
	report := make(chan flood, 1)
	l, conn := start(t, limits.Config{IdleTimeout: idle}, &handlers{
		stream: func(ss grpc.ServerStream) error {
			msg := wrapperspb.Bytes(make([]byte, 32<<10))
			for sent := 0; ; sent++ {
				began := time.Now()
				if err := ss.SendMsg(msg); err != nil {
					ctx := ss.Context()
					report <- flood{sent, seen{err, ctx.Err(), context.Cause(ctx), time.Since(began)}}
					return err
				}
			}
		},
	})
	cs := openStream(t, conn, mStream, "alice")
	if err := cs.SendMsg(wrapperspb.Bytes(nil)); err != nil { // the client does not read
		t.Fatal(err)
	}

	f := within(t, report, 10*time.Second, "idle close of a stalled sender")
	wantStatus(t, f.err, codes.DeadlineExceeded, idleMsg)
	if f.ctxErr == nil {
		t.Fatal("handler's context not cancelled when SendMsg gave up")
	}
	if f.waited < idle || f.waited > idle+slack {
		t.Fatalf("SendMsg gave up after %v; want about %v", f.waited, idle)
	}
	if f.sent == 0 {
		t.Fatal("no message was sent before flow control stalled the stream")
	}
	t.Logf("%d messages of 32 KiB sent before flow control stalled SendMsg", f.sent)

	// Now the client reads: what was queued, then the idle status.
	got := 0
	for {
		var m wrapperspb.BytesValue
		err := cs.RecvMsg(&m)
		if err != nil {
			wantStatus(t, err, codes.DeadlineExceeded, idleMsg)
			break
		}
		got++
	}
	if got < f.sent {
		t.Fatalf("client read %d messages, server had sent %d", got, f.sent)
	}
	wantStats(t, l, limits.Stats{PeakStreams: 1, AdmittedStreams: 1, IdleClosed: 1})
	waitNoLeftBehind(t)
}

// (c) A stream that keeps moving messages is not closed, however long it
// lives; nor is one whose handler works longer than the idle timeout between
// messages, because only waiting on the peer counts.
func TestIdleActiveStreamsStayOpen(t *testing.T) {
	t.Run("message every 50ms for 1s", func(t *testing.T) {
		// Ten gaps per timeout, so that scheduling noise on a loaded
		// machine cannot pass for idleness.
		l, conn := start(t, limits.Config{IdleTimeout: 500 * time.Millisecond}, &handlers{})
		cs := mustAdmit(t, conn, mStream, "alice")
		began := time.Now()
		tick := time.NewTicker(50 * time.Millisecond)
		defer tick.Stop()
		for time.Since(began) < time.Second {
			<-tick.C
			if err := roundTrip(cs); err != nil {
				t.Fatalf("after %v: %v", time.Since(began), err)
			}
		}
		closeStream(t, cs)
		wantStats(t, l, limits.Stats{PeakStreams: 1, AdmittedStreams: 1})
	})
	t.Run("RecvMsg waits 3 timeouts while sends flow", func(t *testing.T) {
		// The handler sends every 25ms for 1.5s while its RecvMsg waits
		// for the client's CloseSend at the end. The timeout is 500ms here,
		// so that only a stall of the whole process, not scheduling noise,
		// could pass for idleness.
		const timeout = 500 * time.Millisecond
		const n = 60
		l, conn := start(t, limits.Config{IdleTimeout: timeout}, &handlers{
			stream: func(ss grpc.ServerStream) error {
				errc := make(chan error, 1)
				go func() { errc <- ss.RecvMsg(new(wrapperspb.BytesValue)) }()
				for i := 0; i < n; i++ {
					if err := ss.SendMsg(wrapperspb.Bytes([]byte("tick"))); err != nil {
						return err
					}
					time.Sleep(25 * time.Millisecond)
				}
				if err := <-errc; err != io.EOF {
					return err
				}
				return nil
			},
		})
		cs := openStream(t, conn, mStream, "alice")
		for i := 0; i < n; i++ {
			var m wrapperspb.BytesValue
			if err := cs.RecvMsg(&m); err != nil {
				t.Fatalf("message %d: %v", i, err)
			}
		}
		closeStream(t, cs)
		wantStats(t, l, limits.Stats{PeakStreams: 1, AdmittedStreams: 1})
	})
	t.Run("handler works 500ms between messages", func(t *testing.T) {
		const work = 500 * time.Millisecond
		l, conn := start(t, limits.Config{IdleTimeout: idle}, &handlers{
			stream: func(ss grpc.ServerStream) error {
				for {
					time.Sleep(work) // working, not waiting on the peer
					var m wrapperspb.BytesValue
					if err := ss.RecvMsg(&m); err == io.EOF {
						return nil
					} else if err != nil {
						return err
					}
					time.Sleep(work)
					if err := ss.SendMsg(&m); err != nil {
						return err
					}
				}
			},
		})
		cs := openStream(t, conn, mStream, "alice")
		// The client sends at once and then waits for each reply, so the
		// server's RecvMsg never waits long; its SendMsg never does.
		for i := 0; i < 2; i++ {
			if err := roundTrip(cs); err != nil {
				t.Fatalf("message %d: %v", i, err)
			}
		}
		closeStream(t, cs)
		wantStats(t, l, limits.Stats{PeakStreams: 1, AdmittedStreams: 1})
	})
}

// A negative IdleTimeout disables the deadline: the handler gets the stream
// gRPC made, and a silent client is not closed.
func TestIdleDisabled(t *testing.T) {
	type got struct {
		err    error
		ctxErr error
	}
	report := make(chan got, 1)
	l, conn := start(t, limits.Config{IdleTimeout: -1}, &handlers{
		stream: func(ss grpc.ServerStream) error {
			err := ss.RecvMsg(new(wrapperspb.BytesValue))
			report <- got{err, ss.Context().Err()}
			if err == io.EOF {
				return nil
			}
			return err
		},
	})
	cs := openStream(t, conn, mStream, "alice")
	select {
	case g := <-report:
		t.Fatalf("handler's RecvMsg returned %v with the idle deadline disabled", g.err)
	case <-time.After(2 * idle):
	}
	if err := cs.CloseSend(); err != nil {
		t.Fatal(err)
	}
	g := within(t, report, slack, "RecvMsg after CloseSend")
	if g.err != io.EOF || g.ctxErr != nil {
		t.Fatalf("got %v, ctx %v; want io.EOF on a live context", g.err, g.ctxErr)
	}
	if err := recvErr(cs); err != io.EOF {
		t.Fatalf("client: want io.EOF, got %v", err)
	}
	wantStats(t, l, limits.Stats{PeakStreams: 1, AdmittedStreams: 1})
}
