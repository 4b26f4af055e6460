package server

import (
	"context"
	"errors"

	"github.com/ddstore/ddstore/catalog"
	"github.com/ddstore/ddstore/consensus"
	"github.com/ddstore/ddstore/replica"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// toStatus gives an error the gRPC code a client can act on. Statuses from
// other nodes pass through unchanged.
func toStatus(err error) error {
	if err == nil {
		return nil
	}
	if _, ok := status.FromError(err); ok {
		return err
	}
	var code codes.Code
	switch {
	case errors.Is(err, context.Canceled):
		code = codes.Canceled
	case errors.Is(err, context.DeadlineExceeded):
		code = codes.DeadlineExceeded
	case errors.Is(err, catalog.ErrNotFound):
		code = codes.NotFound
	case errors.Is(err, catalog.ErrExists):
		code = codes.AlreadyExists
	case errors.Is(err, catalog.ErrCollecting):
		code = codes.FailedPrecondition
	case errors.Is(err, catalog.ErrInvalid):
		code = codes.InvalidArgument
	case errors.Is(err, consensus.ErrNotLeader), errors.Is(err, consensus.ErrNoLeader), errors.Is(err, consensus.ErrShutdown):
		code = codes.Unavailable
	default:
		return replica.Status(err)
	}
	return status.Error(code, err.Error())
}
