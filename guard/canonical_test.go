package guard

import (
	"math/rand/v2"
	"os"
	"reflect"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/floodgate-dev/floodgate/queue"
)

func TestCanonical(t *testing.T) {
	all := DefaultLocalRules()
	none := LocalRules{}
	without := func(off func(*LocalRules)) LocalRules {
		r := DefaultLocalRules()
		off(&r)
		return r
	}
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
		// A provider rule knows its provider's tags, whatever StripTags says.
		{"gmail.user+x@gmail.com", LocalRules{GmailDots: true}, "gmailuser@gmail.com"},
		{"alice@example.com.", all, "alice@example.com"},
		{"jörg@Bücher.example", all, "jörg@xn--bcher-kva.example"},
		{"user@xn--bcher-kva.example", all, "user@xn--bcher-kva.example"},
		{"user@ＢＵＣＨＥＲ.example", all, "user@bucher.example"},
		{"no-at-sign", all, "no-at-sign"},
		{"\"a@b\"@example.com", all, "\"a@b\"@example.com"},
		{"", all, ""},

		// Proton: '.', '-' and '_' ignored; four domains, one mailbox.
		{"A.Li-C_e+news@ProtonMail.com", all, "alice@proton.me"},
		{"alice@pm.me", all, "alice@proton.me"},
		{"a_lice@protonmail.ch", all, "alice@proton.me"},
		{"Al-ice+x@proton.me", LocalRules{ProtonAliases: true}, "alice@proton.me"},
		{"A.Lice+x@protonmail.com", without(func(r *LocalRules) { r.ProtonAliases = false }), "a.lice@protonmail.com"},
		{"a.lice@proton.example", all, "a.lice@proton.example"},

		// Fastmail: the subdomain names the mailbox.
		{"anything@victim.fastmail.com", all, "victim@fastmail.com"},
		{"Shop+x@Victim.FastMail.com.", all, "victim@fastmail.com"},
		{"shop@victim.fastmail.com", LocalRules{FastmailSubdomains: true}, "victim@fastmail.com"},
		{"Victim+x@fastmail.com", LocalRules{FastmailSubdomains: true}, "victim@fastmail.com"},
		{"news@victim.fastmail.fm", all, "victim@fastmail.fm"},
		{"victim@fastmail.fm", all, "victim@fastmail.fm"},
		{"a@b.victim.fastmail.com", all, "a@b.victim.fastmail.com"},
		{"a@.fastmail.com", all, "a@.fastmail.com"},
		{"anything@victim.fastmail.com", without(func(r *LocalRules) { r.FastmailSubdomains = false }), "anything@victim.fastmail.com"},
		{"x@victim.example.com", all, "x@victim.example.com"},

		// iCloud: three domains, one mailbox; dots are significant.
		{"John.Smith+x@me.com", all, "john.smith@icloud.com"},
		{"john.smith@mac.com", all, "john.smith@icloud.com"},
		{"JOHN.SMITH@iCloud.com", LocalRules{ICloudAliases: true}, "john.smith@icloud.com"},
		{"johnsmith@icloud.com", all, "johnsmith@icloud.com"},
		{"john@me.com", without(func(r *LocalRules) { r.ICloudAliases = false }), "john@me.com"},

		// Microsoft: tags and case; every domain its own namespace.
		{"Alice+x@Outlook.com", LocalRules{OutlookTags: true}, "alice@outlook.com"},
		{"alice+x@hotmail.com", all, "alice@hotmail.com"},
		{"alice+x@live.co.uk", LocalRules{OutlookTags: true}, "alice@live.co.uk"},
		{"a.lice@outlook.com", all, "a.lice@outlook.com"},
		{"Alice+x@msn.com", LocalRules{}, "Alice+x@msn.com"},

		// Yahoo: "base-keyword" is "base".
		{"Base-Shopping@Yahoo.com", all, "base@yahoo.com"},
		{"base-a-b+c@yahoo.co.uk", all, "base@yahoo.co.uk"},
		{"base-x@ymail.com", LocalRules{YahooDisposable: true}, "base@ymail.com"},
		{"base-x@rocketmail.com", all, "base@rocketmail.com"},
		{"first.last@yahoo.com", all, "first.last@yahoo.com"},
		{"-base@yahoo.com", all, "-base@yahoo.com"},
		{"base-x@yahoo.co.jp", all, "base-x@yahoo.co.jp"},
		{"base-x@example.com", all, "base-x@example.com"},
		{"base-x@yahoo.com", without(func(r *LocalRules) { r.YahooDisposable = false }), "base-x@yahoo.com"},
	}
	for _, tt := range tests {
		if got := Canonical(tt.in, tt.rules); got != tt.want {
			t.Errorf("Canonical(%q) = %q, want %q (rules %+v)", tt.in, got, tt.want, tt.rules)
		}
	}
}

