package bounce

import (
	"bytes"
	"context"
	"crypto"
	"crypto/rsa"
	"crypto/sha1" // SNS SignatureVersion 1 is SHA1withRSA
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"time"

	"github.com/floodgate-dev/floodgate/guard"
)

// snsHostRE matches the hosts SNS signs from: sns.<region>.amazonaws.com,
// and .com.cn in the China regions.
var snsHostRE = regexp.MustCompile(`^sns\.[a-z0-9-]+\.amazonaws\.com(\.cn)?$`)

// IsSNSHost reports whether host is an Amazon SNS endpoint, the only hosts
// a signing certificate or a subscription confirmation may come from.
func IsSNSHost(host string) bool { return snsHostRE.MatchString(host) }

// snsMessage is an SNS HTTP(S) delivery.
type snsMessage struct {
	Type             string
	MessageID        string `json:"MessageId"`
	Token            string
	TopicArn         string
	Subject          *string
	Message          string
	Timestamp        string
	SignatureVersion string
	Signature        string
	SigningCertURL   string
	SubscribeURL     string
}

// stringToSign builds the text SNS signs: the message's fields, in byte
// order of their names, each as "Name\nvalue\n", Subject only when present.
func (m *snsMessage) stringToSign() (string, error) {
	var fields [][2]string
	switch m.Type {
	case "Notification":
		fields = [][2]string{{"Message", m.Message}, {"MessageId", m.MessageID}}
		if m.Subject != nil {
			fields = append(fields, [2]string{"Subject", *m.Subject})
		}
		fields = append(fields, [2]string{"Timestamp", m.Timestamp}, [2]string{"TopicArn", m.TopicArn}, [2]string{"Type", m.Type})
	case "SubscriptionConfirmation", "UnsubscribeConfirmation":
		fields = [][2]string{{"Message", m.Message}, {"MessageId", m.MessageID}, {"SubscribeURL", m.SubscribeURL},
			{"Timestamp", m.Timestamp}, {"Token", m.Token}, {"TopicArn", m.TopicArn}, {"Type", m.Type}}
	default:
		return "", fmt.Errorf("type %q", m.Type)
	}
	var b strings.Builder
	for _, f := range fields {
		b.WriteString(f[0] + "\n" + f[1] + "\n")
	}
	return b.String(), nil
}

// snsCert is a cached signing certificate.
type snsCert struct {
	key     *rsa.PublicKey
	expires time.Time
}

const (
	maxCerts     = 32
	maxCertBytes = 64 << 10
)

// snsURL checks that s is an https URL on an SNS host.
func (w *Webhooks) snsURL(s, what string) (*url.URL, error) {
	u, err := url.Parse(s)
	if err != nil || u.Scheme != "https" || u.User != nil || !w.cfg.SNSHost(u.Hostname()) {
		return nil, refusal(http.StatusUnauthorized, "signature", "%s %q is not an https URL on an SNS host", what, s)
	}
	return u, nil
}

