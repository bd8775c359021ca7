package queue

import (
	"maps"
	"slices"
	"time"
)

// Built-in kinds of email. Applications may add their own through
// [Config.Kinds], with templates of the same name.
const (
	KindPasswordReset = "password_reset"
	KindVerifyEmail   = "verify_email"
	KindNotification  = "notification"
)

// Class orders kinds into queues: security mail outranks notifications.
type Class string

// The classes, each its own asynq queue.
const (
	ClassSecurity Class = "security"
	ClassNotify   Class = "notify"
)

// QueueName returns the asynq queue that holds emails of class c.
func (c Class) QueueName() string { return "floodgate-" + string(c) }

// Valid reports whether c is a known class.
func (c Class) Valid() bool { return c == ClassSecurity || c == ClassNotify }

// KindSpec describes one kind of email: where it queues, how long it stays
// worth delivering and which data its templates need.
type KindSpec struct {
	// Class selects the queue. Required.
	Class Class
	// TTL is how long after enqueue the email may still be delivered; past
	// it the worker records it expired (a reset link must not arrive hours
	// late). Required, > 0.
	TTL time.Duration
	// MaxRetry bounds delivery attempts after the first; retries also stop
	// at TTL. Zero means the default, 8.
	MaxRetry int
	// Required lists data keys that must be present and non-empty. Keys
	// ending in "_url" must hold absolute http or https URLs.
	Required []string
	// Archive is how long the worker keeps a failed email's task for
	// inspection (asynq's archive) before deleting it; zero means
	// [DefaultArchive] of its class. Completed tasks are never kept.
	Archive time.Duration
}

// DefaultArchive returns how long failed tasks of a class are kept: a day
// for security mail, whose links are bearer tokens, a week for
// notifications.
func DefaultArchive(c Class) time.Duration {
	if c == ClassSecurity {
		return 24 * time.Hour
	}
	return 7 * 24 * time.Hour
}

// ArchiveFor returns the kind's effective archive retention.
func (s KindSpec) ArchiveFor() time.Duration {
	if s.Archive > 0 {
		return s.Archive
	}
	return DefaultArchive(s.Class)
}

// DefaultMaxRetry is the retry bound used when a KindSpec leaves it zero.
const DefaultMaxRetry = 8

// Retries returns the effective retry bound of the kind.
func (s KindSpec) Retries() int {
	if s.MaxRetry > 0 {
		return s.MaxRetry
	}
	return DefaultMaxRetry
}

// AttemptTimeout returns how long one delivery attempt may take: two
// minutes, or the TTL when that is shorter.
func (s KindSpec) AttemptTimeout() time.Duration {
	return min(s.TTL, 2*time.Minute)
}

// Kinds maps a kind's name to its spec.
type Kinds map[string]KindSpec

// Validate checks every kind: a name of lower-case letters, digits, '_'
// and '-' (so that it can go into a header field, a key or a label as it
// is), a known class and a positive TTL. It reports the first problem in
// name order.
func (k Kinds) Validate() error {
	for _, name := range slices.Sorted(maps.Keys(k)) {
		if err := k[name].validate(name); err != nil {
			return err
		}
	}
	return nil
}

// DefaultKinds returns a new map with the built-in kinds.
func DefaultKinds() Kinds {
	return Kinds{
		KindPasswordReset: {Class: ClassSecurity, TTL: 30 * time.Minute, Required: []string{"reset_url"}},
		KindVerifyEmail:   {Class: ClassSecurity, TTL: 24 * time.Hour, Required: []string{"verify_url"}},
		KindNotification:  {Class: ClassNotify, TTL: 24 * time.Hour, Required: []string{"subject", "body"}},
	}
}

// ReleaseQueue is the asynq queue of emails released from a breaker's hold:
// the worker serves it below security mail, so that a release cannot starve
// the resets and verifications of the moment.
const ReleaseQueue = "floodgate-release"
