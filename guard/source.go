package guard

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
)

// NormalizeSource returns the canonical form of a caller-supplied source
// (the Source of a [queue.Email]), so that one client written several ways
// is one source. Surrounding white space is
// trimmed. A source that is an IP address becomes its canonical text: an
// IPv4-mapped IPv6 address (::ffff:192.0.2.1) is the IPv4 address, a zone
// (fe80::1%eth0) is dropped, IPv6 is written as RFC 5952 says. A host:port
// or [IPv6]:port with an IP host (an http.Request's RemoteAddr passed as it
// is) is the address without the port, and so is a bracketed [IPv6]. Any
// other source is a principal and is kept as it is, case included.
// NormalizeSource(NormalizeSource(s)) == NormalizeSource(s).
func NormalizeSource(s string) string {
	s = strings.TrimSpace(s)
	if a, ok := sourceAddr(s); ok {
		return a.String()
	}
	return s
}

// sourceAddr parses a trimmed source as an IP address in one of the forms
// NormalizeSource accepts, without zone and with IPv4 unmapped.
func sourceAddr(s string) (netip.Addr, bool) {
	a, err := netip.ParseAddr(s)
	if err != nil {
		if ap, perr := netip.ParseAddrPort(s); perr == nil {
			a, err = ap.Addr(), nil
		} else if len(s) > 2 && s[0] == '[' && s[len(s)-1] == ']' {
			// Brackets belong to IPv6 only, as in host:port.
			if b, berr := netip.ParseAddr(s[1 : len(s)-1]); berr == nil && b.Is6() {
				a, err = b, nil
			}
		}
	}
	if err != nil {
		return netip.Addr{}, false
	}
	return a.WithZone("").Unmap(), true
}

// Bounds of [SourceGroups].
const (
	minIPv4Group, maxIPv4Group = 8, 32
	minIPv6Group, maxIPv6Group = 16, 128
	// maxSourceGroups bounds the lengths per address family: each group
	// is one more per-source key in an admission.
	maxSourceGroups = 4
)

// SourceGroups says which networks an IP source also counts under, so that
// an attacker who rotates addresses inside one network (one host's IPv6
// /64, one provider's /48, a NATed or rented IPv4 /24) still meets one cap.
// Each entry is a prefix length; a source has one group per length of its
// address family ([SourceGroups.Groups]). Sources that are not IP
// addresses (principals) have no group. The zero value groups nothing. A
// SourceGroups is a plain value, safe for concurrent use once built.
type SourceGroups struct {
	// IPv4 lists prefix lengths for IPv4 sources, each between 8 and 32.
	// Default [24].
	IPv4 []int
	// IPv6 lists prefix lengths for IPv6 sources, each between 16 and
	// 128. Default [64, 48].
	IPv6 []int
}

// DefaultSourceGroups returns IPv4 /24 and IPv6 /64 and /48.
func DefaultSourceGroups() SourceGroups {
	return SourceGroups{IPv4: []int{24}, IPv6: []int{64, 48}}
}

// Validate reports the problems of g as [*PolicyError] values joined, or
// nil. Paths are relative to g, e.g. "ipv4[1]": a length out of range, a
// length listed twice, or more than 4 lengths for one family.
func (g SourceGroups) Validate() error { return errors.Join(g.validate("", nil)...) }

// validate returns one [*PolicyError] per problem, each path under path
// (the field g is decoded from) and with its line from lines when known.
func (g SourceGroups) validate(path string, lines map[string]int) []error {
	var errs []error
	bad := func(p, format string, args ...any) {
		errs = append(errs, &PolicyError{Path: p, Line: lines[p], Reason: fmt.Sprintf(format, args...)})
	}
	for _, fam := range []struct {
		key     string
		lengths []int
		lo, hi  int
	}{{"ipv4", g.IPv4, minIPv4Group, maxIPv4Group}, {"ipv6", g.IPv6, minIPv6Group, maxIPv6Group}} {
		fp := fam.key
		if path != "" {
			fp = path + "." + fam.key
		}
		if len(fam.lengths) > maxSourceGroups {
			bad(fp, "at most %d prefix lengths, got %d", maxSourceGroups, len(fam.lengths))
		}
		for i, l := range fam.lengths {
			ip := fmt.Sprintf("%s[%d]", fp, i)
			switch {
			case l < fam.lo || l > fam.hi:
				bad(ip, "prefix length %d must be between %d and %d", l, fam.lo, fam.hi)
			case slices.Contains(fam.lengths[:i], l):
				bad(ip, "prefix length %d is listed twice", l)
			}
		}
	}
	return errs
}

// Groups returns the networks of source for g's prefix lengths of its
// address family, in g's order, as prefix text: "192.0.2.0/24",
// "2001:db8:1:2::/64". source is read as [NormalizeSource] reads it, so a
// mapped IPv4 address, an address with a zone or a port has the groups of
// the plain address. A source that is not an IP address has none (nil).
// Lengths out of range are skipped; [SourceGroups.Validate] reports them.
func (g SourceGroups) Groups(source string) []string {
	a, ok := sourceAddr(strings.TrimSpace(source))
	if !ok {
		return nil
	}
	lengths, lo, hi := g.IPv4, minIPv4Group, maxIPv4Group
	if a.Is6() {
		lengths, lo, hi = g.IPv6, minIPv6Group, maxIPv6Group
	}
	var out []string
	for _, l := range lengths {
		if l < lo || l > hi {
			continue
		}
		p, err := a.Prefix(l)
		if err != nil {
			continue
		}
		out = append(out, p.String())
	}
	return out
}
