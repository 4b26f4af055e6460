package server

import (
	"context"

	"github.com/ddstore/ddstore/chunker"
)

// fetched is one chunk read ahead, or why it could not be read.
type fetched struct {
	c   chunker.Encoded
	err error
}

// readAhead fetches items from..to-1 with up to window fetches running at
// once and returns their results in order: each slot yields one result.
// The channel closes after the last slot, or early when ctx ends; a caller
// that stops reading must cancel ctx.
func readAhead(ctx context.Context, from, to, window int, fetch func(i int) (chunker.Encoded, error)) <-chan chan fetched {
	slots := make(chan chan fetched, window)
	go func() {
		defer close(slots)
		for i := from; i < to; i++ {
			slot := make(chan fetched, 1)
			select {
			case slots <- slot:
			case <-ctx.Done():
				return
			}
			go func() {
				c, err := fetch(i)
				slot <- fetched{c, err}
			}()
		}
	}()
	return slots
}
