package queue

import (
	"errors"
	"fmt"
)

// Sentinel errors; match with errors.Is.
var (
	// ErrInvalid: the email was refused before anything was stored. The
	// error is an [*InvalidError] naming the field.
	ErrInvalid = errors.New("queue: invalid email")
	// ErrUnknownKind: the kind is not configured.
	ErrUnknownKind = errors.New("queue: unknown kind")
	// ErrUnavailable: Redis could not be reached or did not answer in time;
	// the email was not queued and the caller may retry.
	ErrUnavailable = errors.New("queue: redis unavailable")
	// ErrClosed: the client was closed.
	ErrClosed = errors.New("queue: client closed")
	// ErrNoFeedback: the client's Admitter does not take feedback (see
	// [Feedback]); a guard does.
	ErrNoFeedback = errors.New("queue: admitter takes no feedback")
	// ErrUnknownEmail: feedback named no email that was sent and can still
	// take it: never sent, expired, or already confirmed or reported.
	ErrUnknownEmail = errors.New("queue: no such sent email")
)

// InvalidError says which field of an [Email] was refused and why.
type InvalidError struct {
	Field  string
	Reason string
}

func invalid(field, reason string) *InvalidError {
	return &InvalidError{Field: field, Reason: reason}
}

// Error implements error. It never includes the field's value, which may be
// an address.
func (e *InvalidError) Error() string {
	return fmt.Sprintf("queue: invalid email: %s %s", e.Field, e.Reason)
}

// Is reports whether target is [ErrInvalid].
func (e *InvalidError) Is(target error) bool { return target == ErrInvalid }
