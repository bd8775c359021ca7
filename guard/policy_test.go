package guard

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/floodgate-dev/floodgate/queue"
)

const goodPolicy = `
global: { rate: 100/1s, burst: 150 }
domains:
  default: 300/1m
  "Gmail.COM": { rate: 2000/1m, burst: 100 }
  example.org: 10/s
recipient_rules: { strip_tags: false }
kinds:
  password_reset:
    ttl: 15m
    dedup_window: 1m
    per_recipient: [2/1h, 5/1d]
    per_source: [50/1h]
    breaker: { surge_factor: 3, open: shed, hold_max: 10 }
  verify_email:
    per_source: []
  invoice:
    class: notify
    ttl: 48h
    max_retry: 3
    required: [invoice_url, amount]
    per_recipient: [5/24h]
`

func TestParsePolicyGood(t *testing.T) {
	p, err := ParsePolicy([]byte(goodPolicy))
	if err != nil {
		t.Fatal(err)
	}
	checks := []struct {
		name      string
		got, want any
	}{
		{"global", p.Global, Limit{Rate{100, time.Second}, 150}},
		{"domains.default", p.Domains["default"], Limit{Rate: Rate{300, time.Minute}}},
		{"domains.gmail.com (canonicalised key)", p.Domains["gmail.com"], Limit{Rate{2000, time.Minute}, 100}},
		{"domains.example.org", p.Domains["example.org"], Limit{Rate: Rate{10, time.Second}}},
		{"recipient_rules", p.RecipientRules, func() LocalRules { r := DefaultLocalRules(); r.StripTags = false; return r }()},
		{"reset.class (default kept)", p.KindPolicies["password_reset"].Class, queue.ClassSecurity},
		{"reset.ttl", p.KindPolicies["password_reset"].TTL, 15 * time.Minute},
		{"reset.dedup", p.KindPolicies["password_reset"].DedupWindow, time.Minute},
		{"reset.per_recipient", p.KindPolicies["password_reset"].PerRecipient, []Rate{{2, time.Hour}, {5, 24 * time.Hour}}},
		{"reset.per_source", p.KindPolicies["password_reset"].PerSource, []Rate{{50, time.Hour}}},
		{"reset.breaker", p.KindPolicies["password_reset"].Breaker, func() BreakerPolicy {
			b := defaultBreaker()
			b.SurgeFactor, b.Open, b.HoldMax = 3, BreakerShed, 10
			return b
		}()},
		{"verify.per_source (emptied)", len(p.KindPolicies["verify_email"].PerSource), 0},
		{"verify.per_recipient (default kept)", p.KindPolicies["verify_email"].PerRecipient, []Rate{{3, time.Hour}, {10, 24 * time.Hour}}},
		{"notification (untouched)", p.KindPolicies["notification"].PerRecipient, []Rate{{50, 24 * time.Hour}}},
		{"invoice.class", p.KindPolicies["invoice"].Class, queue.ClassNotify},
		{"invoice.ttl", p.KindPolicies["invoice"].TTL, 48 * time.Hour},
		{"invoice.breaker (defaults)", p.KindPolicies["invoice"].Breaker, defaultBreaker()},
	}
	for _, c := range checks {
		if !equal(c.got, c.want) {
			t.Errorf("%s = %+v, want %+v", c.name, c.got, c.want)
		}
	}
	kinds := p.Kinds()
	if got := kinds["invoice"]; got.MaxRetry != 3 || !slices.Equal(got.Required, []string{"invoice_url", "amount"}) || got.TTL != 48*time.Hour {
		t.Errorf("Kinds()[invoice] = %+v", got)
	}
	if got := kinds["password_reset"].Required; !slices.Equal(got, []string{"reset_url"}) {
		t.Errorf("Kinds()[password_reset].Required = %v, want [reset_url]", got)
	}
	if len(kinds) != 4 {
		t.Errorf("Kinds() has %d kinds, want 4", len(kinds))
	}
}

func equal(a, b any) bool {
	switch x := a.(type) {
	case []Rate:
		return slices.Equal(x, b.([]Rate))
	}
	return a == b
}

