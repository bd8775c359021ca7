package delivery

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"mime/quotedprintable"
	"net/mail"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/floodgate-dev/floodgate/internal/headertext"
)

// Errors returned by [Build]. Each is wrapped with the field it concerns; the
// offending value is never included, since it may be a recipient address.
var (
	// ErrHeaderInjection reports CR, LF or NUL in a header field, including
	// one that would only appear after RFC 2047 decoding of an encoded-word.
	ErrHeaderInjection = errors.New("delivery: header value contains CR, LF or NUL")
	// ErrInvalidAddress reports a From or To address that is not a plain
	// ASCII local-part@domain (domain literals and quoted local parts are
	// refused).
	ErrInvalidAddress = errors.New("delivery: invalid address")
	// ErrInvalidMessage reports any other field Build cannot render safely:
	// a malformed Message-ID, a zero Date, invalid UTF-8, a reserved or
	// malformed extra header.
	ErrInvalidMessage = errors.New("delivery: invalid message")
)

// Message is one email to render with [Build]. All fields are plain values;
// Build encodes and validates them.
type Message struct {
	From    mail.Address
	To      mail.Address
	Subject string
	// Text is the text/plain part and HTML the text/html part; with an empty
	// HTML the message is text/plain only. Line breaks (CRLF, LF or a lone
	// CR) become CRLF on the wire; a decoded part equals its input with every
	// line break written as CRLF.
	Text, HTML string
	// MessageID is the Message-ID without angle brackets, for example
	// "abc123@example.com". It must be stable across retries of one email:
	// the MIME boundary is derived from it, so the same Message renders to
	// the same bytes.
	MessageID string
	// Date is the origination date. It is required (no clock is read here).
	Date time.Time
	// Headers are extra header fields written after the standard ones, for
	// example List-Unsubscribe and List-Unsubscribe-Post (RFC 8058). Values
	// must be printable ASCII; fields Build writes itself, trace and
	// authentication fields, Cc and Bcc are refused.
	Headers []Header
}

// Header is one extra header field of a [Message].
type Header struct{ Name, Value string }

const (
	maxLineLen = 998 // RFC 5322 section 2.1.1, excluding CRLF
	foldLen    = 78  // RFC 5322 recommended line length
	crlf       = "\r\n"
)

// reservedHeader reports whether a caller may not set the field lower (a
// lower-case name): Build writes it itself, recipients belong to the
// envelope, and trace and authentication fields belong to the relays.
func reservedHeader(lower string) bool {
	switch lower {
	case "date", "from", "to", "cc", "bcc", "subject", "message-id", "mime-version",
		"auto-submitted", "dkim-signature", "received", "return-path", "authentication-results",
		"arc-seal", "arc-message-signature", "arc-authentication-results":
		return true
	}
	return strings.HasPrefix(lower, "content-")
}

// Build renders m as an RFC 5322 message with CRLF line endings. Output is a
// pure function of m: equal Messages give equal bytes.
func Build(m *Message) ([]byte, error) {
	if m == nil {
		return nil, fmt.Errorf("%w: nil message", ErrInvalidMessage)
	}
	from, err := formatAddress("from", m.From)
	if err != nil {
		return nil, err
	}
	to, err := formatAddress("to", m.To)
	if err != nil {
		return nil, err
	}
	subject, err := encodeUnstructured("subject", m.Subject)
	if err != nil {
		return nil, err
	}
	if err := checkMessageID(m.MessageID); err != nil {
		return nil, err
	}
	if m.Date.IsZero() {
		return nil, fmt.Errorf("%w: date: zero", ErrInvalidMessage)
	}
	if err := checkExtraHeaders(m.Headers); err != nil {
		return nil, err
	}
	if !utf8.ValidString(m.Text) || !utf8.ValidString(m.HTML) {
		return nil, fmt.Errorf("%w: body: invalid UTF-8", ErrInvalidMessage)
	}

	var b bytes.Buffer
	// Quoted-printable grows mostly-ASCII text by a few percent.
	b.Grow(1024 + len(m.Text) + len(m.HTML) + (len(m.Text)+len(m.HTML))/8)
	w := headerWriter{b: &b}
	w.field("Date", m.Date.Format(time.RFC1123Z))
	w.field("From", from)
	w.field("To", to)
	w.field("Subject", subject)
	w.field("Message-ID", "<"+m.MessageID+">")
	w.field("MIME-Version", "1.0")
	w.field("Auto-Submitted", "auto-generated")
	for _, h := range m.Headers {
		w.field(h.Name, trimWSP(h.Value))
	}
	if w.err != nil {
		return nil, w.err
	}

	if m.HTML == "" {
		w.field("Content-Type", "text/plain; charset=utf-8")
		w.field("Content-Transfer-Encoding", "quoted-printable")
		b.WriteString(crlf)
		writeQP(&b, m.Text)
		// A soft line break ends the body with CRLF without adding a line
		// to the decoded text.
		if !bytes.HasSuffix(b.Bytes(), []byte(crlf)) {
			b.WriteString("=" + crlf)
		}
		return b.Bytes(), nil
	}

	boundary := boundaryFor(m.MessageID)
	w.field("Content-Type", `multipart/alternative; boundary="`+boundary+`"`)
	b.WriteString(crlf)
	for _, part := range [...]struct{ ctype, body string }{
		{"text/plain; charset=utf-8", m.Text},
		{"text/html; charset=utf-8", m.HTML},
	} {
		b.WriteString("--" + boundary + crlf)
		b.WriteString("Content-Type: " + part.ctype + crlf)
		b.WriteString("Content-Transfer-Encoding: quoted-printable" + crlf + crlf)
		writeQP(&b, part.body)
		// The CRLF before a delimiter belongs to the delimiter (RFC 2046
		// section 5.1.1), so the decoded part ends where its text ends.
		b.WriteString(crlf)
	}
	b.WriteString("--" + boundary + "--" + crlf)
	return b.Bytes(), nil
}

