package network

import (
	"cmp"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	"github.com/clipper-cloud/clipper/internal/nodeproto"
)

// IP protocol numbers the compiler treats specially.
const (
	protoAny    = -1
	protoICMP   = 1
	protoTCP    = 6
	protoUDP    = 17
	protoICMPv6 = 58
)

// ipFamily is an address family of a compiled rule: 4 or 6.
type ipFamily uint8

// span is an inclusive range of 16-bit values: TCP/UDP destination ports,
// or ICMP type<<8|code.
type span struct{ lo, hi uint16 }

// addrSpan is an inclusive range of addresses of one family.
type addrSpan struct{ lo, hi netip.Addr }

// compiledRule is one nftables rule of a group chain: it accepts packets
// of its family and protocol whose peer address (source for ingress,
// destination for egress) is in Peers (or in PeerGroup's members) and
// whose port (or ICMP type and code) is in Ports, or, for a rule with
// Pairs, whose peer address and port together fall in one of the pairs.
//
// CIDR rules with ports compile to one rule per family and protocol whose
// pairs go into one concatenated interval set (address . port): one
// lookup, whatever the number of rules and ports. CIDR rules for any port
// merge into one address set per family and protocol, and source-group
// rules into one rule per group and protocol with a port set.
type compiledRule struct {
	Family ipFamily
	Proto  int    // protoAny or an IP protocol number
	Ports  []span // nil: any (also for protocols without ports)
	// Peers are merged, sorted, disjoint ranges; nil with PeerGroup empty
	// means any address.
	Peers     []addrSpan
	PeerGroup string // group whose members are the peers
	// Pairs, when set, are disjoint address . port rectangles (Peers
	// and Ports are then unused).
	Pairs []pairSpan
}

// pairSpan is an address range with a port (or ICMP type.code) range.
type pairSpan struct {
	Addr addrSpan
	Port span
}

// ruleError says why a rule was left out: bad rules are dropped, which
// only ever takes permissions away.
type ruleError struct {
	Index int
	Err   error
}

func (e ruleError) Error() string { return fmt.Sprintf("rule %d: %v", e.Index, e.Err) }

var errBadRule = errors.New("invalid rule")

// parseProtocol reads a rule's protocol: tcp, udp, icmp, icmpv6, -1 (or
// all) or a protocol number 0-255.
func parseProtocol(s string) (int, error) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "tcp":
		return protoTCP, nil
	case "udp":
		return protoUDP, nil
	case "icmp":
		return protoICMP, nil
	case "icmpv6":
		return protoICMPv6, nil
	case "-1", "all":
		return protoAny, nil
	}
	n, err := strconv.Atoi(strings.TrimSpace(s))
	if err != nil || n < 0 || n > 255 {
		return 0, fmt.Errorf("%w: protocol %q", errBadRule, s)
	}
	return n, nil
}

// parsePorts turns a rule's FromPort/ToPort into the span it matches, nil
// for any.
func parsePorts(proto, from, to int) ([]span, error) {
	switch proto {
	case protoTCP, protoUDP:
		if (from == -1 && to == -1) || (from == 0 && to == 65535) {
			return nil, nil
		}
		if from < 0 || to > 65535 || from > to {
			return nil, fmt.Errorf("%w: port range %d-%d", errBadRule, from, to)
		}
		return []span{{uint16(from), uint16(to)}}, nil
	case protoICMP, protoICMPv6:
		// FromPort is the type, ToPort the code; -1 is any.
		if from == -1 {
			return nil, nil
		}
		if from < 0 || from > 255 || to < -1 || to > 255 {
			return nil, fmt.Errorf("%w: icmp type %d code %d", errBadRule, from, to)
		}
		if to == -1 {
			return []span{{uint16(from) << 8, uint16(from)<<8 | 0xff}}, nil
		}
		v := uint16(from)<<8 | uint16(to)
		return []span{{v, v}}, nil
	}
	return nil, nil
}

// parsePeer reads a CIDR (or a bare address) into a masked prefix.
func parsePeer(s string) (netip.Prefix, error) {
	s = strings.TrimSpace(s)
	if p, err := netip.ParsePrefix(s); err == nil {
		return p.Masked(), nil
	}
	if a, err := netip.ParseAddr(s); err == nil {
		a = a.Unmap()
		return netip.PrefixFrom(a, a.BitLen()), nil
	}
	return netip.Prefix{}, fmt.Errorf("%w: peer %q", errBadRule, s)
}

func prefixSpan(p netip.Prefix) addrSpan {
	lo := p.Masked().Addr()
	b := lo.AsSlice()
	for i := p.Bits(); i < len(b)*8; i++ {
		b[i/8] |= 0x80 >> (i % 8)
	}
	hi, _ := netip.AddrFromSlice(b)
	return addrSpan{lo, hi}
}

