package smtpsink

import (
	"bytes"
	"errors"
	"fmt"
	"time"
	"unicode/utf8"

	"github.com/emersion/go-message"
	"github.com/emersion/go-message/mail"
	"github.com/emersion/go-message/textproto"
)

// Report types.
const (
	ReportBounce    = "bounce"    // an RFC 3464 delivery status notification
	ReportComplaint = "complaint" // an RFC 5965 abuse report
)

// Report states.
const (
	ReportRecorded  = "recorded"  // built and kept; no relay is configured
	ReportQueued    = "queued"    // waiting for (another) delivery attempt
	ReportDelivered = "delivered" // the relay accepted it
	ReportFailed    = "failed"    // given up; Error says why
)

// Report is a delivery status notification or a complaint that the sink
// generated for a bounce+ or complain+ recipient.
type Report struct {
	// ID identifies the report in the API.
	ID string `json:"id"`
	// Type is "bounce" or "complaint".
	Type string `json:"type"`
	// OriginalID is the [Message].ID of the message it reports on.
	OriginalID string `json:"original_id"`
	// To is the report's envelope recipient: the original envelope sender.
	To string `json:"to"`
	// Recipients are the original recipients it reports on.
	Recipients []string `json:"recipients"`
	// CreatedAt is when the report was built.
	CreatedAt time.Time `json:"created_at"`
	// Status is recorded, queued, delivered or failed.
	Status string `json:"status"`
	// Attempts counts delivery attempts so far.
	Attempts int `json:"attempts"`
	// Error is the last delivery error, if any.
	Error string `json:"error"`
	// Raw is the report message as sent: MAIL FROM:<>, RCPT TO:<To>.
	Raw []byte `json:"-"`

	relay string // where it is delivered: the relay when it was built
}

// Limits of what a report carries of the original message.
const (
	maxReportedHeader  = 64 << 10  // text/rfc822-headers
	maxReportedMessage = 256 << 10 // message/rfc822 in a complaint; beyond, headers only
)

var errHeaderValue = errors.New("smtpsink: report header value contains a control character")

// reportInput is what a report is built from.
type reportInput struct {
	domain     string // the sink's name: Reporting-MTA, From
	id         string // Message-ID left-hand side
	now        time.Time
	msg        *Message
	recipients []string
}

// checkValue refuses CR, LF and other controls in a value that goes into a
// header field of a report: addresses come from the SMTP client.
func checkValue(v string) error {
	for _, r := range v {
		if r < 0x20 || r == 0x7f {
			return errHeaderValue
		}
	}
	if !utf8.ValidString(v) {
		return errHeaderValue
	}
	return nil
}

// addressType is the address-type of RFC 3464 section 2.3.2: rfc822, or
// utf-8 (RFC 6533) for an internationalised address.
func addressType(addr string) string {
	for i := 0; i < len(addr); i++ {
		if addr[i] >= 0x80 {
			return "utf-8"
		}
	}
	return "rfc822"
}

// block is a header block with the fields in the order given.
// textproto.Header writes the field added last first, so they are added in
// reverse.
func block(kv ...string) (textproto.Header, error) {
	var h textproto.Header
	for i := len(kv) - 2; i >= 0; i -= 2 {
		if err := checkValue(kv[i+1]); err != nil {
			return h, fmt.Errorf("%s: %w", kv[i], err)
		}
		h.Add(kv[i], kv[i+1])
	}
	return h, nil
}

// writeBlocks writes header blocks separated by empty lines, the body of a
// message/delivery-status or message/feedback-report part.
func writeBlocks(w *bytes.Buffer, blocks ...textproto.Header) error {
	for i, b := range blocks {
		var one bytes.Buffer
		if err := textproto.WriteHeader(&one, b); err != nil {
			return err
		}
		out := one.Bytes()
		if i == len(blocks)-1 {
			// The last block needs no separating empty line.
			out = bytes.TrimSuffix(out, []byte("\r\n"))
		}
		w.Write(out)
	}
	return nil
}

// originalHeader returns the header section of raw, capped.
func originalHeader(raw []byte) []byte {
	end := len(raw)
	if i := bytes.Index(raw, []byte("\r\n\r\n")); i >= 0 {
		end = i + 2
	} else if i := bytes.Index(raw, []byte("\n\n")); i >= 0 {
		end = i + 1
	}
	h := raw[:min(end, maxReportedHeader)]
	if !bytes.HasSuffix(h, []byte("\n")) {
		h = append(bytes.Clone(h), "\r\n"...)
	}
	return h
}

func transferEncoding(b []byte) string {
	for _, c := range b {
		if c >= 0x80 {
			return "8bit"
		}
	}
	return "7bit"
}

// reportHeader is the top-level header of a report: typed fields only, so
// nothing the SMTP client sent can add a line.
func reportHeader(in reportInput, subject, reportType string) (mail.Header, error) {
	if err := checkValue(in.msg.MailFrom); err != nil {
		return mail.Header{}, fmt.Errorf("to: %w", err)
	}
	// Fields are written last set first.
	var h mail.Header
	h.Set("MIME-Version", "1.0")
	h.Set("Auto-Submitted", "auto-replied")
	h.SetMessageID(in.id + "@" + in.domain)
	h.SetSubject(subject)
	h.SetAddressList("To", []*mail.Address{{Address: in.msg.MailFrom}})
	h.SetAddressList("From", []*mail.Address{{Name: "Mail Delivery System", Address: "MAILER-DAEMON@" + in.domain}})
	h.SetDate(in.now)
	h.SetContentType("multipart/report", map[string]string{"report-type": reportType})
	return h, nil
}

