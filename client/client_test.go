package client

import (
	"context"
	"errors"
	"testing"
	"time"

	pb "github.com/ddstore/ddstore/proto/ddstore/v1"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

func TestRetryable(t *testing.T) {
	peerDown, err := status.New(codes.Unavailable, "cluster B did not answer").
		WithDetails(&errdetails.ErrorInfo{Reason: pb.ReasonPeerClusterUnavailable, Domain: pb.ErrorDomain})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		err  error
		want bool
	}{
		{"node unavailable", status.Error(codes.Unavailable, "connection refused"), true},
		{"aborted pass", status.Error(codes.Aborted, "sweep aborted"), true},
		{"peer cluster unavailable", peerDown.Err(), false},
		{"not found", status.Error(codes.NotFound, "no file"), false},
		{"invalid argument", status.Error(codes.InvalidArgument, "bad name"), false},
		{"plain error", errors.New("boom"), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := Retryable(tt.err); got != tt.want {
				t.Fatalf("Retryable(%v) = %v, want %v", tt.err, got, tt.want)
			}
		})
	}
}

func TestAllLoopback(t *testing.T) {
	tests := []struct {
		addrs []string
		want  bool
	}{
		{[]string{"127.0.0.1:7000", "127.0.0.2:7000", "[::1]:7000", "localhost:7000"}, true},
		{[]string{"127.0.0.1:7000", "10.0.0.2:7000"}, false},
		{[]string{"node1.example:7000"}, false},
		{[]string{"[2001:db8::1]:7000"}, false},
	}
	for _, tt := range tests {
		if got := allLoopback(tt.addrs); got != tt.want {
			t.Errorf("allLoopback(%v) = %v, want %v", tt.addrs, got, tt.want)
		}
	}
}

func TestStartTimeout(t *testing.T) {
	for _, tc := range []struct {
		first, want time.Duration
	}{
		{0, 500 * time.Millisecond},
		{2 * time.Millisecond, 500 * time.Millisecond},
		{51 * time.Millisecond, 1020 * time.Millisecond},
		{150 * time.Millisecond, 3 * time.Second},
		{time.Hour, 3 * time.Second},
	} {
		if got := startTimeout(tc.first); got != tc.want {
			t.Errorf("startTimeout(%s) = %s, want %s", tc.first, got, tc.want)
		}
	}
}

func TestWatchdogLimit(t *testing.T) {
	ctx, w, stop := watch(context.Background(), time.Hour, "n1")
	defer stop()
	w.limit(50 * time.Millisecond)
	select {
	case <-ctx.Done():
		if !errors.Is(context.Cause(ctx), ErrNoProgress) {
			t.Fatalf("cause %v, want ErrNoProgress", context.Cause(ctx))
		}
	case <-time.After(5 * time.Second):
		t.Fatal("a watchdog limited to 50 ms did not fire within 5 s")
	}
	// No timeout stays no timeout.
	ctx, w, stop = watch(context.Background(), 0, "n1")
	defer stop()
	w.limit(time.Millisecond)
	time.Sleep(20 * time.Millisecond)
	if ctx.Err() != nil {
		t.Fatal("a watchdog without a timeout fired after limit")
	}
}