// signingKey returns the public key of the certificate at certURL,
// fetched once and cached until it expires.
func (w *Webhooks) signingKey(ctx context.Context, certURL string) (*rsa.PublicKey, error) {
	u, err := w.snsURL(certURL, "SigningCertURL")
	if err != nil {
		return nil, err
	}
	if !strings.HasSuffix(u.Path, ".pem") {
		return nil, refusal(http.StatusUnauthorized, "signature", "SigningCertURL %q is not a .pem", certURL)
	}
	now := w.cfg.Now()
	w.mu.Lock()
	c := w.certs[certURL]
	w.mu.Unlock()
	if c != nil && now.Before(c.expires) {
		return c.key, nil
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return nil, err
	}
	resp, err := w.cfg.SNSClient.Do(req)
	if err != nil {
		return nil, fmt.Errorf("fetch SNS signing certificate: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("fetch SNS signing certificate: %s", resp.Status)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxCertBytes))
	if err != nil {
		return nil, fmt.Errorf("fetch SNS signing certificate: %w", err)
	}
	block, _ := pem.Decode(body)
	if block == nil || block.Type != "CERTIFICATE" {
		return nil, refusal(http.StatusUnauthorized, "signature", "SigningCertURL holds no PEM certificate")
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		return nil, refusal(http.StatusUnauthorized, "signature", "signing certificate: %v", err)
	}
	key, ok := cert.PublicKey.(*rsa.PublicKey)
	if !ok || now.Before(cert.NotBefore) || now.After(cert.NotAfter) {
		return nil, refusal(http.StatusUnauthorized, "signature", "signing certificate is not a valid RSA certificate now")
	}
	w.mu.Lock()
	if len(w.certs) >= maxCerts {
		clear(w.certs)
	}
	w.certs[certURL] = &snsCert{key: key, expires: cert.NotAfter}
	w.mu.Unlock()
	return key, nil
}

// verifySNS checks the message's topic, signature and age.
func (w *Webhooks) verifySNS(ctx context.Context, m *snsMessage) error {
	if !w.topics[m.TopicArn] {
		return refusal(http.StatusUnauthorized, "topic", "topic %q is not configured", m.TopicArn)
	}
	text, err := m.stringToSign()
	if err != nil {
		return refusal(http.StatusBadRequest, "malformed", "SNS message: %v", err)
	}
	sig, err := base64.StdEncoding.DecodeString(m.Signature)
	if err != nil || len(sig) == 0 {
		return refusal(http.StatusUnauthorized, "signature", "signature is not base64")
	}
	var h crypto.Hash
	switch m.SignatureVersion {
	case "1":
		h = crypto.SHA1
	case "2":
		h = crypto.SHA256
	default:
		return refusal(http.StatusUnauthorized, "signature", "SignatureVersion %q", m.SignatureVersion)
	}
	key, err := w.signingKey(ctx, m.SigningCertURL)
	if err != nil {
		return err
	}
	var digest []byte
	if h == crypto.SHA1 {
		d := sha1.Sum([]byte(text))
		digest = d[:]
	} else {
		d := sha256.Sum256([]byte(text))
		digest = d[:]
	}
	if err := rsa.VerifyPKCS1v15(key, h, digest, sig); err != nil {
		return refusal(http.StatusUnauthorized, "signature", "SNS signature does not verify")
	}
	ts, err := time.Parse(time.RFC3339Nano, m.Timestamp)
	if err != nil {
		return refusal(http.StatusBadRequest, "malformed", "Timestamp %q", m.Timestamp)
	}
	return w.fresh(ts)
}

func (w *Webhooks) serveSES(rw http.ResponseWriter, r *http.Request) {
	n, err := w.handleSES(r.Context(), rw, r)
	w.finish(rw, r, guard.SourceSES, n, err)
}

func (w *Webhooks) handleSES(ctx context.Context, rw http.ResponseWriter, r *http.Request) (int, error) {
	body, err := w.readBody(rw, r)
	if err != nil {
		return 0, err
	}
	var m snsMessage
	if err := json.Unmarshal(body, &m); err != nil {
		return 0, refusal(http.StatusBadRequest, "malformed", "SNS message: %v", err)
	}
	if err := w.verifySNS(ctx, &m); err != nil {
		return 0, err
	}
	switch m.Type {
	case "SubscriptionConfirmation":
		return 0, w.confirm(ctx, m.SubscribeURL)
	case "UnsubscribeConfirmation":
		w.cfg.Logger.Warn("webhook: SNS unsubscribed", "topic", m.TopicArn)
		return 0, nil
	}
	fs, err := w.sesBounces(m.Message)
	if err != nil {
		return 0, err
	}
	return w.record(ctx, fs)
}

// confirm visits SubscribeURL, which confirms the subscription.
func (w *Webhooks) confirm(ctx context.Context, subscribeURL string) error {
	u, err := w.snsURL(subscribeURL, "SubscribeURL")
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return err
	}
	resp, err := w.cfg.SNSClient.Do(req)
	if err != nil {
		return fmt.Errorf("confirm SNS subscription: %w", err)
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("confirm SNS subscription: %s", resp.Status)
	}
	w.cfg.Logger.Info("webhook: SNS subscription confirmed")
	return nil
}

// sesNotification is the part of an SES notification (or event
// publishing record) that is read.
type sesNotification struct {
	NotificationType string `json:"notificationType"`
	EventType        string `json:"eventType"`
	Bounce           *struct {
		BounceType        string `json:"bounceType"`
		FeedbackID        string `json:"feedbackId"`
		BouncedRecipients []struct {
			EmailAddress string `json:"emailAddress"`
			Status       string `json:"status"`
		} `json:"bouncedRecipients"`
	} `json:"bounce"`
	Complaint *struct {
		FeedbackType         string `json:"complaintFeedbackType"`
		FeedbackID           string `json:"feedbackId"`
		ComplainedRecipients []struct {
			EmailAddress string `json:"emailAddress"`
		} `json:"complainedRecipients"`
	} `json:"complaint"`
	Mail struct {
		Source        string              `json:"source"`
		Tags          map[string][]string `json:"tags"`
		CommonHeaders struct {
			MessageID string `json:"messageId"`
		} `json:"commonHeaders"`
	} `json:"mail"`
}

// sesBounces reads an SES notification: Permanent bounces are hard,
// Transient and Undetermined soft; complaints other than not-spam count.
func (w *Webhooks) sesBounces(msg string) ([]guard.Bounce, error) {
	var n sesNotification
	dec := json.NewDecoder(bytes.NewReader([]byte(msg)))
	if err := dec.Decode(&n); err != nil {
		return nil, refusal(http.StatusBadRequest, "malformed", "SES notification: %v", err)
	}
	base := guard.Bounce{Source: guard.SourceSES, EmailID: emailID(n.Mail.CommonHeaders.MessageID)}
	if k := n.Mail.Tags[KindField]; len(k) > 0 {
		base.Kind = k[0]
	}
	if w.cfg.Codec != nil && n.Mail.Source != "" {
		if tok, err := w.cfg.Codec.Parse(n.Mail.Source, w.cfg.Now()); err == nil {
			base.EmailID = tok.ID
			if tok.Kind != "" {
				base.Kind = tok.Kind
			}
		}
	}
	typ := n.NotificationType
	if typ == "" {
		typ = n.EventType
	}
	var out []guard.Bounce
	switch {
	case typ == "Bounce" && n.Bounce != nil:
		t := guard.BounceSoft
		if n.Bounce.BounceType == "Permanent" {
			t = guard.BounceHard
		}
		for _, r := range n.Bounce.BouncedRecipients {
			f := base
			f.Type, f.Recipient, f.Status, f.EventID = t, r.EmailAddress, statusCode(r.Status), n.Bounce.FeedbackID+"|"+r.EmailAddress
			out = append(out, f)
		}
	case typ == "Complaint" && n.Complaint != nil:
		if strings.EqualFold(n.Complaint.FeedbackType, "not-spam") {
			return nil, nil
		}
		for _, r := range n.Complaint.ComplainedRecipients {
			f := base
			f.Type, f.Recipient, f.EventID = guard.BounceComplaint, r.EmailAddress, n.Complaint.FeedbackID+"|"+r.EmailAddress
			out = append(out, f)
		}
	}
	return out, nil
}
