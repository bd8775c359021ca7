package smtpsink

import (
	"context"
	"fmt"
	"html"
	"net/http"
	"net/http/httptest"
	"net/mail"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/floodgate-dev/floodgate/internal/delivery"
)

// chromiumPath finds the browser for the page tests: $CHROMIUM, else
// Debian's chromium. A missing browser fails the test: the page is
// untested without it.
func chromiumPath(t *testing.T) string {
	t.Helper()
	if p := os.Getenv("CHROMIUM"); p != "" {
		return p
	}
	for _, name := range []string{"/usr/bin/chromium", "chromium", "chromium-browser"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	t.Fatal("chromium not found: install Debian's chromium (apt-get install chromium) or set CHROMIUM")
	return ""
}

// newBrowser starts a headless Chromium with a fresh profile and no
// network of its own, and returns a tab's context, valid until the test ends.
func newBrowser(t *testing.T) context.Context {
	t.Helper()
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chromiumPath(t)),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.WindowSize(1400, 900),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		// Keep the sandboxed message iframe in the page's process, so the
		// test can look inside it.
		chromedp.Flag("disable-features", "SitePerProcess,IsolateOrigins,IsolateSandboxedIframes"),
		chromedp.Flag("disable-site-isolation-trials", true),
	)
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(actx)
	t.Cleanup(func() {
		cancel()
		cancelAlloc()
	})
	if err := chromedp.Do(ctx); err != nil {
		t.Fatalf("start chromium: %v", err)
	}
	return ctx
}

