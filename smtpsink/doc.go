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
//	bounce+x@example.com    accepted (250), then a delivery status notification is sent
//	complain+x@example.com  accepted (250), then an abuse complaint is sent
//
// A bounce+ recipient makes the sink build an RFC 3464 delivery status
// notification (multipart/report; report-type=delivery-status: a text part,
// a message/delivery-status part with Action: failed and Status: 5.1.1 for
// each bounce+ recipient, and the original header as text/rfc822-headers). A
// complain+ recipient makes it build an RFC 5965 abuse report
// (report-type=feedback-report, Feedback-Type: abuse, with the original
// message as message/rfc822, or its header beyond 256 KiB). Each report goes
// to the message's envelope sender from the null reverse path (MAIL FROM:<>)
// through [Config].BounceRelay, over SMTP, in the background: a bounded
// queue, four attempts for temporary failures, none more after a 5xx reply.
// Without a relay it is only recorded; [Server.SetBounceRelay] names a relay
// that starts after the sink. [Server.Reports] and GET /api/reports list the
// reports and their delivery, [Server.WaitReports] waits for their results;
// [Stats] counts them. A message from the null reverse path gets no report.
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
// The HTTP API exposes what was received:
//
//	GET    /api/messages?limit=N&to=ADDR&kind=KIND&q=TEXT   list, newest first
//	GET    /api/messages/{id}       one message with its decoded content ([Detail])
//	GET    /api/messages/{id}/raw   the exact bytes received
//	GET    /api/messages/{id}/html  the HTML part, sandboxed, for the page
//	DELETE /api/messages/{id}       delete one message
//	DELETE /api/messages            delete all and zero the counters
//	GET    /api/events              Server-Sent Events on each change
//	GET    /api/stats               the counters
//	GET    /api/reports             bounce and complaint reports, newest first
//	GET    /api/reports/{id}/raw    one report as sent
//
// [Decode] walks the MIME tree (RFC 2045, RFC 2046) with
// github.com/emersion/go-message, undoing quoted-printable and base64 and
// converting charsets to UTF-8, and lists the links of the text and HTML
// parts. A message's kind is read from its X-Floodgate-Kind header field.
//
// The web page on / lists messages live, searches them and shows one with
// HTML, text, headers, raw and DKIM tabs. It is self-contained (embedded
// script and style, no other origin) under a strict Content-Security-Policy;
// a message's HTML is rendered in a sandboxed iframe, from a document whose
// own policy lets nothing run or load, so no script of a message runs.
// [Client] drives the API of a sink running in another process.
package smtpsink
