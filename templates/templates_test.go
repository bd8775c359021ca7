package templates

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

var update = flag.Bool("update", false, "rewrite the golden files under testdata/")

// goldenCases are the inputs whose output is pinned under testdata/.
var goldenCases = []struct {
	kind string
	data Data
}{
	{"password_reset", Data{
		Name: "Alice", To: "alice@example.com", App: "Example App", ExpiresIn: 30 * time.Minute,
		Values: map[string]string{"reset_url": "https://app.example.com/reset?token=abc123&u=42"},
	}},
	{"verify_email", Data{
		To: "new.user@example.com", App: "Example App", ExpiresIn: 24 * time.Hour,
		Values: map[string]string{"verify_url": "https://app.example.com/verify?token=def456"},
	}},
	{"notification", Data{
		Name: "Bob", To: "bob@example.org", App: "Example App", ExpiresIn: 24 * time.Hour,
		Values: map[string]string{
			"subject":         "Your export is ready",
			"body":            "Your data export finished at 14:02 UTC.\nIt contains 3 files.\n\nDownloads stay available for 7 days.",
			"action_url":      "https://app.example.com/exports/42",
			"unsubscribe_url": "https://app.example.com/unsubscribe?t=xyz",
		},
	}},
}

func newDefault(t *testing.T) *Set {
	t.Helper()
	s, err := New("")
	if err != nil {
		t.Fatalf("New(%q): %v", "", err)
	}
	return s
}

func mustRender(t *testing.T, s *Set, kind string, d Data) Rendered {
	t.Helper()
	r, err := s.Render(kind, d)
	if err != nil {
		t.Fatalf("Render(%q): %v", kind, err)
	}
	return r
}

func TestGolden(t *testing.T) {
	s := newDefault(t)
	for _, tc := range goldenCases {
		r := mustRender(t, s, tc.kind, tc.data)
		for _, part := range []struct{ name, got string }{
			{"subject", r.Subject + "\n"},
			{"text", r.Text},
			{"html", r.HTML},
		} {
			file := filepath.Join("testdata", tc.kind+"."+part.name+".golden")
			if *update {
				if err := os.WriteFile(file, []byte(part.got), 0o644); err != nil {
					t.Fatal(err)
				}
				continue
			}
			want, err := os.ReadFile(file)
			if err != nil {
				t.Fatalf("%v (run go test ./templates -update to create it)", err)
			}
			if part.got != string(want) {
				t.Errorf("Render(%q) %s = %q, want %q (from %s)", tc.kind, part.name, part.got, want, file)
			}
		}
	}
}

func TestKindsAndHas(t *testing.T) {
	s := newDefault(t)
	want := []string{"notification", "password_reset", "verify_email"}
	if got := s.Kinds(); !slices.Equal(got, want) {
		t.Errorf("Kinds() = %q, want %q", got, want)
	}
	s.Kinds()[0] = "mutated"
	if got := s.Kinds(); !slices.Equal(got, want) {
		t.Errorf("Kinds() after mutating a returned slice = %q, want %q", got, want)
	}
	for _, tc := range []struct {
		kind string
		want bool
	}{
		{"password_reset", true},
		{"verify_email", true},
		{"notification", true},
		{"Password_Reset", false},
		{"", false},
		{"welcome", false},
	} {
		if got := s.Has(tc.kind); got != tc.want {
			t.Errorf("Has(%q) = %v, want %v", tc.kind, got, tc.want)
		}
	}
	var zero Set
	if zero.Has("password_reset") || len(zero.Kinds()) != 0 {
		t.Errorf("zero Set has kinds %q", zero.Kinds())
	}
}

