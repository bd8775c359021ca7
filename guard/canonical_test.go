package guard

import (
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/floodgate-dev/floodgate/queue"
)

func TestCanonical(t *testing.T) {
	all := DefaultLocalRules()
	none := LocalRules{}
	tests := []struct {
		in    string
		rules LocalRules
		want  string
	}{
		{"alice@example.com", all, "alice@example.com"},
		{"Alice@Example.COM", all, "alice@example.com"},
		{"Alice@Example.COM", none, "Alice@example.com"},
		{"alice+reset@example.com", all, "alice@example.com"},
		{"alice+a+b@example.com", all, "alice@example.com"},
		{"alice+reset@example.com", none, "alice+reset@example.com"},
		{"+only@example.com", all, "+only@example.com"},
		{"a.l.i.c.e@gmail.com", all, "alice@gmail.com"},
		{"A.Lice+x@GoogleMail.com", all, "alice@gmail.com"},
		{"a.lice@googlemail.com", LocalRules{StripTags: true, LowercaseLocal: true}, "a.lice@googlemail.com"},
		{"a.lice@example.com", all, "a.lice@example.com"},
		{"Gmail.User@GMAIL.COM", LocalRules{GmailDots: true}, "gmailuser@gmail.com"},
		{"alice@example.com.", all, "alice@example.com"},
		{"jörg@Bücher.example", all, "jörg@xn--bcher-kva.example"},
		{"user@xn--bcher-kva.example", all, "user@xn--bcher-kva.example"},
		{"user@ＢＵＣＨＥＲ.example", all, "user@bucher.example"},
		{"no-at-sign", all, "no-at-sign"},
		{"\"a@b\"@example.com", all, "\"a@b\"@example.com"},
		{"", all, ""},
	}
	for _, tt := range tests {
		if got := Canonical(tt.in, tt.rules); got != tt.want {
			t.Errorf("Canonical(%q, %+v) = %q, want %q", tt.in, tt.rules, got, tt.want)
		}
	}
}

func FuzzCanonical(f *testing.F) {
	for _, s := range []string{"alice@example.com", "A.L+x@googlemail.com", "jörg@bücher.example", "a@b@c", "@", ".+a@gmail.com", "x@ＢＵＣＨＥＲ.example.", "\xff@\xfe"} {
		f.Add(s, true, true, true)
	}
	f.Fuzz(func(t *testing.T, addr string, tags, dots, lower bool) {
		rules := LocalRules{StripTags: tags, GmailDots: dots, LowercaseLocal: lower}
		c := Canonical(addr, rules)
		if again := Canonical(c, rules); again != c {
			t.Fatalf("Canonical not idempotent: %q -> %q -> %q", addr, c, again)
		}
		norm, err := queue.NormalizeAddress(addr)
		if err != nil {
			return
		}
		// For a valid address: one '@' split survives, the domain is
		// lower-case ASCII, and the local part carries no tag.
		cn := Canonical(norm, rules)
		if cn != Canonical(addr, rules) {
			t.Fatalf("Canonical(%q) = %q but Canonical(normalised %q) = %q", addr, c, norm, cn)
		}
		at := strings.LastIndexByte(cn, '@')
		local, domain := cn[:at], cn[at+1:]
		if domain != strings.ToLower(domain) || !isASCII(domain) {
			t.Fatalf("Canonical(%q) domain %q is not lower-case ASCII", addr, domain)
		}
		if tags && strings.IndexByte(local, '+') > 0 {
			t.Fatalf("Canonical(%q) = %q kept a +tag", addr, cn)
		}
		if lower && local != strings.ToLower(local) {
			t.Fatalf("Canonical(%q) = %q is not lower-case", addr, cn)
		}
	})
}

func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= utf8.RuneSelf {
			return false
		}
	}
	return true
}
