package verp

import (
	"errors"
	"strings"
	"testing"
	"time"
)

var (
	secretA = []byte("0123456789abcdef0123456789abcdef")
	secretB = []byte("fedcba9876543210fedcba9876543210")
	now     = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	id      = "5b0c6e2f9a8d4c1b0e7f3a2d1c4b5a69"
)

func codec(t *testing.T, cfg Config) *Codec {
	t.Helper()
	if cfg.Domain == "" {
		cfg.Domain = "bounce.example.com"
	}
	if cfg.Secrets == nil {
		cfg.Secrets = [][]byte{secretA}
	}
	if cfg.Kinds == nil {
		cfg.Kinds = []string{"password_reset", "verify_email", "notification"}
	}
	c, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestRoundTrip(t *testing.T) {
	c := codec(t, Config{})
	addr, err := c.Address(id, "verify_email", "alice@example.com", now)
	if err != nil {
		t.Fatal(err)
	}
	local, domain, _ := strings.Cut(addr, "@")
	if len(local) > 64 || domain != "bounce.example.com" || !strings.HasPrefix(local, "bounces+") {
		t.Fatalf("Address = %q: want bounces+<token>@bounce.example.com, local part <= 64 octets", addr)
	}
	if strings.ContainsFunc(local, func(r rune) bool { return !(r >= 'a' && r <= 'z' || r >= '2' && r <= '7' || r == '+') }) {
		t.Fatalf("local part %q has characters outside lower-case base32", local)
	}
	// Relays may change the case of a local part and add angle brackets.
	for _, a := range []string{addr, strings.ToUpper(addr), "<" + addr + ">"} {
		tok, err := c.Parse(a, now.Add(time.Hour))
		if err != nil {
			t.Fatalf("Parse(%q) = %v", a, err)
		}
		if tok.ID != id || tok.Kind != "verify_email" {
			t.Fatalf("Parse(%q) = id %q kind %q, want %q %q", a, tok.ID, tok.Kind, id, "verify_email")
		}
		if !tok.MatchRecipient("alice@example.com") || tok.MatchRecipient("bob@example.com") {
			t.Fatalf("MatchRecipient does not tell the email's recipient from another")
		}
	}
	if !strings.Contains(addr, "@") || strings.Contains(addr, "alice") {
		t.Fatalf("Address %q names the recipient", addr)
	}
}

func TestParseRefuses(t *testing.T) {
	c := codec(t, Config{})
	addr, err := c.Address(id, "password_reset", "alice@example.com", now)
	if err != nil {
		t.Fatal(err)
	}
	local, _, _ := strings.Cut(addr, "@")
	tok := strings.TrimPrefix(local, "bounces+")
	flip := func(i int) string {
		b := []byte(tok)
		if b[i] == 'a' {
			b[i] = 'b'
		} else {
			b[i] = 'a'
		}
		return "bounces+" + string(b) + "@bounce.example.com"
	}
	other := codec(t, Config{Secrets: [][]byte{secretB}})
	forged, _ := other.Address(id, "password_reset", "alice@example.com", now)
	tests := []struct {
		name, addr string
		at         time.Time
		want       error
	}{
		{"other domain", local + "@example.com", now, ErrNotVERP},
		{"no prefix", tok + "@bounce.example.com", now, ErrNotVERP},
		{"short", "bounces+" + tok[:40] + "@bounce.example.com", now, ErrMalformed},
		{"not base32", "bounces+" + strings.Repeat("1", TokenLen) + "@bounce.example.com", now, ErrMalformed},
		{"id changed", flip(5), now, ErrForged},
		{"mac changed", flip(TokenLen - 2), now, ErrForged},
		{"other secret", forged, now, ErrForged},
		{"expired", addr, now.Add(DefaultLifetime + time.Hour), ErrExpired},
	}
	for _, tt := range tests {
		_, err := c.Parse(tt.addr, tt.at)
		if !errors.Is(err, tt.want) {
			t.Errorf("%s: Parse(%q) = %v, want %v", tt.name, tt.addr, err, tt.want)
		}
		if tt.want != ErrNotVERP && !errors.Is(err, ErrInvalid) {
			t.Errorf("%s: %v does not wrap ErrInvalid", tt.name, err)
		}
	}
	if _, err := c.Parse(addr, now.Add(DefaultLifetime-time.Minute)); err != nil {
		t.Errorf("Parse just before the lifetime ends = %v", err)
	}
}

func TestRotation(t *testing.T) {
	old := codec(t, Config{Secrets: [][]byte{secretA}})
	rotated := codec(t, Config{Secrets: [][]byte{secretB, secretA}})
	addr, _ := old.Address(id, "notification", "a@example.com", now)
	tok, err := rotated.Parse(addr, now)
	if err != nil || tok.Kind != "notification" || !tok.MatchRecipient("a@example.com") {
		t.Fatalf("a token of the old secret after rotation: %+v, %v", tok, err)
	}
	addr, _ = rotated.Address(id, "notification", "a@example.com", now)
	if _, err := old.Parse(addr, now); !errors.Is(err, ErrForged) {
		t.Fatalf("the new secret signs: old codec Parse = %v, want ErrForged", err)
	}
}

func TestUnknownKindAndBadID(t *testing.T) {
	c := codec(t, Config{})
	addr, _ := c.Address(id, "newsletter", "a@example.com", now)
	tok, err := c.Parse(addr, now)
	if err != nil || tok.Kind != "" {
		t.Fatalf("Parse of an unlisted kind = %+v, %v; want Kind \"\"", tok, err)
	}
	for _, bad := range []string{"e1", strings.Repeat("z", 32)} {
		if _, err := c.Address(bad, "notification", "a@example.com", now); err == nil {
			t.Errorf("Address(id %q) accepted", bad)
		}
	}
}

func TestNewRefuses(t *testing.T) {
	tests := []Config{
		{Domain: "", Secrets: [][]byte{secretA}},
		{Domain: "bad domain", Secrets: [][]byte{secretA}},
		{Domain: "b.example", Secrets: [][]byte{[]byte("short")}},
		{Domain: "b.example"},
		{Domain: "b.example", Secrets: [][]byte{secretA}, Prefix: "toolongprefix"},
		{Domain: "b.example", Secrets: [][]byte{secretA}, Prefix: "a+b"},
	}
	for _, cfg := range tests {
		if _, err := New(cfg); err == nil {
			t.Errorf("New(%+v) accepted", cfg)
		}
	}
}

func TestParseSecrets(t *testing.T) {
	s, err := ParseSecrets("# current first\n" + string(secretB) + "\n\n  " + string(secretA) + "  \n")
	if err != nil || len(s) != 2 || string(s[0]) != string(secretB) || string(s[1]) != string(secretA) {
		t.Fatalf("ParseSecrets = %q, %v", s, err)
	}
	for _, bad := range []string{"", "# nothing\n", "short\n"} {
		if _, err := ParseSecrets(bad); err == nil {
			t.Errorf("ParseSecrets(%q) accepted", bad)
		}
	}
}

func FuzzParse(f *testing.F) {
	c, err := New(Config{Domain: "bounce.example.com", Secrets: [][]byte{secretA}, Kinds: []string{"notification"}})
	if err != nil {
		f.Fatal(err)
	}
	addr, _ := c.Address(id, "notification", "a@example.com", now)
	f.Add(addr)
	f.Add("bounces+@bounce.example.com")
	f.Add("<>")
	f.Fuzz(func(t *testing.T, s string) {
		tok, err := c.Parse(s, now)
		if err == nil && s != addr && !strings.EqualFold(strings.Trim(strings.TrimSpace(s), "<>"), addr) {
			// Any other accepted string must carry the same signed bytes.
			again, aerr := c.Address(tok.ID, "notification", "a@example.com", now)
			if aerr != nil || !strings.EqualFold(again, strings.Trim(strings.TrimSpace(s), "<>")) {
				t.Fatalf("Parse(%q) accepted a token it did not mint", s)
			}
		}
	})
}