func TestRenderSubject(t *testing.T) {
	s := newDefault(t)
	reset := map[string]string{"reset_url": "https://x.example/r"}
	verify := map[string]string{"verify_url": "https://x.example/v"}
	note := func(subject string) map[string]string {
		return map[string]string{"subject": subject, "body": "b"}
	}
	for _, tc := range []struct {
		kind string
		data Data
		want string
	}{
		{"password_reset", Data{App: "Example App", Values: reset}, "Reset your Example App password"},
		{"password_reset", Data{Values: reset}, "Reset your password"},
		{"verify_email", Data{App: "Example App", Values: verify}, "Confirm your email address for Example App"},
		{"verify_email", Data{Values: verify}, "Confirm your email address"},
		{"notification", Data{Values: note("Weekly report")}, "Weekly report"},
		{"notification", Data{Values: note("Hello\r\nBcc: victim@example.com")}, "Hello Bcc: victim@example.com"},
		{"notification", Data{Values: note("\n\n  Leading and trailing \t\r\n")}, "Leading and trailing"},
		{"notification", Data{Values: note("tab\there\v\fand\x00nul")}, "tab here and nul"},
		{"notification", Data{Values: note("line\u2028separator\u0085next")}, "line separator next"},
		{"notification", Data{Values: note("déjà vu — ünïcode")}, "déjà vu — ünïcode"},
		{"notification", Data{Values: note("<b>&amp;</b>")}, "<b>&amp;</b>"},
		{"password_reset", Data{App: "Evil\r\nApp", Values: reset}, "Reset your Evil App password"},
	} {
		r, err := s.Render(tc.kind, tc.data)
		if err != nil {
			t.Errorf("Render(%q): %v", tc.kind, err)
			continue
		}
		if r.Subject != tc.want {
			t.Errorf("Render(%q).Subject = %q, want %q", tc.kind, r.Subject, tc.want)
		}
	}
}

func TestRenderEmptySubject(t *testing.T) {
	s := newDefault(t)
	_, err := s.Render("notification", Data{Values: map[string]string{"subject": " \r\n ", "body": "b"}})
	if err == nil || !strings.Contains(err.Error(), "subject") {
		t.Errorf("Render(%q) with a blank subject: err = %v, want an error about the subject", "notification", err)
	}
}

func TestGreeting(t *testing.T) {
	s := newDefault(t)
	values := map[string]string{
		"reset_url": "https://x.example/r", "verify_url": "https://x.example/v",
		"subject": "s", "body": "b",
	}
	for _, kind := range s.Kinds() {
		for _, tc := range []struct{ name, want string }{
			{"Alice", "Hi Alice,"},
			{"", "Hi,"},
		} {
			r := mustRender(t, s, kind, Data{Name: tc.name, To: "a@example.com", Values: values})
			if first, _, _ := strings.Cut(r.Text, "\n"); first != tc.want {
				t.Errorf("Render(%q) with Name %q: first text line = %q, want %q", kind, tc.name, first, tc.want)
			}
			if !strings.Contains(r.HTML, ">"+tc.want+"</p>") {
				t.Errorf("Render(%q) with Name %q: HTML has no %q paragraph", kind, tc.name, tc.want)
			}
		}
	}
}

func TestResetWording(t *testing.T) {
	// OWASP Forgot Password guidance: the email says a reset was asked
	// for without claiming who asked, how long the link lasts, and what to
	// do if it was not the recipient.
	s := newDefault(t)
	r := mustRender(t, s, "password_reset", Data{
		To: "alice@example.com", App: "Example App", ExpiresIn: 30 * time.Minute,
		Values: map[string]string{"reset_url": "https://x.example/r"},
	})
	for _, part := range []struct{ name, body string }{{"text", r.Text}, {"html", r.HTML}} {
		for _, want := range []string{
			"Someone asked",
			"We can't tell whether it was you",
			"expires in 30 minutes",
			"If you didn't ask to reset your password, ignore this email",
		} {
			if !strings.Contains(part.body, want) {
				t.Errorf("Render(%q).%s does not contain %q", "password_reset", part.name, want)
			}
		}
	}
	r = mustRender(t, s, "password_reset", Data{Values: map[string]string{"reset_url": "https://x.example/r"}})
	if strings.Contains(r.Text, "expires") || strings.Contains(r.HTML, "expires") {
		t.Errorf("Render(%q) with ExpiresIn 0 mentions expiry:\n%s", "password_reset", r.Text)
	}
}

