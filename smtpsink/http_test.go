package smtpsink

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"slices"
	"strings"
	"testing"
)

// get fetches path from the sink's HTTP listener.
func get(t *testing.T, s *Server, method, path string) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequestWithContext(testContext(t), method, "http://"+s.HTTPAddr()+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	tr := &http.Transport{}
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr}).Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, body
}

func keysOf(m map[string]any) []string {
	var k []string
	for name := range m {
		k = append(k, name)
	}
	slices.Sort(k)
	return k
}

func TestAPIMessagesJSONShape(t *testing.T) {
	keys := newTestKeys(t)
	s := startSink(t, Config{Keys: keys.records})
	mustSend(t, s, "r@example.com", sign(t, newMessage("hello", "<m@x>", "b"), "ed1", keys.ed))

	resp, body := get(t, s, "GET", "/api/messages")
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "application/json" {
		t.Fatalf("GET /api/messages = %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	var list []map[string]any
	if err := json.Unmarshal(body, &list); err != nil || len(list) != 1 {
		t.Fatalf("body %s: %v, want a one-element list", body, err)
	}
	m := list[0]
	wantKeys := []string{"dkim", "dropped", "id", "kind", "mail_from", "message_id", "rcpt_to", "received_at", "size", "subject"}
	if got := keysOf(m); !slices.Equal(got, wantKeys) {
		t.Errorf("message keys = %v, want %v", got, wantKeys)
	}
	dk := m["dkim"].([]any)[0].(map[string]any)
	if got := keysOf(dk); !slices.Equal(got, []string{"algorithm", "domain", "error", "result", "selector"}) {
		t.Errorf("dkim keys = %v", got)
	}
	if dk["result"] != "pass" || dk["selector"] != "ed1" || m["subject"] != "hello" || m["message_id"] != "<m@x>" {
		t.Errorf("message = %v", m)
	}
	if rt := m["rcpt_to"].([]any); len(rt) != 1 || rt[0] != "r@example.com" {
		t.Errorf("rcpt_to = %v", rt)
	}

	id := m["id"].(string)
	resp, body = get(t, s, "GET", "/api/messages/"+id)
	var one map[string]any
	if resp.StatusCode != 200 || json.Unmarshal(body, &one) != nil || one["id"] != id {
		t.Errorf("GET /api/messages/%s = %d %s", id, resp.StatusCode, body)
	}

	resp, body = get(t, s, "GET", "/api/messages/"+id+"/raw")
	want := s.Messages(Query{})[0].Raw
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "message/rfc822" || !bytes.Equal(body, want) {
		t.Errorf("GET raw = %d %s, %d bytes; want message/rfc822 with the exact %d bytes", resp.StatusCode, resp.Header.Get("Content-Type"), len(body), len(want))
	}
}

func TestAPIQueryParameters(t *testing.T) {
	s := startSink(t, Config{})
	for i := range 60 {
		to := "a@example.com"
		if i%2 == 1 {
			to = "b@example.com"
		}
		mustSend(t, s, to, newMessage("s", "", "b"))
	}
	count := func(path string) int {
		t.Helper()
		resp, body := get(t, s, "GET", path)
		if resp.StatusCode != 200 {
			t.Fatalf("GET %s = %d %s", path, resp.StatusCode, body)
		}
		var list []Message
		if err := json.Unmarshal(body, &list); err != nil {
			t.Fatal(err)
		}
		return len(list)
	}
	tests := []struct {
		path string
		want int
	}{
		{"/api/messages", defaultLimit},
		{"/api/messages?limit=7", 7},
		{"/api/messages?limit=1000", 60},
		{"/api/messages?limit=all", 60},
		{"/api/messages?to=B@example.com&limit=all", 30},
		{"/api/messages?to=nobody@example.com", 0},
	}
	for _, tt := range tests {
		if got := count(tt.path); got != tt.want {
			t.Errorf("GET %s returned %d messages, want %d", tt.path, got, tt.want)
		}
	}
	for _, bad := range []string{"0", "-1", "x", "1.5"} {
		resp, body := get(t, s, "GET", "/api/messages?limit="+bad)
		var e map[string]string
		if resp.StatusCode != 400 || json.Unmarshal(body, &e) != nil || e["error"] == "" {
			t.Errorf("GET ?limit=%s = %d %s, want 400 with a JSON error", bad, resp.StatusCode, body)
		}
	}
}

func TestAPINotFoundStatsAndDelete(t *testing.T) {
	s := startSink(t, Config{})
	mustSend(t, s, "r@example.com", newMessage("s", "<d@x>", "b"))
	mustSend(t, s, "r@example.com", newMessage("s", "<d@x>", "b"))
	send(t, s, "a@example.org", []string{"permfail+1@example.com"}, newMessage("s", "", "b"))

	for _, path := range []string{"/api/messages/nope", "/api/messages/nope/raw"} {
		resp, body := get(t, s, "GET", path)
		if resp.StatusCode != 404 || !strings.Contains(string(body), `"error"`) {
			t.Errorf("GET %s = %d %s, want 404 JSON error", path, resp.StatusCode, body)
		}
	}

	_, body := get(t, s, "GET", "/api/stats")
	var st map[string]any
	if err := json.Unmarshal(body, &st); err != nil {
		t.Fatal(err)
	}
	for k, want := range map[string]float64{"received": 2, "rejected": 1, "sessions": 3, "duplicate_message_ids": 1, "dropped": 0, "stored": 2} {
		if st[k] != want {
			t.Errorf("stats[%q] = %v, want %v (all: %s)", k, st[k], want, body)
		}
	}

	resp, _ := get(t, s, "DELETE", "/api/messages")
	if resp.StatusCode != http.StatusNoContent {
		t.Errorf("DELETE /api/messages = %d, want 204", resp.StatusCode)
	}
	if n := len(s.Messages(Query{})); n != 0 {
		t.Errorf("%d messages after DELETE, want 0", n)
	}
	resp, _ = get(t, s, "POST", "/api/messages")
	if resp.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("POST /api/messages = %d, want 405", resp.StatusCode)
	}
}

func TestPageIsSelfContained(t *testing.T) {
	s := startSink(t, Config{})
	resp, body := get(t, s, "GET", "/")
	if resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/html") {
		t.Fatalf("GET / = %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	csp := resp.Header.Get("Content-Security-Policy")
	for _, want := range []string{"default-src 'none'", "script-src 'self'", "frame-ancestors 'none'"} {
		if !strings.Contains(csp, want) {
			t.Errorf("page CSP %q lacks %q", csp, want)
		}
	}
	if strings.Contains(csp, "unsafe-inline") || strings.Contains(string(body), "<script>") || strings.Contains(string(body), "://") {
		t.Errorf("page has inline script, allows it, or loads from elsewhere:\n%s", body)
	}
	for _, asset := range []string{"/assets/app.js", "/assets/app.css"} {
		resp, body := get(t, s, "GET", asset)
		if resp.StatusCode != 200 || len(body) == 0 || resp.Header.Get("Content-Security-Policy") == "" {
			t.Errorf("GET %s = %d, %d bytes, CSP %q", asset, resp.StatusCode, len(body), resp.Header.Get("Content-Security-Policy"))
		}
	}
	if resp, _ := get(t, s, "GET", "/nope"); resp.StatusCode != 404 {
		t.Errorf("GET /nope = %d, want 404", resp.StatusCode)
	}
}

func TestHTTPDisabled(t *testing.T) {
	s := startSink(t, Config{HTTPAddr: "-"})
	if s.HTTPAddr() != "" {
		t.Errorf("HTTPAddr() = %q with HTTP disabled, want empty", s.HTTPAddr())
	}
	if s.Handler() == nil {
		t.Error("Handler() is nil")
	}
}

func TestClient(t *testing.T) {
	s := startSink(t, Config{})
	c := NewClient("http://" + s.HTTPAddr() + "/")
	defer c.CloseIdleConnections()
	ctx := testContext(t)
	raw := newMessage("client", "<c@x>", "b")
	mustSend(t, s, "x@example.com", raw)
	mustSend(t, s, "y@example.com", newMessage("other", "", "b"))

	msgs, err := c.Messages(ctx, Query{To: "x@example.com"})
	if err != nil || len(msgs) != 1 || msgs[0].Subject != "client" || msgs[0].Raw != nil {
		t.Fatalf("Messages(to x) = %+v, %v; want the one message, without Raw", msgs, err)
	}
	if all, err := c.Messages(ctx, Query{}); err != nil || len(all) != 2 {
		t.Errorf("Messages(all) = %d, %v; want 2", len(all), err)
	}
	if lim, err := c.Messages(ctx, Query{Limit: 1}); err != nil || len(lim) != 1 || lim[0].Subject != "other" {
		t.Errorf("Messages(limit 1) = %+v, %v; want the newest", lim, err)
	}
	m, err := c.Message(ctx, msgs[0].ID)
	if err != nil || m.MessageID != "<c@x>" || m.ReceivedAt.IsZero() {
		t.Errorf("Message = %+v, %v", m, err)
	}
	if got, err := c.Raw(ctx, m.ID); err != nil || !bytes.Equal(got, raw) {
		t.Errorf("Raw = %q, %v; want %q", got, err, raw)
	}
	d, err := c.Detail(ctx, m.ID)
	if err != nil || d.MessageID != "<c@x>" || d.Text != "b\r\n" || len(d.Headers) == 0 {
		t.Errorf("Detail = %+v, %v; want the decoded body", d, err)
	}
	if all, err := c.Messages(ctx, Query{Search: "OTHER"}); err != nil || len(all) != 1 || all[0].Subject != "other" {
		t.Errorf("Messages(search OTHER) = %+v, %v", all, err)
	}
	var apiErr *APIError
	if err := c.Delete(ctx, "nope"); !errors.As(err, &apiErr) || apiErr.StatusCode != 404 {
		t.Errorf("Delete(nope) error = %v, want APIError 404", err)
	}
	if _, err := c.Message(ctx, "nope"); !errors.As(err, &apiErr) || apiErr.StatusCode != 404 || apiErr.Message != "message not found" {
		t.Errorf("Message(nope) error = %v, want APIError 404", err)
	}
	st, err := c.Stats(ctx)
	if err != nil || st.Received != 2 || st.Stored != 2 {
		t.Errorf("Stats = %+v, %v", st, err)
	}
	if err := c.Reset(ctx); err != nil {
		t.Fatalf("Reset: %v", err)
	}
	if st, err := c.Stats(ctx); err != nil || st != (Stats{}) {
		t.Errorf("Stats after Reset = %+v, %v; want zero", st, err)
	}
}
