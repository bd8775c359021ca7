package delivery

import (
	"bytes"
	"encoding/base64"
	"errors"
	"flag"
	"io"
	"mime"
	"mime/multipart"
	"mime/quotedprintable"
	"net/mail"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/floodgate-dev/floodgate/internal/headertext"
)

var update = flag.Bool("update", false, "rewrite golden files under testdata/")

func testDate() time.Time {
	return time.Date(2025, time.March, 14, 9, 26, 53, 0, time.FixedZone("", 3600))
}

// baseMessage is a valid message the tests vary one field at a time.
func baseMessage() Message {
	return Message{
		From:      mail.Address{Name: "Floodgate", Address: "noreply@example.com"},
		To:        mail.Address{Name: "Ada Lovelace", Address: "ada@example.org"},
		Subject:   "Reset your password",
		Text:      "Hello Ada,\n\nReset your password: https://example.com/reset?t=abc\n",
		HTML:      "<p>Hello Ada,</p>\n<p><a href=\"https://example.com/reset?t=abc\">Reset your password</a></p>\n",
		MessageID: "01J9ZK3M7QX4@example.com",
		Date:      testDate(),
	}
}

func goldenCases() map[string]Message {
	multipart := baseMessage()
	multipart.From.Name = "Floodgate Sécurité"
	multipart.To = mail.Address{Name: "Zoë Ångström-Łukasiewicz", Address: "zoe@example.org"}
	multipart.Subject = "Réinitialisez votre mot de passe — Floodgate"
	multipart.Text = "Bonjour Zoë,\r\n\r\nCliquez ici : https://example.com/reset?token=" + strings.Repeat("x", 120) + "\r\n. une ligne qui commence par un point\r\n"
	multipart.HTML = "<p>Bonjour Zoë,</p>\n<p><a href=\"https://example.com/reset\">Réinitialiser</a></p>"
	multipart.Headers = []Header{
		{Name: "List-Unsubscribe", Value: "<https://example.com/unsubscribe/opaque-token-0123456789abcdef>, <mailto:unsubscribe@example.com?subject=opaque-token-0123456789abcdef>"},
		{Name: "List-Unsubscribe-Post", Value: "List-Unsubscribe=One-Click"},
	}

	textOnly := baseMessage()
	textOnly.To.Name = `Bob "the builder" O'Neil \ Jr.`
	textOnly.HTML = ""
	textOnly.Text = "Your code is 123456.\nIt expires in 10 minutes."

	long := baseMessage()
	long.Subject = strings.Repeat("A rather long subject that needs folding ", 5) + "end"
	long.To.Name = strings.Repeat("名前", 30)
	long.Text = strings.Repeat("長い行", 400)
	long.HTML = "<p>" + strings.Repeat("word ", 300) + "</p>"

	return map[string]Message{"multipart": multipart, "text_only": textOnly, "long_fields": long}
}