func TestHTMLEscapesHostileValues(t *testing.T) {
	s := newDefault(t)
	const hostile = `<script>alert("x")</script>`
	r := mustRender(t, s, "notification", Data{
		Name: hostile, To: "a@example.com", App: hostile,
		Values: map[string]string{"subject": hostile, "body": hostile + "\n\n<img src=x onerror=alert(1)>"},
	})
	for _, bad := range []string{"<script", "<img"} {
		if strings.Contains(r.HTML, bad) {
			t.Errorf("Render(%q).HTML contains %q unescaped:\n%s", "notification", bad, r.HTML)
		}
	}
	if want := "Hi &lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;,"; !strings.Contains(r.HTML, want) {
		t.Errorf("Render(%q).HTML does not contain the escaped name %q:\n%s", "notification", want, r.HTML)
	}
	// The text part is not HTML: values go in verbatim.
	if !strings.Contains(r.Text, "Hi "+hostile+",") {
		t.Errorf("Render(%q).Text = %q, want the name verbatim", "notification", r.Text)
	}
}

func TestHTMLNeutralisesUnsafeURLs(t *testing.T) {
	s := newDefault(t)
	for _, tc := range []struct {
		kind   string
		values map[string]string
	}{
		{"password_reset", map[string]string{"reset_url": "javascript:alert(document.cookie)"}},
		{"verify_email", map[string]string{"verify_url": "JavaScript:alert(1)"}},
		{"notification", map[string]string{"subject": "s", "body": "b", "action_url": "javascript:alert(1)"}},
		{"notification", map[string]string{"subject": "s", "body": "b", "unsubscribe_url": "data:text/html,<script>alert(1)</script>"}},
	} {
		r := mustRender(t, s, tc.kind, Data{Values: tc.values})
		lower := strings.ToLower(r.HTML)
		if strings.Contains(lower, `href="javascript:`) || strings.Contains(lower, `href="data:`) {
			t.Errorf("Render(%q, %q).HTML links to the unsafe URL:\n%s", tc.kind, tc.values, r.HTML)
		}
		if !strings.Contains(r.HTML, `href="#ZgotmplZ"`) {
			t.Errorf("Render(%q, %q).HTML has no neutralised href", tc.kind, tc.values)
		}
	}
	// A safe URL keeps its query string, attribute-escaped.
	r := mustRender(t, s, "password_reset", Data{Values: map[string]string{"reset_url": "https://x.example/r?a=1&b=2"}})
	if want := `href="https://x.example/r?a=1&amp;b=2"`; !strings.Contains(r.HTML, want) {
		t.Errorf("Render(%q).HTML does not contain %s", "password_reset", want)
	}
}

func TestMissingValue(t *testing.T) {
	s := newDefault(t)
	for _, tc := range []struct {
		kind   string
		values map[string]string
		key    string
	}{
		{"password_reset", nil, "reset_url"},
		{"password_reset", map[string]string{"verify_url": "https://x.example/v"}, "reset_url"},
		{"verify_email", map[string]string{}, "verify_url"},
		{"notification", map[string]string{"body": "b"}, "subject"},
		{"notification", map[string]string{"subject": "s"}, "body"},
	} {
		_, err := s.Render(tc.kind, Data{Values: tc.values})
		if err == nil {
			t.Errorf("Render(%q, %q) succeeded, want an error naming %q", tc.kind, tc.values, tc.key)
			continue
		}
		if !strings.Contains(err.Error(), `"`+tc.key+`"`) {
			t.Errorf("Render(%q, %q) = %v, want an error naming %q", tc.kind, tc.values, err, tc.key)
		}
		if errors.Is(err, ErrUnknownKind) {
			t.Errorf("Render(%q, %q) = %v, must not be ErrUnknownKind", tc.kind, tc.values, err)
		}
	}
}

