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
// and closing the connection beyond it. Messages are capped in size (552),
// recipients per message (452) and concurrent sessions (421 greeting), and
// text lines are held to the 1000 octets of RFC 5321 section 4.5.3.1.6
// (500), so a sender that breaks the limit fails here rather than at a real
// relay.
//
// A message is stored, with its DKIM results, before the reply to DATA is
// sent: once a client sees 250, [Server.Messages] returns the message.
// [Server.Wait] blocks until enough messages have arrived, without polling.
// An unsigned message gets the single result "none"; a signature whose key
// is not in [Keys] is a permerror, as a missing DNS record would be.
//
// The HTTP API (GET /api/messages, GET /api/messages/{id},
// GET /api/messages/{id}/raw, DELETE /api/messages, GET /api/stats) and a
// small web page on / expose what was received; [Client] drives the API of a
// sink running in another process.
package smtpsink