// aliasFamily restates, independently of canonical.go, every way one
// provider lets a mailbox be written.
type aliasFamily struct {
	name      string
	domains   []string // domains that reach the mailbox; the first is canonical
	ignore    string   // local-part bytes the provider ignores
	hyphen    bool     // "name-keyword" reaches it
	subdomain bool     // "anything@name.<domain>" reaches it
	rule      LocalRules
}

var aliasFamilies = []aliasFamily{
	{name: "gmail", domains: []string{"gmail.com", "googlemail.com"}, ignore: ".", rule: LocalRules{GmailDots: true}},
	{name: "proton", domains: []string{"proton.me", "protonmail.com", "protonmail.ch", "pm.me"}, ignore: ".-_", rule: LocalRules{ProtonAliases: true}},
	{name: "fastmail", domains: []string{"fastmail.com"}, subdomain: true, rule: LocalRules{FastmailSubdomains: true}},
	{name: "fastmail.fm", domains: []string{"fastmail.fm"}, subdomain: true, rule: LocalRules{FastmailSubdomains: true}},
	{name: "icloud", domains: []string{"icloud.com", "me.com", "mac.com"}, rule: LocalRules{ICloudAliases: true}},
	{name: "outlook", domains: []string{"outlook.com"}, rule: LocalRules{OutlookTags: true}},
	{name: "hotmail", domains: []string{"hotmail.com"}, rule: LocalRules{OutlookTags: true}},
	{name: "yahoo", domains: []string{"yahoo.com"}, hyphen: true, rule: LocalRules{YahooDisposable: true}},
	{name: "ymail", domains: []string{"ymail.com"}, hyphen: true, rule: LocalRules{YahooDisposable: true}},
}

// canonical is the one form every variant of name's mailbox must map to.
func (f aliasFamily) canonical(name string) string { return name + "@" + f.domains[0] }

// variant writes the mailbox name (lower-case letters and digits) the way
// an attacker would to dodge a per-recipient cap: case, ignored
// separators, tags, disposable keywords, another domain of the family, the
// subdomain form, a trailing dot. The result is a valid address.
func (f aliasFamily) variant(r *rand.Rand, name string) string {
	var b []byte
	for i := 0; i < len(name); i++ {
		// Separators only between characters, never two in a row, so
		// the local part stays a valid dot-atom.
		if f.ignore != "" && i > 0 && r.IntN(3) == 0 {
			b = append(b, f.ignore[r.IntN(len(f.ignore))])
		}
		b = append(b, flipCase(r, name[i]))
	}
	local := string(b)
	domain := f.domains[r.IntN(len(f.domains))]
	if f.subdomain && r.IntN(2) == 0 {
		label := make([]byte, len(name))
		for i := range label {
			label[i] = flipCase(r, name[i])
		}
		local, domain = word(r), string(label)+"."+domain
	} else if f.hyphen && r.IntN(2) == 0 {
		local += "-" + word(r)
	}
	if r.IntN(2) == 0 {
		local += "+" + word(r)
	}
	d := []byte(domain)
	for i := range d {
		d[i] = flipCase(r, d[i])
	}
	if r.IntN(8) == 0 {
		d = append(d, '.')
	}
	return local + "@" + string(d)
}

func flipCase(r *rand.Rand, c byte) byte {
	if c >= 'a' && c <= 'z' && r.IntN(2) == 0 {
		return c - 'a' + 'A'
	}
	return c
}

func word(r *rand.Rand) string {
	const alnum = "abcdefghijklmnopqrstuvwxyz0123456789"
	b := make([]byte, 1+r.IntN(8))
	for i := range b {
		b[i] = flipCase(r, alnum[r.IntN(len(alnum))])
	}
	return string(b)
}

// TestCanonicalAliasFamilies writes one mailbox per provider 128 ways; each
// way is a valid address, and all of them map to one canonical address,
// under the default rules and under the provider's switch alone.
func TestCanonicalAliasFamilies(t *testing.T) {
	const name, n = "johnsmith42", 128
	seen := map[string]string{}
	for _, f := range aliasFamilies {
		want := f.canonical(name)
		if other, ok := seen[want]; ok {
			t.Fatalf("families %s and %s share the canonical %q", f.name, other, want)
		}
		seen[want] = f.name
		r := rand.New(rand.NewPCG(1, uint64(len(f.name))))
		variants := map[string]bool{}
		raw := map[string]bool{}
		for tries := 0; len(variants) < n && tries < 100*n; tries++ {
			v := f.variant(r, name)
			if variants[v] {
				continue
			}
			variants[v] = true
			if _, err := queue.NormalizeAddress(v); err != nil {
				t.Errorf("%s: variant %q is not a valid address: %v", f.name, v, err)
			}
			for _, rules := range []LocalRules{DefaultLocalRules(), f.rule} {
				if got := Canonical(v, rules); got != want {
					t.Errorf("%s: Canonical(%q) = %q, want %q (rules %+v)", f.name, v, got, want, rules)
				}
			}
			raw[Canonical(v, LocalRules{})] = true
		}
		if len(variants) != n {
			t.Fatalf("%s: generated %d distinct variants, want %d", f.name, len(variants), n)
		}
		// Without any rule the variants are many recipients: the
		// provider rule is what merges them.
		if len(raw) < n/2 {
			t.Errorf("%s: without rules the %d variants are only %d recipients; the generator is too tame", f.name, n, len(raw))
		}
	}
}