func TestOptionalValues(t *testing.T) {
	s := newDefault(t)
	base := map[string]string{"subject": "s", "body": "b"}
	r := mustRender(t, s, "notification", Data{Values: base})
	for _, absent := range []string{"View details", "unsubscribe", "Open:"} {
		if strings.Contains(r.Text, absent) || strings.Contains(r.HTML, absent) {
			t.Errorf("Render(%q) without optional values contains %q", "notification", absent)
		}
	}
	full := map[string]string{"subject": "s", "body": "b", "action_url": "https://x.example/a", "unsubscribe_url": "https://x.example/u"}
	r = mustRender(t, s, "notification", Data{Values: full})
	for _, want := range []string{"https://x.example/a", "https://x.example/u"} {
		if !strings.Contains(r.Text, want) || !strings.Contains(r.HTML, `href="`+want+`"`) {
			t.Errorf("Render(%q) with optional values does not link %q", "notification", want)
		}
	}
}

func TestUnknownKind(t *testing.T) {
	s := newDefault(t)
	_, err := s.Render("welcome", Data{})
	if !errors.Is(err, ErrUnknownKind) {
		t.Fatalf("Render(%q) = %v, want ErrUnknownKind", "welcome", err)
	}
	if !strings.Contains(err.Error(), `"welcome"`) {
		t.Errorf("Render(%q) = %v, want the kind in the error", "welcome", err)
	}
}

func TestRenderSetsKind(t *testing.T) {
	dir := t.TempDir()
	writeFiles(t, dir, map[string]string{
		"welcome/subject.txt": "{{.Kind}}",
		"welcome/text.txt":    "{{.Kind}}",
	})
	s, err := New(dir)
	if err != nil {
		t.Fatal(err)
	}
	r := mustRender(t, s, "welcome", Data{Kind: "other"})
	if r.Subject != "welcome" || r.Text != "welcome" {
		t.Errorf("Render(%q) = %+v, want Kind set to the rendered kind", "welcome", r)
	}
}

func TestExpires(t *testing.T) {
	for _, tc := range []struct {
		d    time.Duration
		want string
	}{
		{-time.Minute, "0 seconds"},
		{0, "0 seconds"},
		{time.Second, "1 second"},
		{45*time.Second + 900*time.Millisecond, "45 seconds"},
		{time.Minute, "1 minute"},
		{15 * time.Minute, "15 minutes"},
		{30*time.Minute + 59*time.Second, "30 minutes"},
		{time.Hour, "1 hour"},
		{time.Hour + time.Minute, "1 hour and 1 minute"},
		{90 * time.Minute, "1 hour and 30 minutes"},
		{2 * time.Hour, "2 hours"},
		{24 * time.Hour, "24 hours"},
		{36 * time.Hour, "36 hours"},
		{48 * time.Hour, "2 days"},
		{49 * time.Hour, "2 days and 1 hour"},
		{7 * 24 * time.Hour, "7 days"},
		{7*24*time.Hour + 59*time.Minute, "7 days"},
	} {
		if got := humanDuration(tc.d); got != tc.want {
			t.Errorf("expires(%v) = %q, want %q", tc.d, got, tc.want)
		}
	}
}

