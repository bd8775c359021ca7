package bounce

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/hmac"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"math/big"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/floodgate-dev/floodgate/guard"
	"github.com/floodgate-dev/floodgate/internal/verp"
	"github.com/floodgate-dev/floodgate/queue"
)

const topic = "arn:aws:sns:eu-west-1:123456789012:ses-feedback"

// snsFixture is a local stand-in for SNS: a TLS server holding the signing
// certificate and answering subscription confirmations.
type snsFixture struct {
	key       *rsa.PrivateKey
	srv       *httptest.Server
	certURL   string
	confirmed atomic.Int64
	certGets  atomic.Int64
	age       time.Duration // how old the next messages' timestamps are
}

func newSNS(t *testing.T) *snsFixture {
	t.Helper()
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "sns.amazonaws.com"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	f := &snsFixture{key: key}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /SimpleNotificationService-test.pem", func(w http.ResponseWriter, _ *http.Request) {
		f.certGets.Add(1)
		_ = pem.Encode(w, &pem.Block{Type: "CERTIFICATE", Bytes: der})
	})
	mux.HandleFunc("GET /confirm", func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Query().Get("Token") == "tok" {
			f.confirmed.Add(1)
		}
	})
	f.srv = httptest.NewTLSServer(mux)
	t.Cleanup(f.srv.Close)
	f.certURL = f.srv.URL + "/SimpleNotificationService-test.pem"
	return f
}

// message returns a signed SNS delivery of typ carrying msg.
func (f *snsFixture) message(t *testing.T, typ, version, msg string, edit func(m map[string]any)) []byte {
	t.Helper()
	m := map[string]any{
		"Type": typ, "MessageId": "0f3c6a2e-1", "TopicArn": topic, "Message": msg,
		"Timestamp": time.Now().Add(-f.age).UTC().Format("2006-01-02T15:04:05.000Z"), "SignatureVersion": version,
		"SigningCertURL": f.certURL,
	}
	if typ == "SubscriptionConfirmation" {
		m["Token"], m["SubscribeURL"] = "tok", f.srv.URL+"/confirm?Token=tok"
	} else {
		m["Subject"] = "Amazon SES Email Event Notification"
	}
	sm := snsMessage{Type: typ, MessageID: m["MessageId"].(string), TopicArn: topic, Message: msg, Timestamp: m["Timestamp"].(string)}
	if s, ok := m["Subject"].(string); ok {
		sm.Subject = &s
	}
	sm.Token, _ = m["Token"].(string)
	sm.SubscribeURL, _ = m["SubscribeURL"].(string)
	text, err := sm.stringToSign()
	if err != nil {
		t.Fatal(err)
	}
	var sig []byte
	if version == "1" {
		d := sha1.Sum([]byte(text))
		sig, err = rsa.SignPKCS1v15(rand.Reader, f.key, crypto.SHA1, d[:])
	} else {
		d := sha256.Sum256([]byte(text))
		sig, err = rsa.SignPKCS1v15(rand.Reader, f.key, crypto.SHA256, d[:])
	}
	if err != nil {
		t.Fatal(err)
	}
	m["Signature"] = base64.StdEncoding.EncodeToString(sig)
	if edit != nil {
		edit(m)
	}
	b, _ := json.Marshal(m)
	return b
}

type hookEnv struct {
	g     *guard.Guard
	codec *verp.Codec
	hooks http.Handler
}

