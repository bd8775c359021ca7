package smtpsink

import (
	"bufio"
	"encoding/json"
	"net/http"
	"slices"
	"strings"
	"testing"
)

// multipartMessage has a quoted-printable text part in UTF-8, a base64 HTML
// part in ISO-8859-1 and an attachment.
const multipartMessage = "From: =?utf-8?q?Z=C3=BCrich_App?= <app@example.org>\r\n" +
	"To: ada@example.com\r\n" +
	"Subject: =?utf-8?b?UsOpaW5pdGlhbGlzZXI=?=\r\n" +
	"Message-ID: <mp@example.org>\r\n" +
	"X-Floodgate-Kind: password_reset\r\n" +
	"MIME-Version: 1.0\r\n" +
	"Content-Type: multipart/mixed; boundary=outer\r\n" +
	"\r\n" +
	"--outer\r\n" +
	"Content-Type: multipart/alternative; boundary=inner\r\n" +
	"\r\n" +
	"--inner\r\n" +
	"Content-Type: text/plain; charset=utf-8\r\n" +
	"Content-Transfer-Encoding: quoted-printable\r\n" +
	"\r\n" +
	"R=C3=A9initialiser: https://app.example.org/reset?token=3Dabc&u=3D1=\r\n" +
	"23456789.\r\n" +
	"--inner\r\n" +
	"Content-Type: text/html; charset=iso-8859-1\r\n" +
	"Content-Transfer-Encoding: base64\r\n" +
	"\r\n" +
	// <p>R\xe9initialiser <a href="https://app.example.org/reset?token=abc&amp;u=123456789">ici</a> <a href="javascript:alert(1)">x</a></p>
	"PHA+Uulpbml0aWFsaXNlciA8YSBocmVmPSJodHRwczovL2FwcC5leGFtcGxlLm9yZy9yZXNldD90b2tlbj1hYmMmYW1wO3U9MTIzNDU2Nzg5Ij5pY2k8L2E+IDxhIGhyZWY9ImphdmFzY3JpcHQ6YWxlcnQoMSkiPng8L2E+PC9wPg==\r\n" +
	"--inner--\r\n" +
	"--outer\r\n" +
	"Content-Type: application/pdf; name=\"invoice.pdf\"\r\n" +
	"Content-Disposition: attachment; filename=\"invoice.pdf\"\r\n" +
	"Content-Transfer-Encoding: base64\r\n" +
	"\r\n" +
	"JVBERi0xLjQK\r\n" +
	"--outer--\r\n"

func TestDecode(t *testing.T) {
	c := Decode([]byte(multipartMessage))
	if c.DecodeError != "" {
		t.Errorf("DecodeError = %q", c.DecodeError)
	}
	const reset = "https://app.example.org/reset?token=abc&u=123456789"
	if want := "Réinitialiser: " + reset + "."; c.Text != want {
		t.Errorf("Text = %q, want %q", c.Text, want)
	}
	if want := `<p>Réinitialiser <a href="https://app.example.org/reset?token=abc&amp;u=123456789">ici</a> <a href="javascript:alert(1)">x</a></p>`; c.HTML != want {
		t.Errorf("HTML = %q, want %q", c.HTML, want)
	}
	wantLinks := []Link{
		{URL: reset, Text: "ici", In: []string{"html", "text"}},
		{URL: "javascript:alert(1)", Text: "x", In: []string{"html"}},
	}
	if len(c.Links) != len(wantLinks) {
		t.Fatalf("Links = %+v, want %+v", c.Links, wantLinks)
	}
	for i, l := range c.Links {
		if l.URL != wantLinks[i].URL || l.Text != wantLinks[i].Text || !slices.Equal(l.In, wantLinks[i].In) {
			t.Errorf("Links[%d] = %+v, want %+v", i, l, wantLinks[i])
		}
	}
	if len(c.Attachments) != 1 || c.Attachments[0] != (Attachment{ContentType: "application/pdf", Filename: "invoice.pdf", Size: 9}) {
		t.Errorf("Attachments = %+v", c.Attachments)
	}
	got := map[string]string{}
	var names []string
	for _, h := range c.Headers {
		got[h.Name] = h.Value
		names = append(names, h.Name)
	}
	if got["From"] != "Zürich App <app@example.org>" || got["Subject"] != "Réinitialiser" || !slices.Contains(names, "Message-ID") {
		t.Errorf("Headers = %+v, want decoded From and Subject, names as sent", c.Headers)
	}
}

