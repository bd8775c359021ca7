package delivery

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/emersion/go-smtp"
)

// ErrPoolClosed is the error inside the [SendError] returned by [Pool.Send]
// after [Pool.Close].
var ErrPoolClosed = errors.New("delivery: pool closed")

// Stages of an SMTP delivery, the values of [SendError].Stage.
const (
	StageDial      = "dial"      // connect, greeting, EHLO, RSET of a pooled connection
	StageTLS       = "tls"       // STARTTLS or implicit TLS handshake
	StageAuth      = "auth"      // AUTH PLAIN
	StageMail      = "mail"      // MAIL FROM
	StageRcpt      = "rcpt"      // RCPT TO
	StageData      = "data"      // DATA, the body, and the reply to the final dot
	StageAmbiguous = "ambiguous" // connection lost after the final dot, before the reply
)

// SendError is the error returned by [Pool.Send]. It is classified where it
// is made:
//
//   - Temporary: 4xx replies (421 included), network errors, timeouts and
//     context cancellation, and every failure while setting up a connection
//     (dial, tls, auth), since those concern the relay, not the message.
//   - Permanent (not Temporary): 5xx replies to MAIL, RCPT or DATA.
//   - Ambiguous (and Temporary): the whole message and the final dot were
//     written but the reply was lost; the relay may have accepted it, so a
//     retry must reuse the Message-ID and be guarded by an idempotency claim.
type SendError struct {
	Code      int    // SMTP reply code; 0 if no reply was received
	Enhanced  string // RFC 3463 enhanced status code, e.g. "5.1.1"; "" if none
	Message   string // reply text from the relay
	Temporary bool
	Ambiguous bool
	Stage     string // one of the Stage constants
	Err       error  // underlying error: *smtp.SMTPError, a network or context error
}

// Error implements error. Tokens of the reply text that look like email
// addresses are redacted, since error strings end up in logs.
func (e *SendError) Error() string {
	var b strings.Builder
	b.WriteString("delivery: smtp ")
	b.WriteString(e.Stage)
	switch {
	case e.Code != 0:
		fmt.Fprintf(&b, ": %d", e.Code)
		if e.Enhanced != "" {
			b.WriteString(" " + e.Enhanced)
		}
		if e.Message != "" {
			b.WriteString(" " + redactAddresses(e.Message))
		}
	case e.Err != nil:
		b.WriteString(": " + e.Err.Error())
	}
	if e.Ambiguous {
		b.WriteString(" (ambiguous: the relay may have accepted the message)")
	}
	return b.String()
}

// Unwrap returns the underlying error.
func (e *SendError) Unwrap() error { return e.Err }

// IsTemporary reports whether err is a [SendError] worth retrying later.
func IsTemporary(err error) bool {
	var se *SendError
	return errors.As(err, &se) && se.Temporary
}

// IsPermanent reports whether err is a [SendError] that will fail again.
func IsPermanent(err error) bool {
	var se *SendError
	return errors.As(err, &se) && !se.Temporary
}

// IsHardBounce reports whether err is a permanent refusal of the recipient
// (enhanced status 5.1.x to RCPT or DATA), which should suppress the address.
// A 5.1.x reply to MAIL concerns the sender and is not a hard bounce.
func IsHardBounce(err error) bool {
	var se *SendError
	return errors.As(err, &se) && !se.Temporary && se.Code/100 == 5 &&
		strings.HasPrefix(se.Enhanced, "5.1.") && (se.Stage == StageRcpt || se.Stage == StageData)
}

// setupStage reports whether stage belongs to connection set-up.
func setupStage(stage string) bool {
	return stage == StageDial || stage == StageTLS || stage == StageAuth
}

// classify turns err, raised at stage, into a SendError. ctx is the context
// the failing operation ran under; afterDot reports that the final dot may
// have reached the relay and only the reply is missing.
func classify(ctx context.Context, stage string, err error, afterDot bool) *SendError {
	if ctxErr := contextErr(ctx); ctxErr != nil {
		se := &SendError{Stage: stage, Temporary: true, Err: ctxErr}
		if !errors.Is(err, ctxErr) {
			se.Err = fmt.Errorf("%w: %w", ctxErr, err)
		}
		if afterDot {
			se.Stage, se.Ambiguous = StageAmbiguous, true
		}
		return se
	}
	var smtpErr *smtp.SMTPError
	if errors.As(err, &smtpErr) {
		se := &SendError{
			Code:    smtpErr.Code,
			Message: smtpErr.Message,
			Stage:   stage,
			Err:     err,
		}
		if ec := smtpErr.EnhancedCode; ec[0] > 0 {
			se.Enhanced = fmt.Sprintf("%d.%d.%d", ec[0], ec[1], ec[2])
		}
		se.Temporary = smtpErr.Code/100 != 5 || setupStage(stage)
		return se
	}
	se := &SendError{Stage: stage, Temporary: true, Err: err}
	if afterDot {
		se.Stage, se.Ambiguous = StageAmbiguous, true
	}
	return se
}

// contextErr is ctx.Err(), or DeadlineExceeded once the deadline has
// passed: a connection deadline capped at the context's deadline can fire a
// moment before the context's own timer does.
func contextErr(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if dl, ok := ctx.Deadline(); ok && !time.Now().Before(dl) {
		return context.DeadlineExceeded
	}
	return nil
}

// reusable reports whether the connection that produced err can go back to
// the pool: only after a reply refusing the transaction, not 421 (the relay
// is closing) and not after any network error.
func reusable(err error) bool {
	var smtpErr *smtp.SMTPError
	return errors.As(err, &smtpErr) && smtpErr.Code != 421
}

func redactAddresses(s string) string {
	if !strings.Contains(s, "@") {
		return s
	}
	fields := strings.Fields(s)
	for i, f := range fields {
		if strings.Contains(f, "@") {
			fields[i] = "<redacted>"
		}
	}
	return strings.Join(fields, " ")
}
