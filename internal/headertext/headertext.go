// Package headertext checks text bound for a mail header (RFC 5322) for what
// a mail reader could turn into a line break: RFC 2047 encoded-words that
// decode to CR, LF or NUL. The producer (package queue) refuses such text at
// enqueue and the message builder (internal/delivery) refuses it again, with
// the same rule.
package headertext

import (
	"bytes"
	"encoding/base64"
	"strings"
)

// EncodedWordHasCtl reports whether any encoded-word in s decodes to CR, LF
// or NUL. It is deliberately more lenient than RFC 2047 (any charset, spaces
// in the payload, missing padding or terminator) so that it flags whatever a
// lax mail reader might decode.
func EncodedWordHasCtl(s string) bool {
	for {
		i := strings.Index(s, "=?")
		if i < 0 {
			return false
		}
		s = s[i+2:]
		q := strings.IndexByte(s, '?')
		if q < 0 {
			return false
		}
		rest := s[q+1:]
		if len(rest) < 2 || rest[1] != '?' {
			continue
		}
		payload := rest[2:]
		if end := strings.Index(payload, "?="); end >= 0 {
			payload = payload[:end]
		}
		var dec []byte
		switch rest[0] | 0x20 {
		case 'q':
			dec = qDecodeLenient(payload)
		case 'b':
			dec = bDecodeLenient(payload)
		default:
			continue
		}
		if bytes.ContainsAny(dec, "\r\n\x00") {
			return true
		}
	}
}

func qDecodeLenient(s string) []byte {
	out := make([]byte, 0, len(s))
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '_':
			out = append(out, ' ')
		case c == '=' && i+2 < len(s) && isHex(s[i+1]) && isHex(s[i+2]):
			out = append(out, unhex(s[i+1])<<4|unhex(s[i+2]))
			i += 2
		default:
			out = append(out, c)
		}
	}
	return out
}

func bDecodeLenient(s string) []byte {
	clean := make([]byte, 0, len(s))
	for i := 0; i < len(s); i++ {
		c := s[i]
		if 'A' <= c && c <= 'Z' || 'a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '+' || c == '/' {
			clean = append(clean, c)
		}
	}
	if len(clean)%4 == 1 {
		clean = clean[:len(clean)-1]
	}
	out := make([]byte, base64.RawStdEncoding.DecodedLen(len(clean)))
	n, _ := base64.RawStdEncoding.Decode(out, clean)
	return out[:n]
}

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

func unhex(c byte) byte {
	switch {
	case c <= '9':
		return c - '0'
	case c <= 'F':
		return c - 'A' + 10
	default:
		return c - 'a' + 10
	}
}
