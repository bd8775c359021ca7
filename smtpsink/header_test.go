package smtpsink

import (
	"bytes"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/emersion/go-msgauth/dkim"
)

func TestScanHeader(t *testing.T) {
	tests := []struct {
		name, raw      string
		subject, msgID string
		dkim           []string
	}{
		{
			name:    "plain",
			raw:     "Subject: hello\r\nMessage-ID: <1@x>\r\n\r\nbody",
			subject: "hello", msgID: "<1@x>",
		},
		{
			name:    "folded and case-insensitive",
			raw:     "subject: a long\r\n\tsubject\r\nmessage-id:\r\n <2@x>\r\n\r\n",
			subject: "a long\tsubject", msgID: "<2@x>",
		},
		{
			name:    "encoded words",
			raw:     "Subject: =?UTF-8?B?w6l0w6k=?= =?ISO-8859-1?Q?_=E9t=E9?=\r\n\r\n",
			subject: "été été",
		},
		{
			name:    "unknown charset kept",
			raw:     "Subject: =?x-unknown?q?abc?=\r\n\r\n",
			subject: "=?x-unknown?q?abc?=",
		},
		{
			name:    "bare LF and first field wins",
			raw:     "Subject: one\nSubject: two\nMessage-ID: <3@x>\n\nSubject: body\n",
			subject: "one", msgID: "<3@x>",
		},
		{
			name: "signatures in order, folded",
			raw:  "DKIM-Signature: v=1; d=a.example;\r\n s=s1\r\nFrom: x\r\ndkim-signature : v=1; d=b.example\r\n\r\n",
			dkim: []string{"v=1; d=a.example; s=s1", "v=1; d=b.example"},
		},
		{
			name: "header field in body ignored",
			raw:  "From: x\r\n\r\nDKIM-Signature: v=1\r\n",
		},
		{
			name:    "no end of header",
			raw:     "Subject: cut",
			subject: "cut",
		},
		{
			name:    "invalid UTF-8 made valid",
			raw:     "Subject: caf\xe9\r\n\r\n",
			subject: "caf\uFFFD",
		},
	}
	for _, tt := range tests {
		h := scanHeader([]byte(tt.raw))
		if h.subject != tt.subject || h.messageID != tt.msgID || strings.Join(h.dkim, "|") != strings.Join(tt.dkim, "|") {
			t.Errorf("%s: scanHeader(%q) = subject %q, message-id %q, dkim %q; want %q, %q, %q",
				tt.name, tt.raw, h.subject, h.messageID, h.dkim, tt.subject, tt.msgID, tt.dkim)
		}
	}
}

func TestParseDKIMTags(t *testing.T) {
	tests := []struct {
		in   string
		want dkimTags
	}{
		{"v=1; a=rsa-sha256; d=example.org; s=sel; b=abc", dkimTags{"example.org", "sel", "rsa-sha256"}},
		{"v=1;a = ed25519-sha256 ;d=ex\r\n ample.org;s=\ts1", dkimTags{"example.org", "s1", "ed25519-sha256"}},
		{"garbage", dkimTags{}},
		{"", dkimTags{}},
	}
	for _, tt := range tests {
		if got := parseDKIMTags(tt.in); got != tt.want {
			t.Errorf("parseDKIMTags(%q) = %+v, want %+v", tt.in, got, tt.want)
		}
	}
}

// FuzzScanHeader checks that header parsing never panics, yields valid
// UTF-8, and finds exactly the signatures go-msgauth verifies, which is what
// lets results be labelled by position.
func FuzzScanHeader(f *testing.F) {
	f.Add([]byte("Subject: hi\r\nDKIM-Signature: v=1; d=x; s=y; a=rsa-sha256\r\n\r\nbody"))
	f.Add([]byte(" DKIM-Signature: v=1\r\n\r\n"))
	f.Add([]byte("DKIM-Signature: a\nDKIM-Signature: b\n\tc\n\n"))
	f.Add([]byte("Subject: =?utf-8?q?=E2=82=AC?=\r\n\r\n"))
	f.Add([]byte("\r\n\r\n"))
	f.Add([]byte("DKIM-Signature\r\n:x\r\n\r\n"))
	keys := &Keys{}
	f.Fuzz(func(t *testing.T, raw []byte) {
		h := scanHeader(raw)
		if !utf8.ValidString(h.subject) {
			t.Errorf("subject %q is not valid UTF-8", h.subject)
		}
		verifs, err := dkim.VerifyWithOptions(bytes.NewReader(raw), &dkim.VerifyOptions{
			LookupTXT:        keys.lookupTXT,
			MaxVerifications: 1 << 20,
		})
		if err == nil && len(verifs) != len(h.dkim) {
			t.Errorf("scanHeader found %d signatures, go-msgauth verified %d", len(h.dkim), len(verifs))
		}
		results := verifyDKIM(raw, h.dkim, keys)
		if len(results) == 0 {
			t.Error("verifyDKIM returned no result")
		}
		for _, r := range results {
			if r.Result == ResultPass {
				t.Errorf("result %+v passes without any key", r)
			}
		}
	})
}

// FuzzParseKeys checks that the keys parser never panics and that every
// accepted record is found under its name.
func FuzzParseKeys(f *testing.F) {
	f.Add("s._domainkey.example.org v=DKIM1; p=\n")
	f.Add("# c\n\ns._domainkey.example.org \"v=DKIM1; k=ed25519; \" \"p=11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo=\"\n")
	f.Add("s._domainkey.example.org \"a\\\"b\"\n")
	f.Add("x\ty")
	f.Fuzz(func(t *testing.T, file string) {
		k, err := ParseKeys(strings.NewReader(file))
		if err != nil {
			return
		}
		for line := range strings.Lines(file) {
			line = strings.TrimSpace(line)
			if line == "" || strings.HasPrefix(line, "#") {
				continue
			}
			name, _, _ := strings.Cut(strings.ReplaceAll(line, "\t", " "), " ")
			if _, err := k.lookupTXT(name); err != nil {
				t.Errorf("record for %q accepted but not found: %v", name, err)
			}
		}
	})
}
