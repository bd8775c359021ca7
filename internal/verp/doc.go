// Package verp builds and checks the variable envelope return path (VERP) of
// floodgate's emails, so that a bounce or a complaint that arrives long after
// the relay's 250 can be tied to the email it is about without trusting what
// the bounce says.
//
// Each email is sent with the envelope sender (RFC 5321 MAIL FROM)
//
//	bounces+<token>@<bounce-domain>
//
// while its From header is unchanged. The token is 56 characters of
// lower-case base32 (RFC 4648 alphabet, no padding: safe in a local part and
// immune to a relay that changes its case) over 35 bytes:
//
//	version (1) | email id (16) | expiry, hours since the Unix epoch (3) |
//	kind tag (2) | recipient tag (5) | MAC (8)
//
// The MAC is HMAC-SHA256 of the first 27 bytes under a secret shared by every
// worker, truncated to 64 bits; the kind and recipient tags are HMACs of the
// kind name and of the canonical recipient under the same secret. The token
// holds no address: the recipient tag only lets the bounce receiver check
// that the recipient a bounce names is the one the email went to. With the
// default prefix the local part is 64 octets, the limit of RFC 5321.
//
// A [Codec] mints tokens with its first secret and accepts any of them, so
// secrets rotate by adding the new one first and dropping the old one a
// token lifetime later. It is safe for concurrent use.
package verp
