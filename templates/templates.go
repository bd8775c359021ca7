package templates

import (
	"embed"
	"errors"
	"fmt"
	htmltemplate "html/template"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"text/template"
	"time"
	"unicode"

	"github.com/floodgate-dev/floodgate/internal/suggest"
)

// ErrUnknownKind is returned (wrapped with the kind) by [Set.Render] for a
// kind the set has no templates for.
var ErrUnknownKind = errors.New("templates: unknown kind")

// File names inside a kind directory.
const (
	subjectFile = "subject.txt"
	textFile    = "text.txt"
	htmlFile    = "html.html"
)

// defaults holds the built-in kinds, laid out like an override directory
// under defaults/.
//
//go:embed defaults
var defaults embed.FS

// Data is what a template sees.
type Data struct {
	// Kind is the email's kind; Render sets it to the kind being rendered.
	Kind string
	// Name is the recipient's display name. It may be empty, and the
	// default templates then greet without a name ("Hi," rather than
	// "Hi Alice,").
	Name string
	// To is the recipient's address.
	To string
	// App is the sender or product name, e.g. "Example App".
	App string
	// ExpiresIn is the kind's time to live; templates show it with
	// {{expires .ExpiresIn}} ("30 minutes"). Zero hides the sentence in the
	// default templates.
	ExpiresIn time.Duration
	// ReportURL, when set, is the link where the recipient reports an email
	// they did not ask for (the application routes it to
	// queue.Client.Report); the default reset and verification templates
	// show it.
	ReportURL string
	// Values is the email's data, e.g. "reset_url". Templates read required
	// values as {{.Values.key}} (a missing key fails the render) and
	// optional ones as {{index .Values "key"}}.
	Values map[string]string
}

// Rendered is one rendered email.
type Rendered struct {
	// Subject is a single line: runs of whitespace and control characters,
	// CR and LF included, are folded to one space and the ends trimmed.
	Subject string
	// Text is the text/plain body.
	Text string
	// HTML is the text/html body, or "" when the kind has no HTML template.
	HTML string
}

// kind is the parsed templates of one kind; html is nil when the kind has no
// HTML part.
type kind struct {
	subject *template.Template
	text    *template.Template
	html    *htmltemplate.Template
}

// Set is a parsed collection of templates, one triple per kind. A Set is
// immutable once [New] returns it and safe for concurrent use. The zero
// value has no kinds.
type Set struct {
	kinds map[string]*kind
	names []string
	dir   string // the override directory given to New, or ""
}

// source is one template file: where it came from (for error messages) and
// its text.
type source struct {
	path string
	text string
}

// New parses the embedded default templates and, when dir is not "", the
// templates under dir, laid out as <dir>/<kind>/subject.txt, text.txt and
// html.html.
//
// A file in dir replaces the same file of a built-in kind and leaves the
// kind's other files as they are; a directory naming a kind with no default
// adds it and must contain subject.txt and text.txt (html.html is optional).
// Entries whose names start with "." are ignored, as are regular files
// directly under dir; any other file in a kind directory is an error, so a
// misspelt file name cannot be silently ignored. Errors name the offending
// file's path.
func New(dir string) (*Set, error) {
	sources := make(map[string]map[string]source)
	if err := collect(sources, defaults, "defaults", func(p string) string { return "embedded " + p }); err != nil {
		return nil, err
	}
	if dir != "" {
		info, err := os.Stat(dir)
		if err != nil {
			return nil, fmt.Errorf("templates: %w", err)
		}
		if !info.IsDir() {
			return nil, fmt.Errorf("templates: %s is not a directory", dir)
		}
		err = collect(sources, os.DirFS(dir), ".", func(p string) string { return filepath.Join(dir, filepath.FromSlash(p)) })
		if err != nil {
			return nil, err
		}
	}

	s := &Set{kinds: make(map[string]*kind, len(sources)), dir: dir}
	for name, files := range sources {
		k, err := parseKind(name, files)
		if err != nil {
			return nil, err
		}
		s.kinds[name] = k
		s.names = append(s.names, name)
	}
	sort.Strings(s.names)
	return s, nil
}

