package limits

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// idleStream wraps a grpc.ServerStream with the idle deadline. Each RecvMsg
// or SendMsg runs the underlying call in a goroutine and waits for it, for
// the deadline, and for the stream's context. When the deadline passes first
// the stream's context is cancelled (with the idle error as its cause) and
// the call returns codes.DeadlineExceeded at once, leaving the underlying
// call behind: it ends when gRPC tears the stream down after the handler
// returns. From then on every RecvMsg and SendMsg fails at once, so the
// stream is never used concurrently with the call left behind.
//
// Because that call may still complete, a handler must not reuse the message
// it passed to a RecvMsg that failed with the idle error. (SendMsg encodes
// its message before it waits for the peer, so its message is free again.)
type idleStream struct {
	grpc.ServerStream
	ctx     context.Context
	cancel  context.CancelCauseFunc
	timeout time.Duration
	idleErr error

	expired    atomic.Bool
	idleClosed *atomic.Uint64

	// One lane per direction: gRPC allows a RecvMsg and a SendMsg to run at
	// once, from different goroutines, but not two of either.
	recv, send lane
}

// lane is the reusable machinery of one direction: a timer and the channel
// the goroutine running the underlying call reports on. Both are made on
// first use.
type lane struct {
	timer *time.Timer
	done  chan outcome // capacity 1, so a call left behind never blocks
}

type outcome struct {
	err      error
	panicked bool
	panicVal any
}

func newIdleStream(ss grpc.ServerStream, timeout time.Duration, idleClosed *atomic.Uint64) *idleStream {
	ctx, cancel := context.WithCancelCause(ss.Context())
	return &idleStream{
		ServerStream: ss,
		ctx:          ctx,
		cancel:       cancel,
		timeout:      timeout,
		idleErr:      status.Errorf(codes.DeadlineExceeded, "stream idle for %s: no bytes moved; closed", fmtDuration(timeout)),
		idleClosed:   idleClosed,
	}
}

// fmtDuration writes whole seconds as "60s" rather than time's "1m0s".
func fmtDuration(d time.Duration) string {
	if d >= time.Second && d%time.Second == 0 {
		return fmt.Sprintf("%ds", d/time.Second)
	}
	return d.String()
}

// Context returns the stream's context, which the idle deadline cancels.
func (s *idleStream) Context() context.Context { return s.ctx }

// RecvMsg receives a message, or fails when the peer sends nothing for the
// idle timeout.
func (s *idleStream) RecvMsg(m any) error { return s.do(&s.recv, false, m) }

// SendMsg sends a message, or fails when the peer takes nothing for the idle
// timeout (flow control keeps the message from leaving).
func (s *idleStream) SendMsg(m any) error { return s.do(&s.send, true, m) }

func (s *idleStream) do(l *lane, send bool, m any) error {
	if s.ctx.Err() != nil {
		return s.ctxErr()
	}
	if l.done == nil {
		l.done = make(chan outcome, 1)
		l.timer = time.NewTimer(s.timeout)
	} else {
		l.timer.Reset(s.timeout)
	}
	go s.run(l.done, send, m)
	select {
	case o := <-l.done:
		l.timer.Stop()
		return o.get()
	case <-l.timer.C:
		select {
		case o := <-l.done: // finished just as the timer fired
			return o.get()
		default:
		}
		s.expire()
		return s.idleErr
	case <-s.ctx.Done():
		l.timer.Stop()
		return s.ctxErr()
	}
}

// run performs the underlying call and reports how it ended, a panic
// included, so that do re-panics on the handler's goroutine as an unwrapped
// stream would.
func (s *idleStream) run(done chan<- outcome, send bool, m any) {
	o := outcome{panicked: true}
	defer func() {
		if o.panicked {
			o.panicVal = recover()
		}
		done <- o
	}()
	var err error
	if send {
		err = s.ServerStream.SendMsg(m)
	} else {
		err = s.ServerStream.RecvMsg(m)
	}
	o = outcome{err: err}
}

func (o outcome) get() error {
	if o.panicked {
		panic(o.panicVal)
	}
	return o.err
}

// expire closes the stream for idleness; the first time it counts.
func (s *idleStream) expire() {
	if s.expired.CompareAndSwap(false, true) {
		s.idleClosed.Add(1)
	}
	s.cancel(s.idleErr)
}

// ctxErr is what a call on a stream whose context is done returns.
func (s *idleStream) ctxErr() error {
	if s.expired.Load() {
		return s.idleErr
	}
	return status.FromContextError(s.ctx.Err()).Err()
}

// result is what the interceptor returns for the handler's error: a handler
// that, after the idle deadline, returns nil or the bare cancellation still
// reports the idle error to the client.
func (s *idleStream) result(err error) error {
	if !s.expired.Load() {
		return err
	}
	if err == nil || errors.Is(err, context.Canceled) || status.Code(err) == codes.Canceled {
		return s.idleErr
	}
	return err
}
