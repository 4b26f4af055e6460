package server

import (
	"context"
	"errors"

	"github.com/ddstore/ddstore/catalog"
	"github.com/ddstore/ddstore/consensus"
	pb "github.com/ddstore/ddstore/proto/ddstore/v1"
	"github.com/ddstore/ddstore/replica"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
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
	case errors.Is(err, catalog.ErrCollectedSinceCheck):
		return withReason(status.New(codes.FailedPrecondition, err.Error()), pb.ReasonCollectedSinceCheck)
	case errors.Is(err, catalog.ErrChanged):
		return withReason(status.New(codes.FailedPrecondition, err.Error()), pb.ReasonFileChanged)
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
	case errors.Is(err, consensus.ErrNotLeader), errors.Is(err, consensus.ErrNoLeader), errors.Is(err, consensus.ErrShutdown),
		errors.Is(err, consensus.ErrLogUnwritable):
		code = codes.Unavailable
	default:
		return replica.Status(err)
	}
	return status.Error(code, err.Error())
}

// withReason attaches a ddstore ErrorInfo reason to st.
func withReason(st *status.Status, reason string) error {
	if d, err := st.WithDetails(&errdetails.ErrorInfo{Reason: reason, Domain: pb.ErrorDomain}); err == nil {
		return d.Err()
	}
	return st.Err()
}

// hasReason reports whether err is a status carrying a ddstore ErrorInfo
// reason.
func hasReason(err error, reason string) bool {
	for _, d := range status.Convert(err).Details() {
		if info, ok := d.(*errdetails.ErrorInfo); ok && info.GetDomain() == pb.ErrorDomain && info.GetReason() == reason {
			return true
		}
	}
	return false
}