func newHooks(t *testing.T, cfg WebhookConfig) *hookEnv {
	t.Helper()
	g, codec := newGuard(t)
	cfg.Recorder, cfg.Codec = g, codec
	w, err := NewWebhooks(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return &hookEnv{g: g, codec: codec, hooks: w.Handler()}
}

func (e *hookEnv) post(t *testing.T, path string, body []byte, hdr map[string]string) int {
	t.Helper()
	req := httptest.NewRequest(http.MethodPost, path, bytes.NewReader(body))
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	rec := httptest.NewRecorder()
	e.hooks.ServeHTTP(rec, req)
	return rec.Code
}

func (e *hookEnv) suppressed(t *testing.T, addr string) guard.Suppression {
	t.Helper()
	s, _, err := e.g.LookupSuppression(context.Background(), addr)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func (e *hookEnv) refused(t *testing.T, source string) map[string]int64 {
	t.Helper()
	fs, err := e.g.BounceStats(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return fs.Refused[source]
}

func sesBounce(addr, bounceType, source string) string {
	b, _ := json.Marshal(map[string]any{
		"notificationType": "Bounce",
		"bounce": map[string]any{"bounceType": bounceType, "feedbackId": "fb-" + addr,
			"bouncedRecipients": []map[string]string{{"emailAddress": addr, "status": "5.1.1", "action": "failed"}}},
		"mail": map[string]any{"source": source, "commonHeaders": map[string]string{"messageId": "<" + strings.Repeat("1", 32) + "@example.test>"}},
	})
	return string(b)
}

func TestWebhookSES(t *testing.T) {
	sns := newSNS(t)
	e := newHooks(t, WebhookConfig{SESTopics: []string{topic}, SNSClient: sns.srv.Client(),
		SNSHost: func(h string) bool { return h == "127.0.0.1" }})
	const path = "/v1/webhooks/ses"

	if c := e.post(t, path, sns.message(t, "Notification", "1", sesBounce("gone@example.com", "Permanent", ""), nil), nil); c != 200 {
		t.Fatalf("signed bounce (v1) = %d", c)
	}
	if s := e.suppressed(t, "gone@example.com"); s.Reason != "hard_bounce" || s.Source != guard.SourceSES {
		t.Errorf("after an SES permanent bounce: %+v", s)
	}
	complaint, _ := json.Marshal(map[string]any{"notificationType": "Complaint",
		"complaint": map[string]any{"feedbackId": "c1", "complainedRecipients": []map[string]string{{"emailAddress": "angry@example.com"}}}})
	if c := e.post(t, path, sns.message(t, "Notification", "2", string(complaint), nil), nil); c != 200 {
		t.Fatalf("signed complaint (v2) = %d", c)
	}
	if s := e.suppressed(t, "angry@example.com"); s.Reason != "complaint" || s.Source != guard.SourceSES {
		t.Errorf("after an SES complaint: %+v", s)
	}
	if c := e.post(t, path, sns.message(t, "Notification", "2", sesBounce("busy@example.com", "Transient", ""), nil), nil); c != 200 {
		t.Fatalf("transient bounce = %d", c)
	}
	if s := e.suppressed(t, "busy@example.com"); s.Reason != "" {
		t.Errorf("a transient bounce suppressed: %+v", s)
	}

	// A return path names the kind.
	codecAddr, err := e.codec.Address(strings.Repeat("2", 32), queue.KindVerifyEmail,
		guard.Canonical("verp@example.com", e.g.Policy().RecipientRules), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if c := e.post(t, path, sns.message(t, "Notification", "2", sesBounce("verp@example.com", "Permanent", codecAddr), nil), nil); c != 200 {
		t.Fatalf("bounce with a return path = %d", c)
	}
	fs, _ := e.g.BounceStats(context.Background())
	if k := fs.Kinds[queue.KindVerifyEmail]; k.Hard != 1 {
		t.Errorf("verify_email feedback %+v: the return path's kind was not used", k)
	}

	bad := []struct {
		name   string
		body   []byte
		code   int
		reason string
	}{
		{"message changed after signing", sns.message(t, "Notification", "2", sesBounce("victim@example.com", "Permanent", ""), func(m map[string]any) {
			m["Message"] = sesBounce("victim2@example.com", "Permanent", "")
		}), 401, "signature"},
		{"signature of another key", func() []byte {
			other := newSNS(t)
			return other.message(t, "Notification", "2", sesBounce("victim@example.com", "Permanent", ""), func(m map[string]any) { m["SigningCertURL"] = sns.certURL })
		}(), 401, "signature"},
		{"foreign topic", sns.message(t, "Notification", "2", sesBounce("victim@example.com", "Permanent", ""), func(m map[string]any) {
			m["TopicArn"] = "arn:aws:sns:eu-west-1:999999999999:other"
		}), 401, "topic"},
		{"certificate off SNS", sns.message(t, "Notification", "2", sesBounce("victim@example.com", "Permanent", ""), func(m map[string]any) {
			m["SigningCertURL"] = "https://evil.example/SimpleNotificationService-test.pem"
		}), 401, "signature"},
		{"certificate over http", sns.message(t, "Notification", "2", sesBounce("victim@example.com", "Permanent", ""), func(m map[string]any) {
			m["SigningCertURL"] = strings.Replace(sns.certURL, "https:", "http:", 1)
		}), 401, "signature"},
		{"unknown signature version", sns.message(t, "Notification", "3", sesBounce("victim@example.com", "Permanent", ""), nil), 401, "signature"},
		{"timestamp changed", sns.message(t, "Notification", "2", sesBounce("victim@example.com", "Permanent", ""), func(m map[string]any) {
			m["Timestamp"] = time.Now().Add(-time.Minute).UTC().Format(time.RFC3339)
		}), 401, "signature"},
		{"stale", func() []byte {
			sns.age = 2 * time.Hour
			defer func() { sns.age = 0 }()
			return sns.message(t, "Notification", "2", sesBounce("victim@example.com", "Permanent", ""), nil)
		}(), 401, "stale"},
		{"not JSON", []byte("hello"), 400, "malformed"},
	}
	for _, tt := range bad {
		before := e.refused(t, guard.SourceSES)[tt.reason]
		if c := e.post(t, path, tt.body, nil); c != tt.code {
			t.Errorf("%s: %d, want %d", tt.name, c, tt.code)
		}
		if n := e.refused(t, guard.SourceSES)[tt.reason] - before; n != 1 {
			t.Errorf("%s: refused[%s] grew by %d, want 1", tt.name, tt.reason, n)
		}
	}
	for _, a := range []string{"victim@example.com", "victim2@example.com"} {
		if s := e.suppressed(t, a); s.Reason != "" {
			t.Errorf("a refused notification suppressed %s: %+v", a, s)
		}
	}

	// Subscription confirmation: SubscribeURL is visited once the
	// signature verifies, never before.
	forged := sns.message(t, "SubscriptionConfirmation", "2", "confirm", func(m map[string]any) { m["Token"] = "tok2" })
	if c := e.post(t, path, forged, nil); c != 401 || sns.confirmed.Load() != 0 {
		t.Errorf("forged confirmation: %d, %d visits of SubscribeURL", c, sns.confirmed.Load())
	}
	if c := e.post(t, path, sns.message(t, "SubscriptionConfirmation", "2", "confirm", nil), nil); c != 200 || sns.confirmed.Load() != 1 {
		t.Errorf("confirmation: %d, %d visits of SubscribeURL; want 200 and 1", c, sns.confirmed.Load())
	}
	if n := sns.certGets.Load(); n != 1 {
		t.Errorf("signing certificate fetched %d times, want once (cached)", n)
	}
}

func sendGridSign(t *testing.T, key *ecdsa.PrivateKey, ts string, body []byte) string {
	t.Helper()
	d := sha256.Sum256(append([]byte(ts), body...))
	sig, err := ecdsa.SignASN1(rand.Reader, key, d[:])
	if err != nil {
		t.Fatal(err)
	}
	return base64.StdEncoding.EncodeToString(sig)
}

func TestWebhookSendGrid(t *testing.T) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, _ := x509.MarshalPKIXPublicKey(&key.PublicKey)
	pub, err := ParseSendGridKey(base64.StdEncoding.EncodeToString(der))
	if err != nil {
		t.Fatal(err)
	}
	e := newHooks(t, WebhookConfig{SendGridKey: pub})
	const path = "/v1/webhooks/sendgrid"
	body, _ := json.Marshal([]map[string]any{
		{"email": "gone@example.com", "event": "bounce", "type": "bounce", "status": "5.1.1", "sg_event_id": "e1",
			"smtp-id": "<" + strings.Repeat("a", 32) + "@example.test>", "floodgate_kind": "password_reset"},
		{"email": "angry@example.com", "event": "spamreport", "sg_event_id": "e2"},
		{"email": "later@example.com", "event": "deferred", "sg_event_id": "e3"},
		{"email": "fine@example.com", "event": "delivered", "sg_event_id": "e4"},
	})
	ts := strconv.FormatInt(time.Now().Unix(), 10)
	hdr := func(ts, sig string) map[string]string {
		return map[string]string{sendGridTimestamp: ts, sendGridSignature: sig}
	}
	if c := e.post(t, path, body, hdr(ts, sendGridSign(t, key, ts, body))); c != 200 {
		t.Fatalf("signed events = %d", c)
	}
	for addr, want := range map[string]string{"gone@example.com": "hard_bounce", "angry@example.com": "complaint", "later@example.com": "", "fine@example.com": ""} {
		if s := e.suppressed(t, addr); s.Reason != want || want != "" && s.Source != guard.SourceSendGrid {
			t.Errorf("%s: %+v, want reason %q from sendgrid", addr, s, want)
		}
	}
	other, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	victim, _ := json.Marshal([]map[string]any{{"email": "victim@example.com", "event": "bounce", "sg_event_id": "v1"}})
	old := strconv.FormatInt(time.Now().Add(-2*time.Hour).Unix(), 10)
	bad := []struct {
		name   string
		body   []byte
		hdr    map[string]string
		reason string
	}{
		{"other key", victim, hdr(ts, sendGridSign(t, other, ts, victim)), "signature"},
		{"body changed", victim, hdr(ts, sendGridSign(t, key, ts, body)), "signature"},
		{"timestamp changed", victim, hdr(old, sendGridSign(t, key, ts, victim)), "signature"},
		{"no signature", victim, nil, "signature"},
		{"stale", victim, hdr(old, sendGridSign(t, key, old, victim)), "stale"},
	}
	for _, tt := range bad {
		before := e.refused(t, guard.SourceSendGrid)[tt.reason]
		if c := e.post(t, path, tt.body, tt.hdr); c != 401 {
			t.Errorf("%s: %d, want 401", tt.name, c)
		}
		if n := e.refused(t, guard.SourceSendGrid)[tt.reason] - before; n != 1 {
			t.Errorf("%s: refused[%s] grew by %d, want 1", tt.name, tt.reason, n)
		}
	}
	if s := e.suppressed(t, "victim@example.com"); s.Reason != "" {
		t.Errorf("a refused request suppressed: %+v", s)
	}
	fs, _ := e.g.BounceStats(context.Background())
	if k := fs.Kinds[queue.KindPasswordReset]; k.Hard != 1 {
		t.Errorf("password_reset feedback %+v: floodgate_kind was not used", k)
	}
}

func mailgunBody(t *testing.T, key []byte, ts, token, event, severity, rcpt string) []byte {
	t.Helper()
	mac := hmac.New(sha256.New, key)
	mac.Write([]byte(ts + token))
	b, _ := json.Marshal(map[string]any{
		"signature": map[string]string{"timestamp": ts, "token": token, "signature": hex.EncodeToString(mac.Sum(nil))},
		"event-data": map[string]any{"id": "ev-" + token, "event": event, "severity": severity, "recipient": rcpt,
			"delivery-status": map[string]any{"code": 550}, "message": map[string]any{"headers": map[string]string{"message-id": strings.Repeat("b", 32) + "@example.test"}}},
	})
	return b
}

func TestWebhookMailgun(t *testing.T) {
	key := []byte("key-0123456789abcdef")
	e := newHooks(t, WebhookConfig{MailgunKey: key})
	const path = "/v1/webhooks/mailgun"
	ts := strconv.FormatInt(time.Now().Unix(), 10)
	ok := mailgunBody(t, key, ts, "t1", "failed", "permanent", "gone@example.com")
	if c := e.post(t, path, ok, nil); c != 200 {
		t.Fatalf("signed event = %d", c)
	}
	if s := e.suppressed(t, "gone@example.com"); s.Reason != "hard_bounce" || s.Source != guard.SourceMailgun {
		t.Errorf("after a Mailgun permanent failure: %+v", s)
	}
	if c := e.post(t, path, mailgunBody(t, key, ts, "t2", "complained", "", "angry@example.com"), nil); c != 200 {
		t.Fatal(c)
	}
	if s := e.suppressed(t, "angry@example.com"); s.Reason != "complaint" {
		t.Errorf("after a complaint: %+v", s)
	}
	if c := e.post(t, path, mailgunBody(t, key, ts, "t3", "failed", "temporary", "later@example.com"), nil); c != 200 {
		t.Fatal(c)
	}
	if s := e.suppressed(t, "later@example.com"); s.Reason != "" {
		t.Errorf("a temporary failure suppressed: %+v", s)
	}
	old := strconv.FormatInt(time.Now().Add(-2*time.Hour).Unix(), 10)
	forged := mailgunBody(t, []byte("another-key-000000"), ts, "t4", "failed", "permanent", "victim@example.com")
	// Mailgun signs timestamp and token, not the event: a captured request
	// sent again with another event is a replay of its token.
	replayed := bytes.Replace(ok, []byte("gone@example.com"), []byte("victim@example.com"), 1)
	bad := []struct {
		name   string
		body   []byte
		code   int
		reason string
	}{
		{"replay", ok, 401, "replay"},
		{"replay with another event", replayed, 401, "replay"},
		{"other key", forged, 401, "signature"},
		{"stale", mailgunBody(t, key, old, "t6", "failed", "permanent", "victim@example.com"), 401, "stale"},
		{"not JSON", []byte("{"), 400, "malformed"},
	}
	for _, tt := range bad {
		before := e.refused(t, guard.SourceMailgun)[tt.reason]
		if c := e.post(t, path, tt.body, nil); c != tt.code {
			t.Errorf("%s: %d, want %d", tt.name, c, tt.code)
		}
		if n := e.refused(t, guard.SourceMailgun)[tt.reason] - before; n != 1 {
			t.Errorf("%s: refused[%s] grew by %d, want 1", tt.name, tt.reason, n)
		}
	}
	if s := e.suppressed(t, "victim@example.com"); s.Reason != "" {
		t.Errorf("a refused request suppressed: %+v", s)
	}
	fs, _ := e.g.BounceStats(context.Background())
	if n := fs.Kinds[guard.UnknownKind]; n == nil || n.Hard != 1 || n.Complaints != 1 || n.Soft != 1 {
		t.Errorf("mailgun feedback %+v", n)
	}
}

func TestWebhooksNotConfigured(t *testing.T) {
	e := newHooks(t, WebhookConfig{})
	for _, p := range []string{"/v1/webhooks/ses", "/v1/webhooks/sendgrid", "/v1/webhooks/mailgun"} {
		if c := e.post(t, p, []byte("{}"), nil); c != 404 {
			t.Errorf("%s without a key: %d, want 404", p, c)
		}
	}
}