func TestBuildGolden(t *testing.T) {
	for name, m := range goldenCases() {
		t.Run(name, func(t *testing.T) {
			got, err := Build(&m)
			if err != nil {
				t.Fatalf("Build: %v", err)
			}
			path := filepath.Join("testdata", name+".eml")
			if *update {
				if err := os.WriteFile(path, got, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("read golden file (run go test -update): %v", err)
			}
			if !bytes.Equal(got, want) {
				t.Errorf("Build(%s) differs from %s (run go test -update to accept)\n--- got ---\n%s", name, path, got)
			}
			checkWire(t, got)
			checkRoundTrip(t, &m, got)
		})
	}
}

func TestBuildDeterministic(t *testing.T) {
	m := baseMessage()
	a, err := Build(&m)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := Build(&m)
	if !bytes.Equal(a, b) {
		t.Fatal("two Builds of the same message differ")
	}
	m.MessageID = "other@example.com"
	c, _ := Build(&m)
	if boundaryFor("other@example.com") == boundaryFor(baseMessage().MessageID) || !bytes.Contains(c, []byte(boundaryFor(m.MessageID))) {
		t.Error("boundary does not follow the Message-ID")
	}
}

// checkWire asserts the SMTP-safe shape: 7-bit, CRLF only, lines <= 998.
func checkWire(t *testing.T, raw []byte) {
	t.Helper()
	for i, c := range raw {
		switch {
		case c >= 0x80:
			t.Fatalf("byte %d is 0x%02x, want 7-bit output", i, c)
		case c == '\n' && (i == 0 || raw[i-1] != '\r'):
			t.Fatalf("bare LF at byte %d", i)
		case c == '\r' && (i+1 == len(raw) || raw[i+1] != '\n'):
			t.Fatalf("bare CR at byte %d", i)
		}
	}
	if !bytes.HasSuffix(raw, []byte("\r\n")) {
		t.Error("message does not end with CRLF")
	}
	for n, line := range bytes.Split(raw, []byte("\r\n")) {
		if len(line) > maxLineLen {
			t.Fatalf("line %d has %d octets, want <= %d", n+1, len(line), maxLineLen)
		}
	}
}

// normalizeBreaks is the documented body normalisation: every CRLF, LF or
// lone CR becomes CRLF.
func normalizeBreaks(s string) string {
	s = strings.ReplaceAll(s, "\r\n", "\n")
	s = strings.ReplaceAll(s, "\r", "\n")
	return strings.ReplaceAll(s, "\n", "\r\n")
}

// parsed is what a standard reader recovers from a built message.
type parsed struct {
	header              mail.Header
	subject, text, html string
	from, to            *mail.Address
}

func parseBuilt(t *testing.T, raw []byte) parsed {
	t.Helper()
	msg, err := mail.ReadMessage(bytes.NewReader(raw))
	if err != nil {
		t.Fatalf("mail.ReadMessage: %v", err)
	}
	var p parsed
	p.header = msg.Header
	if p.subject, err = new(mime.WordDecoder).DecodeHeader(msg.Header.Get("Subject")); err != nil {
		t.Fatalf("decode Subject: %v", err)
	}
	if p.from, err = mail.ParseAddress(msg.Header.Get("From")); err != nil {
		t.Fatalf("parse From: %v", err)
	}
	if p.to, err = mail.ParseAddress(msg.Header.Get("To")); err != nil {
		t.Fatalf("parse To: %v", err)
	}
	mt, params, err := mime.ParseMediaType(msg.Header.Get("Content-Type"))
	if err != nil {
		t.Fatalf("parse Content-Type: %v", err)
	}
	if mt == "text/plain" {
		if cte := msg.Header.Get("Content-Transfer-Encoding"); cte != "quoted-printable" {
			t.Fatalf("Content-Transfer-Encoding = %q", cte)
		}
		b, err := io.ReadAll(quotedprintable.NewReader(msg.Body))
		if err != nil {
			t.Fatalf("decode text body: %v", err)
		}
		p.text = string(b)
		return p
	}
	if mt != "multipart/alternative" {
		t.Fatalf("Content-Type = %q", mt)
	}
	mr := multipart.NewReader(msg.Body, params["boundary"])
	for i := 0; ; i++ {
		part, err := mr.NextPart()
		if err == io.EOF {
			if i != 2 {
				t.Fatalf("got %d parts, want 2", i)
			}
			break
		}
		if err != nil {
			t.Fatalf("NextPart: %v", err)
		}
		b, err := io.ReadAll(part) // NextPart decodes quoted-printable
		if err != nil {
			t.Fatalf("read part: %v", err)
		}
		switch ct := part.Header.Get("Content-Type"); ct {
		case "text/plain; charset=utf-8":
			p.text = string(b)
		case "text/html; charset=utf-8":
			p.html = string(b)
		default:
			t.Fatalf("part Content-Type = %q", ct)
		}
	}
	return p
}

func checkRoundTrip(t *testing.T, m *Message, raw []byte) {
	t.Helper()
	p := parseBuilt(t, raw)
	if p.subject != m.Subject {
		t.Errorf("Subject = %q, want %q", p.subject, m.Subject)
	}
	if p.from.Name != m.From.Name || p.from.Address != m.From.Address {
		t.Errorf("From = %q <%s>, want %q <%s>", p.from.Name, p.from.Address, m.From.Name, m.From.Address)
	}
	if p.to.Name != m.To.Name || p.to.Address != m.To.Address {
		t.Errorf("To = %q <%s>, want %q <%s>", p.to.Name, p.to.Address, m.To.Name, m.To.Address)
	}
	if want := normalizeBreaks(m.Text); p.text != want {
		t.Errorf("text part = %q, want %q", p.text, want)
	}
	if want := normalizeBreaks(m.HTML); p.html != want {
		t.Errorf("html part = %q, want %q", p.html, want)
	}
	if got := p.header.Get("Message-ID"); got != "<"+m.MessageID+">" {
		t.Errorf("Message-ID = %q", got)
	}
	if got := p.header.Get("Auto-Submitted"); got != "auto-generated" {
		t.Errorf("Auto-Submitted = %q", got)
	}
	if got := p.header.Get("MIME-Version"); got != "1.0" {
		t.Errorf("MIME-Version = %q", got)
	}
	if got, err := p.header.Date(); err != nil || !got.Equal(m.Date) {
		t.Errorf("Date = %v, %v; want %v", got, err, m.Date)
	}
	for _, h := range m.Headers {
		if got := p.header.Get(h.Name); got != h.Value {
			t.Errorf("%s = %q, want %q", h.Name, got, h.Value)
		}
	}
}

func TestBuildRoundTrip(t *testing.T) {
	tests := []struct {
		name    string
		subject string
		to      string
	}{
		{"empty subject", "", "Ada"},
		{"encoded-word lookalike", "=?utf-8?q?not_encoded?= literally", "=?utf-8?q?Ada?="},
		{"leading and double spaces", "  two  spaces ", " Ada  L "},
		{"tab and controls", "a\tb\x01c\x7f", "A\tB"},
		{"long word", strings.Repeat("x", 2000), strings.Repeat("y", 500)},
		{"emoji", "🔐 Your code", "👩‍💻 Dev"},
		{"specials", `Re: [x] "q" (c) <a> , ; :`, `Doe, John <jd> (x)`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := baseMessage()
			m.Subject, m.To.Name = tt.subject, tt.to
			raw, err := Build(&m)
			if err != nil {
				t.Fatalf("Build: %v", err)
			}
			checkWire(t, raw)
			checkRoundTrip(t, &m, raw)
		})
	}
}

