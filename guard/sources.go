package guard

import (
	"net/netip"
	"strings"

	"github.com/floodgate-dev/floodgate/internal/rkeys"
)

// canonicalSource returns the form of a caller's source that keys are
// built from: an IP address in its canonical text (IPv4-mapped IPv6 as
// IPv4, no zone), a principal trimmed.
func canonicalSource(s string) string {
	s = strings.TrimSpace(s)
	if a, err := netip.ParseAddr(s); err == nil {
		return a.Unmap().WithZone("").String()
	}
	if ap, err := netip.ParseAddrPort(s); err == nil {
		return ap.Addr().Unmap().WithZone("").String()
	}
	return s
}

// sourceNetwork returns the network of prefix p that holds source, or
// false when source is not an IP address of p's family.
func sourceNetwork(source string, p GroupPrefix) (string, bool) {
	a, err := netip.ParseAddr(source)
	if err != nil || a.Is6() != p.IPv6 {
		return "", false
	}
	n, err := a.Prefix(p.Bits)
	if err != nil {
		return "", false
	}
	return n.String(), true
}

// sourceKeys are the keys of one source for one kind: its log, the log of
// each configured group ([rkeys.None] when it has none), and its trust.
type sourceKeys struct {
	log    string
	groups []string
	// trust and groupTrust are the source's and its narrowest group's
	// trust keys (groupTrust [rkeys.None] when it has no group).
	trust, groupTrust string
	// who names the source's narrowest group (or the source) in the
	// breaker's counts of distinct sources.
	who string
	// digest is what a sent email's claim keeps: the source's and the
	// narrowest group's digests.
	digest string
}

// sourceKeysOf returns the keys of a caller's source for kind pl.
func (pl *plan) sourceKeysOf(source string) sourceKeys {
	src := canonicalSource(source)
	k := sourceKeys{log: rkeys.Source(pl.name, src), groups: make([]string, len(pl.groups)), who: "s:" + src}
	narrow, bits := rkeys.None, -1
	for i, p := range pl.groups {
		k.groups[i] = rkeys.None
		if n, ok := sourceNetwork(src, p); ok {
			k.groups[i] = rkeys.Group(pl.name, n)
			if p.Bits > bits {
				narrow, bits, k.who = k.groups[i], p.Bits, "g:"+n
			}
		}
	}
	k.trust, k.groupTrust = rkeys.SourceTrust(k.log), rkeys.GroupTrust(narrow)
	k.digest = rkeys.Digest(k.log) + rkeys.Digest(narrow)
	return k
}