func TestParagraphs(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want [][]string
	}{
		{"", nil},
		{"one", [][]string{{"one"}}},
		{"a\nb", [][]string{{"a", "b"}}},
		{"a\r\nb\r\n\r\nc", [][]string{{"a", "b"}, {"c"}}},
		{"\n\na  \n\n\n\nb\n", [][]string{{"a"}, {"b"}}},
		{"a\n \t\nb", [][]string{{"a"}, {"b"}}},
	} {
		if got := paragraphs(tc.in); fmt.Sprint(got) != fmt.Sprint(tc.want) || len(got) != len(tc.want) {
			t.Errorf("paragraphs(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func writeFiles(t *testing.T, dir string, files map[string]string) {
	t.Helper()
	for name, body := range files {
		p := filepath.Join(dir, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

func TestOverrideDir(t *testing.T) {
	dir := t.TempDir()
	writeFiles(t, dir, map[string]string{
		"password_reset/subject.txt": "{{.App}}: password help",
		"welcome/subject.txt":        "Welcome to {{.App}}",
		"welcome/text.txt":           "Hello {{.Values.first_name}}.\n",
		"welcome/.swp":               "editor junk is ignored",
		".git/config":                "hidden directories are ignored",
		"README.md":                  "top-level files are ignored",
	})
	s, err := New(dir)
	if err != nil {
		t.Fatalf("New(%q): %v", dir, err)
	}
	if want := []string{"notification", "password_reset", "verify_email", "welcome"}; !slices.Equal(s.Kinds(), want) {
		t.Errorf("Kinds() = %q, want %q", s.Kinds(), want)
	}

	// Per-file override: the subject changes, text and HTML stay the defaults.
	d := goldenCases[0].data
	got := mustRender(t, s, "password_reset", d)
	def := mustRender(t, newDefault(t), "password_reset", d)
	if want := "Example App: password help"; got.Subject != want {
		t.Errorf("Render(%q).Subject = %q, want %q", "password_reset", got.Subject, want)
	}
	if got.Text != def.Text || got.HTML != def.HTML {
		t.Errorf("Render(%q) with only subject.txt overridden changed the text or HTML part", "password_reset")
	}

	// A new kind without html.html has no HTML part.
	w := mustRender(t, s, "welcome", Data{App: "Example App", Values: map[string]string{"first_name": "Ann"}})
	want := Rendered{Subject: "Welcome to Example App", Text: "Hello Ann.\n"}
	if w != want {
		t.Errorf("Render(%q) = %+v, want %+v", "welcome", w, want)
	}
	if _, err := s.Render("welcome", Data{}); err == nil || !strings.Contains(err.Error(), `"first_name"`) {
		t.Errorf("Render(%q) without first_name = %v, want an error naming it", "welcome", err)
	}
}

func TestOverrideSymlinkedKind(t *testing.T) {
	// Kubernetes mounts each ConfigMap as a directory of symlinks.
	real := t.TempDir()
	writeFiles(t, real, map[string]string{
		"..data/subject.txt": "Linked",
		"..data/text.txt":    "linked text",
	})
	for _, f := range []string{"subject.txt", "text.txt"} {
		if err := os.Symlink(filepath.Join("..data", f), filepath.Join(real, f)); err != nil {
			t.Fatal(err)
		}
	}
	dir := t.TempDir()
	if err := os.Symlink(real, filepath.Join(dir, "linked")); err != nil {
		t.Fatal(err)
	}
	s, err := New(dir)
	if err != nil {
		t.Fatalf("New(%q): %v", dir, err)
	}
	r := mustRender(t, s, "linked", Data{})
	if r.Subject != "Linked" || r.Text != "linked text" {
		t.Errorf("Render(%q) = %+v, want the symlinked templates", "linked", r)
	}
}

func TestOverrideErrors(t *testing.T) {
	for _, tc := range []struct {
		name  string
		files map[string]string
		// wantPath is the file (relative to the directory) the error must
		// name; wantText is another substring it must contain.
		wantPath string
		wantText string
	}{
		{
			name:     "broken text template",
			files:    map[string]string{"password_reset/text.txt": "Hi {{.Name"},
			wantPath: "password_reset/text.txt",
			wantText: "unclosed action",
		},
		{
			name:     "broken subject in a new kind",
			files:    map[string]string{"welcome/subject.txt": "{{if .App}}", "welcome/text.txt": "t"},
			wantPath: "welcome/subject.txt",
			wantText: "parse",
		},
		{
			name:     "unknown function",
			files:    map[string]string{"verify_email/html.html": "<p>{{shout .Name}}</p>"},
			wantPath: "verify_email/html.html",
			wantText: "shout",
		},
		{
			name:     "html that cannot be escaped",
			files:    map[string]string{"notification/html.html": `{{if .Name}}<a href="{{end}}x">`},
			wantPath: "notification/html.html",
			wantText: "html/template",
		},
		{
			name:     "misspelt file name",
			files:    map[string]string{"password_reset/html.htm": "<p>x</p>"},
			wantPath: "password_reset/html.htm",
			wantText: "unexpected file",
		},
		{
			name:     "new kind without text",
			files:    map[string]string{"welcome/subject.txt": "s", "welcome/html.html": "<p>x</p>"},
			wantPath: "welcome",
			wantText: `: missing text.txt`,
		},
		{
			name:     "new kind without subject",
			files:    map[string]string{"welcome/text.txt": "t"},
			wantPath: "welcome",
			wantText: `: missing subject.txt`,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			writeFiles(t, dir, tc.files)
			s, err := New(dir)
			if err == nil {
				t.Fatalf("New(%q) = %v, nil; want an error", dir, s.Kinds())
			}
			if tc.wantPath != "" {
				if p := filepath.Join(dir, filepath.FromSlash(tc.wantPath)); !strings.Contains(err.Error(), p) {
					t.Errorf("New(%q) = %v, want the error to name %s", dir, err, p)
				}
			}
			if !strings.Contains(err.Error(), tc.wantText) {
				t.Errorf("New(%q) = %v, want the error to contain %q", dir, err, tc.wantText)
			}
		})
	}

	missing := filepath.Join(t.TempDir(), "nope")
	if _, err := New(missing); err == nil || !strings.Contains(err.Error(), missing) {
		t.Errorf("New(%q) = %v, want an error naming the directory", missing, err)
	}
	file := filepath.Join(t.TempDir(), "file")
	writeFiles(t, filepath.Dir(file), map[string]string{"file": "x"})
	if _, err := New(file); err == nil || !strings.Contains(err.Error(), "not a directory") {
		t.Errorf("New(%q) = %v, want a not-a-directory error", file, err)
	}
}

func TestConcurrentRender(t *testing.T) {
	s := newDefault(t)
	want := make([]Rendered, len(goldenCases))
	for i, tc := range goldenCases {
		want[i] = mustRender(t, s, tc.kind, tc.data)
	}
	const workers, rounds = 16, 50
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for w := range workers {
		wg.Go(func() {
			for n := range rounds {
				i := (w + n) % len(goldenCases)
				tc := goldenCases[i]
				got, err := s.Render(tc.kind, tc.data)
				if err != nil {
					errs <- err
					return
				}
				if got != want[i] {
					errs <- fmt.Errorf("Render(%q) = %+v, want %+v", tc.kind, got, want[i])
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

func BenchmarkRender(b *testing.B) {
	s, err := New("")
	if err != nil {
		b.Fatal(err)
	}
	for _, tc := range goldenCases {
		b.Run(tc.kind, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := s.Render(tc.kind, tc.data); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// TestReportLink: with a report URL the reset and verification emails
// carry the "I did not ask for this" link; without one they do not.
func TestReportLink(t *testing.T) {
	s := newDefault(t)
	const link = "https://app.example/not-me/0123abcd"
	for kind, key := range map[string]string{"password_reset": "reset_url", "verify_email": "verify_url"} {
		r := mustRender(t, s, kind, Data{ReportURL: link, Values: map[string]string{key: "https://x.example/r"}})
		if !strings.Contains(r.Text, "tell us: "+link) || !strings.Contains(r.HTML, `href="`+link+`"`) {
			t.Errorf("Render(%q) with a report URL:\n%s\n%s", kind, r.Text, r.HTML)
		}
		r = mustRender(t, s, kind, Data{Values: map[string]string{key: "https://x.example/r"}})
		if strings.Contains(r.Text, "tell us") || strings.Contains(r.HTML, "tell us") {
			t.Errorf("Render(%q) without a report URL shows the link", kind)
		}
	}
}
