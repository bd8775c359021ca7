package queue

import (
	"unicode"

	"github.com/floodgate-dev/floodgate/internal/headertext"
)

// Text that ends up in a header (display names, the subject) or in a link
// must not carry invisible formatting: bidi controls (U+202A–U+202E,
// U+2066–U+2069, U+200E, U+200F, U+061C) can make "gro.live" read as
// "evil.org", and other Unicode format characters (category Cf: zero-width
// space, soft hyphen, byte-order mark, tag characters …) hide text.
//
// ZERO WIDTH NON-JOINER (U+200C) and ZERO WIDTH JOINER (U+200D) are
// format characters too, but Persian and Indic names need them and emoji
// sequences are built with them; they reorder nothing, so they are kept.
func isHiddenFormat(r rune) bool {
	return unicode.Is(unicode.Cf, r) && r != '\u200c' && r != '\u200d'
}

// checkSubject checks a subject given as data. CR, LF and TAB are folded to
// spaces when the subject is rendered; any other control character, a
// hidden format character, or an RFC 2047 encoded-word that a mail reader
// would decode to CR, LF or NUL is refused, as in a display name.
func checkSubject(field, s string) error {
	if headertext.EncodedWordHasCtl(s) {
		return invalid(field, "has an encoded-word that decodes to CR, LF or NUL")
	}
	for _, r := range s {
		switch {
		case r == '\r' || r == '\n' || r == '\t':
		case unicode.IsControl(r):
			return invalid(field, "contains control characters")
		case isHiddenFormat(r):
			return invalid(field, "contains bidi controls or other invisible format characters (Unicode Cf)")
		}
	}
	return nil
}
