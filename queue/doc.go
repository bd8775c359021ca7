// Package queue is the producer API that applications import to send
// password-reset, verification and notification emails through floodgate.
//
// An application builds an [Email], and [Client.Enqueue] validates and
// normalises it (RFC 5321 and RFC 5322 addresses, IDNA per RFC 5891 for the
// domain, RFC 2047 display names), asks the admission guard whether it may be
// queued, and stores it as an asynq task for the worker. The returned
// [Receipt] says what happened, for the application's own logs.
//
// Validation refuses, with an [*InvalidError] naming the field: a recipient
// that is not a host-name address (display names, domain literals, IP
// addresses and all-numeric domains such as user@127.0.0.1); a display name
// or a "subject" value with an RFC 2047 encoded-word that decodes to CR, LF
// or NUL, control characters, or bidi controls and other invisible Unicode
// format characters (category Cf, except the joiners U+200C and U+200D);
// and data keys ending in "_url" that are not absolute http or https URLs.
// [DecodePayload] applies the same checks again in the worker, to tasks
// that reached Redis without [Client.Enqueue].
//
// The end user who asked for an email must get the same answer whatever the
// receipt says (OWASP Forgot Password guidance): a refused, duplicate or
// capped request is indistinguishable from a queued one. See the examples.
//
// The package also owns what crosses from producer to worker: the task type
// name [TypeEmail], the per-kind queue names and the [Payload] encoding.
package queue
