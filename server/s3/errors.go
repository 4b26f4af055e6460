package s3

import (
	"context"
	"encoding/xml"
	"errors"
	"fmt"
	"net/http"
	"strings"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Error is an S3 error: its code, HTTP status and message, as S3 clients
// read them from the XML body (or, for HEAD, from the status alone).
type Error struct {
	Code    string
	Status  int
	Message string
	err     error // the cause, if any
}

func (e *Error) Error() string {
	if e.err != nil {
		return fmt.Sprintf("%s: %s: %v", e.Code, e.Message, e.err)
	}
	return e.Code + ": " + e.Message
}

func (e *Error) Unwrap() error { return e.err }

// errorf makes an S3 error of a code, with a message.
func errorf(code string, format string, args ...any) *Error {
	return &Error{Code: code, Status: codeStatus(code), Message: fmt.Sprintf(format, args...)}
}

// codeStatus is the HTTP status of each S3 error code the gateway answers.
func codeStatus(code string) int {
	switch code {
	case "AccessDenied", "InvalidAccessKeyId", "RequestTimeTooSkewed", "SignatureDoesNotMatch", "InvalidObjectState":
		return http.StatusForbidden
	case "AuthorizationHeaderMalformed", "AuthorizationQueryParametersError", "BadDigest", "EntityTooLarge", "EntityTooSmall", "ExpiredToken", "IncompleteBody", "InvalidArgument", "InvalidBucketName", "InvalidDigest", "InvalidPart", "InvalidPartOrder", "InvalidRequest", "KeyTooLongError", "MalformedXML", "MissingSecurityHeader", "XAmzContentSHA256Mismatch", "UnexpectedContent", "IllegalLocationConstraintException":
		return http.StatusBadRequest
	case "BucketAlreadyOwnedByYou", "BucketNotEmpty", "OperationAborted":
		return http.StatusConflict
	case "InternalError":
		return http.StatusInternalServerError
	case "InvalidRange":
		return http.StatusRequestedRangeNotSatisfiable
	case "MethodNotAllowed":
		return http.StatusMethodNotAllowed
	case "MissingContentLength":
		return http.StatusLengthRequired
	case "NoSuchBucket", "NoSuchKey", "NoSuchUpload":
		return http.StatusNotFound
	case "NotImplemented":
		return http.StatusNotImplemented
	case "PreconditionFailed":
		return http.StatusPreconditionFailed
	case "ServiceUnavailable", "SlowDown":
		return http.StatusServiceUnavailable
	case "RequestTimeout":
		return http.StatusBadRequest
	}
	return http.StatusInternalServerError
}

// errorBody is S3's XML error document.
type errorBody struct {
	XMLName   xml.Name `xml:"Error"`
	Code      string   `xml:"Code"`
	Message   string   `xml:"Message"`
	Resource  string   `xml:"Resource,omitempty"`
	RequestID string   `xml:"RequestId"`
}

// clusterError turns an error of the cluster (a gRPC status, maybe
// wrapped) into an S3 error; notFound is the code for a missing file
// (NoSuchKey, NoSuchUpload, ...).
func clusterError(err error, notFound string) *Error {
	var se *Error
	if errors.As(err, &se) {
		return se
	}
	if errors.Is(err, context.Canceled) {
		return &Error{Code: "RequestTimeout", Status: http.StatusBadRequest, Message: "the request was cancelled", err: err}
	}
	st, ok := status.FromError(unwrapStatus(err))
	if !ok {
		return &Error{Code: "InternalError", Status: http.StatusInternalServerError, Message: "the cluster failed the request", err: err}
	}
	e := &Error{err: err, Message: st.Message()}
	switch st.Code() {
	case codes.NotFound:
		e.Code = notFound
	case codes.PermissionDenied:
		e.Code = "AccessDenied"
	case codes.Unauthenticated:
		e.Code = "AccessDenied"
		if strings.Contains(st.Message(), "expired") {
			e.Code, e.Message = "ExpiredToken", "the ddstore token bound to this access key has expired: "+st.Message()
		}
	case codes.InvalidArgument:
		e.Code = "InvalidArgument"
	case codes.AlreadyExists, codes.FailedPrecondition, codes.Aborted:
		e.Code = "OperationAborted"
	case codes.ResourceExhausted:
		e.Code = "SlowDown"
	case codes.Unavailable, codes.DeadlineExceeded:
		e.Code = "ServiceUnavailable"
	case codes.Canceled:
		e.Code, e.Status = "RequestTimeout", http.StatusBadRequest
		return e
	default:
		e.Code = "InternalError"
	}
	e.Status = codeStatus(e.Code)
	return e
}

// unwrapStatus finds the gRPC status inside a wrapped error.
func unwrapStatus(err error) error {
	for e := err; e != nil; e = errors.Unwrap(e) {
		if _, ok := e.(interface{ GRPCStatus() *status.Status }); ok {
			return e
		}
	}
	return err
}

// isNotFound reports whether the cluster answered NotFound.
func isNotFound(err error) bool {
	return status.Code(unwrapStatus(err)) == codes.NotFound
}
