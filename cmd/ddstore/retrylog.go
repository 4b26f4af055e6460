package main

import (
	"context"
	"fmt"
	"io"
	"time"
)

// retryLog prints put's "retrying" notices, at most one line a second: the
// retries in between are held back and counted into the next line, or into
// the line flush prints after the last attempt.
type retryLog struct {
	w     io.Writer
	now   func() time.Time
	every time.Duration

	last    time.Time // when the last line was printed
	total   int       // retries so far
	held    int       // retries since the last line, not printed
	lastErr string    // the error of the last retry held back
}

func newRetryLog(w io.Writer, now func() time.Time) *retryLog {
	return &retryLog{w: w, now: now, every: time.Second}
}

// retry notes one more retry after the error msg.
func (r *retryLog) retry(msg string) {
	r.total++
	t := r.now()
	if !r.last.IsZero() && t.Sub(r.last) < r.every {
		r.held++
		r.lastErr = msg
		return
	}
	if r.held == 0 {
		fmt.Fprintf(r.w, "ddstore: put interrupted (%s); retrying (%d), sending only what is missing\n", msg, r.total)
	} else {
		fmt.Fprintf(r.w, "ddstore: put interrupted (%s); retrying (%d, %d more since the last line), sending only what is missing\n", msg, r.total, r.held)
	}
	r.last, r.held = t, 0
}

// flush prints one line for the retries held back, if any.
func (r *retryLog) flush() {
	if r.held == 0 {
		return
	}
	fmt.Fprintf(r.w, "ddstore: put: retried %d more times (last: %s); %d retries in all\n", r.held, r.lastErr, r.total)
	r.held = 0
}

// retryBackoff is the pause before put's retry after attempt (0-based):
// 250 ms, doubling, at most 2 s.
func retryBackoff(attempt int) time.Duration {
	return min(250*time.Millisecond<<min(attempt, 4), 2*time.Second)
}

// sleepCtx waits d unless ctx ends first; it reports whether it waited.
func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
