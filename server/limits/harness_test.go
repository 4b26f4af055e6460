package limits_test

import (
	"context"
	"io"
	"net"
	"runtime"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/ddstore/ddstore/server/limits"
)

// The test service, registered with gRPC's generic API:
//
//	/limitstest.Test/Unary        unary, light
//	/limitstest.Test/Heavy        unary, heavy
//	/limitstest.Test/Stream       bidi stream, light
//	/limitstest.Test/HeavyStream  bidi stream, heavy
//
// Messages are wrapperspb.BytesValue.
const svc = "limitstest.Test"

const (
	mUnary       = "/" + svc + "/Unary"
	mHeavy       = "/" + svc + "/Heavy"
	mStream      = "/" + svc + "/Stream"
	mHeavyStream = "/" + svc + "/HeavyStream"
)

// handlers are what the test service does; nil fields echo.
type handlers struct {
	unary  func(ctx context.Context, in *wrapperspb.BytesValue) (*wrapperspb.BytesValue, error)
	heavy  func(ctx context.Context, in *wrapperspb.BytesValue) (*wrapperspb.BytesValue, error)
	stream func(ss grpc.ServerStream) error
}

func echoUnary(_ context.Context, in *wrapperspb.BytesValue) (*wrapperspb.BytesValue, error) {
	return in, nil
}

// echoStream sends back every message until the client closes its side.
func echoStream(ss grpc.ServerStream) error {
	for {
		var m wrapperspb.BytesValue
		if err := ss.RecvMsg(&m); err == io.EOF {
			return nil
		} else if err != nil {
			return err
		}
		if err := ss.SendMsg(&m); err != nil {
			return err
		}
	}
}

func unaryMethod(name string, fn func(context.Context, *wrapperspb.BytesValue) (*wrapperspb.BytesValue, error)) grpc.MethodDesc {
	if fn == nil {
		fn = echoUnary
	}
	return grpc.MethodDesc{
		MethodName: name,
		Handler: func(_ any, ctx context.Context, dec func(any) error, icpt grpc.UnaryServerInterceptor) (any, error) {
			in := new(wrapperspb.BytesValue)
			if err := dec(in); err != nil {
				return nil, err
			}
			if icpt == nil {
				return fn(ctx, in)
			}
			info := &grpc.UnaryServerInfo{FullMethod: "/" + svc + "/" + name}
			return icpt(ctx, in, info, func(ctx context.Context, req any) (any, error) {
				return fn(ctx, req.(*wrapperspb.BytesValue))
			})
		},
	}
}

func serviceDesc(h *handlers) *grpc.ServiceDesc {
	stream := h.stream
	if stream == nil {
		stream = echoStream
	}
	sh := func(_ any, ss grpc.ServerStream) error { return stream(ss) }
	return &grpc.ServiceDesc{
		ServiceName: svc,
		HandlerType: (*any)(nil),
		Methods:     []grpc.MethodDesc{unaryMethod("Unary", h.unary), unaryMethod("Heavy", h.heavy)},
		Streams: []grpc.StreamDesc{
			{StreamName: "Stream", Handler: sh, ServerStreams: true, ClientStreams: true},
			{StreamName: "HeavyStream", Handler: sh, ServerStreams: true, ClientStreams: true},
		},
	}
}

// callerFromMD names the caller from the "caller" metadata key; without it
// the Limiter falls back to the peer's IP.
func callerFromMD(ctx context.Context) string {
	if v := metadata.ValueFromIncomingContext(ctx, "caller"); len(v) > 0 {
		return v[0]
	}
	return ""
}

func isHeavy(fullMethod string) bool { return strings.HasPrefix(fullMethod, "/"+svc+"/Heavy") }

