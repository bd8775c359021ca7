package bounce

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/floodgate-dev/floodgate/guard"
)

// mailgunEvent is a Mailgun webhook request.
type mailgunEvent struct {
	Signature struct {
		Timestamp string `json:"timestamp"`
		Token     string `json:"token"`
		Signature string `json:"signature"`
	} `json:"signature"`
	EventData struct {
		ID            string            `json:"id"`
		Event         string            `json:"event"`
		Severity      string            `json:"severity"`
		Recipient     string            `json:"recipient"`
		UserVariables map[string]string `json:"user-variables"`
		Message       struct {
			Headers struct {
				MessageID string `json:"message-id"`
			} `json:"headers"`
		} `json:"message"`
		DeliveryStatus struct {
			Code int `json:"code"`
		} `json:"delivery-status"`
	} `json:"event-data"`
}

func (w *Webhooks) serveMailgun(rw http.ResponseWriter, r *http.Request) {
	n, err := w.handleMailgun(rw, r)
	w.finish(rw, r, guard.SourceMailgun, n, err)
}

// handleMailgun verifies the HMAC-SHA256 of timestamp and token under the
// signing key, the timestamp's age and that the token was not seen before,
// then reads the event: failed (permanent is hard, temporary soft) and
// complained.
func (w *Webhooks) handleMailgun(rw http.ResponseWriter, r *http.Request) (int, error) {
	body, err := w.readBody(rw, r)
	if err != nil {
		return 0, err
	}
	var e mailgunEvent
	if err := json.Unmarshal(body, &e); err != nil {
		return 0, refusal(http.StatusBadRequest, "malformed", "event: %v", err)
	}
	s := e.Signature
	got, err := hex.DecodeString(s.Signature)
	mac := hmac.New(sha256.New, w.cfg.MailgunKey)
	mac.Write([]byte(s.Timestamp + s.Token))
	if err != nil || s.Token == "" || !hmac.Equal(got, mac.Sum(nil)) {
		return 0, refusal(http.StatusUnauthorized, "signature", "Mailgun signature does not verify")
	}
	secs, err := strconv.ParseInt(s.Timestamp, 10, 64)
	if err != nil {
		return 0, refusal(http.StatusUnauthorized, "stale", "timestamp %q", s.Timestamp)
	}
	if err := w.fresh(time.Unix(secs, 0)); err != nil {
		return 0, err
	}
	ctx := r.Context()
	fresh, err := w.cfg.Recorder.ClaimNonce(ctx, guard.SourceMailgun, s.Token, w.cfg.MaxAge+5*time.Minute)
	if err != nil {
		return 0, err
	}
	if !fresh {
		return 0, refusal(http.StatusUnauthorized, "replay", "token seen before")
	}
	d := e.EventData
	var t string
	switch {
	case d.Event == "failed" && d.Severity == "permanent":
		t = guard.BounceHard
	case d.Event == "failed":
		t = guard.BounceSoft
	case d.Event == "complained":
		t = guard.BounceComplaint
	}
	var fs []guard.Bounce
	if t != "" {
		status := ""
		if c := d.DeliveryStatus.Code; c >= 400 && c < 600 {
			status = fmt.Sprintf("%d.0.0", c/100)
		}
		fs = append(fs, guard.Bounce{Type: t, Source: guard.SourceMailgun, Kind: d.UserVariables[KindField],
			EmailID: emailID(d.Message.Headers.MessageID), EventID: d.ID, Recipient: d.Recipient, Status: status})
	}
	n, err := w.record(ctx, fs)
	if err != nil {
		// Let Mailgun's retry of this very request through.
		if rerr := w.cfg.Recorder.ReleaseNonce(ctx, guard.SourceMailgun, s.Token); rerr != nil {
			w.cfg.Logger.Warn("webhook: release nonce", "err", rerr)
		}
	}
	return n, err
}