// TestCanonicalKeepsMailboxesApart lists addresses that look alike but are
// different mailboxes: no rule may merge them.
func TestCanonicalKeepsMailboxesApart(t *testing.T) {
	pairs := [][2]string{
		{"john.smith@icloud.com", "johnsmith@icloud.com"},
		{"a.lice@outlook.com", "alice@outlook.com"},
		{"alice@outlook.com", "alice@hotmail.com"},
		{"alice@hotmail.com", "alice@live.com"},
		{"alice@fastmail.com", "alice@fastmail.fm"},
		{"x@alice.fastmail.com", "x@alice.fastmail.fm"},
		{"first.last@yahoo.com", "firstlast@yahoo.com"},
		{"alice@yahoo.com", "alice@ymail.com"},
		{"alice@proton.me", "alice@gmail.com"},
		{"alice@icloud.com", "alice@proton.me"},
		{"a.lice@example.com", "alice@example.com"},
		{"a-lice@example.com", "a@example.com"},
	}
	for _, p := range pairs {
		a, b := Canonical(p[0], DefaultLocalRules()), Canonical(p[1], DefaultLocalRules())
		if a == b {
			t.Errorf("Canonical(%q) = Canonical(%q) = %q, want different mailboxes", p[0], p[1], a)
		}
	}
}

func TestParseRecipientRules(t *testing.T) {
	p, err := ParsePolicy([]byte(`
recipient_rules:
  proton_aliases: false
  fastmail_subdomains: false
  icloud_aliases: false
  outlook_tags: false
  yahoo_disposable: false
`))
	if err != nil {
		t.Fatal(err)
	}
	want := LocalRules{StripTags: true, GmailDots: true, LowercaseLocal: true}
	if p.RecipientRules != want {
		t.Errorf("recipient_rules = %+v, want %+v", p.RecipientRules, want)
	}
	if d := DefaultPolicy().RecipientRules; d != DefaultLocalRules() {
		t.Errorf("default recipient_rules = %+v, want every rule on", d)
	}
	_, err = ParsePolicy([]byte("recipient_rules: { yahoo_disposable: sometimes }\n"))
	if err == nil || !strings.Contains(err.Error(), "recipient_rules.yahoo_disposable: must be true or false") {
		t.Errorf("ParsePolicy(yahoo_disposable: sometimes) error = %v, want recipient_rules.yahoo_disposable: must be true or false", err)
	}
}

// The example policy names every recipient rule, each at its default.
func TestExamplePolicyRecipientRules(t *testing.T) {
	b, err := os.ReadFile("../policy.example.yaml")
	if err != nil {
		t.Fatal(err)
	}
	p, err := ParsePolicy(b)
	if err != nil {
		t.Fatal(err)
	}
	if p.RecipientRules != DefaultLocalRules() {
		t.Errorf("policy.example.yaml recipient_rules = %+v, want the defaults %+v", p.RecipientRules, DefaultLocalRules())
	}
	rt := reflect.TypeFor[LocalRules]()
	for i := range rt.NumField() {
		if key := rt.Field(i).Tag.Get("yaml"); !strings.Contains(string(b), "\n  "+key+": ") {
			t.Errorf("policy.example.yaml does not show recipient_rules.%s", key)
		}
	}
}

// TestAdmitProviderAliasesShareCap floods one mailbox per provider through
// its alias forms against a real Redis: each mailbox gets the per-recipient
// cap once, not once per alias.
func TestAdmitProviderAliasesShareCap(t *testing.T) {
	// The breaker off: the refusals this test makes would trip it.
	g, _, _ := newTestGuard(t, capPolicy+"    breaker: off\n", Config{})
	r := rand.New(rand.NewPCG(7, 7))
	for _, f := range aliasFamilies {
		queued := 0
		for range 40 {
			if admit(t, g, adm(queue.KindPasswordReset, f.variant(r, "victim"), "")).Allow {
				queued++
			}
		}
		if queued != 5 {
			t.Errorf("%s: %d of 40 aliases of one mailbox queued, want the cap, 5", f.name, queued)
		}
	}
}

