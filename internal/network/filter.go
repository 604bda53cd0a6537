package network

import (
	"slices"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// The filter table (inet clipper_filter):
//
//	set bridges       { type ifname }                       managed bridges
//	set same_bridge   { type ifname . ifname }              b . b per bridge
//	map eg_ports      { type mark : verdict }               mark -> jump eg-<id>
//	map in_ports      { type ifname . ipv4_addr : verdict } bridge . ip -> jump in-<id>
//	set m-<group>     { type ipv4_addr }                    members of a group
//
//	chain mss_clamp    hook forward prio mangle: tcp syn: maxseg set rt mtu
//	chain fwd_egress   hook forward prio filter, policy accept:
//	    ct state established,related accept
//	    iifname @bridges oifname @bridges iifname . oifname != @same_bridge drop
//	    iifname @bridges meta pkttype { broadcast, multicast } drop
//	    meta mark vmap @eg_ports
//	    meta mark & MarkMask == MarkBase drop
//	chain fwd_ingress  hook forward prio filter+10, policy accept:
//	    ct state established,related accept
//	    meta nfproto ipv4 oifname . ip daddr vmap @in_ports
//	    oifname @bridges meta nfproto ipv6 drop
//	chain node_output  hook output prio filter, policy accept: the node's own
//	    packets to instances pass their ingress rules like anyone else's
//	    ct state established,related accept
//	    udp sport 67 dport 68 accept (DHCP replies)
//	    meta nfproto ipv4 oifname . ip daddr vmap @in_ports
//	chain node_input   hook input prio filter: iifname @bridges jump from_instances
//	chain from_instances: what instances may reach on the node itself:
//	    the first rules, metadata (IPv4 and IPv6), neighbour discovery,
//	    DNS, ping
//	chain eg-<id>, in-<id>: first rules, jump g-<group>-eg|in per group, drop
//	chain g-<group>-in, g-<group>-eg: the group's compiled rules, accept
//
// An accept in fwd_egress only ends that base chain: fwd_ingress still
// runs, so a packet between two instances passes the sender's egress and
// the receiver's ingress rules.
const (
	chainMSS      = "mss_clamp"
	chainEgress   = "fwd_egress"
	chainIngress  = "fwd_ingress"
	chainInput    = "node_input"
	chainOutput   = "node_output"
	chainFromInst = "from_instances"
	chainPrerout  = "prerouting" // bridge table
)

func baseChain(t *nftables.Table, name string, hook *nftables.ChainHook, prio nftables.ChainPriority) *nftables.Chain {
	policy := nftables.ChainPolicyAccept
	return &nftables.Chain{Name: name, Table: t, Type: nftables.ChainTypeFilter, Hooknum: hook,
		Priority: nftables.ChainPriorityRef(prio), Policy: &policy}
}

// addBase declares both tables, their sets and base chains, and rewrites
// the base chains' rules. Instance and group chains are left alone, so
// running it again (a restarted agent) changes nothing for running VMs.
func addBase(b *batch) {
	c := b.c
	c.AddTable(filterTable)
	for _, s := range []*nftables.Set{setBridges(), setSameBridge(), mapEgress(), mapIngress()} {
		b.addSet(s, nil)
	}
	mss := c.AddChain(baseChain(filterTable, chainMSS, nftables.ChainHookForward, *nftables.ChainPriorityMangle))
	eg := c.AddChain(baseChain(filterTable, chainEgress, nftables.ChainHookForward, *nftables.ChainPriorityFilter))
	in := c.AddChain(baseChain(filterTable, chainIngress, nftables.ChainHookForward, *nftables.ChainPriorityFilter+10))
	input := c.AddChain(baseChain(filterTable, chainInput, nftables.ChainHookInput, *nftables.ChainPriorityFilter))
	output := c.AddChain(baseChain(filterTable, chainOutput, nftables.ChainHookOutput, *nftables.ChainPriorityFilter))
	from := b.regularChain(filterTable, chainFromInst)
	for _, ch := range []*nftables.Chain{mss, eg, in, input, output, from} {
		c.FlushChain(ch)
	}

	// tcp flags & (syn|rst) == syn tcp option maxseg size set rt mtu
	b.rule(filterTable, mss, join(l4proto(protoTCP), []expr.Any{
		payload(expr.PayloadBaseTransportHeader, 13, 1),
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 1, Mask: []byte{0x06}, Xor: []byte{0}},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{0x02}},
		&expr.Rt{Register: 1, Key: expr.RtTCPMSS},
		&expr.Byteorder{SourceRegister: 1, DestRegister: 1, Op: expr.ByteorderHton, Len: 2, Size: 2},
		&expr.Exthdr{Op: expr.ExthdrOpTcpopt, Type: 2, Offset: 2, Len: 2, SourceRegister: 1},
	}), "")

	b.rule(filterTable, eg, ctEstablished(), "")
	// Networks are isolated from each other on the node.
	b.rule(filterTable, eg, join(inBridges(expr.MetaKeyIIFNAME), inBridges(expr.MetaKeyOIFNAME), []expr.Any{
		&expr.Meta{Key: expr.MetaKeyIIFNAME, Register: 1},
		&expr.Meta{Key: expr.MetaKeyOIFNAME, Register: 2},
		&expr.Lookup{SourceRegister: 1, SetName: setSameBridge().Name, Invert: true},
		&expr.Counter{}, drop(),
	}), "clipper: networks are isolated")
	// No broadcast or multicast between instances.
	b.rule(filterTable, eg, join(inBridges(expr.MetaKeyIIFNAME), []expr.Any{
		&expr.Meta{Key: expr.MetaKeyPKTTYPE, Register: 1},
		&expr.Range{Op: expr.CmpOpEq, Register: 1, FromData: []byte{1}, ToData: []byte{2}},
		&expr.Counter{}, drop(),
	}), "clipper: no broadcast or multicast between instances")
	b.rule(filterTable, eg, []expr.Any{
		&expr.Meta{Key: expr.MetaKeyMARK, Register: 1},
		&expr.Lookup{SourceRegister: 1, SetName: mapEgress().Name, IsDestRegSet: true},
	}, "")
	// A port being set up or torn down has a mark but no chain: deny.
	b.rule(filterTable, eg, []expr.Any{
		&expr.Meta{Key: expr.MetaKeyMARK, Register: 1},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4, Mask: ne32(MarkMask), Xor: ne32(0)},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: ne32(MarkBase)},
		&expr.Counter{}, drop(),
	}, "")

	b.rule(filterTable, in, ctEstablished(), "")
	b.rule(filterTable, in, join(nfproto(4), []expr.Any{
		&expr.Meta{Key: expr.MetaKeyOIFNAME, Register: 1},
		&expr.Payload{DestRegister: 2, Base: expr.PayloadBaseNetworkHeader, Offset: 16, Len: 4},
		&expr.Lookup{SourceRegister: 1, SetName: mapIngress().Name, IsDestRegSet: true},
	}), "")
	// Instances have no IPv6 addresses yet: nothing new reaches them.
	b.rule(filterTable, in, join(inBridges(expr.MetaKeyOIFNAME), nfproto(6), []expr.Any{&expr.Counter{}, drop()}), "")

	// The node is no exception to an instance's ingress rules.
	b.rule(filterTable, output, ctEstablished(), "")
	b.rule(filterTable, output, join(nfproto(4), l4proto(protoUDP),
		payloadCmp(expr.PayloadBaseTransportHeader, 0, expr.CmpOpEq, []byte{0, 67, 0, 68}), []expr.Any{accept()}), "clipper: dhcp replies")
	b.rule(filterTable, output, join(nfproto(4), []expr.Any{
		&expr.Meta{Key: expr.MetaKeyOIFNAME, Register: 1},
		&expr.Payload{DestRegister: 2, Base: expr.PayloadBaseNetworkHeader, Offset: 16, Len: 4},
		&expr.Lookup{SourceRegister: 1, SetName: mapIngress().Name, IsDestRegSet: true},
	}), "")

	b.rule(filterTable, input, join(inBridges(expr.MetaKeyIIFNAME), []expr.Any{jump(chainFromInst)}), "")
	for _, r := range firstRules() {
		b.rule(filterTable, from, r, "")
	}
	b.rule(filterTable, from, join(nfproto(4), l4proto(protoTCP),
		payloadCmp(expr.PayloadBaseNetworkHeader, 16, expr.CmpOpEq, MetadataIPv4.AsSlice()),
		payloadCmp(expr.PayloadBaseTransportHeader, 2, expr.CmpOpEq, be16(80)), []expr.Any{accept()}), "clipper: metadata")
	b.rule(filterTable, from, join(nfproto(6), l4proto(protoTCP),
		payloadCmp(expr.PayloadBaseNetworkHeader, 24, expr.CmpOpEq, MetadataIPv6.AsSlice()),
		payloadCmp(expr.PayloadBaseTransportHeader, 2, expr.CmpOpEq, be16(80)), []expr.Any{accept()}), "clipper: metadata")
	// IPv6 neighbour discovery with the node: router solicitations,
	// neighbour solicitations and advertisements (ra.go).
	b.rule(filterTable, from, join(nfproto(6), l4proto(protoICMPv6), []expr.Any{
		payload(expr.PayloadBaseTransportHeader, 0, 1),
		&expr.Range{Op: expr.CmpOpEq, Register: 1, FromData: []byte{133}, ToData: []byte{136}},
		accept()}), "clipper: neighbour discovery")
	for _, p := range []int{protoUDP, protoTCP} {
		b.rule(filterTable, from, join(l4proto(p),
			payloadCmp(expr.PayloadBaseTransportHeader, 2, expr.CmpOpEq, be16(53)), []expr.Any{accept()}), "clipper: dns")
	}
	b.rule(filterTable, from, join(nfproto(4), l4proto(protoICMP),
		payloadCmp(expr.PayloadBaseTransportHeader, 0, expr.CmpOpEq, []byte{8}), []expr.Any{accept()}), "clipper: ping")
	b.rule(filterTable, from, []expr.Any{&expr.Counter{}, drop()}, "")

	addSpoofBase(b)
}