// mergeAddrs sorts and merges overlapping or adjacent ranges.
func mergeAddrs(in []addrSpan) []addrSpan {
	if len(in) == 0 {
		return nil
	}
	s := slices.Clone(in)
	slices.SortFunc(s, func(a, b addrSpan) int { return a.lo.Compare(b.lo) })
	out := s[:1]
	for _, r := range s[1:] {
		last := &out[len(out)-1]
		next := last.hi.Next()
		if !next.IsValid() || r.lo.Compare(next) <= 0 { // overlaps or touches
			if r.hi.Compare(last.hi) > 0 {
				last.hi = r.hi
			}
			continue
		}
		out = append(out, r)
	}
	return out
}

// mergeSpans sorts and merges overlapping or adjacent spans.
func mergeSpans(in []span) []span {
	if len(in) == 0 {
		return nil
	}
	s := slices.Clone(in)
	slices.SortFunc(s, func(a, b span) int { return cmp.Compare(a.lo, b.lo) })
	out := s[:1]
	for _, r := range s[1:] {
		last := &out[len(out)-1]
		if uint32(r.lo) <= uint32(last.hi)+1 {
			last.hi = max(last.hi, r.hi)
			continue
		}
		out = append(out, r)
	}
	return out
}

// isAllPorts reports whether merged spans cover every value.
func isAllPorts(s []span) bool { return len(s) == 1 && s[0].lo == 0 && s[0].hi == 0xffff }

// atom is one (family, protocol, ports, peer) permission before merging.
type atom struct {
	fam   ipFamily
	proto int
	ports []span // nil: any
	peer  netip.Prefix
	any   bool   // any peer address
	group string // peer group
}

// compileRules translates one direction of a group's rules into nftables
// rules. Invalid rules (or invalid peers in a rule) are left out and
// reported; what remains is still enforced.
func compileRules(rules []nodeproto.Rule) ([]compiledRule, []error) {
	var errs []error
	var atoms []atom
	for i, r := range rules {
		proto, err := parseProtocol(r.Protocol)
		if err != nil {
			errs = append(errs, ruleError{i, err})
			continue
		}
		ports, err := parsePorts(proto, r.FromPort, r.ToPort)
		if err != nil {
			errs = append(errs, ruleError{i, err})
			continue
		}
		fams := []ipFamily{4, 6}
		switch proto {
		case protoICMP:
			fams = []ipFamily{4}
		case protoICMPv6:
			fams = []ipFamily{6}
		}
		for _, c := range r.CIDRs {
			p, err := parsePeer(c)
			if err != nil {
				errs = append(errs, ruleError{i, err})
				continue
			}
			fam := ipFamily(4)
			if p.Addr().Is6() {
				fam = 6
			}
			if !slices.Contains(fams, fam) {
				continue // icmp from an IPv6 range matches nothing
			}
			atoms = append(atoms, atom{fam: fam, proto: proto, ports: ports, peer: p, any: p.Bits() == 0})
		}
		for _, g := range r.Groups {
			if g == "" {
				continue
			}
			// Group members are IPv4 addresses.
			if slices.Contains(fams, 4) {
				atoms = append(atoms, atom{fam: 4, proto: proto, ports: ports, group: g})
			}
		}
	}
	return mergeAtoms(atoms), errs
}

// maxPairs bounds the elements of one concatenated set; rules whose
// pairs would cut into more (a pathological overlap of many ranges) are
// compiled as one rule per port set instead.
const maxPairs = 1 << 16

// mergeAtoms merges atoms into as few rules as their shapes allow.
func mergeAtoms(atoms []atom) []compiledRule {
	type famProto struct {
		fam   ipFamily
		proto int
	}
	var pairAtoms []atom
	pairs := map[famProto][]pairSpan{}
	var rest []atom
	for _, a := range atoms {
		if a.group == "" && a.ports != nil {
			k := famProto{a.fam, a.proto}
			pairs[k] = append(pairs[k], pairSpan{peerSpan(a), a.ports[0]})
			pairAtoms = append(pairAtoms, a)
			continue
		}
		rest = append(rest, a)
	}
	out := mergeByPeers(rest)
	for k, ps := range pairs {
		cut := disjointPairs(ps)
		if len(cut) > maxPairs {
			var these []atom
			for _, a := range pairAtoms {
				if a.fam == k.fam && a.proto == k.proto {
					these = append(these, a)
				}
			}
			out = append(out, mergeByPeers(these)...)
			continue
		}
		out = append(out, compiledRule{Family: k.fam, Proto: k.proto, Pairs: cut})
	}
	slices.SortFunc(out, compareCompiled)
	return out
}

// peerSpan is the address range of an atom's CIDR peer.
func peerSpan(a atom) addrSpan {
	if a.any {
		return prefixSpan(netip.PrefixFrom(familyZero(a.fam), 0))
	}
	return prefixSpan(a.peer)
}

func familyZero(f ipFamily) netip.Addr {
	if f == 6 {
		return netip.IPv6Unspecified()
	}
	return netip.IPv4Unspecified()
}

