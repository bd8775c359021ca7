package guard

import (
	"net/netip"
	"strconv"
	"strings"

	"github.com/floodgate-dev/floodgate/internal/rkeys"
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

// sourceNetwork returns the network of prefix p that holds source (read
// as [NormalizeSource] reads it, so a mapped IPv4 address, a zone or a port
// change nothing) as prefix text, "192.0.2.0/24" or "2001:db8:1:2::/64",
// or false when source is not an IP address of p's family.
func sourceNetwork(source string, p GroupPrefix) (string, bool) {
	a, ok := sourceAddr(strings.TrimSpace(source))
	if !ok {
		return "", false
	}
	return addrNetwork(a, p)
}

// addrNetwork is [sourceNetwork] of a parsed source.
func addrNetwork(a netip.Addr, p GroupPrefix) (string, bool) {
	if a.Is6() != p.IPv6 {
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
	// narrowLog is the log of the source's narrowest group ([rkeys.None]
	// when it has none), whose trust the redeemed lane reads; narrowArg its
	// index in the admission script's KEYS ("0": none).
	narrowLog, narrowArg string
	// who names the source's narrowest group (or the source) in the
	// breaker's counts of distinct sources.
	who string
}

// digest is what a sent email's claim keeps: the source's and the
// narrowest group's digests.
func (k sourceKeys) digest() string { return rkeys.Digest(k.log) + rkeys.Digest(k.narrowLog) }

// sourceKeysOf returns the keys of a caller's source for kind pl.
func (pl *plan) sourceKeysOf(dg *rkeys.Digests, source string) sourceKeys {
	// As NormalizeSource, parsing the address once for every group.
	src := strings.TrimSpace(source)
	a, isIP := sourceAddr(src)
	if isIP {
		src = a.String()
	}
	k := sourceKeys{log: dg.Source(pl.name, src), groups: make([]string, len(pl.groups))}
	k.narrowLog, k.narrowArg = rkeys.None, "0"
	bits := -1
	for i, p := range pl.groups {
		k.groups[i] = rkeys.None
		if !isIP {
			continue
		}
		if n, ok := addrNetwork(a, p); ok {
			k.groups[i] = dg.Group(pl.name, n)
			if p.Bits > bits {
				k.narrowLog, bits, k.who = k.groups[i], p.Bits, "g:"+n
				k.narrowArg = strconv.Itoa(rkeys.AdmitGroupKey + i)
			}
		}
	}
	if bits < 0 {
		k.who = "s:" + src
	}
	return k
}
