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
		if n, err := NormalizeName(s); err == nil && strings.ContainsAny(n, "\r\n\x00") {
			t.Fatalf("NormalizeName(%q) = %q: CR/LF/NUL", s, n)
		}
	})
}