// inBridges: <key> @bridges.
func inBridges(key expr.MetaKey) []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: key, Register: 1},
		&expr.Lookup{SourceRegister: 1, SetName: setBridges().Name},
	}
}

// addBridgeElems / delBridgeElems keep the bridge sets in step with the
// bridges the node serves.
func addBridgeElems(b *batch, name string) {
	b.addElems(setBridges(), []nftables.SetElement{{Key: ifname(name)}})
	b.addElems(setSameBridge(), []nftables.SetElement{{Key: append(ifname(name), ifname(name)...)}})
}

func delBridgeElems(b *batch, name string) {
	b.delElems(setSameBridge(), []nftables.SetElement{{Key: append(ifname(name), ifname(name)...)}})
	b.delElems(setBridges(), []nftables.SetElement{{Key: ifname(name)}})
}

// addInstance writes a port's egress and ingress chains and their entries
// in the dispatch maps. Group chains the port refers to are declared (empty
// until SetGroups defines them: an unknown group allows nothing).
func addInstance(b *batch, p *port) {
	for _, g := range p.groups {
		b.regularChain(filterTable, groupChainName(g, dirIn))
		b.regularChain(filterTable, groupChainName(g, dirEg))
	}
	for _, dir := range []string{dirEg, dirIn} {
		name := egressChainName(p.id)
		if dir == dirIn {
			name = ingressChainName(p.id)
		}
		ch := b.regularChain(filterTable, name)
		b.c.FlushChain(ch)
		for _, r := range firstRules() {
			b.rule(filterTable, ch, r, "")
		}
		for _, g := range p.groups {
			b.rule(filterTable, ch, []expr.Any{jump(groupChainName(g, dir))}, commentPrefix+"group="+g)
		}
		b.rule(filterTable, ch, []expr.Any{&expr.Counter{}, drop()}, "")
	}
	b.addElems(mapEgress(), []nftables.SetElement{{Key: ne32(p.mark),
		VerdictData: jump(egressChainName(p.id))}})
	b.addElems(mapIngress(), []nftables.SetElement{{Key: ingressKey(p),
		VerdictData: jump(ingressChainName(p.id))}})
}

