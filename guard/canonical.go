package guard

import (
	"strings"

	"golang.org/x/net/idna"
)

// LocalRules says which variants of a local part name the same mailbox, so
// that they share one dedup window and one set of caps. The zero value
// applies no rule beyond the domain's normalisation.
type LocalRules struct {
	// StripTags drops a "+tag" suffix: "alice+x@example.com" is
	// "alice@example.com".
	StripTags bool `yaml:"strip_tags"`
	// GmailDots applies Gmail's rules to gmail.com and googlemail.com:
	// dots in the local part are ignored, case is ignored, and
	// googlemail.com is gmail.com.
	GmailDots bool `yaml:"gmail_dots"`
	// LowercaseLocal treats the local part as case-insensitive, as nearly
	// every provider does.
	LowercaseLocal bool `yaml:"lowercase_local"`
}

// DefaultLocalRules returns the rules with every rule on.
func DefaultLocalRules() LocalRules {
	return LocalRules{StripTags: true, GmailDots: true, LowercaseLocal: true}
}

// idnaLookup maps a domain the way a mail client looks it up (UTS #46,
// RFC 5891), lower-casing it on the way.
var idnaLookup = idna.New(idna.MapForLookup(), idna.BidiRule(), idna.Transitional(false))

// Canonical returns the form of addr that guard keys are built from: the
// domain lower-cased and converted to ASCII (IDNA), a trailing dot removed,
// and the local part reduced by rules. It never fails: an address that is
// not valid keeps its bytes, lower-cased where the rules say so, which can
// only merge variants, never split them. Canonical(Canonical(a)) ==
// Canonical(a).
func Canonical(addr string, rules LocalRules) string {
	at := strings.LastIndexByte(addr, '@')
	if at < 0 {
		return canonicalLocal(addr, "", rules)
	}
	domain := canonicalDomain(addr[at+1:])
	if rules.GmailDots && domain == "googlemail.com" {
		domain = "gmail.com"
	}
	return canonicalLocal(addr[:at], domain, rules) + "@" + domain
}

func canonicalLocal(local, domain string, rules LocalRules) string {
	gmail := rules.GmailDots && domain == "gmail.com"
	if rules.LowercaseLocal || gmail {
		local = strings.ToLower(local)
	}
	if rules.StripTags {
		if i := strings.IndexByte(local, '+'); i > 0 {
			local = local[:i]
		}
	}
	if gmail {
		local = strings.ReplaceAll(local, ".", "")
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