func TestParsePolicyEmptyIsDefault(t *testing.T) {
	for _, doc := range []string{"", "# nothing\n", "{}"} {
		p, err := ParsePolicy([]byte(doc))
		if err != nil {
			t.Fatalf("ParsePolicy(%q): %v", doc, err)
		}
		d := DefaultPolicy()
		if p.Global != d.Global || len(p.KindPolicies) != len(d.KindPolicies) || p.RecipientRules != d.RecipientRules {
			t.Errorf("ParsePolicy(%q) = %+v, want the default policy", doc, p)
		}
	}
	if err := DefaultPolicy().Validate(); err != nil {
		t.Errorf("DefaultPolicy().Validate() = %v", err)
	}
}

func TestBuiltinRequiredDataKept(t *testing.T) {
	p, err := ParsePolicy([]byte("kinds:\n  password_reset:\n    required: [user_name]\n"))
	if err != nil {
		t.Fatal(err)
	}
	if got := p.Kinds()["password_reset"].Required; !slices.Equal(got, []string{"user_name", "reset_url"}) {
		t.Errorf("Required = %v, want [user_name reset_url]", got)
	}
}

func TestParsePolicyErrors(t *testing.T) {
	tests := []struct {
		doc  string
		want string // the error, exactly
	}{
		{"kinds:\n  password_reset:\n    per_recipient: [3/1h, 3/0s]\n",
			`3:27: kinds.password_reset.per_recipient[1]: rate "3/0s": duration must be positive`},
		{"kinds:\n  password_reset:\n    per_recipient: [x/1h]\n",
			`3:21: kinds.password_reset.per_recipient[0]: rate "x/1h": count is not an integer`},
		{"kinds:\n  password_reset:\n    per_source: [0/1h]\n",
			`3:18: kinds.password_reset.per_source[0]: rate "0/1h": count must be positive`},
		{"kinds:\n  password_reset:\n    per_source: [3 per hour]\n",
			`3:18: kinds.password_reset.per_source[0]: rate "3 per hour": want N/duration, e.g. 3/1h`},
		{"kinds:\n  password_reset:\n    per_source: [5000/1h]\n",
			`3:18: kinds.password_reset.per_source[0]: rate "5000/1h": count must be at most 1000`},
		{"kinds:\n  password_reset:\n    per_recipient: 3/1h\n",
			`3:20: kinds.password_reset.per_recipient: must be a list of rates like [3/1h, 10/24h]`},
		{"kinds:\n  password_reset:\n    ttl: forever\n",
			`3:10: kinds.password_reset.ttl: duration "forever" is not valid (use e.g. 30s, 2m, 1h, 1d)`},
		{"kinds:\n  password_reset:\n    ttl: 0\n",
			`3:5: kinds.password_reset.ttl: must be positive and at most 744h`},
		{"kinds:\n  password_reset:\n    dedup_window: -1m\n",
			`3:5: kinds.password_reset.dedup_window: must be 0 (off) or between 1s and 744h`},
		{"kinds:\n  password_reset:\n    dedup_window: 500ms\n",
			`3:5: kinds.password_reset.dedup_window: must be 0 (off) or between 1s and 744h`},
		{"kinds:\n  password_reset:\n    per_recipient: [1/500ms]\n",
			`3:21: kinds.password_reset.per_recipient[0]: rate "1/500ms": window must be between 1s and 744h`},
		{"kinds:\n  password_reset:\n    class: urgent\n",
			`3:5: kinds.password_reset.class: must be "security" or "notify"`},
		{"kinds:\n  password_reset:\n    max_retry: many\n",
			`3:16: kinds.password_reset.max_retry: "many" is not an integer`},
		{"kinds:\n  password_reset:\n    per_recipent: [3/1h]\n",
			`3:5: kinds.password_reset.per_recipent: unknown field; did you mean "per_recipient"? (want one of archive, breaker, class, dedup_window, max_retry, per_group, per_recipient, per_source, report_suppress, required, trust_ttl, ttl, untrusted_after)`},
		{"kinds:\n  password_reset:\n    breaker: { open: panic }\n",
			`3:16: kinds.password_reset.breaker.open: must be "hold", "clamp" or "shed"`},
		{"kinds:\n  password_reset:\n    breaker: { surge_factor: 0.5 }\n",
			`3:16: kinds.password_reset.breaker.surge_factor: must be 0 (off) or between 1 and 1000000`},
		{"kinds:\n  password_reset:\n    breaker: { hold_max: -1 }\n",
			`3:16: kinds.password_reset.breaker.hold_max: must not be negative`},
		{"kinds:\n  password_reset:\n    breaker: { floor: fast }\n",
			`3:23: kinds.password_reset.breaker.floor: rate "fast": want N/duration, e.g. 3/1h`},
		{"kinds:\n  Bad_Kind: {}\n",
			`2:3: kinds.Bad_Kind: kind name must be lower-case letters, digits, '_' or '-'`},
		{"kinds:\n  invoice:\n    required: [Amount]\n",
			`3:16: kinds.invoice.required[0]: data key "Amount" must be lower-case letters, digits or '_'`},
		{"kinds: [password_reset]\n",
			`1:8: kinds: must be a mapping`},
		{"global: { rate: 10/1s, brust: 5 }\n",
			`1:24: global.brust: unknown field; did you mean "burst"? (want one of burst, rate)`},
		{"global: { burst: -1 }\n",
			`1:1: global: burst must not be negative`},
		{"domains:\n  example.com: 10\n",
			`2:16: domains."example.com": rate "10": want N/duration, e.g. 3/1h`},
		{"recipient_rules: { strip_tags: maybe }\n",
			`1:32: recipient_rules.strip_tags: must be true or false`},
		{"rate_limit: 5/1s\n",
			`1:1: rate_limit: unknown field (want one of domains, global, kinds, recipient_rules)`},
		{"global: 1/1s\nglobal: 2/1s\n",
			`2:1: global: duplicate field`},
		{"kinds:\n  pasword_reset:\n    ttl: 10m\n",
			`2:3: kinds.pasword_reset: not a built-in kind; did you mean "password_reset"?`},
		{"kinds:\n  password_reset:\n    breaker: { cooldwon: 5m }\n",
			`3:16: kinds.password_reset.breaker.cooldwon: unknown field; did you mean "cooldown"? (want one of `},
		{"kinds: {\n", ""}, // a YAML syntax error: only checked to be a PolicyError
	}
	for _, tt := range tests {
		_, err := ParsePolicy([]byte(tt.doc))
		if err == nil {
			t.Errorf("ParsePolicy(%q) = nil error, want %q", tt.doc, tt.want)
			continue
		}
		var pe *PolicyError
		if !errors.As(err, &pe) {
			t.Errorf("ParsePolicy(%q) error %v is not a *PolicyError", tt.doc, err)
		}
		if tt.want != "" && err.Error() != tt.want && !(strings.HasSuffix(tt.want, "(want one of ") && strings.HasPrefix(err.Error(), tt.want)) {
			t.Errorf("ParsePolicy(%q) error = %q, want %q", tt.doc, err, tt.want)
		}
	}
}