func TestDecodeDegradesGracefully(t *testing.T) {
	tests := []struct {
		name, raw, text, err string
	}{
		{"no header end", "Subject: x", "", ""},
		{"plain without MIME", "Subject: x\r\n\r\nhello\r\n", "hello\r\n", ""},
		{"unknown charset", "Content-Type: text/plain; charset=x-nope\r\n\r\nhi\r\n", "hi\r\n", "x-nope"},
		{"broken multipart", "Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\npart", "part", ""},
	}
	for _, tt := range tests {
		c := Decode([]byte(tt.raw))
		if c.Text != tt.text || !strings.Contains(c.DecodeError, tt.err) {
			t.Errorf("%s: Decode(%q) text %q, error %q; want %q and an error naming %q", tt.name, tt.raw, c.Text, c.DecodeError, tt.text, tt.err)
		}
	}
}

func TestWithBaseTarget(t *testing.T) {
	tests := []struct{ in, want string }{
		{"<p>x</p>", `<base target="_blank"><p>x</p>`},
		{"  <!DOCTYPE html>\n<html>", `  <!DOCTYPE html><base target="_blank">` + "\n<html>"},
	}
	for _, tt := range tests {
		if got := withBaseTarget(tt.in); got != tt.want {
			t.Errorf("withBaseTarget(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestAPIMessageDetail(t *testing.T) {
	s := startSink(t, Config{})
	mustSend(t, s, "ada@example.com", []byte(multipartMessage))
	id := s.Messages(Query{})[0].ID

	resp, body := get(t, s, "GET", "/api/messages/"+id)
	var d map[string]any
	if resp.StatusCode != 200 || json.Unmarshal(body, &d) != nil {
		t.Fatalf("GET /api/messages/%s = %d %s", id, resp.StatusCode, body)
	}
	for _, k := range []string{"id", "received_at", "mail_from", "rcpt_to", "subject", "message_id", "size", "dkim", "dropped", "kind",
		"text", "html", "links", "headers", "attachments", "decode_error"} {
		if _, ok := d[k]; !ok {
			t.Errorf("detail lacks %q: %s", k, body)
		}
	}
	if d["kind"] != "password_reset" || !strings.HasPrefix(d["text"].(string), "Réinitialiser") {
		t.Errorf("detail kind %v, text %q", d["kind"], d["text"])
	}

	resp, body = get(t, s, "GET", "/api/messages/"+id+"/html")
	csp := resp.Header.Get("Content-Security-Policy")
	if resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/html") ||
		!strings.Contains(csp, "sandbox") || !strings.Contains(csp, "default-src 'none'") || strings.Contains(csp, "allow-scripts") {
		t.Errorf("GET html = %d %s, CSP %q; want sandboxed HTML", resp.StatusCode, resp.Header.Get("Content-Type"), csp)
	}
	if !strings.Contains(string(body), `<base target="_blank">`) || !strings.Contains(string(body), "Réinitialiser") {
		t.Errorf("html body = %s", body)
	}
	if resp, _ := get(t, s, "GET", "/api/messages/nope/html"); resp.StatusCode != 404 {
		t.Errorf("GET /api/messages/nope/html = %d, want 404", resp.StatusCode)
	}
}

func TestAPISearchAndDeleteOne(t *testing.T) {
	s := startSink(t, Config{})
	mustSend(t, s, "ada@example.com", []byte(multipartMessage))
	mustSend(t, s, "bob@example.com", newMessage("Weekly digest", "", "b"))
	mustSend(t, s, "carol@example.com", newMessage("Other", "", "b"))
	list := func(path string) []Message {
		t.Helper()
		resp, body := get(t, s, "GET", path)
		var msgs []Message
		if resp.StatusCode != 200 || json.Unmarshal(body, &msgs) != nil {
			t.Fatalf("GET %s = %d %s", path, resp.StatusCode, body)
		}
		return msgs
	}
	tests := []struct {
		path string
		want []string // subjects, newest first
	}{
		{"/api/messages?q=DIGEST", []string{"Weekly digest"}},
		{"/api/messages?q=carol", []string{"Other"}},
		{"/api/messages?q=password_reset", []string{"Réinitialiser"}},
		{"/api/messages?kind=Password_Reset", []string{"Réinitialiser"}},
		{"/api/messages?q=example.com&to=bob@example.com", []string{"Weekly digest"}},
		{"/api/messages?q=nothing", nil},
	}
	for _, tt := range tests {
		var got []string
		for _, m := range list(tt.path) {
			got = append(got, m.Subject)
		}
		if !slices.Equal(got, tt.want) {
			t.Errorf("GET %s = %q, want %q", tt.path, got, tt.want)
		}
	}
	if n := len(s.Messages(Query{Search: "example"})); n != 3 {
		t.Errorf("Messages(Search example) = %d, want 3", n)
	}

	victim := list("/api/messages?q=digest")[0].ID
	if resp, _ := get(t, s, "DELETE", "/api/messages/"+victim); resp.StatusCode != http.StatusNoContent {
		t.Errorf("DELETE one = %d, want 204", resp.StatusCode)
	}
	if resp, _ := get(t, s, "DELETE", "/api/messages/"+victim); resp.StatusCode != http.StatusNotFound {
		t.Errorf("DELETE again = %d, want 404", resp.StatusCode)
	}
	var left []string
	for _, m := range s.Messages(Query{}) {
		left = append(left, m.Subject)
	}
	if want := []string{"Other", "Réinitialiser"}; !slices.Equal(left, want) {
		t.Errorf("after delete: %q, want %q", left, want)
	}
	if st := s.Stats(); st.Stored != 2 || st.Received != 3 {
		t.Errorf("stats after delete = %+v, want stored 2, received 3", st)
	}
}

func TestDeleteKeepsRingOrder(t *testing.T) {
	s := startSink(t, Config{MaxMessages: 3})
	for _, subj := range []string{"a", "b", "c", "d"} { // a is evicted: the ring wrapped
		mustSend(t, s, "r@example.com", newMessage(subj, "", "b"))
	}
	var mid string
	for _, m := range s.Messages(Query{}) {
		if m.Subject == "c" {
			mid = m.ID
		}
	}
	if !s.Delete(mid) {
		t.Fatal("Delete(c) = false")
	}
	mustSend(t, s, "r@example.com", newMessage("e", "", "b"))
	mustSend(t, s, "r@example.com", newMessage("f", "", "b"))
	var got []string
	for _, m := range s.Messages(Query{}) {
		got = append(got, m.Subject)
	}
	if want := []string{"f", "e", "d"}; !slices.Equal(got, want) {
		t.Errorf("messages = %q, want %q", got, want)
	}
}

func TestAPIEvents(t *testing.T) {
	s := startSink(t, Config{})
	req, err := http.NewRequestWithContext(testContext(t), "GET", "http://"+s.HTTPAddr()+"/api/events", nil)
	if err != nil {
		t.Fatal(err)
	}
	tr := &http.Transport{}
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); ct != "text/event-stream" {
		t.Fatalf("Content-Type = %q", ct)
	}
	sc := bufio.NewScanner(resp.Body)
	next := func() Stats {
		t.Helper()
		var event string
		for sc.Scan() {
			line := sc.Text()
			if v, ok := strings.CutPrefix(line, "event: "); ok {
				event = v
			}
			if v, ok := strings.CutPrefix(line, "data: "); ok && event == "change" {
				var st Stats
				if err := json.Unmarshal([]byte(v), &st); err != nil {
					t.Fatalf("event data %q: %v", v, err)
				}
				return st
			}
		}
		t.Fatalf("event stream ended: %v", sc.Err())
		return Stats{}
	}
	if st := next(); st.Received != 0 {
		t.Errorf("first event = %+v, want the empty sink", st)
	}
	mustSend(t, s, "r@example.com", newMessage("s", "", "b"))
	if st := next(); st.Received != 1 || st.Stored != 1 {
		t.Errorf("event after a message = %+v, want received 1", st)
	}
	s.Reset()
	if st := next(); st.Received != 0 {
		t.Errorf("event after reset = %+v", st)
	}
}