// step runs browser actions with a deadline, failing the test with what.
func step(t *testing.T, ctx context.Context, what string, actions ...chromedp.Action[chromedp.Void]) {
	t.Helper()
	sctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	if err := chromedp.Do(sctx, actions...); err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

// value runs one browser action with a deadline and returns its value.
func value[T any](t *testing.T, ctx context.Context, what string, a chromedp.Action[T]) T {
	t.Helper()
	sctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	v, err := chromedp.Run(sctx, a)
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
	return v
}

// resetEmail builds a password-reset email as the worker does: multipart
// alternative, quoted-printable, with a script and an event handler in its
// HTML that must never run.
func resetEmail(t *testing.T, resetURL string) []byte {
	t.Helper()
	raw, err := delivery.Build(&delivery.Message{
		From:    mail.Address{Name: "Example App", Address: "no-reply@example.org"},
		To:      mail.Address{Name: "Ada Lovelace", Address: "ada@example.com"},
		Subject: "Reset your Example App password",
		Text:    "Hello Ada,\n\nSomeone asked to reset your password. Use this link within 30 minutes:\n\n" + resetURL + "\n\nIf it was not you, ignore this email.\n",
		HTML: `<!doctype html><html><body style="font-family:sans-serif;color:#222;margin:24px">` +
			`<h1 style="color:#243447;font-size:22px">Reset your password</h1>` +
			`<p>Hello Ada,</p><p>Someone asked to reset your password. Use this link within 30 minutes:</p>` +
			`<p><a id="reset" href="` + html.EscapeString(resetURL) + `" style="display:inline-block;background:#1a73e8;color:#fff;padding:10px 18px;border-radius:4px;text-decoration:none">Reset password</a></p>` +
			`<p style="color:#666">If it was not you, ignore this email.</p>` +
			`<script>document.body.setAttribute("data-ran", "script")</script>` +
			`<img src="x" alt="" onerror="document.body.setAttribute('data-ran', 'onerror')">` +
			`</body></html>`,
		MessageID: "reset-1@example.org",
		Date:      time.Date(2026, 11, 27, 6, 0, 0, 0, time.UTC),
		Headers:   []delivery.Header{{Name: KindHeader, Value: "password_reset"}},
	})
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

func TestPageInBrowser(t *testing.T) {
	keys := newTestKeys(t)
	s := startSink(t, Config{Keys: keys.records})
	page := "http://" + s.HTTPAddr() + "/"

	// The app the reset link points at: a click must reach it.
	clicked := make(chan string, 4)
	app := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/reset" {
			clicked <- r.URL.RawQuery
		}
		fmt.Fprintln(w, "reset form")
	}))
	defer app.Close()
	const token = "q7Z0c3VwZXItc2VjcmV0LXRva2VuLXRoYXQtaXMtbG9uZy1lbm91Z2gtdG8tZm9sZA"
	resetURL := app.URL + "/reset?token=" + token + "&email=ada%40example.com"

	ctx := newBrowser(t)
	step(t, ctx, "open the page", chromedp.Navigate(page), chromedp.WaitVisible(chromedp.ID("empty")))
	// Marks this document: a reload would lose it.
	if got := value(t, ctx, "mark", chromedp.Evaluate[int](`window.testMark = 42`)); got != 42 {
		t.Fatalf("mark = %d", got)
	}

	mustSend(t, s, "ada@example.com", sign(t, resetEmail(t, resetURL), "ed1", keys.ed))
	step(t, ctx, "see the message arrive", chromedp.WaitVisible(chromedp.CSS(`#list li[data-id]`)))
	if got := value(t, ctx, "mark after arrival", chromedp.Evaluate[int](`window.testMark || 0`)); got != 42 {
		t.Fatalf("the page reloaded to show the new message (mark %d)", got)
	}
	id := s.Messages(Query{})[0].ID
	if got := value(t, ctx, "row text", chromedp.Text(chromedp.CSS(`#list li[data-id]`))); !strings.Contains(got, "Reset your Example App password") || !strings.Contains(got, "password_reset") || !strings.Contains(got, "DKIM pass") {
		t.Errorf("list row = %q, want subject, kind and DKIM pass", got)
	}

	step(t, ctx, "open the message", chromedp.Click(chromedp.CSS(`#list li[data-id="`+id+`"]`)), chromedp.WaitVisible(chromedp.ID("view")))
	if got := value(t, ctx, "subject", chromedp.Text(chromedp.ID("v-subject"))); got != "Reset your Example App password" {
		t.Errorf("view subject = %q", got)
	}

	// The HTML tab: a sandboxed iframe with the email's own document.
	sandbox := value(t, ctx, "iframe sandbox", chromedp.AttributeValue(chromedp.ID("v-html"), "sandbox"))
	if !sandbox.Exists || strings.Contains(sandbox.Value, "allow-scripts") || strings.Contains(sandbox.Value, "allow-same-origin") {
		t.Errorf("iframe sandbox = %+v, want present without allow-scripts or allow-same-origin", sandbox)
	}
	frame := value(t, ctx, "iframe node", chromedp.Nodes(chromedp.ID("v-html")))[0]
	step(t, ctx, "wait for the email's HTML", chromedp.WaitVisible(chromedp.CSS("a#reset"), chromedp.FromNode(frame)))
	if href := value(t, ctx, "href in the email", chromedp.AttributeValue(chromedp.CSS("a#reset"), "href", chromedp.FromNode(frame))); href.Value != resetURL {
		t.Errorf("reset link in the HTML = %q, want %q", href.Value, resetURL)
	}
	if ran := value(t, ctx, "script marker", chromedp.AttributeValue(chromedp.CSS("body"), "data-ran", chromedp.FromNode(frame))); ran.Exists {
		t.Errorf("a script of the email ran: data-ran=%q", ran.Value)
	}

	// The links bar: the reset link, clickable, opening the app.
	link := chromedp.CSS(`#v-links a.link`)
	attrs := value(t, ctx, "link attributes", chromedp.Attributes(link))
	if attrs["href"] != resetURL || attrs["target"] != "_blank" || !strings.Contains(attrs["rel"], "noopener") {
		t.Errorf("link attributes = %v, want href %q, target _blank, rel noopener", attrs, resetURL)
	}

	shot := value(t, ctx, "screenshot", chromedp.CaptureScreenshot())
	path := filepath.Join(t.ArtifactDir(), "message-view.png")
	if err := os.WriteFile(path, shot, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshot of the message view: %s (go test -artifacts keeps it)", path)

	step(t, ctx, "click the reset link", chromedp.Click(link))
	select {
	case q := <-clicked:
		if !strings.Contains(q, "token="+token) {
			t.Errorf("the click reached the app with query %q, want the token", q)
		}
	case <-testContext(t).Done():
		t.Fatal("clicking the reset link did not reach the app")
	}

	step(t, ctx, "text tab", chromedp.Click(chromedp.CSS(`#tabs [data-tab="text"]`)), chromedp.WaitVisible(chromedp.ID("panel-text")))
	if got := value(t, ctx, "text", chromedp.Text(chromedp.ID("panel-text"))); !strings.Contains(got, resetURL) || !strings.Contains(got, "Hello Ada,") {
		t.Errorf("text tab = %q, want the decoded text with the whole reset URL", got)
	}
	step(t, ctx, "headers tab", chromedp.Click(chromedp.CSS(`#tabs [data-tab="headers"]`)), chromedp.WaitVisible(chromedp.ID("panel-headers")))
	if got := value(t, ctx, "headers", chromedp.Text(chromedp.ID("v-headers"))); !strings.Contains(got, "Message-ID") || !strings.Contains(got, "<reset-1@example.org>") || !strings.Contains(got, "Ada Lovelace") {
		t.Errorf("headers tab = %q", got)
	}
	step(t, ctx, "raw tab", chromedp.Click(chromedp.CSS(`#tabs [data-tab="raw"]`)), chromedp.WaitVisible(chromedp.ID("v-raw")))
	step(t, ctx, "raw text", chromedp.WaitVisible(chromedp.Search(`//pre[@id="v-raw"][contains(., "Content-Transfer-Encoding: quoted-printable")]`)))
	step(t, ctx, "dkim tab", chromedp.Click(chromedp.CSS(`#tabs [data-tab="dkim"]`)), chromedp.WaitVisible(chromedp.ID("panel-dkim")))
	if got := value(t, ctx, "dkim", chromedp.Text(chromedp.ID("v-dkim"))); !strings.Contains(got, "pass") || !strings.Contains(got, "example.org") || !strings.Contains(got, "ed1") {
		t.Errorf("DKIM tab = %q, want pass for example.org ed1", got)
	}

	// Search: by subject, and by kind.
	mustSend(t, s, "bob@example.com", newMessage("Your weekly digest", "<digest@x>", "Nothing new."))
	step(t, ctx, "second message arrives", chromedp.WaitVisible(chromedp.CSS(`#list li:nth-child(2)`)))
	step(t, ctx, "search by subject", chromedp.SendKeys(chromedp.ID("search"), "digest"), chromedp.WaitNotPresent(chromedp.CSS(`#list li:nth-child(2)`)))
	if got := value(t, ctx, "search result", chromedp.Text(chromedp.CSS(`#list li`))); !strings.Contains(got, "weekly digest") {
		t.Errorf("search for digest shows %q", got)
	}
	clearSearch := chromedp.Evaluate[bool](`(s => (s.value = "", s.dispatchEvent(new Event("input")), true))(document.getElementById("search"))`)
	value(t, ctx, "clear the search", clearSearch)
	step(t, ctx, "search by kind", chromedp.WaitVisible(chromedp.CSS(`#list li:nth-child(2)`)), chromedp.SendKeys(chromedp.ID("search"), "password_reset"),
		chromedp.WaitNotPresent(chromedp.CSS(`#list li:nth-child(2)`)), chromedp.WaitVisible(chromedp.CSS(`#list li[data-id="`+id+`"]`)))
	value(t, ctx, "clear the search", clearSearch)
	step(t, ctx, "all messages again", chromedp.WaitVisible(chromedp.CSS(`#list li:nth-child(2)`)))

	// Delete one, then all.
	step(t, ctx, "delete the open message", chromedp.Click(chromedp.ID("delete-one")),
		chromedp.WaitNotPresent(chromedp.CSS(`#list li[data-id="`+id+`"]`)), chromedp.WaitVisible(chromedp.ID("placeholder")))
	if _, ok := s.Message(id); ok || len(s.Messages(Query{})) != 1 {
		t.Errorf("after delete: message still held = %v, %d stored; want gone and 1 left", ok, len(s.Messages(Query{})))
	}
	step(t, ctx, "delete all", chromedp.Click(chromedp.ID("delete-all")), chromedp.WaitVisible(chromedp.ID("empty")))
	if n := len(s.Messages(Query{})); n != 0 {
		t.Errorf("%d messages after delete all, want 0", n)
	}
}
