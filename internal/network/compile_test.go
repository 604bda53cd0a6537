package network

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/clipper-cloud/clipper/internal/nodeproto"
)

// These tests need neither root nor a namespace.

func rendered(rules []compiledRule) []string {
	out := make([]string, len(rules))
	for i, r := range rules {
		out[i] = r.String()
	}
	return out
}

func tcp(from, to int, cidrs ...string) nodeproto.Rule {
	return nodeproto.Rule{Protocol: "tcp", FromPort: from, ToPort: to, CIDRs: cidrs}
}

func TestCompileRules(t *testing.T) {
	for _, c := range []struct {
		name  string
		rules []nodeproto.Rule
		want  []string
	}{
		{"nothing", nil, []string{}},
		{"one port from one CIDR",
			[]nodeproto.Rule{tcp(22, 22, "10.0.0.0/8")},
			[]string{"meta nfproto ipv4 meta l4proto 6 ip saddr . th dport { 10.0.0.0/8 . 22 } accept"}},
		{"CIDRs on one port merge, adjacent ones into one range",
			[]nodeproto.Rule{tcp(80, 80, "10.0.0.0/25", "10.0.0.128/25"), tcp(80, 80, "192.0.2.7")},
			[]string{"meta nfproto ipv4 meta l4proto 6 ip saddr . th dport { 10.0.0.0/24 . 80, 192.0.2.7 . 80 } accept"}},
		{"ports of one CIDR merge",
			[]nodeproto.Rule{tcp(80, 80, "10.0.0.0/8"), tcp(81, 90, "10.0.0.0/8"), tcp(443, 443, "10.0.0.0/8")},
			[]string{"meta nfproto ipv4 meta l4proto 6 ip saddr . th dport { 10.0.0.0/8 . 80-90, 10.0.0.0/8 . 443 } accept"}},
		{"many rules on many ports: one set",
			[]nodeproto.Rule{tcp(1000, 1000, "10.1.0.0/16"), tcp(2000, 2000, "10.2.0.0/16"), tcp(3000, 3000, "10.3.0.0/16")},
			[]string{"meta nfproto ipv4 meta l4proto 6 ip saddr . th dport { 10.1.0.0/16 . 1000, 10.2.0.0/16 . 2000, 10.3.0.0/16 . 3000 } accept"}},
		{"overlapping rules are cut into disjoint pairs",
			[]nodeproto.Rule{tcp(1, 100, "10.0.0.0/8"), tcp(50, 200, "10.1.0.0/16")},
			[]string{"meta nfproto ipv4 meta l4proto 6 ip saddr . th dport { 10.0.0.0/8 . 1-100, 10.1.0.0/16 . 101-200 } accept"}},
		{"all ports (-1 or 0-65535) is an address set",
			[]nodeproto.Rule{tcp(-1, -1, "10.0.0.0/8"), tcp(0, 65535, "192.0.2.0/24")},
			[]string{"meta nfproto ipv4 ip saddr { 10.0.0.0/8, 192.0.2.0/24 } meta l4proto 6 accept"}},
		{"any address on a port",
			[]nodeproto.Rule{tcp(443, 443, "0.0.0.0/0")},
			[]string{"meta nfproto ipv4 meta l4proto 6 ip saddr . th dport { 0.0.0.0/0 . 443 } accept"}},
		{"0.0.0.0/0 is IPv4 only, ::/0 IPv6 only",
			[]nodeproto.Rule{{Protocol: "-1", CIDRs: []string{"0.0.0.0/0"}}, {Protocol: "-1", CIDRs: []string{"::/0"}}},
			[]string{"meta nfproto ipv4 accept", "meta nfproto ipv6 accept"}},
		{"IPv6 CIDRs",
			[]nodeproto.Rule{tcp(22, 22, "2001:db8::/32"), {Protocol: "udp", FromPort: 53, ToPort: 53, CIDRs: []string{"fd00::1"}}},
			[]string{"meta nfproto ipv6 meta l4proto 6 ip6 saddr . th dport { 2001:db8::/32 . 22 } accept",
				"meta nfproto ipv6 meta l4proto 17 ip6 saddr . th dport { fd00::1 . 53 } accept"}},
		{"icmp type and code, any code, any type",
			[]nodeproto.Rule{{Protocol: "icmp", FromPort: 8, ToPort: 0, CIDRs: []string{"10.0.0.0/8"}},
				{Protocol: "icmp", FromPort: 3, ToPort: -1, CIDRs: []string{"10.0.0.0/8"}},
				{Protocol: "icmp", FromPort: -1, ToPort: -1, CIDRs: []string{"192.0.2.0/24"}}},
			[]string{"meta nfproto ipv4 ip saddr { 192.0.2.0/24 } meta l4proto 1 accept",
				"meta nfproto ipv4 meta l4proto 1 ip saddr . @th,0,16 { 10.0.0.0/8 . 768-1023, 10.0.0.0/8 . 2048 } accept"}},
		{"icmp from an IPv6 range matches nothing; icmpv6 only IPv6",
			[]nodeproto.Rule{{Protocol: "icmp", FromPort: -1, ToPort: -1, CIDRs: []string{"::/0"}},
				{Protocol: "icmpv6", FromPort: 128, ToPort: -1, CIDRs: []string{"::/0", "0.0.0.0/0"}}},
			[]string{"meta nfproto ipv6 meta l4proto 58 ip6 saddr . @th,0,16 { ::/0 . 32768-33023 } accept"}},
		{"source groups: one rule per group and protocol, ports merged",
			[]nodeproto.Rule{{Protocol: "tcp", FromPort: 22, ToPort: 22, Groups: []string{"sg-a"}},
				{Protocol: "tcp", FromPort: 80, ToPort: 80, Groups: []string{"sg-a", "sg-b"}},
				{Protocol: "-1", Groups: []string{"sg-c"}}},
			[]string{"meta nfproto ipv4 ip saddr @m-sg-c accept",
				"meta nfproto ipv4 ip saddr @m-sg-a meta l4proto 6 th dport { 22, 80 } accept",
				"meta nfproto ipv4 ip saddr @m-sg-b meta l4proto 6 th dport { 80 } accept"}},
		{"a source group and CIDRs on one port stay apart",
			[]nodeproto.Rule{{Protocol: "tcp", FromPort: 80, ToPort: 80, CIDRs: []string{"10.0.0.0/8"}, Groups: []string{"sg-a"}}},
			[]string{"meta nfproto ipv4 meta l4proto 6 ip saddr . th dport { 10.0.0.0/8 . 80 } accept",
				"meta nfproto ipv4 ip saddr @m-sg-a meta l4proto 6 th dport { 80 } accept"}},
		{"other protocols: an address set each",
			[]nodeproto.Rule{{Protocol: "47", CIDRs: []string{"10.0.0.0/8"}}, {Protocol: "50", CIDRs: []string{"10.0.0.0/8"}}},
			[]string{"meta nfproto ipv4 ip saddr { 10.0.0.0/8 } meta l4proto 47 accept",
				"meta nfproto ipv4 ip saddr { 10.0.0.0/8 } meta l4proto 50 accept"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			rules, errs := compileRules(c.rules)
			if len(errs) > 0 {
				t.Fatalf("errors: %v", errs)
			}
			if got := rendered(rules); !slices.Equal(got, c.want) {
				t.Errorf("got\n\t%s\nwant\n\t%s", strings.Join(got, "\n\t"), strings.Join(c.want, "\n\t"))
			}
		})
	}
}