// delInstance removes what addInstance made.
func delInstance(b *batch, p *port) {
	b.delElems(mapEgress(), []nftables.SetElement{{Key: ne32(p.mark)}})
	b.delElems(mapIngress(), []nftables.SetElement{{Key: ingressKey(p)}})
	for _, name := range []string{egressChainName(p.id), ingressChainName(p.id)} {
		ch := &nftables.Chain{Name: name, Table: filterTable}
		b.c.FlushChain(ch)
		b.c.DelChain(ch)
	}
}

func ingressKey(p *port) []byte {
	return append(ifname(p.bridge), p.ip.AsSlice()...)
}

// writeGroup rewrites a group's chains and member set.
func writeGroup(b *batch, id string, in, eg []compiledRule, members []nftables.SetElement) {
	ms := memberSet(id)
	b.addSet(ms, nil)
	b.c.FlushSet(ms)
	b.addElems(ms, members)
	for _, dir := range []string{dirIn, dirEg} {
		rules, peer := in, "saddr"
		if dir == dirEg {
			rules, peer = eg, "daddr"
		}
		// Peer groups' member sets must exist before a rule looks them up.
		for _, r := range rules {
			if r.PeerGroup != "" && r.PeerGroup != id {
				b.addSet(memberSet(r.PeerGroup), nil)
			}
		}
		ch := b.regularChain(filterTable, groupChainName(id, dir))
		b.c.FlushChain(ch)
		for _, r := range rules {
			b.rule(filterTable, ch, ruleExprs(b, r, peer == "daddr"), "")
		}
	}
}