func TestBuildHeaderInjection(t *testing.T) {
	b64 := func(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }
	tests := []struct {
		name string
		edit func(m *Message)
	}{
		{"subject CRLF", func(m *Message) { m.Subject = "hi\r\nBcc: victim@example.net" }},
		{"subject LF", func(m *Message) { m.Subject = "hi\nBcc: victim@example.net" }},
		{"subject CR", func(m *Message) { m.Subject = "hi\rBcc: victim@example.net" }},
		{"subject NUL", func(m *Message) { m.Subject = "hi\x00" }},
		{"subject encoded CRLF", func(m *Message) { m.Subject = "=?utf-8?q?a=0D=0ABcc:_x@y?=" }},
		{"subject encoded lower hex", func(m *Message) { m.Subject = "x =?UTF-8?Q?a=0d=0a?= y" }},
		{"subject encoded base64", func(m *Message) { m.Subject = "=?utf-8?b?" + b64("x\r\nBcc: y@z") + "?=" }},
		{"subject encoded other charset", func(m *Message) { m.Subject = "=?iso-8859-1?q?a=0Ab?=" }},
		{"subject encoded with space", func(m *Message) { m.Subject = "=?utf-8?q?a =0A b?=" }},
		{"subject encoded NUL", func(m *Message) { m.Subject = "=?utf-8?q?=00?=" }},
		{"from name CRLF", func(m *Message) { m.From.Name = "Support\r\nBcc: x@y" }},
		{"to name LF", func(m *Message) { m.To.Name = "Ada\nBcc: x@y" }},
		{"to name NUL", func(m *Message) { m.To.Name = "Ada\x00" }},
		{"to name encoded CRLF", func(m *Message) { m.To.Name = "=?utf-8?q?a=0D=0ABcc:_x@y?=" }},
		{"from name encoded base64 LF", func(m *Message) { m.From.Name = "=?utf-8?B?" + b64("a\nb") + "?=" }},
		{"to address CRLF", func(m *Message) { m.To.Address = "ada@example.org\r\nBcc: x@y" }},
		{"from address LF", func(m *Message) { m.From.Address = "noreply@example.com\nX: y" }},
		{"message-id CRLF", func(m *Message) { m.MessageID = "a@b\r\nBcc: x@y" }},
		{"extra value CRLF", func(m *Message) {
			m.Headers = []Header{{Name: "List-Unsubscribe", Value: "<https://x.example/u>\r\nBcc: x@y"}}
		}},
		{"extra value encoded LF", func(m *Message) { m.Headers = []Header{{Name: "X-Tag", Value: "=?utf-8?q?=0A?="}} }},
		{"extra name CRLF", func(m *Message) { m.Headers = []Header{{Name: "X-A\r\nBcc", Value: "x@y"}} }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := baseMessage()
			tt.edit(&m)
			raw, err := Build(&m)
			if !errors.Is(err, ErrHeaderInjection) {
				t.Fatalf("Build = %v, %q; want ErrHeaderInjection", err, raw)
			}
			if strings.Contains(err.Error(), "x@y") || strings.Contains(err.Error(), "victim") {
				t.Errorf("error %q repeats the input", err)
			}
		})
	}
}

