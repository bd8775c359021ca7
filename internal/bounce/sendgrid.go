package bounce

import (
	"crypto/ecdsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/floodgate-dev/floodgate/guard"
)

// SendGrid's signature headers.
const (
	sendGridSignature = "X-Twilio-Email-Event-Webhook-Signature"
	sendGridTimestamp = "X-Twilio-Email-Event-Webhook-Timestamp"
)

// ParseSendGridKey reads the Event Webhook verification key as SendGrid
// shows it (base64 of the DER public key) or as PEM.
func ParseSendGridKey(s string) (*ecdsa.PublicKey, error) {
	s = strings.TrimSpace(s)
	var der []byte
	if block, _ := pem.Decode([]byte(s)); block != nil {
		der = block.Bytes
	} else {
		b, err := base64.StdEncoding.DecodeString(s)
		if err != nil {
			return nil, fmt.Errorf("bounce: SendGrid key: not base64 or PEM: %w", err)
		}
		der = b
	}
	k, err := x509.ParsePKIXPublicKey(der)
	if err != nil {
		return nil, fmt.Errorf("bounce: SendGrid key: %w", err)
	}
	ek, ok := k.(*ecdsa.PublicKey)
	if !ok {
		return nil, errors.New("bounce: SendGrid key: not an ECDSA public key")
	}
	return ek, nil
}

// sendGridEvent is the part of an Event Webhook event that is read.
type sendGridEvent struct {
	Email     string `json:"email"`
	Event     string `json:"event"`
	Type      string `json:"type"`
	Status    string `json:"status"`
	Reason    string `json:"reason"`
	EventID   string `json:"sg_event_id"`
	SMTPID    string `json:"smtp-id"`
	Kind      string `json:"floodgate_kind"`
	Timestamp int64  `json:"timestamp"`
}

func (w *Webhooks) serveSendGrid(rw http.ResponseWriter, r *http.Request) {
	n, err := w.handleSendGrid(rw, r)
	w.finish(rw, r, guard.SourceSendGrid, n, err)
}

// handleSendGrid verifies the ECDSA P-256 signature over timestamp and
// body, then reads the events: bounces (type "blocked" is soft), drops of
// addresses SendGrid knows bounce or complain, deferrals and spam reports.
func (w *Webhooks) handleSendGrid(rw http.ResponseWriter, r *http.Request) (int, error) {
	body, err := w.readBody(rw, r)
	if err != nil {
		return 0, err
	}
	ts := r.Header.Get(sendGridTimestamp)
	sig, err := base64.StdEncoding.DecodeString(r.Header.Get(sendGridSignature))
	if err != nil || len(sig) == 0 || ts == "" {
		return 0, refusal(http.StatusUnauthorized, "signature", "missing or malformed signature headers")
	}
	h := sha256.New()
	h.Write([]byte(ts))
	h.Write(body)
	if !ecdsa.VerifyASN1(w.cfg.SendGridKey, h.Sum(nil), sig) {
		return 0, refusal(http.StatusUnauthorized, "signature", "SendGrid signature does not verify")
	}
	secs, err := strconv.ParseInt(ts, 10, 64)
	if err != nil {
		return 0, refusal(http.StatusUnauthorized, "stale", "timestamp %q", ts)
	}
	if err := w.fresh(time.Unix(secs, 0)); err != nil {
		return 0, err
	}
	var events []sendGridEvent
	if err := json.Unmarshal(body, &events); err != nil {
		return 0, refusal(http.StatusBadRequest, "malformed", "events: %v", err)
	}
	var fs []guard.Bounce
	for _, e := range events {
		t := sendGridType(e)
		if t == "" {
			continue
		}
		fs = append(fs, guard.Bounce{Type: t, Source: guard.SourceSendGrid, Kind: e.Kind, EmailID: emailID(e.SMTPID),
			EventID: e.EventID, Recipient: e.Email, Status: statusCode(e.Status)})
	}
	return w.record(r.Context(), fs)
}

func sendGridType(e sendGridEvent) string {
	switch e.Event {
	case "bounce":
		if e.Type == "blocked" {
			return guard.BounceSoft
		}
		return guard.BounceHard
	case "blocked", "deferred":
		return guard.BounceSoft
	case "spamreport":
		return guard.BounceComplaint
	case "dropped":
		switch r := strings.ToLower(e.Reason); {
		case strings.Contains(r, "bounced address"), strings.Contains(r, "invalid"):
			return guard.BounceHard
		case strings.Contains(r, "spam reporting address"):
			return guard.BounceComplaint
		}
	}
	return ""
}
