package queue

import (
	"fmt"
	"mime"
	"net/mail"
	"strings"
	"unicode"
	"unicode/utf8"

	"golang.org/x/net/idna"

	"github.com/floodgate-dev/floodgate/internal/headertext"
)

// Limits from RFC 5321 section 4.5.3.1.
const (
	maxLocalPart = 64
	maxAddress   = 254
	maxName      = 256
)

// idnaProfile maps and validates a domain the way a mail client looks it up.
var idnaProfile = idna.New(idna.MapForLookup(), idna.BidiRule(), idna.Transitional(false))

// NormalizeAddress validates a recipient address and returns it in the form
// floodgate delivers to: the local part as given (it is case-sensitive on
// the wire) and the domain lower-cased and converted to ASCII (IDNA).
// Display names, domain literals, IP addresses and all-numeric domains,
// non-ASCII local parts, CR, LF and NUL are refused.
func NormalizeAddress(addr string) (string, error) {
	if addr == "" {
		return "", invalid("to", "is empty")
	}
	if len(addr) > maxAddress*4 || strings.ContainsAny(addr, "\r\n\x00") {
		return "", invalid("to", "contains CR, LF or NUL or is too long")
	}
	at := strings.LastIndexByte(addr, '@')
	if at <= 0 || at == len(addr)-1 {
		return "", invalid("to", "is not of the form local@domain")
	}
	local, domain := addr[:at], addr[at+1:]
	if strings.HasPrefix(domain, "[") {
		return "", invalid("to", "domain literals are not accepted")
	}
	for _, r := range local {
		if r >= utf8.RuneSelf || r < 0x21 || r == 0x7f {
			return "", invalid("to", "local part must be printable ASCII without spaces")
		}
	}
	if len(local) > maxLocalPart {
		return "", invalid("to", "local part is longer than 64 octets")
	}
	ascii, err := idnaProfile.ToASCII(strings.TrimSuffix(domain, "."))
	if err != nil {
		return "", invalid("to", "domain is not a valid host name")
	}
	ascii = strings.ToLower(ascii)
	if !strings.Contains(ascii, ".") {
		return "", invalid("to", "domain must have at least two labels")
	}
	// An all-numeric top-level label is an IPv4 address written without
	// brackets (user@127.0.0.1), or no domain at all (RFC 3696 section 2).
	if tld := ascii[strings.LastIndexByte(ascii, '.')+1:]; strings.Trim(tld, "0123456789") == "" {
		return "", invalid("to", "domain must be a host name, not an IP address or all-numeric")
	}
	out := local + "@" + ascii
	if len(out) > maxAddress {
		return "", invalid("to", "is longer than 254 octets")
	}
	// The address must also survive RFC 5322 parsing unchanged, so that what
	// the guard counts is exactly what the worker writes into To.
	parsed, err := mail.ParseAddress(out)
	if err != nil || parsed.Name != "" || parsed.Address != out {
		return "", invalid("to", "is not a valid RFC 5322 address")
	}
	return out, nil
}

// NormalizeName validates a recipient display name and returns it as plain
// UTF-8. RFC 2047 encoded-words are decoded first, so a name that would
// decode to CR or LF in the recipient's mail client is refused too, as are
// bidi controls and other invisible format characters (Unicode Cf, see
// isHiddenFormat).
func NormalizeName(name string) (string, error) {
	if name == "" {
		return "", nil
	}
	if headertext.EncodedWordHasCtl(name) {
		// Also the malformed encoded-words a lax mail reader decodes.
		return "", invalid("name", "has an encoded-word that decodes to CR, LF or NUL")
	}
	if strings.Contains(name, "=?") {
		dec, err := new(mime.WordDecoder).DecodeHeader(name)
		if err != nil {
			return "", invalid("name", "has a malformed encoded-word")
		}
		name = dec
	}
	if !utf8.ValidString(name) {
		return "", invalid("name", "is not valid UTF-8")
	}
	for _, r := range name {
		if unicode.IsControl(r) {
			return "", invalid("name", "contains control characters (CR, LF, NUL, ...)")
		}
		if isHiddenFormat(r) {
			return "", invalid("name", "contains bidi controls or other invisible format characters (Unicode Cf)")
		}
	}
	name = strings.TrimSpace(name)
	if len(name) > maxName {
		return "", invalid("name", fmt.Sprintf("is longer than %d octets", maxName))
	}
	return name, nil
}
