package guard

import (
	"context"
	"errors"
)

// Sentinel errors; match with errors.Is.
var (
	// ErrUnavailable: Redis could not answer, so nothing was decided. The
	// guard never allows an email without an answer; the caller retries.
	// The error is an [*OpError].
	ErrUnavailable = errors.New("guard: redis unavailable")
	// ErrUnknownKind: the kind is not in the policy.
	ErrUnknownKind = errors.New("guard: unknown kind")
	// ErrInvalidAddress: an address given to the suppression API is not a
	// valid recipient address.
	ErrInvalidAddress = errors.New("guard: invalid address")
)

// OpError reports that Redis did not answer one guard operation. It matches
// [ErrUnavailable] and, when the context ended, context.Canceled or
// context.DeadlineExceeded; the Redis client's own error types are not
// exposed, only their message.
type OpError struct {
	// Op is the operation: "admit", "dispatch", "settle", "suppress", ...
	Op string
	// Err is the cause: a context error, or the client's message.
	Err error
}

// Error implements error.
func (e *OpError) Error() string { return "guard: " + e.Op + ": redis unavailable: " + e.Err.Error() }

// Unwrap returns [ErrUnavailable] and the cause.
func (e *OpError) Unwrap() []error { return []error{ErrUnavailable, e.Err} }

// opError wraps a Redis client error, keeping context errors matchable and
// flattening everything else to its message.
func opError(ctx context.Context, op string, err error) error {
	if ctx.Err() != nil {
		return &OpError{Op: op, Err: ctx.Err()}
	}
	return &OpError{Op: op, Err: errors.New(err.Error())}
}
