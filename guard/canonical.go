package guard

import (
	"strings"

	"golang.org/x/net/idna"
)

// LocalRules says which variants of an address name the same mailbox, so
// that they share one dedup window and one set of caps. StripTags and
// LowercaseLocal apply to every domain; each provider rule applies what that
// provider documents about its own domains: on them the local part is
// case-insensitive and a "+tag" is dropped whatever StripTags says, plus
// the provider's own aliases. A rule can only merge addresses that reach
// one mailbox; it never splits one. The zero value applies no rule beyond
// the domain's normalisation. A LocalRules is a plain value, safe to share.
type LocalRules struct {
	// StripTags drops a "+tag" suffix on every domain:
	// "alice+x@example.com" is "alice@example.com".
	StripTags bool `yaml:"strip_tags"`
	// GmailDots applies Gmail's rules to gmail.com and googlemail.com:
	// dots in the local part are ignored, and googlemail.com is
	// gmail.com.
	GmailDots bool `yaml:"gmail_dots"`
	// LowercaseLocal treats the local part as case-insensitive, as nearly
	// every provider does.
	LowercaseLocal bool `yaml:"lowercase_local"`
	// ProtonAliases applies Proton's rules: the local part ignores '.',
	// '-' and '_', and proton.me, protonmail.com, protonmail.ch and pm.me
	// are one mailbox (canonical domain proton.me), because an account's
	// name is reserved for it on every one of them.
	ProtonAliases bool `yaml:"proton_aliases"`
	// FastmailSubdomains applies Fastmail's subdomain addressing:
	// "anything@alice.fastmail.com" is "alice@fastmail.com" (likewise for
	// fastmail.fm). Each Fastmail domain stays its own mailbox:
	// alice@fastmail.fm is not alice@fastmail.com.
	FastmailSubdomains bool `yaml:"fastmail_subdomains"`
	// ICloudAliases makes icloud.com, me.com and mac.com one mailbox
	// (canonical domain icloud.com): Apple gave older accounts the same
	// name on all three. Dots stay significant.
	ICloudAliases bool `yaml:"icloud_aliases"`
	// OutlookTags applies Microsoft's consumer mail rules (outlook.*,
	// hotmail.*, live.*, msn.com): case and "+tag" only. The domains stay
	// apart: alice@outlook.com and alice@hotmail.com are different
	// accounts.
	OutlookTags bool `yaml:"outlook_tags"`
	// YahooDisposable applies Yahoo's disposable addresses to yahoo.com,
	// Yahoo's regional domains, ymail.com and rocketmail.com:
	// "base-keyword@yahoo.com" is "base@yahoo.com". Yahoo names cannot
	// hold a '-', so a hyphenated local part is a disposable address (or
	// no mailbox at all).
	YahooDisposable bool `yaml:"yahoo_disposable"`
}

// DefaultLocalRules returns the rules with every rule on.
func DefaultLocalRules() LocalRules {
	return LocalRules{
		StripTags: true, GmailDots: true, LowercaseLocal: true,
		ProtonAliases: true, FastmailSubdomains: true, ICloudAliases: true,
		OutlookTags: true, YahooDisposable: true,
	}
}

// idnaLookup maps a domain the way a mail client looks it up (UTS #46,
// RFC 5891), lower-casing it on the way.
var idnaLookup = idna.New(idna.MapForLookup(), idna.BidiRule(), idna.Transitional(false))

// Canonical returns the form of addr that guard keys are built from: the
// domain lower-cased and converted to ASCII (IDNA), a trailing dot removed,
// and the address reduced by rules. It never fails: an address that is not
// valid keeps its bytes, lower-cased where the rules say so, which can only
// merge variants, never split them. Canonical(Canonical(a)) ==
// Canonical(a), and a rule set that adds rules to another only merges
// further: Canonical(Canonical(a, r), more) == Canonical(a, more).
func Canonical(addr string, rules LocalRules) string {
	at := strings.LastIndexByte(addr, '@')
	if at < 0 {
		return canonicalLocal(addr, rules, provider{}, false)
	}
	local, domain := addr[:at], canonicalDomain(addr[at+1:])
	if rules.FastmailSubdomains {
		// "anything@alice.fastmail.com" is delivered as
		// "alice+anything@fastmail.com": the label names the mailbox and
		// the local part is a tag. Only one label: deeper names are not
		// documented.
		if label, parent, ok := strings.Cut(domain, "."); ok && label != "" && fastmailDomain(parent) {
			local, domain = label, parent
		}
	}
	p, ok := providerOf(domain, rules)
	if ok && p.domain != "" {
		domain = p.domain
	}
	return canonicalLocal(local, rules, p, ok) + "@" + domain
}

