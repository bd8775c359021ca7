package queue

import "time"

// Outcome is what happened to one email request. Every request ends in
// exactly one terminal outcome; Queued and Deferred are not terminal.
type Outcome string

// Outcomes, as counted per kind. See DESIGN.md, section Decisions.
const (
	// Queued: admitted and stored for the worker (in flight).
	Queued Outcome = "queued"
	// Deferred: a global or domain rate is exhausted; re-queued for later
	// without using a retry (not terminal).
	Deferred Outcome = "deferred"

	Sent       Outcome = "sent"
	Duplicate  Outcome = "duplicate"
	Capped     Outcome = "capped"
	Held       Outcome = "held"
	Shed       Outcome = "shed"
	Suppressed Outcome = "suppressed"
	Expired    Outcome = "expired"
	Failed     Outcome = "failed"
)

// Terminal reports whether o ends the request.
func (o Outcome) Terminal() bool { return o != Queued && o != Deferred && o != "" }

// Receipt tells the application what happened to an enqueued email, for its
// own logs and metrics. It must not change what the end user is told.
type Receipt struct {
	// ID identifies the email across enqueue, worker, logs and Message-ID.
	ID string `json:"id"`
	// Kind is the email's kind.
	Kind string `json:"kind"`
	// Outcome is Queued when the email was admitted, otherwise the terminal
	// outcome decided at admission.
	Outcome Outcome `json:"outcome"`
	// Reason refines the outcome, e.g. "recipient", "source" or "domain"
	// for Capped; on Queued it names the lane ("trusted", "redeemed",
	// "rerequest") when the kind's breaker was open.
	Reason string `json:"reason,omitempty"`
}

// Accepted reports whether the email was queued for delivery.
func (r Receipt) Accepted() bool { return r.Outcome == Queued }

// Verdict is a guard's decision on one email.
type Verdict struct {
	// Allow reports whether the email may proceed: be queued (admission)
	// or be sent now (dispatch).
	Allow bool
	// Outcome, when Allow is false, is Deferred (try again after
	// RetryAfter) or the terminal outcome to record.
	Outcome Outcome
	// Reason refines the outcome, e.g. "recipient" for Capped.
	Reason string
	// RetryAfter is set with Deferred.
	RetryAfter time.Duration
	// Lane, on an admission allowed while the kind's breaker is open, names
	// the lane that let it through ("trusted", "rerequest", "redeemed");
	// the email then carries it so that dispatch does not hold it again.
	Lane string
	// Ambiguous, on an allowed dispatch, counts the email's earlier attempts
	// whose result was ambiguous: the connection was lost after the final
	// dot, so the relay may have accepted the message.
	Ambiguous int
}
