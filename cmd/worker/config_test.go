package main

import (
	"io"
	"testing"
)

// -ambiguous-retries counts retries (0: none); worker.Config's zero means
// its default, so 0 must reach it as "none".
func TestAmbiguousRetriesFlag(t *testing.T) {
	base := []string{"-redis", "redis://127.0.0.1:1", "-smtp", "127.0.0.1:2525", "-from", "a@example.test"}
	for _, c := range []struct {
		flag string
		want int
	}{{"", 1}, {"0", -1}, {"3", 3}} {
		args := base
		if c.flag != "" {
			args = append(args, "-ambiguous-retries", c.flag)
		}
		cfg, err := parseConfig(args, testEnv, io.Discard)
		if err != nil {
			t.Fatal(err)
		}
		if got := ambiguousRetries(cfg.AmbiguousRetries); got != c.want {
			t.Errorf("-ambiguous-retries %q: worker.Config.AmbiguousRetries = %d, want %d", c.flag, got, c.want)
		}
	}
	if _, err := parseConfig(append(base, "-ambiguous-retries", "-1"), testEnv, io.Discard); err == nil {
		t.Error("-ambiguous-retries -1 accepted")
	}
}

func TestLoopbackFor(t *testing.T) {
	for in, want := range map[string]string{
		"[::]:2526":      "127.0.0.1:2526",
		"0.0.0.0:2526":   "127.0.0.1:2526",
		":2526":          "127.0.0.1:2526",
		"127.0.0.1:2526": "127.0.0.1:2526",
		"[::1]:2526":     "[::1]:2526",
		"10.0.0.5:2526":  "10.0.0.5:2526",
	} {
		if got := loopbackFor(in); got != want {
			t.Errorf("loopbackFor(%q) = %q, want %q", in, got, want)
		}
	}
}