// boundaryFor derives the MIME boundary from the Message-ID so retries render
// identical bytes. It starts with "=_", which quoted-printable output can
// never contain ("=" is always followed by two hex digits or a line break), so
// it cannot collide with a part's content.
func boundaryFor(messageID string) string {
	sum := sha256.Sum256([]byte("floodgate/mime-boundary\x00" + messageID))
	return "=_" + hex.EncodeToString(sum[:16])
}

func writeQP(b *bytes.Buffer, s string) {
	qp := quotedprintable.NewWriter(b)
	// Writes to a bytes.Buffer do not fail.
	_, _ = qp.Write([]byte(s))
	_ = qp.Close()
}

// headerWriter writes folded header fields and records the first error.
type headerWriter struct {
	b   *bytes.Buffer
	err error
}

// field writes "Name: value" folded before whitespace so that lines stay
// near 78 octets. Folding only inserts CRLF before existing whitespace, so
// unfolding restores the value. A line that cannot be folded under 998
// octets is an error.
func (w *headerWriter) field(name, value string) {
	if w.err != nil {
		return
	}
	w.b.WriteString(name)
	w.b.WriteByte(':')
	lineLen := len(name) + 1
	if value == "" {
		w.b.WriteString(crlf)
		return
	}
	value = " " + value
	for i := 0; i < len(value); {
		// A segment is a run of whitespace and the word after it.
		j := i
		for j < len(value) && isWSP(value[j]) {
			j++
		}
		wordStart := j
		for j < len(value) && !isWSP(value[j]) {
			j++
		}
		seg := value[i:j]
		if i > 0 && wordStart < j && lineLen+len(seg) > foldLen {
			w.b.WriteString(crlf)
			lineLen = 0
		}
		w.b.WriteString(seg)
		lineLen += len(seg)
		if lineLen > maxLineLen {
			w.err = fmt.Errorf("%w: %s: line longer than %d octets", ErrInvalidMessage, strings.ToLower(name), maxLineLen)
			return
		}
		i = j
	}
	w.b.WriteString(crlf)
}

func isWSP(c byte) bool { return c == ' ' || c == '\t' }

func trimWSP(s string) string { return strings.Trim(s, " \t") }

// hasCtl reports whether s contains CR, LF or NUL.
func hasCtl(s string) bool { return strings.ContainsAny(s, "\r\n\x00") }

// checkHeaderText refuses CR, LF and NUL in s, also inside any encoded-word
// that a receiver might decode.
func checkHeaderText(field, s string) error {
	if hasCtl(s) || headertext.EncodedWordHasCtl(s) {
		return fmt.Errorf("%w: %s", ErrHeaderInjection, field)
	}
	return nil
}

// formatAddress renders a mailbox: "<addr>", `"Name" <addr>` or RFC 2047
// encoded-words followed by "<addr>".
func formatAddress(field string, a mail.Address) (string, error) {
	if hasCtl(a.Address) {
		return "", fmt.Errorf("%w: %s address", ErrHeaderInjection, field)
	}
	if err := checkAddress(a.Address); err != nil {
		return "", fmt.Errorf("%w: %s: %s", ErrInvalidAddress, field, err)
	}
	if err := checkHeaderText(field+" name", a.Name); err != nil {
		return "", err
	}
	if !utf8.ValidString(a.Name) {
		return "", fmt.Errorf("%w: %s name: invalid UTF-8", ErrInvalidMessage, field)
	}
	if a.Name == "" {
		return "<" + a.Address + ">", nil
	}
	if rawSafe(a.Name, 64) {
		if isPhraseOfAtoms(a.Name) {
			return a.Name + " <" + a.Address + ">", nil
		}
		return quoteString(a.Name) + " <" + a.Address + ">", nil
	}
	// Base64 words only contain characters allowed in a phrase (RFC 2047
	// section 5), whatever the name contains.
	return encodeWords(a.Name, true) + " <" + a.Address + ">", nil
}