func textPart(w *message.Writer, text string) error {
	var h message.Header
	h.SetContentType("text/plain", map[string]string{"charset": "utf-8"})
	h.Set("Content-Transfer-Encoding", "quoted-printable")
	p, err := w.CreatePart(h)
	if err != nil {
		return err
	}
	if _, err := p.Write([]byte(text)); err != nil {
		return err
	}
	return p.Close()
}

func dataPart(w *message.Writer, contentType string, body []byte) error {
	var h message.Header
	h.SetContentType(contentType, nil)
	h.Set("Content-Transfer-Encoding", transferEncoding(body))
	p, err := w.CreatePart(h)
	if err != nil {
		return err
	}
	if _, err := p.Write(body); err != nil {
		return err
	}
	return p.Close()
}

// buildDSN builds an RFC 3464 delivery status notification saying that
// in.recipients do not exist (5.1.1).
func buildDSN(in reportInput) ([]byte, error) {
	h, err := reportHeader(in, "Undelivered Mail Returned to Sender", "delivery-status")
	if err != nil {
		return nil, fmt.Errorf("build DSN: %w", err)
	}
	perMessage, err := block(
		"Reporting-MTA", "dns; "+in.domain,
		"Arrival-Date", in.msg.ReceivedAt.Format(time.RFC1123Z),
	)
	if err != nil {
		return nil, fmt.Errorf("build DSN: %w", err)
	}
	blocks := []textproto.Header{perMessage}
	for _, r := range in.recipients {
		b, err := block(
			"Final-Recipient", addressType(r)+"; "+r,
			"Action", "failed",
			"Status", "5.1.1",
			"Remote-MTA", "dns; "+in.domain,
			"Diagnostic-Code", "smtp; 550 5.1.1 The email account that you tried to reach does not exist (smtpsink bounce+ recipient)",
			"Last-Attempt-Date", in.now.Format(time.RFC1123Z),
		)
		if err != nil {
			return nil, fmt.Errorf("build DSN: recipient: %w", err)
		}
		blocks = append(blocks, b)
	}
	var status bytes.Buffer
	if err := writeBlocks(&status, blocks...); err != nil {
		return nil, fmt.Errorf("build DSN: %w", err)
	}

	var b bytes.Buffer
	w, err := message.CreateWriter(&b, h.Header)
	if err != nil {
		return nil, fmt.Errorf("build DSN: %w", err)
	}
	human := fmt.Sprintf("This is the mail system at host %s.\r\n\r\n"+
		"Your message could not be delivered to %d recipient(s): the mailbox does not exist.\r\n"+
		"The delivery status and the header of your message are attached.\r\n", in.domain, len(in.recipients))
	if err := textPart(w, human); err != nil {
		return nil, fmt.Errorf("build DSN: %w", err)
	}
	if err := dataPart(w, "message/delivery-status", status.Bytes()); err != nil {
		return nil, fmt.Errorf("build DSN: %w", err)
	}
	if err := dataPart(w, "text/rfc822-headers", originalHeader(in.msg.Raw)); err != nil {
		return nil, fmt.Errorf("build DSN: %w", err)
	}
	if err := w.Close(); err != nil {
		return nil, fmt.Errorf("build DSN: %w", err)
	}
	return b.Bytes(), nil
}

// buildARF builds an RFC 5965 abuse report for in.msg on behalf of
// in.recipients, with the original message attached (its header only when
// it is large).
func buildARF(in reportInput) ([]byte, error) {
	h, err := reportHeader(in, "Abuse report", "feedback-report")
	if err != nil {
		return nil, fmt.Errorf("build ARF: %w", err)
	}
	kv := []string{
		"Feedback-Type", "abuse",
		"User-Agent", "smtpsink/1.0",
		"Version", "1",
		"Original-Mail-From", "<" + in.msg.MailFrom + ">",
	}
	for _, r := range in.recipients {
		kv = append(kv, "Original-Rcpt-To", "<"+r+">")
	}
	kv = append(kv,
		"Arrival-Date", in.msg.ReceivedAt.Format(time.RFC1123Z),
		"Reporting-MTA", "dns; "+in.domain,
	)
	report, err := block(kv...)
	if err != nil {
		return nil, fmt.Errorf("build ARF: %w", err)
	}
	var fields bytes.Buffer
	if err := writeBlocks(&fields, report); err != nil {
		return nil, fmt.Errorf("build ARF: %w", err)
	}

	var b bytes.Buffer
	w, err := message.CreateWriter(&b, h.Header)
	if err != nil {
		return nil, fmt.Errorf("build ARF: %w", err)
	}
	human := fmt.Sprintf("This is an email abuse report for a message received by %s.\r\n\r\n"+
		"%d recipient(s) reported it as unwanted. The original message is attached.\r\n", in.domain, len(in.recipients))
	if err := textPart(w, human); err != nil {
		return nil, fmt.Errorf("build ARF: %w", err)
	}
	if err := dataPart(w, "message/feedback-report", fields.Bytes()); err != nil {
		return nil, fmt.Errorf("build ARF: %w", err)
	}
	if len(in.msg.Raw) <= maxReportedMessage {
		err = dataPart(w, "message/rfc822", in.msg.Raw)
	} else {
		err = dataPart(w, "text/rfc822-headers", originalHeader(in.msg.Raw))
	}
	if err != nil {
		return nil, fmt.Errorf("build ARF: %w", err)
	}
	if err := w.Close(); err != nil {
		return nil, fmt.Errorf("build ARF: %w", err)
	}
	return b.Bytes(), nil
}
