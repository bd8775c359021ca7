// Package bounce takes in the bounces and complaints that arrive after the
// relay's 250, ties each to the email it is about, and hands it to the
// guard ([Recorder]), which suppresses the recipient of a hard bounce or a
// complaint and counts every report per kind and per domain.
//
// Three ways in:
//
//   - [Server], the bounce receiver: an SMTP server (go-smtp, RFC 5321)
//     for the bounce domain of the VERP return path (package
//     internal/verp). It accepts RCPT only for a valid, unexpired return
//     path token (anything else is 550, never relayed), reads the message
//     with go-message ([Parse]: RFC 3464 delivery status notifications,
//     also RFC 6533's global form; RFC 5965 feedback reports; text
//     bounces of Exim, qmail and the like; RFC 3834 auto-replies set
//     aside) and applies the report only to the recipient the token was
//     minted for: a report that names anybody else changes nothing. A
//     5.x.x status or an abuse report suppresses; 4.x.x and delays are
//     counted. Message size, recipients, connections, messages per second
//     and connections per client are bounded, each command and each
//     session has a timeout.
//   - [Webhooks], the providers' event webhooks: SES through Amazon SNS
//     (the signing certificate fetched over https from an SNS host and
//     cached, SignatureVersion 1 and 2, an allow-list of topics,
//     subscription confirmation), SendGrid's signed Event Webhook (ECDSA
//     P-256 over timestamp and body) and Mailgun's webhooks (HMAC-SHA256
//     of timestamp and token, each token accepted once). A request whose
//     signature fails is answered 401 and changes nothing.
//   - [ReturnPath], the worker's side: the envelope sender of each email.
//
// Every refused report (bad token, relay attempt, oversized message,
// report about another recipient, failed signature, replay...) is counted
// by source and reason ([guard.Guard.RefuseBounce]). Nothing logged or
// counted names an address or a token.
package bounce