// encodeUnstructured renders an unstructured field such as Subject: as is
// when that is unambiguous, else as RFC 2047 encoded-words.
func encodeUnstructured(field, s string) (string, error) {
	if err := checkHeaderText(field, s); err != nil {
		return "", err
	}
	if !utf8.ValidString(s) {
		return "", fmt.Errorf("%w: %s: invalid UTF-8", ErrInvalidMessage, field)
	}
	if s == "" || rawSafe(s, 0) {
		return s, nil
	}
	return encodeWords(s, false), nil
}

// rawSafe reports whether s can be written without encoding and read back
// unchanged: printable ASCII, no "=?" a decoder could take for an
// encoded-word, no leading, trailing or repeated spaces (parsers collapse
// them when unfolding), no word too long to fold, and at most maxLen bytes
// when maxLen > 0.
func rawSafe(s string, maxLen int) bool {
	if s == "" || (maxLen > 0 && len(s) > maxLen) {
		return false
	}
	if s[0] == ' ' || s[len(s)-1] == ' ' || strings.Contains(s, "  ") || strings.Contains(s, "=?") {
		return false
	}
	word := 0
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < 0x20 || c > 0x7e {
			return false
		}
		if c == ' ' {
			word = 0
			continue
		}
		if word++; word > 70 {
			return false
		}
	}
	return true
}

// isPhraseOfAtoms reports whether s is atoms separated by single spaces, a
// display name that needs no quoting.
func isPhraseOfAtoms(s string) bool {
	for word := range strings.SplitSeq(s, " ") {
		if word == "" || strings.Contains(word, ".") || !isDotAtom(word) {
			return false
		}
	}
	return true
}

func quoteString(s string) string {
	var b strings.Builder
	b.Grow(len(s) + 2)
	b.WriteByte('"')
	for i := 0; i < len(s); i++ {
		if s[i] == '"' || s[i] == '\\' {
			b.WriteByte('\\')
		}
		b.WriteByte(s[i])
	}
	b.WriteByte('"')
	return b.String()
}

// checkMessageID accepts dot-atom-text "@" dot-atom-text (RFC 5322 msg-id
// without the obsolete and domain-literal forms).
func checkMessageID(id string) error {
	if hasCtl(id) {
		return fmt.Errorf("%w: message-id", ErrHeaderInjection)
	}
	left, right, ok := strings.Cut(id, "@")
	if !ok || len(id) > 250 || !isDotAtom(left) || !isDotAtom(right) {
		return fmt.Errorf("%w: message-id: want dot-atom@dot-atom without angle brackets", ErrInvalidMessage)
	}
	return nil
}

func checkExtraHeaders(hs []Header) error {
	seen := make(map[string]bool, len(hs))
	for _, h := range hs {
		if hasCtl(h.Name) {
			return fmt.Errorf("%w: header name", ErrHeaderInjection)
		}
		if h.Name == "" {
			return fmt.Errorf("%w: empty header name", ErrInvalidMessage)
		}
		for i := 0; i < len(h.Name); i++ {
			// RFC 5322 ftext.
			if c := h.Name[i]; c < 33 || c > 126 || c == ':' {
				return fmt.Errorf("%w: header name %q", ErrInvalidMessage, h.Name)
			}
		}
		lower := strings.ToLower(h.Name)
		if reservedHeader(lower) {
			return fmt.Errorf("%w: header %s is written by Build or not allowed", ErrInvalidMessage, h.Name)
		}
		if seen[lower] {
			return fmt.Errorf("%w: header %s given twice", ErrInvalidMessage, h.Name)
		}
		seen[lower] = true
		if err := checkHeaderText(lower, h.Value); err != nil {
			return err
		}
		v := trimWSP(h.Value)
		if v == "" {
			return fmt.Errorf("%w: header %s: empty value", ErrInvalidMessage, h.Name)
		}
		for i := 0; i < len(v); i++ {
			if c := v[i]; (c < 0x20 && c != '\t') || c > 0x7e {
				return fmt.Errorf("%w: header %s: value must be printable ASCII", ErrInvalidMessage, h.Name)
			}
		}
	}
	if seen["list-unsubscribe-post"] {
		// RFC 8058 section 3.1: the POST field only makes sense next to a
		// List-Unsubscribe field, and has exactly one value.
		if !seen["list-unsubscribe"] {
			return fmt.Errorf("%w: List-Unsubscribe-Post without List-Unsubscribe", ErrInvalidMessage)
		}
		for _, h := range hs {
			if strings.EqualFold(h.Name, "List-Unsubscribe-Post") && trimWSP(h.Value) != "List-Unsubscribe=One-Click" {
				return fmt.Errorf("%w: List-Unsubscribe-Post must be %q", ErrInvalidMessage, "List-Unsubscribe=One-Click")
			}
		}
	}
	return nil
}