// A YAML syntax error names its line; a field error names line and column.
func TestPolicyErrorPosition(t *testing.T) {
	_, err := ParsePolicy([]byte("global: 1/1s\nkinds:\n  password_reset:\n   ttl: 1m\n    class: security\n"))
	var pe *PolicyError
	if !errors.As(err, &pe) || pe.Line != 5 || !strings.HasPrefix(err.Error(), "5: policy: ") {
		t.Errorf("syntax error = %v (%+v), want line 5", err, pe)
	}
	_, err = ParsePolicy([]byte("kinds:\n  verify_email:\n    per_source: [20/1h]\n    ttl: -5m\n"))
	if !errors.As(err, &pe) || pe.Line != 4 || pe.Column != 5 || pe.Path != "kinds.verify_email.ttl" {
		t.Errorf("error = %v (%+v), want line 4, column 5 (the key), path kinds.verify_email.ttl", err, pe)
	}
	if got := (&PolicyError{Path: "global", Reason: "bad"}).Error(); got != "global: bad" {
		t.Errorf("Error() without a position = %q", got)
	}
	// A new kind far from every built-in one is still accepted.
	if p, err := ParsePolicy([]byte("kinds:\n  invoice:\n    class: notify\n")); err != nil || p.KindPolicies["invoice"].Class != "notify" {
		t.Errorf("ParsePolicy(invoice) = %v", err)
	}
}

