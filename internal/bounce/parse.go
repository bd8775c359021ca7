package bounce

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net/mail"
	"regexp"
	"slices"
	"strings"

	"github.com/emersion/go-message"
	"github.com/emersion/go-message/textproto"

	"github.com/floodgate-dev/floodgate/guard"
)

// Formats of a [Report].
const (
	// FormatDSN is an RFC 3464 delivery status notification.
	FormatDSN = "dsn"
	// FormatARF is an RFC 5965 feedback report.
	FormatARF = "arf"
	// FormatText is a bounce without a machine-readable part (Exim, qmail,
	// older Postfix and Sendmail, Exchange's text), read by heuristics.
	FormatText = "text"
	// FormatAutoReply is an automatic reply (RFC 3834), not a bounce.
	FormatAutoReply = "auto_reply"
	// FormatUnknown is a message in which no report was recognised.
	FormatUnknown = "unknown"
)

// Parse limits: a report is small, so a message that needs more is not one.
const (
	maxParts     = 64
	maxDepth     = 6
	maxPartBytes = 256 << 10
	maxText      = 64 << 10
	maxBlocks    = 100
)

// Report is what a bounce or complaint message says.
type Report struct {
	// Format is one of the Format* constants.
	Format string
	// Recipients are the recipients the report is about, in order. For a
	// text bounce they are every address the text names, each with what
	// the text says near it.
	Recipients []Recipient
	// FeedbackType is an ARF report's Feedback-Type, lower case.
	FeedbackType string
}

// Recipient is one recipient of a [Report].
type Recipient struct {
	// Address is the recipient as the report names it (Final-Recipient, or
	// Original-Recipient when that is all there is; Original-Rcpt-To or the
	// enclosed message's To for ARF).
	Address string
	// Original is a DSN's Original-Recipient, when it has one.
	Original string
	// Action is a DSN's Action (failed, delayed, delivered, relayed,
	// expanded), lower case.
	Action string
	// Status is the enhanced status code (RFC 3463), e.g. "5.1.1", or ""
	// when the report has none.
	Status string
	// Type is guard.BounceHard, BounceSoft or BounceComplaint, or ""
	// when the report says nothing that is a bounce or a complaint (a
	// "delivered" DSN, a not-spam ARF report, text with no verdict).
	Type string
}

// ErrNotMessage is returned by [Parse] for input that is not an RFC 5322
// message.
var ErrNotMessage = errors.New("bounce: not a message")

// Parse reads a message and returns its report: RFC 3464 delivery status
// (also message/global-delivery-status, RFC 6533), RFC 5965 feedback
// reports, or, for a bounce with neither, what its text says. MIME is read
// with go-message; parts, nesting and sizes are bounded.
func Parse(r io.Reader) (*Report, error) {
	e, err := message.Read(r)
	if err != nil && !message.IsUnknownCharset(err) && !message.IsUnknownEncoding(err) {
		return nil, fmt.Errorf("%w: %w", ErrNotMessage, err)
	}
	p := &parser{rep: &Report{Format: FormatUnknown}, autoReply: isAutoReply(e.Header), daemon: fromDaemon(e.Header)}
	for _, v := range e.Header.Values("X-Failed-Recipients") {
		for _, a := range strings.Split(v, ",") {
			if a = addressField(a); a != "" {
				p.failed = append(p.failed, a)
			}
		}
	}
	parts := 0
	werr := e.Walk(func(path []int, part *message.Entity, err error) error {
		if err != nil && !message.IsUnknownCharset(err) && !message.IsUnknownEncoding(err) {
			return err
		}
		parts++
		if parts > maxParts || len(path) > maxDepth {
			return errTooComplex
		}
		return p.part(part)
	})
	if werr != nil && !errors.Is(werr, errTooComplex) {
		// A truncated or malformed MIME tree: keep what was read.
		p.broken = true
	}
	return p.finish(), nil
}

var errTooComplex = errors.New("bounce: too many parts")

type parser struct {
	rep      *Report
	dsn      []Recipient
	arf      *Recipient
	arfRcpts []string
	enclosed []string // To addresses of an enclosed message
	text     strings.Builder
	broken   bool
	// autoReply: Auto-Submitted: auto-replied or a vacation header, which
	// bounces carry too; daemon: From a mailer daemon or postmaster.
	autoReply, daemon bool
	failed            []string // Exim's X-Failed-Recipients
}

func (p *parser) part(e *message.Entity) error {
	mt, _, _ := e.Header.ContentType()
	if mt == "" {
		mt = "text/plain"
	}
	body := io.LimitReader(e.Body, maxPartBytes)
	switch mt {
	case "message/delivery-status", "message/global-delivery-status":
		p.deliveryStatus(body)
	case "message/feedback-report":
		p.feedbackReport(body)
	case "message/rfc822", "message/global", "text/rfc822-headers", "message/rfc822-headers", "message/global-headers":
		p.enclosedMessage(body)
	case "text/plain":
		if p.text.Len() < maxText {
			b, _ := io.ReadAll(io.LimitReader(body, int64(maxText-p.text.Len())))
			p.text.Write(b)
			p.text.WriteByte('\n')
		}
	}
	return nil
}

