// Package smtpsink is an SMTP server for tests that records every message it
// accepts, verifies DKIM signatures and injects faults on request.
//
// A [Server] speaks SMTP (RFC 5321) with the ESMTP extensions of
// github.com/emersion/go-smtp, stores the exact bytes of each message
// (RFC 5322) in a bounded ring buffer, decodes the Subject (RFC 2047) and
// checks every DKIM-Signature (RFC 6376, RFC 8463 for Ed25519) against public
// keys from a [Keys] file instead of DNS. Results use the RFC 8601 vocabulary:
// pass, fail, temperror, permerror, none.
//
// Faults are chosen by the recipient's local part, compared case-insensitively
// up to the first '+':
//
//	tempfail+x@example.com  451 4.3.0 at RCPT
//	permfail+x@example.com  550 5.1.1 at RCPT
//	slow+x@example.com      the reply to DATA is delayed by [Config].SlowDelay
//	drop+x@example.com      the message is stored, then the connection is closed without a reply
//
// [Config].RejectRatio answers a random share of recipients with 451 and
// [Config].MaxRate limits accepted messages per second, answering 421 at MAIL
// and closing the connection beyond it.
//
// The HTTP API (GET /api/messages, GET /api/messages/{id},
// GET /api/messages/{id}/raw, DELETE /api/messages, GET /api/stats) and a
// small web page on / expose what was received; [Client] drives the API of a
// sink running in another process.
package smtpsink