// emptyGroup takes every permission of a group away (it stays declared
// while something still refers to it).
func emptyGroup(b *batch, id string) {
	ms := memberSet(id)
	b.addSet(ms, nil)
	b.c.FlushSet(ms)
	for _, dir := range []string{dirIn, dirEg} {
		b.c.FlushChain(b.regularChain(filterTable, groupChainName(id, dir)))
	}
}

// ruleExprs turns one compiled rule into expressions; egress rules match
// the destination address, ingress rules the source.
func ruleExprs(b *batch, r compiledRule, egress bool) []expr.Any {
	out := nfproto(r.Family)
	off, n, key := uint32(12), uint32(4), nftables.TypeIPAddr
	if egress {
		off = 16
	}
	if r.Family == 6 {
		off, n, key = 8, 16, nftables.TypeIP6Addr
		if egress {
			off = 24
		}
	}
	portOff := uint32(2) // destination port
	if r.Proto == protoICMP || r.Proto == protoICMPv6 {
		portOff = 0 // type and code
	}
	if r.Pairs != nil {
		// meta l4proto P  <peer addr> . <port> @pairs  accept: the address
		// goes to the 32-bit registers from 8 on, the port to the next.
		out = append(out, l4proto(r.Proto)...)
		portReg := uint32(unix.NFT_REG32_00) + n/4
		out = append(out,
			&expr.Payload{DestRegister: unix.NFT_REG32_00, Base: expr.PayloadBaseNetworkHeader, Offset: off, Len: n},
			&expr.Payload{DestRegister: portReg, Base: expr.PayloadBaseTransportHeader, Offset: portOff, Len: 2})
		s := &nftables.Set{Table: filterTable, Anonymous: true, Constant: true, Interval: true, Concatenation: true,
			KeyType: nftables.MustConcatSetType(key, nftables.TypeInetService)}
		b.addSet(s, pairElems(r.Pairs))
		return append(out, &expr.Lookup{SourceRegister: unix.NFT_REG32_00, SetName: s.Name, SetID: s.ID}, accept())
	}
	if r.PeerGroup != "" || r.Peers != nil {
		out = append(out, payload(expr.PayloadBaseNetworkHeader, off, n))
		if r.PeerGroup != "" {
			out = append(out, &expr.Lookup{SourceRegister: 1, SetName: memberSetName(r.PeerGroup)})
		} else {
			out = append(out, b.anonSet(filterTable, key, true, addrElems(r.Peers)))
		}
	}
	if r.Proto != protoAny {
		out = append(out, l4proto(r.Proto)...)
	}
	if r.Ports != nil {
		out = append(out, payload(expr.PayloadBaseTransportHeader, portOff, 2))
		if len(r.Ports) == 1 {
			s := r.Ports[0]
			if s.lo == s.hi {
				out = append(out, &expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: be16(s.lo)})
			} else {
				out = append(out, &expr.Range{Op: expr.CmpOpEq, Register: 1, FromData: be16(s.lo), ToData: be16(s.hi)})
			}
		} else {
			out = append(out, b.anonSet(filterTable, nftables.TypeInetService, true, spanElems(r.Ports)))
		}
	}
	return append(out, accept())
}

// peerGroups lists the groups whose member sets compiled rules look up.
func peerGroups(rules ...[]compiledRule) []string {
	var out []string
	for _, rs := range rules {
		for _, r := range rs {
			if r.PeerGroup != "" && !slices.Contains(out, r.PeerGroup) {
				out = append(out, r.PeerGroup)
			}
		}
	}
	return out
}