// deliveryStatus reads RFC 3464 fields: a per-message block, then one
// block per recipient, separated by blank lines.
func (p *parser) deliveryStatus(r io.Reader) {
	br := bufio.NewReader(r)
	for i := 0; i < maxBlocks; i++ {
		// Blank lines between blocks.
		for {
			b, err := br.Peek(1)
			if err != nil {
				return
			}
			if b[0] != '\r' && b[0] != '\n' {
				break
			}
			_, _ = br.ReadByte()
		}
		h, err := textproto.ReadHeader(br)
		if h.Has("Final-Recipient") || h.Has("Original-Recipient") {
			rc := Recipient{
				Address:  addressField(h.Get("Final-Recipient")),
				Original: addressField(h.Get("Original-Recipient")),
				Action:   strings.ToLower(strings.TrimSpace(h.Get("Action"))),
				Status:   statusCode(h.Get("Status")),
			}
			if rc.Address == "" {
				rc.Address = rc.Original
			}
			if rc.Status == "" {
				rc.Status = diagnosticStatus(h.Get("Diagnostic-Code"))
			}
			rc.Type = dsnType(rc.Action, rc.Status)
			p.dsn = append(p.dsn, rc)
		}
		if err != nil {
			return
		}
	}
}

// dsnType classifies a DSN recipient: only a failure with a permanent
// status is a hard bounce; a failure whose last status was temporary (the
// relay gave up retrying) and a delay are soft.
func dsnType(action, status string) string {
	switch action {
	case "failed":
		if strings.HasPrefix(status, "5.") {
			return guard.BounceHard
		}
		return guard.BounceSoft
	case "delayed":
		return guard.BounceSoft
	}
	return ""
}

// feedbackReport reads RFC 5965 fields.
func (p *parser) feedbackReport(r io.Reader) {
	h, _ := textproto.ReadHeader(bufio.NewReader(r))
	p.rep.FeedbackType = strings.ToLower(strings.TrimSpace(h.Get("Feedback-Type")))
	p.arf = &Recipient{}
	switch p.rep.FeedbackType {
	case "abuse", "fraud", "virus":
		p.arf.Type = guard.BounceComplaint
	}
	for _, v := range h.Values("Original-Rcpt-To") {
		if a := addressField(v); a != "" {
			p.arfRcpts = append(p.arfRcpts, a)
		}
	}
	for _, v := range h.Values("Removal-Recipient") {
		if a := addressField(v); a != "" {
			p.arfRcpts = append(p.arfRcpts, a)
		}
	}
}

// enclosedMessage reads the header of the original message a report
// encloses: its To names the recipient of an ARF report without
// Original-Rcpt-To.
func (p *parser) enclosedMessage(r io.Reader) {
	h, _ := textproto.ReadHeader(bufio.NewReader(r))
	if list, err := mail.ParseAddressList(h.Get("To")); err == nil {
		for _, a := range list {
			p.enclosed = append(p.enclosed, a.Address)
		}
	}
}

func (p *parser) finish() *Report {
	rep := p.rep
	switch {
	case p.arf != nil:
		rep.Format = FormatARF
		rcpts := p.arfRcpts
		if len(rcpts) == 0 {
			rcpts = p.enclosed
		}
		for _, a := range rcpts {
			rep.Recipients = append(rep.Recipients, Recipient{Address: a, Type: p.arf.Type})
		}
		if len(rcpts) == 0 {
			rep.Recipients = []Recipient{{Type: p.arf.Type}}
		}
	case len(p.dsn) > 0:
		rep.Format = FormatDSN
		rep.Recipients = p.dsn
	case p.autoReply && !p.daemon && len(p.failed) == 0:
		// A vacation or other automatic reply, sent to the return path
		// too: it says nothing about delivery.
		rep.Format = FormatAutoReply
	default:
		rs := textRecipients(p.text.String())
		for _, a := range p.failed {
			if !slices.ContainsFunc(rs, func(r Recipient) bool { return strings.EqualFold(r.Address, a) }) {
				rs = append(rs, Recipient{Address: a})
			}
		}
		for i := range rs {
			if rs[i].Type == "" && slices.ContainsFunc(p.failed, func(a string) bool { return strings.EqualFold(rs[i].Address, a) }) {
				// Exim lists permanent failures only.
				rs[i].Type = guard.BounceHard
			}
		}
		if len(rs) > 0 {
			rep.Format = FormatText
			rep.Recipients = rs
		}
	}
	return rep
}

// fromDaemon reports whether the message is from a mail system rather
// than a person: a mailer-daemon or postmaster address, or a "Mail
// Delivery" display name.
func fromDaemon(h message.Header) bool {
	from := strings.ToLower(h.Get("From"))
	for _, s := range []string{"mailer-daemon", "mailer_daemon", "mailerdaemon", "mail-daemon", "postmaster", "mail delivery"} {
		if strings.Contains(from, s) {
			return true
		}
	}
	return false
}