func TestBuildInvalid(t *testing.T) {
	tests := []struct {
		name string
		edit func(m *Message)
		want error
	}{
		{"domain literal", func(m *Message) { m.To.Address = "ada@[192.0.2.1]" }, ErrInvalidAddress},
		{"ipv6 literal", func(m *Message) { m.To.Address = "ada@[IPv6:2001:db8::1]" }, ErrInvalidAddress},
		{"no at", func(m *Message) { m.To.Address = "ada" }, ErrInvalidAddress},
		{"empty local", func(m *Message) { m.To.Address = "@example.org" }, ErrInvalidAddress},
		{"two ats", func(m *Message) { m.To.Address = "a@b@example.org" }, ErrInvalidAddress},
		{"quoted local", func(m *Message) { m.To.Address = `"a b"@example.org` }, ErrInvalidAddress},
		{"non-ASCII local", func(m *Message) { m.To.Address = "zoë@example.org" }, ErrInvalidAddress},
		{"U-label domain", func(m *Message) { m.To.Address = "zoe@exämple.org" }, ErrInvalidAddress},
		{"empty from", func(m *Message) { m.From.Address = "" }, ErrInvalidAddress},
		{"message-id brackets", func(m *Message) { m.MessageID = "<a@b>" }, ErrInvalidMessage},
		{"message-id no at", func(m *Message) { m.MessageID = "abc" }, ErrInvalidMessage},
		{"message-id literal", func(m *Message) { m.MessageID = "a@[127.0.0.1]" }, ErrInvalidMessage},
		{"zero date", func(m *Message) { m.Date = time.Time{} }, ErrInvalidMessage},
		{"invalid UTF-8 subject", func(m *Message) { m.Subject = "a\xffb" }, ErrInvalidMessage},
		{"invalid UTF-8 name", func(m *Message) { m.To.Name = "a\xffb" }, ErrInvalidMessage},
		{"invalid UTF-8 body", func(m *Message) { m.Text = "a\xffb" }, ErrInvalidMessage},
		{"reserved Bcc", func(m *Message) { m.Headers = []Header{{Name: "Bcc", Value: "x@example.net"}} }, ErrInvalidMessage},
		{"reserved subject", func(m *Message) { m.Headers = []Header{{Name: "subject", Value: "x"}} }, ErrInvalidMessage},
		{"reserved content", func(m *Message) { m.Headers = []Header{{Name: "Content-Type", Value: "text/html"}} }, ErrInvalidMessage},
		{"header name space", func(m *Message) { m.Headers = []Header{{Name: "X Y", Value: "z"}} }, ErrInvalidMessage},
		{"header name colon", func(m *Message) { m.Headers = []Header{{Name: "X:Y", Value: "z"}} }, ErrInvalidMessage},
		{"header empty value", func(m *Message) { m.Headers = []Header{{Name: "X-Y", Value: "  "}} }, ErrInvalidMessage},
		{"header non-ASCII value", func(m *Message) { m.Headers = []Header{{Name: "X-Y", Value: "é"}} }, ErrInvalidMessage},
		{"header unfoldable", func(m *Message) { m.Headers = []Header{{Name: "X-Y", Value: strings.Repeat("a", 1000)}} }, ErrInvalidMessage},
		{"header twice", func(m *Message) {
			m.Headers = []Header{{Name: "X-Y", Value: "a"}, {Name: "x-y", Value: "b"}}
		}, ErrInvalidMessage},
		{"unsubscribe post alone", func(m *Message) {
			m.Headers = []Header{{Name: "List-Unsubscribe-Post", Value: "List-Unsubscribe=One-Click"}}
		}, ErrInvalidMessage},
		{"unsubscribe post value", func(m *Message) {
			m.Headers = []Header{{Name: "List-Unsubscribe", Value: "<https://x.example/u>"}, {Name: "List-Unsubscribe-Post", Value: "yes"}}
		}, ErrInvalidMessage},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := baseMessage()
			tt.edit(&m)
			_, err := Build(&m)
			if !errors.Is(err, tt.want) {
				t.Fatalf("Build = %v, want %v", err, tt.want)
			}
			if strings.Contains(err.Error(), "ada@") || strings.Contains(err.Error(), "zoe") {
				t.Errorf("error %q repeats the address", err)
			}
		})
	}
	if _, err := Build(nil); !errors.Is(err, ErrInvalidMessage) {
		t.Errorf("Build(nil) = %v, want ErrInvalidMessage", err)
	}
}

