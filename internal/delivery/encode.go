package delivery

import (
	"encoding/base64"
	"errors"
	"strings"
	"unicode/utf8"
)

// encodedWordPayload is the longest payload of a 75-character encoded-word
// (RFC 2047 section 2) with the "=?utf-8?x?" prefix and "?=" suffix.
const encodedWordPayload = 75 - len("=?utf-8?q?") - len("?=")

// encodeWords encodes s (valid UTF-8) as RFC 2047 encoded-words of at most
// 75 characters separated by single spaces, never splitting a character
// between words. phrase selects base64 ("B"), whose alphabet is safe inside
// a display name; otherwise the shorter of Q and B is used.
func encodeWords(s string, phrase bool) string {
	useB := phrase
	if !useB {
		esc := 0
		for i := 0; i < len(s); i++ {
			if c := s[i]; c != ' ' && !qSafe(c) {
				esc++
			}
		}
		// Q costs two extra characters per escaped byte, B a third per byte.
		useB = 6*esc > len(s)
	}
	var out strings.Builder
	out.Grow(len(s)*2 + 16)
	if useB {
		// 45 bytes encode to 60 base64 characters, the largest multiple of
		// 4 within the payload limit.
		const maxChunk = encodedWordPayload / 4 * 3
		for len(s) > 0 {
			n := 0
			for n < len(s) {
				_, size := utf8.DecodeRuneInString(s[n:])
				if n+size > maxChunk {
					break
				}
				n += size
			}
			if out.Len() > 0 {
				out.WriteByte(' ')
			}
			out.WriteString("=?utf-8?b?")
			out.WriteString(base64.StdEncoding.EncodeToString([]byte(s[:n])))
			out.WriteString("?=")
			s = s[n:]
		}
		return out.String()
	}
	var payload []byte
	flush := func() {
		if out.Len() > 0 {
			out.WriteByte(' ')
		}
		out.WriteString("=?utf-8?q?")
		out.Write(payload)
		out.WriteString("?=")
		payload = payload[:0]
	}
	var enc []byte
	for i := 0; i < len(s); {
		_, size := utf8.DecodeRuneInString(s[i:])
		enc = enc[:0]
		for _, c := range []byte(s[i : i+size]) {
			switch {
			case c == ' ':
				enc = append(enc, '_')
			case qSafe(c):
				enc = append(enc, c)
			default:
				enc = append(enc, '=', upperHex[c>>4], upperHex[c&0x0f])
			}
		}
		if len(payload)+len(enc) > encodedWordPayload {
			flush()
		}
		payload = append(payload, enc...)
		i += size
	}
	if len(payload) > 0 {
		flush()
	}
	return out.String()
}

const upperHex = "0123456789ABCDEF"

// qSafe reports whether c may appear literally in a Q-encoded word in any
// position, including a phrase (RFC 2047 section 5 rule 3).
func qSafe(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' ||
		c == '!' || c == '*' || c == '+' || c == '-' || c == '/'
}

// checkAddress accepts an ASCII dot-atom local part and a host name domain.
// Quoted local parts, domain literals and non-ASCII (SMTPUTF8) addresses are
// refused: recipients are normalised to IDNA A-labels before they get here.
func checkAddress(a string) error {
	at := strings.LastIndexByte(a, '@')
	if at <= 0 || at == len(a)-1 {
		return errors.New("want local-part@domain")
	}
	local, domain := a[:at], a[at+1:]
	if len(local) > 64 {
		return errors.New("local part longer than 64 octets")
	}
	if !isDotAtom(local) {
		return errors.New("local part must be an ASCII dot-atom")
	}
	if domain[0] == '[' {
		return errors.New("domain literals are not allowed")
	}
	if !isHostname(domain) {
		return errors.New("domain must be an ASCII host name")
	}
	return nil
}

// isDotAtom reports whether s is RFC 5322 dot-atom-text.
func isDotAtom(s string) bool {
	if s == "" || s[0] == '.' || s[len(s)-1] == '.' || strings.Contains(s, "..") {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c == '.' || 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' {
			continue
		}
		if !strings.ContainsRune("!#$%&'*+-/=?^_`{|}~", rune(c)) {
			return false
		}
	}
	return true
}

// isHostname reports whether s is an ASCII host name: dot-separated labels of
// letters, digits and inner hyphens, 63 octets each, 253 in all.
func isHostname(s string) bool {
	if s == "" || len(s) > 253 {
		return false
	}
	for label := range strings.SplitSeq(s, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for i := 0; i < len(label); i++ {
			c := label[i]
			if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-') {
				return false
			}
		}
	}
	return true
}