func TestParsePolicyReportsEveryError(t *testing.T) {
	_, err := ParsePolicy([]byte("global: 0/1s\nkinds:\n  password_reset:\n    ttl: 0\n    per_recipient: [1/0s]\n"))
	if err == nil {
		t.Fatal("no error")
	}
	lines := strings.Split(err.Error(), "\n")
	if len(lines) != 3 {
		t.Fatalf("got %d errors, want 3:\n%v", len(lines), err)
	}
	var pe *PolicyError
	if errors.As(err, &pe) && pe.Line == 0 {
		t.Errorf("first error %q has no line", pe)
	}
}

func TestLoadPolicy(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "good.yaml")
	if err := os.WriteFile(good, []byte(goodPolicy), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadPolicy(good); err != nil {
		t.Errorf("LoadPolicy(good) = %v", err)
	}
	bad := filepath.Join(dir, "bad.yaml")
	if err := os.WriteFile(bad, []byte("kinds:\n  password_reset:\n    ttl: soon\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := LoadPolicy(bad)
	if err == nil || !strings.Contains(err.Error(), "bad.yaml") || !strings.Contains(err.Error(), "kinds.password_reset.ttl") {
		t.Errorf("LoadPolicy(bad) = %v, want the file and the field", err)
	}
	if _, err := LoadPolicy(filepath.Join(dir, "missing.yaml")); err == nil {
		t.Error("LoadPolicy(missing) = nil error")
	}
}

func TestRate(t *testing.T) {
	tests := []struct {
		in   string
		want Rate
		str  string
	}{
		{"3/1h", Rate{3, time.Hour}, "3/1h"},
		{"200/1s", Rate{200, time.Second}, "200/1s"},
		{"200/s", Rate{200, time.Second}, "200/1s"},
		{"10/24h", Rate{10, 24 * time.Hour}, "10/24h"},
		{"10/1d", Rate{10, 24 * time.Hour}, "10/24h"},
		{" 5 / 90s ", Rate{5, 90 * time.Second}, "5/90s"},
		{"1/1500ms", Rate{1, 1500 * time.Millisecond}, "1/1500ms"},
		{"600/1m", Rate{600, time.Minute}, "600/1m"},
	}
	for _, tt := range tests {
		got, err := ParseRate(tt.in)
		if err != nil || got != tt.want {
			t.Errorf("ParseRate(%q) = %v, %v, want %v", tt.in, got, err, tt.want)
			continue
		}
		if s := got.String(); s != tt.str {
			t.Errorf("ParseRate(%q).String() = %q, want %q", tt.in, s, tt.str)
		}
		if back, err := ParseRate(got.String()); err != nil || back != got {
			t.Errorf("ParseRate(%q.String()) = %v, %v", tt.in, back, err)
		}
	}
	for _, bad := range []string{"", "3", "/1h", "3/", "-1/1h", "3/-1h", "3/0", "1.5/1h", "3/1y"} {
		if r, err := ParseRate(bad); err == nil {
			t.Errorf("ParseRate(%q) = %v, want an error", bad, r)
		}
	}
}

// TestPolicyExampleIsTheDefault: policy.example.yaml shows the defaults,
// so a password_reset written out field by field is the built-in one.
func TestPolicyExampleIsTheDefault(t *testing.T) {
	p, err := LoadPolicy("../policy.example.yaml")
	if err != nil {
		t.Fatal(err)
	}
	got, want := p.KindPolicies[queue.KindPasswordReset], DefaultPolicy().KindPolicies[queue.KindPasswordReset]
	// The example writes out what the zero values mean.
	want.Breaker.MaxCooldown = want.Breaker.EffectiveMaxCooldown()
	want.Breaker.Ceilings.RateMin = Rate{10 * want.Breaker.Floor.N, want.Breaker.Floor.Per}
	if !reflect.DeepEqual(got.Breaker, want.Breaker) {
		t.Errorf("example breaker\n%+v\nwant the default\n%+v", got.Breaker, want.Breaker)
	}
	if !reflect.DeepEqual(got.PerGroup, want.PerGroup) || got.UntrustedAfter != want.UntrustedAfter ||
		got.TrustTTL != want.TrustTTL || got.ReportSuppress != want.ReportSuppress {
		t.Errorf("example kind %+v, want the default %+v", got, want)
	}
}