// FuzzBuildHeaders checks that whatever the subject, display name and extra
// header value, Build either refuses them or writes exactly the expected
// header fields, each once, that read back to the input.
func FuzzBuildHeaders(f *testing.F) {
	for _, s := range []string{
		"", "Hello", "Réinitialisation", "=?utf-8?q?a=0D=0ABcc:_x@y?=", "a\r\nBcc: x@y", "a\nb", "\x00",
		"=?", "?=", `"quoted" \ name`, strings.Repeat("long ", 300), strings.Repeat("é", 300), " \t ",
		"Bcc: x@y", "a\r\n\r\nbody", "=?utf-8?b?DQo=?=",
	} {
		f.Add(s, s, s)
	}
	f.Fuzz(func(t *testing.T, subject, name, value string) {
		m := baseMessage()
		m.Subject, m.To.Name = subject, name
		m.Headers = []Header{{Name: "X-Fuzz", Value: value}}
		raw, err := Build(&m)
		if err != nil {
			if errors.Is(err, ErrHeaderInjection) {
				if !hasCtl(subject+name+value) && !headertext.EncodedWordHasCtl(subject) && !headertext.EncodedWordHasCtl(name) && !headertext.EncodedWordHasCtl(value) {
					t.Fatalf("ErrHeaderInjection without CR, LF or NUL in input: %v", err)
				}
				return
			}
			if !errors.Is(err, ErrInvalidMessage) {
				t.Fatalf("Build: unexpected error %v", err)
			}
			return
		}
		head, _, ok := bytes.Cut(raw, []byte("\r\n\r\n"))
		if !ok {
			t.Fatal("no end of header section")
		}
		counts := map[string]int{}
		for _, line := range strings.Split(string(head), "\r\n") {
			if strings.ContainsAny(line, "\r\n\x00") || len(line) > maxLineLen {
				t.Fatalf("bad header line %q", line)
			}
			if line == "" || strings.TrimLeft(line, " \t") == "" {
				t.Fatalf("empty or blank header line in %q", head)
			}
			if line[0] == ' ' || line[0] == '\t' {
				continue
			}
			field, _, ok := strings.Cut(line, ":")
			if !ok {
				t.Fatalf("header line without colon: %q", line)
			}
			counts[strings.ToLower(field)]++
		}
		want := []string{"date", "from", "to", "subject", "message-id", "mime-version", "auto-submitted", "x-fuzz", "content-type"}
		if len(counts) != len(want) {
			t.Fatalf("header fields %v, want %v", counts, want)
		}
		for _, f := range want {
			if counts[f] != 1 {
				t.Fatalf("header fields %v, want %v once each", counts, want)
			}
		}
		p := parseBuilt(t, raw)
		if p.subject != subject {
			t.Fatalf("Subject = %q, want %q", p.subject, subject)
		}
		if p.to.Name != name || p.to.Address != m.To.Address {
			t.Fatalf("To = %q <%s>, want %q", p.to.Name, p.to.Address, name)
		}
		if got := p.header.Get("X-Fuzz"); strings.Join(strings.Fields(got), " ") != strings.Join(strings.Fields(value), " ") {
			t.Fatalf("X-Fuzz = %q, want %q", got, value)
		}
	})
}

func BenchmarkBuild(b *testing.B) {
	m := goldenCases()["multipart"]
	raw, _ := Build(&m)
	b.SetBytes(int64(len(raw)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Build(&m); err != nil {
			b.Fatal(err)
		}
	}
}
