// Package delivery turns an email into wire bytes, signs them and hands them
// to an SMTP relay.
//
// It has three parts, used in this order by the worker:
//
//   - [Build] renders a [Message] as an RFC 5322 message: MIME (RFC 2045,
//     RFC 2046) multipart/alternative with quoted-printable parts, CRLF line
//     endings, lines of at most 998 octets, RFC 2047 encoded-words for
//     non-ASCII text, Auto-Submitted (RFC 3834) and, when supplied,
//     List-Unsubscribe and List-Unsubscribe-Post (RFC 2369, RFC 8058). No
//     header is built by string concatenation of unchecked input: CR, LF and
//     NUL are refused with [ErrHeaderInjection], also when they would only
//     appear after RFC 2047 decoding.
//   - [Signer] adds DKIM signatures (RFC 6376; Ed25519 per RFC 8463) with
//     relaxed/relaxed canonicalization, one per [Key], over-signing the
//     headers a forger would want to add, and never with l=.
//   - [Pool] delivers over pooled SMTP (RFC 5321) client connections with
//     STARTTLS (RFC 3207) or implicit TLS (RFC 8314), AUTH PLAIN (RFC 4954,
//     RFC 4616) only over TLS, and classifies every failure as a [SendError]
//     that is temporary, permanent, a hard bounce (RFC 3463 5.1.x) or
//     ambiguous (connection lost after the final dot).
package delivery
