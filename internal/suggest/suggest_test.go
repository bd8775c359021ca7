package suggest

import "testing"

func TestDistance(t *testing.T) {
	for _, tt := range []struct {
		a, b string
		want int
	}{
		{"", "", 0},
		{"ttl", "ttl", 0},
		{"", "abc", 3},
		{"pasword_reset", "password_reset", 1},
		{"passwrod_reset", "password_reset", 1}, // transposition
		{"verify_emial", "verify_email", 1},
		{"notfication", "notification", 1},
		{"kitten", "sitting", 3},
		{"per_recipent", "per_recipient", 1},
		{"zoë", "zoe", 1},
	} {
		if got := Distance(tt.a, tt.b); got != tt.want {
			t.Errorf("Distance(%q, %q) = %d, want %d", tt.a, tt.b, got, tt.want)
		}
		if got := Distance(tt.b, tt.a); got != tt.want {
			t.Errorf("Distance(%q, %q) = %d, want %d", tt.b, tt.a, got, tt.want)
		}
	}
}

func TestClosest(t *testing.T) {
	kinds := []string{"notification", "password_reset", "verify_email"}
	for _, tt := range []struct {
		word string
		want string
		ok   bool
	}{
		{"pasword_reset", "password_reset", true},
		{"password-reset", "password_reset", true},
		{"verfy_emial", "verify_email", true},
		{"notifications", "notification", true},
		{"password_reset", "", false}, // an exact match is no near miss
		{"invoice", "", false},
		{"welcome_email", "", false},
	} {
		got, ok := Closest(tt.word, kinds)
		if got != tt.want || ok != tt.ok {
			t.Errorf("Closest(%q) = %q, %v, want %q, %v", tt.word, got, ok, tt.want, tt.ok)
		}
	}
	// Short words allow one edit only.
	if got, ok := Closest("tll", []string{"ttl"}); !ok || got != "ttl" {
		t.Errorf("Closest(tll) = %q, %v", got, ok)
	}
	if got, ok := Closest("tx", []string{"ttl"}); ok {
		t.Errorf("Closest(tx) = %q, want no suggestion", got)
	}
}
