// Package templates renders the subject, plain-text body and HTML body of
// each kind of email floodgate sends.
//
// A [Set] holds one template triple per kind. The built-in kinds
// (password_reset, verify_email, notification) ship as embedded defaults;
// [New] can layer a directory of operator templates on top:
//
//	<dir>/<kind>/subject.txt   text/template, rendered to one line
//	<dir>/<kind>/text.txt      text/template, the text/plain part
//	<dir>/<kind>/html.html     html/template, the text/html part (optional)
//
// Overrides are per file: a file present in <dir>/<kind>/ replaces that one
// part of the kind and the other parts keep their defaults, so changing only
// the subject of password_reset needs only password_reset/subject.txt. A
// directory naming a kind that has no default adds that kind; it must supply
// subject.txt and text.txt, and html.html if it wants an HTML part.
// [Set.Require] reports the kinds of a policy that have no templates, with
// the files it looked for, so that a worker can refuse to start.
//
// Templates see a [Data] value and two functions:
//
//	{{expires .ExpiresIn}}         "30 minutes", "1 hour and 30 minutes", "7 days"
//	{{paragraphs .Values.body}}    the text split into paragraphs of lines,
//	                               for laying out plain text in HTML
//
// Every template runs with missingkey=error, so {{.Values.reset_url}} fails
// the render with an error naming reset_url when the value is absent; optional
// values are read with {{index .Values "action_url"}}, which yields "" instead.
// The HTML part is rendered by html/template, which escapes every value for
// its context and replaces URLs with unsafe schemes (javascript:, data:) in
// href attributes with "#ZgotmplZ".
//
// The rendered subject is folded to one line before it is returned, so a value
// carrying CR or LF cannot start a new header when the message is built
// (RFC 5322 section 2.2 forbids bare CR and LF in a header field body); the
// MIME encoding of the parts (RFC 2045, RFC 2046 multipart/alternative) and
// of non-ASCII subjects (RFC 2047) is left to the delivery code.
package templates