// provider is what a provider rule does to the addresses of one domain.
type provider struct {
	// domain is the canonical domain of the family; "" keeps the domain.
	domain string
	// ignore lists local-part bytes the provider ignores.
	ignore string
	// hyphenTags drops a "-keyword" suffix, as "+tag" is dropped.
	hyphenTags bool
}

// providerOf returns the provider rule for a canonical domain, and whether
// one applies under rules.
func providerOf(domain string, rules LocalRules) (provider, bool) {
	switch {
	case domain == "gmail.com" || domain == "googlemail.com":
		return provider{domain: "gmail.com", ignore: "."}, rules.GmailDots
	case domain == "proton.me" || domain == "protonmail.com" || domain == "protonmail.ch" || domain == "pm.me":
		return provider{domain: "proton.me", ignore: ".-_"}, rules.ProtonAliases
	case domain == "icloud.com" || domain == "me.com" || domain == "mac.com":
		return provider{domain: "icloud.com"}, rules.ICloudAliases
	case fastmailDomain(domain):
		return provider{}, rules.FastmailSubdomains
	case outlookDomain(domain):
		return provider{}, rules.OutlookTags
	case yahooDomain(domain):
		return provider{hyphenTags: true}, rules.YahooDisposable
	}
	return provider{}, false
}

// fastmailDomain reports whether Fastmail's subdomain addressing applies to
// domain. Fastmail offers it on every domain it owns; only the two its own
// documentation names are listed, because treating another party's domain
// this way would merge that party's distinct subdomain mailboxes.
func fastmailDomain(domain string) bool {
	return domain == "fastmail.com" || domain == "fastmail.fm"
}

// outlookDomain reports whether domain is one of Microsoft's consumer mail
// domains (Outlook.com plus addressing). Each one is its own namespace, so
// they are not merged with each other.
func outlookDomain(domain string) bool {
	switch domain {
	case "outlook.com", "outlook.com.ar", "outlook.com.au", "outlook.com.br", "outlook.de",
		"outlook.es", "outlook.fr", "outlook.it", "outlook.jp",
		"hotmail.com", "hotmail.be", "hotmail.ca", "hotmail.co.uk", "hotmail.com.ar",
		"hotmail.com.br", "hotmail.com.mx", "hotmail.de", "hotmail.es", "hotmail.fr", "hotmail.it",
		"live.com", "live.be", "live.co.uk", "live.de", "live.fr", "live.it", "live.nl",
		"msn.com":
		return true
	}
	return false
}

// yahooDomain reports whether domain is a Yahoo Mail domain with
// disposable addresses. yahoo.co.jp is not: Yahoo Japan is a separate
// service with its own rules.
func yahooDomain(domain string) bool {
	switch domain {
	case "yahoo.com", "yahoo.ca", "yahoo.co.in", "yahoo.co.uk", "yahoo.com.au", "yahoo.com.br",
		"yahoo.de", "yahoo.es", "yahoo.fr", "yahoo.in", "yahoo.it",
		"ymail.com", "rocketmail.com":
		return true
	}
	return false
}

// canonicalLocal reduces a local part by rules and, when known, by its
// domain's provider rule. Each step leaves nothing the next pass would
// change: a tag is cut at its first '+' (a '+' at the start is not a tag
// and stays first), and removing ignored bytes never touches a '+'.
func canonicalLocal(local string, rules LocalRules, p provider, known bool) string {
	if rules.LowercaseLocal || known {
		local = strings.ToLower(local)
	}
	if rules.StripTags || known {
		local = cutSuffix(local, '+')
	}
	if known && p.hyphenTags {
		local = cutSuffix(local, '-')
	}
	if known && p.ignore != "" && strings.ContainsAny(local, p.ignore) {
		b := make([]byte, 0, len(local))
		for i := 0; i < len(local); i++ {
			if strings.IndexByte(p.ignore, local[i]) < 0 {
				b = append(b, local[i])
			}
		}
		local = string(b)
	}
	return local
}

// cutSuffix drops everything from the first sep on, unless sep comes first
// (then the local part is not of the form "name" sep "tag").
func cutSuffix(local string, sep byte) string {
	if i := strings.IndexByte(local, sep); i > 0 {
		return local[:i]
	}
	return local
}

// canonicalDomain returns domain lower-cased, as IDNA ASCII when it is a
// valid host name, without a trailing dot.
func canonicalDomain(domain string) string {
	domain = strings.TrimRight(domain, ".")
	if a, err := idnaLookup.ToASCII(domain); err == nil {
		domain = a
	}
	return strings.ToLower(domain)
}
