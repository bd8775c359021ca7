package smtpsink

import (
	"bytes"
	"mime"
	"strings"
	"unicode/utf8"
)

// headerInfo is what the sink reads from a message's header section.
type headerInfo struct {
	subject   string   // unfolded, RFC 2047 decoded
	messageID string   // as sent, trimmed
	kind      string   // X-Floodgate-Kind, trimmed
	dkim      []string // DKIM-Signature field values in header order, unfolded
}

// scanHeader reads the header section of raw (RFC 5322 section 2.2) up to
// the first empty line or the end of raw. It splits fields exactly as
// go-msgauth's verifier does (a line starting with SP or HTAB continues the
// previous field, any other line starts one; the name is what precedes the
// first ':' of the whole field, trimmed), so the i-th DKIM-Signature found
// here is the i-th one it verifies.
func scanHeader(raw []byte) headerInfo {
	var (
		h       headerInfo
		subject string
		gotSubj bool
		gotMID  bool
		gotKind bool
		lines   [][]byte // the lines of the field being read, without line ends
	)
	flush := func() {
		if len(lines) == 0 {
			return
		}
		var name []byte
		var value [][]byte
		if i := bytes.IndexByte(lines[0], ':'); i >= 0 {
			name = lines[0][:i]
			value = append([][]byte{lines[0][i+1:]}, lines[1:]...)
		} else {
			// Rare: no ':' on the first line, so the name runs on.
			whole := bytes.Join(lines, []byte("\r\n"))
			n, v, _ := bytes.Cut(whole, []byte{':'})
			name, value = n, [][]byte{bytes.ReplaceAll(v, []byte("\r\n"), nil)}
		}
		lines = lines[:0]
		key := classify(bytes.TrimSpace(name))
		if key == keyOther {
			return
		}
		// Joining the lines is RFC 5322 unfolding: CRLF removed, WSP kept.
		v := strings.TrimSpace(string(bytes.Join(value, nil)))
		switch key {
		case keySubject:
			if !gotSubj {
				subject, gotSubj = v, true
			}
		case keyMessageID:
			if !gotMID {
				h.messageID, gotMID = v, true
			}
		case keyDKIM:
			h.dkim = append(h.dkim, v)
		case keyKind:
			if !gotKind {
				h.kind, gotKind = validUTF8(v), true
			}
		}
	}

	fields := 0
	rest := raw
	for len(rest) > 0 {
		var line []byte
		if i := bytes.IndexByte(rest, '\n'); i >= 0 {
			line, rest = rest[:i], rest[i+1:]
		} else {
			line, rest = rest, nil
		}
		line = bytes.TrimSuffix(line, []byte{'\r'})
		if len(line) == 0 {
			break
		}
		if fields > 0 && (line[0] == ' ' || line[0] == '\t') {
			lines = append(lines, line)
			continue
		}
		flush()
		fields++
		lines = append(lines, line)
	}
	flush()

	if gotSubj {
		h.subject = decodeSubject(subject)
	}
	return h
}

type fieldKey int

const (
	keyOther fieldKey = iota
	keySubject
	keyMessageID
	keyDKIM
	keyKind
)

// KindHeader is the header field naming an email's kind, which the sink
// reports as [Message].Kind.
const KindHeader = "X-Floodgate-Kind"

func classify(name []byte) fieldKey {
	switch {
	case bytes.EqualFold(name, []byte("Subject")):
		return keySubject
	case bytes.EqualFold(name, []byte("Message-ID")):
		return keyMessageID
	case bytes.EqualFold(name, []byte("DKIM-Signature")):
		return keyDKIM
	case bytes.EqualFold(name, []byte(KindHeader)):
		return keyKind
	}
	return keyOther
}

// decodeSubject decodes RFC 2047 encoded-words. A value that does not decode
// (unknown charset, malformed word) is kept as sent, made valid UTF-8.
func decodeSubject(v string) string {
	if strings.Contains(v, "=?") {
		var d mime.WordDecoder
		if s, err := d.DecodeHeader(v); err == nil {
			v = s
		}
	}
	if !utf8.ValidString(v) {
		v = strings.ToValidUTF8(v, "\uFFFD")
	}
	return v
}

// dkimTags holds the tags of a DKIM-Signature that a result reports.
type dkimTags struct {
	domain, selector, algorithm string
}

// parseDKIMTags reads d=, s= and a= from a DKIM-Signature tag list
// (RFC 6376 section 3.2), ignoring anything malformed: the verifier decides
// validity, this only labels its result.
func parseDKIMTags(v string) dkimTags {
	var t dkimTags
	for part := range strings.SplitSeq(v, ";") {
		name, value, ok := strings.Cut(part, "=")
		if !ok {
			continue
		}
		value = stripFWS(value)
		switch strings.TrimSpace(name) {
		case "d":
			t.domain = value
		case "s":
			t.selector = value
		case "a":
			t.algorithm = value
		}
	}
	return t
}

func stripFWS(s string) string {
	return strings.Map(func(r rune) rune {
		switch r {
		case ' ', '\t', '\r', '\n':
			return -1
		}
		return r
	}, s)
}
