package queue

import (
	"errors"
	"strings"
	"testing"
)

func TestNormalizeAddress(t *testing.T) {
	tests := []struct {
		in, want string
	}{
		{"alice@example.com", "alice@example.com"},
		{"Alice@EXAMPLE.COM", "Alice@example.com"},
		{"a+tag@Example.Com.", "a+tag@example.com"},
		{"bob@bücher.example", "bob@xn--bcher-kva.example"},
		{"bob@BÜCHER.example", "bob@xn--bcher-kva.example"},
		{"first.last@sub.example.org", "first.last@sub.example.org"},
	}
	for _, tt := range tests {
		got, err := NormalizeAddress(tt.in)
		if err != nil || got != tt.want {
			t.Errorf("NormalizeAddress(%q) = %q, %v, want %q", tt.in, got, err, tt.want)
		}
	}
}

func TestNormalizeAddressRefuses(t *testing.T) {
	for _, in := range []string{
		"",
		"alice",
		"@example.com",
		"alice@",
		"alice@localhost",
		"alice@[127.0.0.1]",
		"alice@example.com\r\nBcc: x@evil.example",
		"alice\n@example.com",
		"ali\x00ce@example.com",
		"Alice <alice@example.com>",
		"al ice@example.com",
		"álice@example.com",
		strings.Repeat("a", 65) + "@example.com",
		"a@" + strings.Repeat("b", 250) + ".com",
		"a@exa_mple..com",
		"user@127.0.0.1",
		"user@127.0.0.1.",
		"user@10.0.0.010",
		"user@123.456",
		"user@example.123",
		"user@０.１", // full-width digits, mapped to ASCII by IDNA
	} {
		got, err := NormalizeAddress(in)
		var ie *InvalidError
		if err == nil || !errors.As(err, &ie) || !errors.Is(err, ErrInvalid) {
			t.Errorf("NormalizeAddress(%q) = %q, %v, want an *InvalidError", in, got, err)
		}
		if err != nil && strings.Contains(err.Error(), "alice") {
			t.Errorf("NormalizeAddress(%q) error %q leaks the address", in, err)
		}
	}
}

func TestNormalizeName(t *testing.T) {
	tests := []struct {
		in, want string
		bad      bool
	}{
		{"Alice", "Alice", false},
		{"  Zoë Ångström ", "Zoë Ångström", false},
		{"=?utf-8?q?Zo=C3=AB?=", "Zoë", false},
		{"Alice\r\nBcc: x@evil.example", "", true},
		{"=?utf-8?q?a=0D=0ABcc:_x@evil.example?=", "", true},
		{"=?utf-8?b?YQ0KQmNjOiB4QGV2aWwuZXhhbXBsZQ==?=", "", true},
		{"nul\x00", "", true},
		{"tab\there", "", true},
		{"\xff", "", true},
		// Bidi controls and other invisible format characters (Cf).
		{"\u202egro.live", "", true},
		{"Ali\u200bce", "", true},
		{"\u2066Alice\u2069", "", true},
		{"Alice\u200e", "", true},
		{"\ufeffAlice", "", true},
		{"Al\u00adice", "", true},
		{"=?utf-8?q?=E2=80=AEgro.live?=", "", true},
		// An encoded-word a lax reader decodes to LF (space inside).
		{"=?utf-8?q?a =0A b?=", "", true},
		// Joiners are kept: Persian names and emoji sequences need them.
		{"\u0645\u0647\u200c\u0646\u0627\u0632", "\u0645\u0647\u200c\u0646\u0627\u0632", false},
		{"Sam \U0001F469\u200d\U0001F4BB", "Sam \U0001F469\u200d\U0001F4BB", false},
	}
	for _, tt := range tests {
		got, err := NormalizeName(tt.in)
		if (err != nil) != tt.bad || got != tt.want {
			t.Errorf("NormalizeName(%q) = %q, %v, want %q (error %v)", tt.in, got, err, tt.want, tt.bad)
		}
	}
}

func FuzzNormalize(f *testing.F) {
	for _, s := range []string{"alice@example.com", "a+b@Bücher.example", "x@[1.2.3.4]", "=?utf-8?q?=0D=0A?=", "a\r\n@b.c"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if a, err := NormalizeAddress(s); err == nil {
			if strings.ContainsAny(a, "\r\n\x00 <>[]") {
				t.Fatalf("NormalizeAddress(%q) = %q: unsafe characters", s, a)
			}
			if again, err := NormalizeAddress(a); err != nil || again != a {
				t.Fatalf("NormalizeAddress not idempotent: %q -> %q -> %q, %v", s, a, again, err)
			}
		}
		if n, err := NormalizeName(s); err == nil && (strings.ContainsAny(n, "\r\n\x00") || strings.ContainsFunc(n, isHiddenFormat)) {
			t.Fatalf("NormalizeName(%q) = %q: CR/LF/NUL or a hidden format character", s, n)
		}
	})
}

func TestCheckSubject(t *testing.T) {
	for _, tt := range []struct {
		in string
		ok bool
	}{
		{"Your invoice", true},
		{"Réinitialisation du mot de passe", true},
		{"Hello\r\nworld", true}, // folded to one line when rendered
		{"=?utf-8?q?Hi?=", true}, // sent as literal text
		{"=?utf-8?q?Hi=0D=0ABcc:_x@evil.example?=", false},
		{"=?UTF-8?B?SGkNCkJjYzogeEBldmlsLmV4YW1wbGU=?=", false},
		{"=?utf-8?q?a =0A b?=", false},
		{"=?utf-8?q?=00?=", false},
		{"pay \u202eexe.pdf", false},
		{"in\u200bvisible", false},
		{"bell\x07", false},
	} {
		err := checkSubject("data.subject", tt.in)
		if (err == nil) != tt.ok {
			t.Errorf("checkSubject(%q) = %v, want ok %v", tt.in, err, tt.ok)
		}
		var ie *InvalidError
		if err != nil && (!errors.As(err, &ie) || ie.Field != "data.subject") {
			t.Errorf("checkSubject(%q) = %v, want an *InvalidError for data.subject", tt.in, err)
		}
	}
}