// mergeByPeers merges atoms into one rule per peer shape (any address, a
// group's members, or a set of address ranges), each with the union of
// its ports.
func mergeByPeers(atoms []atom) []compiledRule {
	type portKey struct {
		fam   ipFamily
		proto int
		ports string // "" for any
	}
	type peerKey struct {
		fam   ipFamily
		proto int
		peers string // "any", "group:<id>" or the merged ranges
	}
	spanKey := func(s []span) string {
		if len(s) == 0 {
			return ""
		}
		return fmt.Sprint(s)
	}
	// 1. Same family, protocol and ports: merge the CIDRs.
	cidrs := map[portKey][]addrSpan{}
	portsOf := map[portKey][]span{}
	// byPeer collects the port spans of each peer shape; nil spans for a
	// peer shape means "any port".
	byPeer := map[peerKey][]span{}
	anyPort := map[peerKey]bool{}
	peerOf := map[peerKey]compiledRule{}
	addPorts := func(k peerKey, base compiledRule, ports []span) {
		if _, ok := peerOf[k]; !ok {
			peerOf[k] = base
		}
		if ports == nil {
			anyPort[k] = true
			return
		}
		byPeer[k] = append(byPeer[k], ports...)
	}
	for _, a := range atoms {
		switch {
		case a.group != "":
			addPorts(peerKey{a.fam, a.proto, "group:" + a.group},
				compiledRule{Family: a.fam, Proto: a.proto, PeerGroup: a.group}, a.ports)
		case a.any:
			addPorts(peerKey{a.fam, a.proto, "any"}, compiledRule{Family: a.fam, Proto: a.proto}, a.ports)
		default:
			k := portKey{a.fam, a.proto, spanKey(a.ports)}
			cidrs[k] = append(cidrs[k], prefixSpan(a.peer))
			portsOf[k] = a.ports
		}
	}
	// 2. Same family, protocol and peers: merge the ports.
	for k, spans := range cidrs {
		peers := mergeAddrs(spans)
		addPorts(peerKey{k.fam, k.proto, fmt.Sprint(peers)},
			compiledRule{Family: k.fam, Proto: k.proto, Peers: peers}, portsOf[k])
	}
	out := make([]compiledRule, 0, len(peerOf))
	for k, r := range peerOf {
		if !anyPort[k] {
			r.Ports = mergeSpans(byPeer[k])
			if isAllPorts(r.Ports) {
				r.Ports = nil
			}
		}
		out = append(out, r)
	}
	return out
}

func compareCompiled(a, b compiledRule) int {
	if c := cmp.Compare(a.Family, b.Family); c != 0 {
		return c
	}
	if c := cmp.Compare(a.Proto, b.Proto); c != 0 {
		return c
	}
	if c := cmp.Compare(a.PeerGroup, b.PeerGroup); c != 0 {
		return c
	}
	return cmp.Compare(a.String(), b.String())
}

// String renders the rule in nft syntax (for logs, tests and debugging);
// peer is the peer side's address keyword.
func (r compiledRule) render(peer string) string {
	var b strings.Builder
	ip := "ip"
	if r.Family == 6 {
		ip = "ip6"
	}
	b.WriteString("meta nfproto ipv" + strconv.Itoa(int(r.Family)))
	field := "th dport"
	if r.Proto == protoICMP || r.Proto == protoICMPv6 {
		field = "@th,0,16" // type and code
	}
	if r.Pairs != nil {
		parts := make([]string, len(r.Pairs))
		for i, p := range r.Pairs {
			parts[i] = renderAddrSpan(p.Addr) + " . " + renderSpan(p.Port)
		}
		fmt.Fprintf(&b, " meta l4proto %d %s %s . %s { %s } accept", r.Proto, ip, peer, field, strings.Join(parts, ", "))
		return b.String()
	}
	switch {
	case r.PeerGroup != "":
		fmt.Fprintf(&b, " %s %s @%s", ip, peer, memberSetName(r.PeerGroup))
	case r.Peers != nil:
		parts := make([]string, len(r.Peers))
		for i, p := range r.Peers {
			parts[i] = renderAddrSpan(p)
		}
		fmt.Fprintf(&b, " %s %s { %s }", ip, peer, strings.Join(parts, ", "))
	}
	if r.Proto != protoAny {
		fmt.Fprintf(&b, " meta l4proto %d", r.Proto)
	}
	if r.Ports != nil {
		parts := make([]string, len(r.Ports))
		for i, s := range r.Ports {
			parts[i] = renderSpan(s)
		}
		fmt.Fprintf(&b, " %s { %s }", field, strings.Join(parts, ", "))
	}
	b.WriteString(" accept")
	return b.String()
}

// String renders the rule as an ingress rule.
func (r compiledRule) String() string { return r.render("saddr") }

func renderAddrSpan(s addrSpan) string {
	if s.lo == s.hi {
		return s.lo.String()
	}
	// A range that is exactly one prefix prints as the prefix.
	for bits := 0; bits <= s.lo.BitLen(); bits++ {
		p := netip.PrefixFrom(s.lo, bits)
		if p.Masked().Addr() == s.lo && prefixSpan(p).hi == s.hi {
			return p.String()
		}
	}
	return s.lo.String() + "-" + s.hi.String()
}

func renderSpan(s span) string {
	if s.lo == s.hi {
		return strconv.Itoa(int(s.lo))
	}
	return fmt.Sprintf("%d-%d", s.lo, s.hi)
}
