package testutil

import (
	"fmt"
	"strings"
)

// DSN returns an RFC 3464 delivery status notification, as a relay would
// send it to the return path bounceTo, about recipient: Action "failed" for
// a 5.x.x status, "delayed" otherwise. CRLF line endings.
func DSN(bounceTo, recipient, status string) []byte {
	action := "delayed"
	if strings.HasPrefix(status, "5.") {
		action = "failed"
	}
	msg := fmt.Sprintf(`From: Mail Delivery System <MAILER-DAEMON@mx.example.net>
To: %[1]s
Subject: Undelivered Mail Returned to Sender
Auto-Submitted: auto-replied
MIME-Version: 1.0
Content-Type: multipart/report; report-type=delivery-status; boundary="dsn-boundary"

--dsn-boundary
Content-Type: text/plain; charset=us-ascii

Your message could not be delivered to one or more recipients.

--dsn-boundary
Content-Type: message/delivery-status

Reporting-MTA: dns; mx.example.net

Final-Recipient: rfc822; %[2]s
Action: %[3]s
Status: %[4]s
Diagnostic-Code: smtp; 550 %[4]s user unknown

--dsn-boundary--
`, bounceTo, recipient, action, status)
	return []byte(strings.ReplaceAll(msg, "\n", "\r\n"))
}

// ARF returns an RFC 5965 abuse report about recipient, sent to bounceTo.
func ARF(bounceTo, recipient string) []byte {
	msg := fmt.Sprintf(`From: fbl@isp.example
To: %[1]s
Subject: Abuse report
MIME-Version: 1.0
Content-Type: multipart/report; report-type=feedback-report; boundary="arf-boundary"

--arf-boundary
Content-Type: text/plain

This is an abuse report.

--arf-boundary
Content-Type: message/feedback-report

Feedback-Type: abuse
User-Agent: isp-fbl/1.0
Version: 1
Original-Rcpt-To: <%[2]s>

--arf-boundary--
`, bounceTo, recipient)
	return []byte(strings.ReplaceAll(msg, "\n", "\r\n"))
}
