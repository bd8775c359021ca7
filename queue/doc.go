// Package queue is the producer API that applications import to send
// password-reset, verification and notification emails through floodgate.
//
// An application builds an [Email], and [Client.Enqueue] validates and
// normalises it (RFC 5321 and RFC 5322 addresses, IDNA per RFC 5891 for the
// domain, RFC 2047 display names), asks the admission guard whether it may be
// queued, and stores it as an asynq task for the worker. The returned
// [Receipt] says what happened, for the application's own logs.
//
// The end user who asked for an email must get the same answer whatever the
// receipt says (OWASP Forgot Password guidance): a refused, duplicate or
// capped request is indistinguishable from a queued one. See the examples.
//
// The package also owns what crosses from producer to worker: the task type
// name [TypeEmail], the per-kind queue names and the [Payload] encoding.
package queue
