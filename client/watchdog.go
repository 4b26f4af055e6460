package client

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"
)

// watchdog ends a transfer that makes no progress: its context is cancelled
// with an ErrNoProgress cause when tick was not called for timeout.
type watchdog struct {
	last    atomic.Int64 // unix nanoseconds of the last tick
	paused  atomic.Int32 // above 0: waiting on the caller, not the node
	timeout atomic.Int64 // nanoseconds
	node    string
	stop    chan struct{}
}

// watch returns a context that ends like parent, or when the returned
// watchdog sees no tick for timeout (0 or less: never). Call stop when the
// transfer ends.
func watch(parent context.Context, timeout time.Duration, node string) (context.Context, *watchdog, func()) {
	ctx, cancel := context.WithCancelCause(parent)
	w := &watchdog{node: node, stop: make(chan struct{})}
	w.timeout.Store(int64(timeout))
	w.tick()
	if timeout > 0 {
		go func() {
			t := time.NewTicker(min(max(timeout/8, time.Millisecond), maxCheckEvery))
			defer t.Stop()
			for {
				select {
				case <-w.stop:
					return
				case <-ctx.Done():
					return
				case now := <-t.C:
					if d := time.Duration(w.timeout.Load()); w.paused.Load() == 0 && now.Sub(time.Unix(0, w.last.Load())) > d {
						cancel(fmt.Errorf("%w: nothing moved for %s on node %s", ErrNoProgress, d, node))
						return
					}
				}
			}
		}()
	}
	var once sync.Once
	return ctx, w, func() { once.Do(func() { close(w.stop); cancel(nil) }) }
}

// maxCheckEvery is the longest interval between a watchdog's checks.
const maxCheckEvery = 500 * time.Millisecond

// limit lowers the timeout to d from now on (a watchdog started with no
// timeout keeps none).
func (w *watchdog) limit(d time.Duration) {
	if t := time.Duration(w.timeout.Load()); t > 0 && d < t {
		w.timeout.Store(int64(d))
	}
}

// tick records progress.
func (w *watchdog) tick() { w.last.Store(time.Now().UnixNano()) }

// pause stops the clock while the transfer waits on its own side; resume
// starts it again from now.
func (w *watchdog) pause() { w.paused.Add(1) }

func (w *watchdog) resume() {
	w.tick()
	w.paused.Add(-1)
}

// cause returns the watchdog's verdict in place of err when it ended ctx.
func cause(ctx context.Context, err error) error {
	if err == nil {
		return nil
	}
	if c := context.Cause(ctx); c != nil && c != context.Canceled && c != ctx.Err() {
		return fmt.Errorf("%w (%v)", c, err)
	}
	return err
}