func TestCompileRulesLeavesBadRulesOut(t *testing.T) {
	rules, errs := compileRules([]nodeproto.Rule{
		{Protocol: "tcp", FromPort: 80, ToPort: 70, CIDRs: []string{"10.0.0.0/8"}},   // reversed range
		{Protocol: "tcp", FromPort: 1, ToPort: 70000, CIDRs: []string{"10.0.0.0/8"}}, // past 65535
		{Protocol: "bogus", CIDRs: []string{"10.0.0.0/8"}},
		{Protocol: "256", CIDRs: []string{"10.0.0.0/8"}},
		{Protocol: "icmp", FromPort: 300, ToPort: 0, CIDRs: []string{"10.0.0.0/8"}},
		{Protocol: "tcp", FromPort: 22, ToPort: 22, CIDRs: []string{"not-a-cidr", "192.0.2.0/24"}},
	})
	if len(errs) != 6 {
		t.Errorf("%d errors, want 6: %v", len(errs), errs)
	}
	want := []string{"meta nfproto ipv4 meta l4proto 6 ip saddr . th dport { 192.0.2.0/24 . 22 } accept"}
	if got := rendered(rules); !slices.Equal(got, want) {
		t.Errorf("what remains: %v, want %v", got, want)
	}
}

func TestParseProtocol(t *testing.T) {
	for in, want := range map[string]int{"tcp": 6, "UDP": 17, "icmp": 1, "icmpv6": 58, "-1": -1, "all": -1, " 47 ": 47, "0": 0} {
		if got, err := parseProtocol(in); err != nil || got != want {
			t.Errorf("parseProtocol(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
}

// TestDisjointPairs checks the cut on random rule sets: the pieces do not
// overlap, and a point is in a piece exactly when it is in a rule.
func TestDisjointPairs(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for round := range 200 {
		var in []pairSpan
		for range 1 + rng.IntN(30) {
			bits := 20 + rng.IntN(13)
			a := netip.AddrFrom4([4]byte{10, byte(rng.IntN(4)), byte(rng.IntN(4)), byte(rng.IntN(256))})
			lo := uint16(rng.IntN(100))
			hi := lo + uint16(rng.IntN(20))
			if rng.IntN(5) == 0 {
				lo, hi = 0, 0xffff
			}
			in = append(in, pairSpan{Addr: prefixSpan(netip.PrefixFrom(a, bits).Masked()), Port: span{lo, hi}})
		}
		out := disjointPairs(in)
		for i := range out {
			for j := i + 1; j < len(out); j++ {
				if overlaps(out[i], out[j]) {
					t.Fatalf("round %d: %v and %v overlap", round, out[i], out[j])
				}
			}
		}
		for range 2000 {
			p := netip.AddrFrom4([4]byte{10, byte(rng.IntN(4)), byte(rng.IntN(4)), byte(rng.IntN(256))})
			port := uint16(rng.IntN(130))
			if contains(in, p, port) != contains(out, p, port) {
				t.Fatalf("round %d: %s . %d is in the rules: %v, in the cut: %v\nrules %v\ncut %v",
					round, p, port, contains(in, p, port), contains(out, p, port), in, out)
			}
		}
	}
}

func overlaps(a, b pairSpan) bool {
	return a.Addr.lo.Compare(b.Addr.hi) <= 0 && b.Addr.lo.Compare(a.Addr.hi) <= 0 &&
		a.Port.lo <= b.Port.hi && b.Port.lo <= a.Port.hi
}

func contains(ps []pairSpan, a netip.Addr, port uint16) bool {
	for _, p := range ps {
		if p.Addr.lo.Compare(a) <= 0 && a.Compare(p.Addr.hi) <= 0 && p.Port.lo <= port && port <= p.Port.hi {
			return true
		}
	}
	return false
}

// TestManyPortsOneLookup is the shape of the benchmark's worst case: a
// thousand rules, each on a port of its own, compile to one rule of a
// thousand pairs.
func TestManyPortsOneLookup(t *testing.T) {
	var in []nodeproto.Rule
	for i := range 1000 {
		in = append(in, tcp(10000+i, 10000+i, fmt.Sprintf("10.%d.%d.16/28", 64+i/200, i%200)))
	}
	rules, errs := compileRules(in)
	if len(errs) > 0 || len(rules) != 1 || len(rules[0].Pairs) != 1000 {
		t.Fatalf("%d rules (%d errors), the first with %d pairs", len(rules), len(errs), len(rules[0].Pairs))
	}
}

// TestNestedRulesStaySmall: a wide CIDR on many ports with many narrow
// CIDRs inside it on one port must not multiply into their product.
func TestNestedRulesStaySmall(t *testing.T) {
	var in []pairSpan
	for i := range 500 {
		in = append(in, pairSpan{Addr: prefixSpan(netip.MustParsePrefix("10.0.0.0/8")), Port: span{uint16(2000 + 2*i), uint16(2000 + 2*i)}})
		in = append(in, pairSpan{Addr: prefixSpan(netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 1, byte(i / 200), byte(i)}), 32)), Port: span{22, 22}})
	}
	if out := disjointPairs(in); len(out) > len(in) {
		t.Errorf("%d rectangles cut into %d", len(in), len(out))
	}
}