// collect reads the kind directories under root in fsys into sources,
// replacing files already there. display turns a slash path inside fsys into
// the path shown in errors.
func collect(sources map[string]map[string]source, fsys fs.FS, root string, display func(string) string) error {
	entries, err := fs.ReadDir(fsys, root)
	if err != nil {
		return fmt.Errorf("templates: read %s: %w", display(root), err)
	}
	for _, e := range entries {
		name := e.Name()
		if strings.HasPrefix(name, ".") {
			continue
		}
		kindDir := path.Join(root, name)
		// Stat rather than e.IsDir so that symlinked directories (as in a
		// Kubernetes ConfigMap mount) count as kinds.
		info, err := fs.Stat(fsys, kindDir)
		if err != nil {
			return fmt.Errorf("templates: %w", err)
		}
		if !info.IsDir() {
			continue
		}
		files, err := fs.ReadDir(fsys, kindDir)
		if err != nil {
			return fmt.Errorf("templates: read %s: %w", display(kindDir), err)
		}
		for _, f := range files {
			fname := f.Name()
			if strings.HasPrefix(fname, ".") {
				continue
			}
			p := path.Join(kindDir, fname)
			switch fname {
			case subjectFile, textFile, htmlFile:
			default:
				return fmt.Errorf("templates: %s: unexpected file (want %s, %s or %s)", display(p), subjectFile, textFile, htmlFile)
			}
			b, err := fs.ReadFile(fsys, p)
			if err != nil {
				return fmt.Errorf("templates: read %s: %w", display(p), err)
			}
			if sources[name] == nil {
				sources[name] = make(map[string]source)
			}
			sources[name][fname] = source{path: display(p), text: string(b)}
		}
	}
	return nil
}

// parseKind parses the files of one kind.
func parseKind(name string, files map[string]source) (*kind, error) {
	for _, required := range []string{subjectFile, textFile} {
		if _, ok := files[required]; !ok {
			var dir string
			for _, src := range files {
				dir = filepath.Dir(src.path)
			}
			return nil, fmt.Errorf("templates: kind %q in %s: missing %s", name, dir, required)
		}
	}
	k := &kind{}
	var err error
	if k.subject, err = parseText(name+"/"+subjectFile, files[subjectFile]); err != nil {
		return nil, err
	}
	if k.text, err = parseText(name+"/"+textFile, files[textFile]); err != nil {
		return nil, err
	}
	if src, ok := files[htmlFile]; ok {
		if k.html, err = parseHTML(name+"/"+htmlFile, src); err != nil {
			return nil, err
		}
	}
	return k, nil
}

// parseText parses a text/template file; name appears in execution errors.
func parseText(name string, src source) (*template.Template, error) {
	t, err := template.New(name).
		Option("missingkey=error").
		Funcs(template.FuncMap(funcs())).
		Parse(src.text)
	if err != nil {
		return nil, fmt.Errorf("templates: parse %s: %w", src.path, err)
	}
	return t, nil
}

// parseHTML parses an html/template file; name appears in execution errors.
func parseHTML(name string, src source) (*htmltemplate.Template, error) {
	t, err := htmltemplate.New(name).
		Option("missingkey=error").
		Funcs(htmltemplate.FuncMap(funcs())).
		Parse(src.text)
	if err != nil {
		return nil, fmt.Errorf("templates: parse %s: %w", src.path, err)
	}
	// html/template works out each action's context on first execution.
	// Run it once now so that a template it cannot escape (an action inside
	// an unquoted attribute, a tag left open at an {{if}}) fails New rather
	// than the first email. Execution errors such as a missing value are
	// expected here: the data is empty.
	var escErr *htmltemplate.Error
	if err := t.Execute(io.Discard, Data{}); errors.As(err, &escErr) {
		return nil, fmt.Errorf("templates: parse %s: %w", src.path, err)
	}
	return t, nil
}