func FuzzCanonical(f *testing.F) {
	for _, s := range []string{"alice@example.com", "A.L+x@googlemail.com", "jörg@bücher.example", "a@b@c", "@", ".+a@gmail.com",
		"x@ＢＵＣＨＥＲ.example.", "\xff@\xfe", "A.B-c_d+x@protonmail.ch", "x@Victim.fastmail.com", "b+c@x.fastmail.fm",
		"J.S+x@me.com", "a+b@hotmail.co.uk", "base-k-w+t@yahoo.com", "-a-b@ymail.com", "._+x@pm.me"} {
		f.Add(s, uint8(0xff), uint8(0), uint64(len(s)))
		f.Add(s, uint8(0), uint8(0xff), uint64(0))
	}
	f.Fuzz(func(t *testing.T, addr string, mask, more uint8, seed uint64) {
		rules := rulesFromMask(mask)
		c := Canonical(addr, rules)
		if again := Canonical(c, rules); again != c {
			t.Fatalf("Canonical not idempotent: %q -> %q -> %q", addr, c, again)
		}
		// More rules only merge further: what r merged stays merged.
		wider := rulesFromMask(mask | more)
		if w, cw := Canonical(addr, wider), Canonical(c, wider); w != cw {
			t.Fatalf("Canonical(%q) = %q with %+v, but Canonical(%q) = %q with the wider %+v", addr, w, wider, c, cw, wider)
		}

		// Every written form of one mailbox maps to its one canonical form.
		fam := aliasFamilies[seed%uint64(len(aliasFamilies))]
		name := mailboxName(addr)
		famRules := rules
		famRules.FastmailSubdomains = famRules.FastmailSubdomains || fam.rule.FastmailSubdomains
		famRules.GmailDots = famRules.GmailDots || fam.rule.GmailDots
		famRules.ProtonAliases = famRules.ProtonAliases || fam.rule.ProtonAliases
		famRules.ICloudAliases = famRules.ICloudAliases || fam.rule.ICloudAliases
		famRules.OutlookTags = famRules.OutlookTags || fam.rule.OutlookTags
		famRules.YahooDisposable = famRules.YahooDisposable || fam.rule.YahooDisposable
		r := rand.New(rand.NewPCG(seed, uint64(mask)))
		for range 4 {
			v := fam.variant(r, name)
			if got, want := Canonical(v, famRules), fam.canonical(name); got != want {
				t.Fatalf("%s: Canonical(%q) = %q, want %q (rules %+v)", fam.name, v, got, want, famRules)
			}
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
		if rules.StripTags && strings.IndexByte(local, '+') > 0 {
			t.Fatalf("Canonical(%q) = %q kept a +tag", addr, cn)
		}
		if rules.LowercaseLocal && local != strings.ToLower(local) {
			t.Fatalf("Canonical(%q) = %q is not lower-case", addr, cn)
		}
	})
}

// rulesFromMask turns the bits of m into rules, one bit per rule.
func rulesFromMask(m uint8) LocalRules {
	return LocalRules{
		StripTags: m&1 != 0, GmailDots: m&2 != 0, LowercaseLocal: m&4 != 0, ProtonAliases: m&8 != 0,
		FastmailSubdomains: m&16 != 0, ICloudAliases: m&32 != 0, OutlookTags: m&64 != 0, YahooDisposable: m&128 != 0,
	}
}

// mailboxName derives a mailbox name from fuzz input: 1 to 30 lower-case
// letters and digits, a name every provider here accepts.
func mailboxName(s string) string {
	const alnum = "abcdefghijklmnopqrstuvwxyz0123456789"
	b := make([]byte, 0, 30)
	for i := 0; i < len(s) && len(b) < 30; i++ {
		b = append(b, alnum[int(s[i])%len(alnum)])
	}
	if len(b) == 0 {
		return "a"
	}
	return string(b)
}

func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= utf8.RuneSelf {
			return false
		}
	}
	return true
}

// BenchmarkCanonical prices the provider rules: the same mix of addresses
// under the three generic rules and under every rule.
//
//	go test ./guard -run '^$' -bench Canonical -count 5
func BenchmarkCanonical(b *testing.B) {
	addrs := []string{"John.Smith+reset@Example.com", "j.o.h.n+x@googlemail.com", "A.Li-C_e+n@protonmail.com",
		"shop@victim.fastmail.com", "John.Smith@me.com", "alice+x@hotmail.co.uk", "base-keyword@yahoo.com", "jörg@bücher.example"}
	for _, bc := range []struct {
		name  string
		rules LocalRules
	}{
		{"rules=generic", LocalRules{StripTags: true, GmailDots: true, LowercaseLocal: true}},
		{"rules=all", DefaultLocalRules()},
	} {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			for i := 0; b.Loop(); i++ {
				Canonical(addrs[i%len(addrs)], bc.rules)
			}
		})
	}
}