// addressField reads an RFC 3464 address field, "rfc822; user@example.com"
// (the type may be missing in the wild; angle brackets too).
func addressField(v string) string {
	v = strings.TrimSpace(v)
	if _, rest, ok := strings.Cut(v, ";"); ok {
		v = strings.TrimSpace(rest)
	}
	v = strings.TrimSuffix(strings.TrimPrefix(v, "<"), ">")
	if !strings.Contains(v, "@") || strings.ContainsAny(v, " \t\r\n<>") {
		return ""
	}
	return v
}

var (
	enhancedRE = regexp.MustCompile(`\b([245])\.(\d{1,3})\.(\d{1,3})\b`)
	replyRE    = regexp.MustCompile(`(?m)(?:^|[\s:(])([245])[0-9][0-9][\s-]`)
	addrRE     = regexp.MustCompile(`[A-Za-z0-9.!#$%&'*+/=?^_{|}~-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+`)
)

// statusCode returns the enhanced status code at the start of a Status
// field ("5.1.1 (user unknown)"), or "".
func statusCode(v string) string {
	m := enhancedRE.FindString(strings.TrimSpace(v))
	if m == "" || !strings.HasPrefix(strings.TrimSpace(v), m) {
		return ""
	}
	return m
}

// diagnosticStatus derives a status class from a Diagnostic-Code
// ("smtp; 550 5.1.1 <a@b>: user unknown") when Status is missing.
func diagnosticStatus(v string) string {
	if m := enhancedRE.FindString(v); m != "" {
		return m
	}
	if m := replyRE.FindStringSubmatch(v + " "); m != nil {
		return m[1] + ".0.0"
	}
	return ""
}

// Where a text bounce's copy of the original message starts: nothing after
// it is the bouncing MTA's own text.
var originalMarkers = []string{
	"--- below this line is a copy of the message",
	"------ this is a copy of the message",
	"----- original message -----",
	"------- returned message --------",
	"----- the header of the original message is following",
	"original message follows",
}

var (
	permanentPhrases = []string{
		"permanent error", "permanent fatal", "permanently", "user unknown", "unknown user", "no such user",
		"does not exist", "mailbox unavailable", "mailbox not found", "address rejected", "recipient rejected",
		"i'm not going to try again", "invalid recipient", "account has been disabled", "undeliverable",
		"could not be delivered",
	}
	temporaryPhrases = []string{
		"delayed", "will retry", "will be retried", "still trying", "temporary", "temporarily",
		"not yet been delivered", "deferred", "has not been delivered yet",
	}
)

// textRecipients reads a bounce written for people: each address it names,
// classified by the first status code within a few lines after it (an
// enhanced code, else an SMTP reply code), else by the text's words.
func textRecipients(text string) []Recipient {
	lower := strings.ToLower(text)
	for _, m := range originalMarkers {
		if i := strings.Index(lower, m); i >= 0 {
			text, lower = text[:i], lower[:i]
		}
	}
	whole := ""
	switch {
	case containsAny(lower, permanentPhrases):
		whole = guard.BounceHard
	case containsAny(lower, temporaryPhrases):
		whole = guard.BounceSoft
	}
	var out []Recipient
	seen := map[string]bool{}
	for _, loc := range addrRE.FindAllStringIndex(text, 50) {
		a := strings.Trim(text[loc[0]:loc[1]], ".")
		if seen[strings.ToLower(a)] {
			continue
		}
		seen[strings.ToLower(a)] = true
		near := text[loc[1]:min(len(text), loc[1]+400)]
		rc := Recipient{Address: a}
		if m := enhancedRE.FindString(near); m != "" {
			rc.Status = m
		} else if m := replyRE.FindStringSubmatch(near + " "); m != nil {
			rc.Status = m[1] + ".0.0"
		}
		switch {
		case strings.HasPrefix(rc.Status, "5."):
			rc.Type = guard.BounceHard
		case strings.HasPrefix(rc.Status, "4."):
			rc.Type = guard.BounceSoft
		case rc.Status == "":
			rc.Type = whole
		}
		out = append(out, rc)
	}
	return out
}

func containsAny(s string, subs []string) bool {
	for _, sub := range subs {
		if strings.Contains(s, sub) {
			return true
		}
	}
	return false
}

// isAutoReply reports whether a message is an automatic reply (RFC 3834
// Auto-Submitted: auto-replied, and the common vacation headers), which
// goes to the return path too but says nothing about delivery.
func isAutoReply(h message.Header) bool {
	as := strings.ToLower(h.Get("Auto-Submitted"))
	if strings.HasPrefix(as, "auto-replied") {
		return true
	}
	if h.Has("X-Autoreply") || h.Has("X-Autorespond") {
		return true
	}
	prec := strings.ToLower(strings.TrimSpace(h.Get("Precedence")))
	return prec == "auto_reply"
}