// start serves h behind a Limiter for cfg on a 127.0.0.1 socket and returns
// the Limiter and a client connection. The client's flow-control windows are
// pinned at 64 KiB, so a client that does not read stalls the server soon.
func start(t testing.TB, cfg limits.Config, h *handlers) (*limits.Limiter, *grpc.ClientConn) {
	t.Helper()
	l := limits.New(cfg, callerFromMD, isHeavy)
	srv := grpc.NewServer(
		grpc.ChainUnaryInterceptor(l.UnaryInterceptor()),
		grpc.ChainStreamInterceptor(l.StreamInterceptor()),
	)
	srv.RegisterService(serviceDesc(h), h)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(lis)
	conn, err := grpc.NewClient(lis.Addr().String(),
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithInitialWindowSize(64<<10),
		grpc.WithInitialConnWindowSize(64<<10),
	)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		conn.Close()
		srv.Stop()
	})
	return l, conn
}

func asCaller(ctx context.Context, caller string) context.Context {
	if caller == "" {
		return ctx
	}
	return metadata.AppendToOutgoingContext(ctx, "caller", caller)
}

// openStream opens a bidi stream to method as caller ("" sends no caller
// metadata). The stream is cancelled when the test ends.
func openStream(t testing.TB, conn *grpc.ClientConn, method, caller string) grpc.ClientStream {
	t.Helper()
	ctx, cancel := context.WithCancel(asCaller(context.Background(), caller))
	t.Cleanup(cancel)
	cs, err := conn.NewStream(ctx, &grpc.StreamDesc{ServerStreams: true, ClientStreams: true}, method)
	if err != nil {
		t.Fatal(err)
	}
	return cs
}

// roundTrip sends one message on an echo stream and reads it back.
func roundTrip(cs grpc.ClientStream) error {
	if err := cs.SendMsg(wrapperspb.Bytes([]byte("ping"))); err != nil && err != io.EOF {
		return err
	}
	var m wrapperspb.BytesValue
	return cs.RecvMsg(&m)
}

// mustAdmit opens an echo stream and proves, with one round trip, that the
// server admitted it (and so counts it).
func mustAdmit(t testing.TB, conn *grpc.ClientConn, method, caller string) grpc.ClientStream {
	t.Helper()
	cs := openStream(t, conn, method, caller)
	if err := roundTrip(cs); err != nil {
		t.Fatalf("stream %s for %q: %v", method, caller, err)
	}
	return cs
}

// closeStream half-closes an echo stream and waits for the handler to end:
// the client sees the status only after the interceptor has released.
func closeStream(t testing.TB, cs grpc.ClientStream) {
	t.Helper()
	if err := cs.CloseSend(); err != nil {
		t.Fatal(err)
	}
	var m wrapperspb.BytesValue
	if err := cs.RecvMsg(&m); err != io.EOF {
		t.Fatalf("closing stream: want io.EOF, got %v", err)
	}
}

// wantStatus checks err's code and that its message contains msg.
func wantStatus(t testing.TB, err error, code codes.Code, msg string) {
	t.Helper()
	st, ok := status.FromError(err)
	if !ok || st.Code() != code || !strings.Contains(st.Message(), msg) {
		t.Fatalf("want %v %q, got %v", code, msg, err)
	}
}

func wantStats(t testing.TB, l *limits.Limiter, want limits.Stats) {
	t.Helper()
	if got := l.Stats(); got != want {
		t.Fatalf("stats:\n got %+v\nwant %+v", got, want)
	}
}

// waitNoLeftBehind waits until no goroutine runs an underlying RecvMsg or
// SendMsg that an idle deadline left behind: gRPC must end them when it
// tears the stream down after the handler returns.
func waitNoLeftBehind(t testing.TB) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if !strings.Contains(string(buf[:n]), "limits.(*idleStream).run") {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("underlying call still running after the stream ended:\n%s", buf[:n])
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// recvErr reads from cs until it fails and returns the failure.
func recvErr(cs grpc.ClientStream) error {
	for {
		var m wrapperspb.BytesValue
		if err := cs.RecvMsg(&m); err != nil {
			return err
		}
	}
}

// within receives from ch, or fails the test after d.
func within[T any](t testing.TB, ch <-chan T, d time.Duration, what string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(d):
		t.Fatalf("%s: timed out after %v", what, d)
		panic("unreachable")
	}
}
