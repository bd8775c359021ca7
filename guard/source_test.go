package guard

import (
	"errors"
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

func TestSourceGroups(t *testing.T) {
	def := DefaultSourceGroups()
	tests := []struct {
		in     string
		groups SourceGroups
		want   []string
	}{
		{"192.0.2.77", def, []string{"192.0.2.0/24"}},
		{"::ffff:192.0.2.77", def, []string{"192.0.2.0/24"}},
		{"192.0.2.77:5000", def, []string{"192.0.2.0/24"}},
		{"2001:db8:1:2:3:4:5:6", def, []string{"2001:db8:1:2::/64", "2001:db8:1::/48"}},
		{"[2001:db8:1:2::9%eth0]:443", def, []string{"2001:db8:1:2::/64", "2001:db8:1::/48"}},
		{"fe80::1%eth0", def, []string{"fe80::/64", "fe80::/48"}},
		{"192.0.2.77", SourceGroups{IPv4: []int{32, 16, 8}}, []string{"192.0.2.77/32", "192.0.0.0/16", "192.0.0.0/8"}},
		{"2001:db8::1", SourceGroups{IPv6: []int{128, 56}}, []string{"2001:db8::1/128", "2001:db8::/56"}},
		{"2001:db8::1", SourceGroups{IPv4: []int{24}}, nil},
		{"192.0.2.77", SourceGroups{IPv6: []int{64}}, nil},
		{"192.0.2.77", SourceGroups{IPv4: []int{7, 24, 33}}, []string{"192.0.2.0/24"}},
		{"user:alice", def, nil},
		{"", def, nil},
		{"01.2.3.4", def, nil},
	}
	for _, tt := range tests {
		if got := tt.groups.Groups(tt.in); !slices.Equal(got, tt.want) {
			t.Errorf("%+v.Groups(%q) = %q, want %q", tt.groups, tt.in, got, tt.want)
		}
	}
}

func TestSourceGroupsValidate(t *testing.T) {
	tests := []struct {
		groups SourceGroups
		want   []string // one problem each, "path: reason"
	}{
		{DefaultSourceGroups(), nil},
		{SourceGroups{}, nil},
		{SourceGroups{IPv4: []int{8, 32}, IPv6: []int{16, 128}}, nil},
		{SourceGroups{IPv4: []int{7}}, []string{"ipv4[0]: prefix length 7 must be between 8 and 32"}},
		{SourceGroups{IPv4: []int{24, 33}}, []string{"ipv4[1]: prefix length 33 must be between 8 and 32"}},
		{SourceGroups{IPv6: []int{15, 129}}, []string{
			"ipv6[0]: prefix length 15 must be between 16 and 128",
			"ipv6[1]: prefix length 129 must be between 16 and 128"}},
		{SourceGroups{IPv6: []int{64, 48, 64}}, []string{"ipv6[2]: prefix length 64 is listed twice"}},
		{SourceGroups{IPv4: []int{8, 16, 24, 28, 32}}, []string{"ipv4: at most 4 prefix lengths, got 5"}},
	}
	for _, tt := range tests {
		var got []string
		for _, e := range tt.groups.validate("", nil) {
			got = append(got, e.Error())
		}
		if !slices.Equal(got, tt.want) {
			t.Errorf("%+v.Validate() = %q, want %q", tt.groups, got, tt.want)
		}
		err := tt.groups.Validate()
		if (err == nil) != (tt.want == nil) {
			t.Errorf("%+v.Validate() = %v, want %d problems", tt.groups, err, len(tt.want))
		}
		var pe *PolicyError
		if err != nil && !errors.As(err, &pe) {
			t.Errorf("%+v.Validate() = %v, want *PolicyError values", tt.groups, err)
		}
	}
	// Under a policy field, paths and lines follow it.
	errs := SourceGroups{IPv6: []int{200}}.validate("source_groups", map[string]int{"source_groups.ipv6[0]": 12})
	if len(errs) != 1 {
		t.Fatalf("validate under source_groups: %v, want one problem", errs)
	}
	if pe := errs[0].(*PolicyError); pe.Path != "source_groups.ipv6[0]" || pe.Line != 12 {
		t.Errorf("validate under source_groups = %+v, want path source_groups.ipv6[0], line 12", pe)
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
		g := SourceGroups{
			IPv4: []int{minIPv4Group + int(l4)%(maxIPv4Group-minIPv4Group+1), 24},
			IPv6: []int{minIPv6Group + int(l6)%(maxIPv6Group-minIPv6Group+1), 64, 48},
		}
		groups := g.Groups(s)
		if gn := g.Groups(n); !slices.Equal(gn, groups) {
			t.Fatalf("Groups(%q) = %q but Groups(normalised %q) = %q", s, groups, n, gn)
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
		lengths := g.IPv6
		if a.Is4() {
			lengths = g.IPv4
		}
		if len(groups) != len(lengths) {
			t.Fatalf("Groups(%q) = %q, want one per length %v", s, groups, lengths)
		}
		for i, grp := range groups {
			p, err := netip.ParsePrefix(grp)
			if err != nil || p.String() != grp || p != p.Masked() || p.Bits() != lengths[i] {
				t.Fatalf("Groups(%q)[%d] = %q, want a canonical /%d prefix (%v)", s, i, grp, lengths[i], err)
			}
			if !p.Contains(a) {
				t.Fatalf("Groups(%q)[%d] = %q does not contain %s", s, i, grp, a)
			}
		}
		if a.Is4() {
			for _, m := range []string{"::ffff:" + n, fmt.Sprintf("[::ffff:%s]:80", n), "::FFFF:" + n + "%eth0"} {
				if NormalizeSource(m) != n || !slices.Equal(g.Groups(m), groups) {
					t.Fatalf("mapped %q: NormalizeSource = %q, groups %q; want %q and %q", m, NormalizeSource(m), g.Groups(m), n, groups)
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

func ExampleSourceGroups_Groups() {
	g := DefaultSourceGroups()
	fmt.Println(g.Groups("192.0.2.77:51234"))
	fmt.Println(g.Groups("2001:db8:1:2:3:4:5:6"))
	fmt.Println(g.Groups("user:alice") == nil)
	// Output:
	// [192.0.2.0/24]
	// [2001:db8:1:2::/64 2001:db8:1::/48]
	// true
}
