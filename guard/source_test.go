package guard

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"
)

func TestNormalizeSource(t *testing.T) {
	tests := []struct{ in, want string }{
		{"192.0.2.1", "192.0.2.1"},
		{"  192.0.2.1\t", "192.0.2.1"},
		{"::ffff:192.0.2.1", "192.0.2.1"},
		{"::FFFF:c000:0201", "192.0.2.1"},
		{"0:0:0:0:0:ffff:192.0.2.1", "192.0.2.1"},
		{"::ffff:192.0.2.1%eth0", "192.0.2.1"},
		{"fe80::1%eth0", "fe80::1"},
		{"2001:DB8:0:0:0:0:0:1", "2001:db8::1"},
		{"2001:0db8::0001", "2001:db8::1"},
		{"2001:db8:0:0:1:0:0:1", "2001:db8::1:0:0:1"},
		{"2001:db8:0:1:1:1:1:1", "2001:db8:0:1:1:1:1:1"},
		{"0:0:0:0:0:0:0:1", "::1"},
		{"::1", "::1"},
		// RemoteAddr forms: the port goes.
		{"192.0.2.1:8080", "192.0.2.1"},
		{"[2001:db8::1]:443", "2001:db8::1"},
		{"[fe80::1%eth0]:80", "fe80::1"},
		{"[::ffff:192.0.2.1]:80", "192.0.2.1"},
		{" [2001:DB8::1] ", "2001:db8::1"},
		// Not IP addresses: principals, kept as they are.
		{"user:Alice", "user:Alice"},
		{"Alice", "Alice"},
		{" tenant-42 ", "tenant-42"},
		{"", ""},
		{"   ", ""},
		{"01.2.3.4", "01.2.3.4"},
		{"192.0.2.1:99999", "192.0.2.1:99999"},
		{"192.0.2.1:", "192.0.2.1:"},
		{"[192.0.2.1]:80", "[192.0.2.1]:80"},
		{"[192.0.2.1]", "[192.0.2.1]"},
		{"192.0.2.1%eth0", "192.0.2.1%eth0"},
		{"example.com:80", "example.com:80"},
		{"2001:db8::1/64", "2001:db8::1/64"},
	}
	for _, tt := range tests {
		if got := NormalizeSource(tt.in); got != tt.want {
			t.Errorf("NormalizeSource(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestSourceNetwork(t *testing.T) {
	v4, v6, v48 := GroupPrefix{Bits: 24}, GroupPrefix{IPv6: true, Bits: 64}, GroupPrefix{IPv6: true, Bits: 48}
	tests := []struct {
		source string
		p      GroupPrefix
		want   string
	}{
		{"192.0.2.77", v4, "192.0.2.0/24"},
		{"192.0.2.77:51234", v4, "192.0.2.0/24"},
		{"::ffff:192.0.2.77", v4, "192.0.2.0/24"},
		{"2001:db8:1:2:3:4:5:6", v6, "2001:db8:1:2::/64"},
		{"[2001:db8:1:2::9]:443", v48, "2001:db8:1::/48"},
		{"fe80::1%eth0", v6, "fe80::/64"},
		{"192.0.2.77", GroupPrefix{Bits: 32}, "192.0.2.77/32"},
		{"2001:db8::1", v4, ""},
		{"192.0.2.77", v6, ""},
		{"user:alice", v4, ""},
		{"", v4, ""},
	}
	for _, tt := range tests {
		got, ok := sourceNetwork(tt.source, tt.p)
		if got != tt.want || ok != (tt.want != "") {
			t.Errorf("sourceNetwork(%q, %v) = %q, %v, want %q", tt.source, tt.p, got, ok, tt.want)
		}
	}
}

func TestParseGroupPrefix(t *testing.T) {
	for _, tt := range []struct{ in, want string }{
		{"v4/24", ""}, {"v4/8", ""}, {"v4/32", ""}, {"v6/64", ""}, {"v6/16", ""}, {"v6/128", ""},
		{"v4/7", "an IPv4 prefix is 8 to 32 bits"}, {"v4/33", "an IPv4 prefix is 8 to 32 bits"},
		{"v6/15", "an IPv6 prefix is 16 to 128 bits"}, {"v6/129", "an IPv6 prefix is 16 to 128 bits"},
		{"ipv4/24", "want v4/N or v6/N"}, {"v4", "want v4/N or v6/N"}, {"v4/x", "want v4/N or v6/N"},
	} {
		g, err := ParseGroupPrefix(tt.in)
		switch {
		case tt.want == "" && (err != nil || g.String() != tt.in):
			t.Errorf("ParseGroupPrefix(%q) = %v, %v, want it back", tt.in, g, err)
		case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
			t.Errorf("ParseGroupPrefix(%q) error = %v, want %q", tt.in, err, tt.want)
		}
	}
}

func FuzzSource(f *testing.F) {
	for _, s := range []string{"192.0.2.1", "::ffff:192.0.2.1", "fe80::1%eth0", "[2001:db8::1]:443", "192.0.2.1:80",
		" 2001:DB8::1 ", "user:Alice", "", "[::ffff:1.2.3.4%x]:0", "::", "0.0.0.0", "255.255.255.255", "[::1]", "1.2.3.4%eth0"} {
		f.Add(s, uint8(24), uint8(64))
	}
	f.Fuzz(func(t *testing.T, s string, l4, l6 uint8) {
		n := NormalizeSource(s)
		if again := NormalizeSource(n); again != n {
			t.Fatalf("NormalizeSource not idempotent: %q -> %q -> %q", s, n, again)
		}
		prefixes := []GroupPrefix{{Bits: 8 + int(l4)%25}, {Bits: 24}, {IPv6: true, Bits: 16 + int(l6)%113}, {IPv6: true, Bits: 64}}
		groupsOf := func(s string) []string {
			var out []string
			for _, p := range prefixes {
				if n, ok := sourceNetwork(s, p); ok {
					out = append(out, n)
				}
			}
			return out
		}
		groups := groupsOf(s)
		if gn := groupsOf(n); !slices.Equal(gn, groups) {
			t.Fatalf("groups of %q = %q but of normalised %q = %q", s, groups, n, gn)
		}
		a, err := netip.ParseAddr(n)
		if err != nil {
			// A principal: trimmed, otherwise as given, and no group.
			if n != strings.TrimSpace(s) || groups != nil {
				t.Fatalf("principal %q: NormalizeSource = %q, groups %q; want it trimmed and no group", s, n, groups)
			}
			return
		}
		if a.Zone() != "" || a.Is4In6() || a.String() != n {
			t.Fatalf("NormalizeSource(%q) = %q, not a canonical address without zone or mapping", s, n)
		}
		var lengths []int
		for _, p := range prefixes {
			if p.IPv6 == a.Is6() {
				lengths = append(lengths, p.Bits)
			}
		}
		if len(groups) != len(lengths) {
			t.Fatalf("groups of %q = %q, want one per length %v", s, groups, lengths)
		}
		for i, grp := range groups {
			p, err := netip.ParsePrefix(grp)
			if err != nil || p.String() != grp || p != p.Masked() || p.Bits() != lengths[i] {
				t.Fatalf("groups of %q [%d] = %q, want a canonical /%d prefix (%v)", s, i, grp, lengths[i], err)
			}
			if !p.Contains(a) {
				t.Fatalf("groups of %q [%d] = %q does not contain %s", s, i, grp, a)
			}
		}
		if a.Is4() {
			for _, m := range []string{"::ffff:" + n, fmt.Sprintf("[::ffff:%s]:80", n), "::FFFF:" + n + "%eth0"} {
				if NormalizeSource(m) != n || !slices.Equal(groupsOf(m), groups) {
					t.Fatalf("mapped %q: NormalizeSource = %q, groups %q; want %q and %q", m, NormalizeSource(m), groupsOf(m), n, groups)
				}
			}
		}
	})
}

func ExampleNormalizeSource() {
	for _, s := range []string{"::ffff:192.0.2.1", "[2001:DB8:0::1]:443", "fe80::1%eth0", "user:Alice"} {
		fmt.Println(NormalizeSource(s))
	}
	// Output:
	// 192.0.2.1
	// 2001:db8::1
	// fe80::1
	// user:Alice
}