// Render renders kind with d. d.Kind is set to kind. It returns an error
// wrapping [ErrUnknownKind] for a kind the set does not have, and an error
// naming the key when a template reads a required value that d.Values
// lacks.
func (s *Set) Render(kind string, d Data) (Rendered, error) {
	k, ok := s.kinds[kind]
	if !ok {
		return Rendered{}, fmt.Errorf("%w %q", ErrUnknownKind, kind)
	}
	d.Kind = kind
	var r Rendered
	var b strings.Builder
	if err := k.subject.Execute(&b, d); err != nil {
		return Rendered{}, fmt.Errorf("templates: render %s subject: %w", kind, err)
	}
	r.Subject = oneLine(b.String())
	if r.Subject == "" {
		return Rendered{}, fmt.Errorf("templates: render %s subject: empty", kind)
	}
	b.Reset()
	if err := k.text.Execute(&b, d); err != nil {
		return Rendered{}, fmt.Errorf("templates: render %s text: %w", kind, err)
	}
	r.Text = b.String()
	if k.html != nil {
		b.Reset()
		if err := k.html.Execute(&b, d); err != nil {
			return Rendered{}, fmt.Errorf("templates: render %s html: %w", kind, err)
		}
		r.HTML = b.String()
	}
	return r, nil
}

// MissingError says which kinds a [Set] has no templates for, and where
// they were looked for. [Set.Require] returns it.
type MissingError struct {
	// Kinds are the kinds without templates, sorted.
	Kinds []string
	// Dir is the override directory searched, or "" when none was given.
	Dir string
	// Near maps a missing kind to the name of a kind the set has that is
	// one or two edits away, a likely misspelling.
	Near map[string]string
}

// Error names each kind and the files that were looked for.
func (e *MissingError) Error() string {
	var b strings.Builder
	for i, k := range e.Kinds {
		if i > 0 {
			b.WriteString("; ")
		}
		fmt.Fprintf(&b, "templates: kind %q has no templates: ", k)
		if e.Dir == "" {
			fmt.Fprintf(&b, "it is not built in and no template directory was given (want DIR/%s/%s and DIR/%s/%s)", k, subjectFile, k, textFile)
		} else {
			fmt.Fprintf(&b, "looked for %s and %s", filepath.Join(e.Dir, k, subjectFile), filepath.Join(e.Dir, k, textFile))
		}
		if n, ok := e.Near[k]; ok {
			fmt.Fprintf(&b, "; did you mean %q?", n)
		}
	}
	return b.String()
}

// Require returns a [*MissingError] naming every kind in kinds that the set
// has no templates for, or nil. A worker calls it at start-up with the
// policy's kinds, so that a kind without templates stops it there rather
// than failing each email of the kind.
func (s *Set) Require(kinds []string) error {
	e := &MissingError{Dir: s.dir, Near: map[string]string{}}
	for _, k := range kinds {
		if s.Has(k) {
			continue
		}
		e.Kinds = append(e.Kinds, k)
		if n, ok := suggest.Closest(k, s.names); ok {
			e.Near[k] = n
		}
	}
	if len(e.Kinds) == 0 {
		return nil
	}
	sort.Strings(e.Kinds)
	return e
}

// Kinds returns the names of the kinds in the set, sorted.
func (s *Set) Kinds() []string {
	return append([]string(nil), s.names...)
}

// Has reports whether the set has templates for kind.
func (s *Set) Has(kind string) bool {
	_, ok := s.kinds[kind]
	return ok
}

// oneLine folds every run of whitespace or control characters (CR, LF, TAB,
// NUL, U+2028, …) in s to a single space and trims both ends, so that a
// rendered subject is one header line whatever the values held.
func oneLine(s string) string {
	var b strings.Builder
	b.Grow(len(s))
	gap := false
	for _, r := range s {
		if unicode.IsSpace(r) || unicode.IsControl(r) {
			gap = true
			continue
		}
		if gap && b.Len() > 0 {
			b.WriteByte(' ')
		}
		gap = false
		b.WriteRune(r)
	}
	return b.String()
}
