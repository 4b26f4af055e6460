package limits

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// idleStream wraps a grpc.ServerStream with the idle deadline. Each RecvMsg
// or SendMsg runs the underlying call in a goroutine and waits for it or for
// the stream's context. A watchdog, one timer per stream, cancels that
// context (with the idle error as its cause) once a call has waited the idle
// timeout while no other call on the stream completed either, so a RecvMsg
// left waiting while the handler's SendMsg calls keep moving data is not
// idle; the waiting RecvMsg or SendMsg then returns codes.DeadlineExceeded
// at once, leaving the underlying call behind: it ends when gRPC tears the
// stream down after the handler returns. From then on every RecvMsg and
// SendMsg fails at once, so the stream is never used concurrently with the
// call left behind.
//
// Because that call may still complete, a handler must not reuse the message
// it passed to a RecvMsg that failed with the idle error. (SendMsg encodes
// its message before it waits for the peer, so its message is free again.)
//
// The per-message cost is one goroutine hand-off, two clock reads and a few
// atomic operations: a call marks when it began and ended, and the watchdog
// timer is armed
// only when it is not already, so a busy stream touches it about once per
// timeout, not once per message.
type idleStream struct {
	grpc.ServerStream
	ctx     context.Context
	cancel  context.CancelCauseFunc
	timeout time.Duration
	idleErr error
	born    time.Time // calls' start times are offsets from it

	expired    atomic.Bool
	idleClosed *atomic.Uint64

	// One lane per direction: gRPC allows a RecvMsg and a SendMsg to run at
	// once, from different goroutines, but not two of either.
	recv, send lane
	moved      atomic.Int64 // when a call last completed (offset from born); 0: never

	armed atomic.Bool // the watchdog timer is pending; set under mu
	mu    sync.Mutex  // guards the timer and ended
	timer *time.Timer
	ended bool // the handler returned
}

// lane is the reusable machinery of one direction.
type lane struct {
	since atomic.Int64 // when the call in flight began (offset from born, +1); 0: none
	done  chan outcome // capacity 1, so a call left behind never blocks; made on first use
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
		born:         time.Now(),
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
	}
	l.since.Store(int64(time.Since(s.born)) + 1)
	if !s.armed.Load() {
		s.arm(s.timeout)
	}
	go s.run(l.done, send, m)
	select {
	case o := <-l.done:
		s.finish(l)
		return o.get()
	case <-s.ctx.Done():
		select {
		case o := <-l.done: // finished just as the stream was closed
			s.finish(l)
			return o.get()
		default:
		}
		return s.ctxErr()
	}
}

// finish records that the call on l completed.
func (s *idleStream) finish(l *lane) {
	s.moved.Store(int64(time.Since(s.born)))
	l.since.Store(0)
}

// arm starts the watchdog timer unless it is pending.
func (s *idleStream) arm(d time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.armed.Load() || s.ended {
		return
	}
	s.armed.Store(true)
	if s.timer == nil {
		s.timer = time.AfterFunc(d, s.watch)
	} else {
		s.timer.Reset(d)
	}
}

// watch runs when the watchdog timer fires. A stream is quiet since the
// later of when its oldest call in flight began and when a call last
// completed; watch closes the stream once it has been quiet for the idle
// timeout, else re-arms for when it will have been, or, with no call in
// flight, stays unarmed: a call that begins after armed is cleared arms the
// timer itself.
func (s *idleStream) watch() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.armed.Store(false)
	if s.ended || s.ctx.Err() != nil { // over, or closed for another reason
		return
	}
	oldest := int64(0)
	for _, l := range []*lane{&s.recv, &s.send} {
		if t := l.since.Load(); t != 0 && (oldest == 0 || t < oldest) {
			oldest = t
		}
	}
	if oldest == 0 {
		return
	}
	quiet := time.Duration(max(oldest-1, s.moved.Load()))
	waited := time.Since(s.born) - quiet
	if waited < s.timeout {
		s.armed.Store(true)
		s.timer.Reset(s.timeout - waited)
		return
	}
	if s.expired.CompareAndSwap(false, true) {
		s.idleClosed.Add(1)
	}
	s.cancel(s.idleErr)
}

// end stops the watchdog; the interceptor calls it when the handler returns.
func (s *idleStream) end() {
	s.mu.Lock()
	s.ended = true
	if s.timer != nil {
		s.timer.Stop()
	}
	s.mu.Unlock()
	s.cancel(context.Canceled)
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
