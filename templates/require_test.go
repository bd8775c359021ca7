package templates

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func TestRequire(t *testing.T) {
	s := newDefault(t)
	if err := s.Require([]string{"password_reset", "verify_email", "notification"}); err != nil {
		t.Errorf("Require(built-in kinds) = %v", err)
	}
	err := s.Require([]string{"password_reset", "invoice"})
	var me *MissingError
	if !errors.As(err, &me) || !slices.Equal(me.Kinds, []string{"invoice"}) {
		t.Fatalf("Require(invoice) = %v, want a *MissingError for invoice", err)
	}
	if msg := err.Error(); !strings.Contains(msg, `kind "invoice"`) || !strings.Contains(msg, "DIR/invoice/subject.txt") {
		t.Errorf("Require(invoice) error %q, want it to name the kind and the files it needs", msg)
	}

	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "invoices"), 0o755); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"subject.txt", "text.txt"} {
		if err := os.WriteFile(filepath.Join(dir, "invoices", f), []byte("x"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	s, err = New(dir)
	if err != nil {
		t.Fatal(err)
	}
	err = s.Require([]string{"welcome", "invoice", "invoices"})
	if !errors.As(err, &me) || !slices.Equal(me.Kinds, []string{"invoice", "welcome"}) {
		t.Fatalf("Require = %v, want invoice and welcome missing", err)
	}
	msg := err.Error()
	for _, want := range []string{
		filepath.Join(dir, "invoice", "subject.txt"), filepath.Join(dir, "invoice", "text.txt"),
		filepath.Join(dir, "welcome", "subject.txt"), `did you mean "invoices"?`,
	} {
		if !strings.Contains(msg, want) {
			t.Errorf("error %q does not mention %q", msg, want)
		}
	}
	if strings.Count(msg, "did you mean") != 1 {
		t.Errorf("error %q: want one suggestion (for invoice only)", msg)
	}
}
