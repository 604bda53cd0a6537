package network

import (
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
)

// The anti-spoofing table (bridge clipper_antispoof) needs no conntrack:
//
//	map ports { type ifname : verdict }          port device -> jump port-<id>
//	chain prerouting hook prerouting prio filter (-200, before br_netfilter):
//	    iifname vmap @ports
//	chain port-<id>:
//	    meta mark set <mark>                     the metadata service's key
//	    ether saddr != <mac> drop
//	    arp (ethernet/IPv4) sender <mac> <ip> or 0.0.0.0 (probe): accept
//	    ip udp sport 67 drop                     no DHCP servers in guests
//	    ip saddr <ip> accept
//	    ip saddr 0.0.0.0 daddr 255.255.255.255 udp 68 -> 67 accept
//	    ip6 icmpv6 type { nd-router-advert, nd-redirect } drop
//	    ip6 saddr { <link-local>, :: } daddr { fe80::/10, ff02::/16,
//	        fd00:ec2::254 } accept               the node only (ra.go)
//	    drop                                     VLAN tags, the rest
//
// The ether type is read from the frame (link header), where a VLAN tag
// shows even when the driver has taken it out of the packet: tagged frames
// would skip br_netfilter and with it the security groups.
func addSpoofBase(b *batch) {
	c := b.c
	c.AddTable(spoofTable)
	b.addSet(mapPorts(), nil)
	pre := c.AddChain(&nftables.Chain{Name: chainPrerout, Table: spoofTable, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookPrerouting, Priority: nftables.ChainPriorityRef(-200)})
	c.FlushChain(pre)
	b.rule(spoofTable, pre, []expr.Any{
		&expr.Meta{Key: expr.MetaKeyIIFNAME, Register: 1},
		&expr.Lookup{SourceRegister: 1, SetName: mapPorts().Name, IsDestRegSet: true},
	}, "")
	addOverlayBase(b, pre)
}

func etherType(t uint16) []expr.Any {
	return payloadCmp(expr.PayloadBaseLLHeader, 12, expr.CmpOpEq, be16(t))
}

// addSpoofPort writes a port's anti-spoofing chain and its map entry. The
// rules' comments carry what a restarted agent needs to adopt the port.
func addSpoofPort(b *batch, p *port) {
	ch := b.regularChain(spoofTable, portChainName(p.id))
	b.c.FlushChain(ch)
	meta := p.comments()
	ip := p.ip.AsSlice()
	b.rule(spoofTable, ch, []expr.Any{
		&expr.Immediate{Register: 1, Data: ne32(p.mark)},
		&expr.Meta{Key: expr.MetaKeyMARK, SourceRegister: true, Register: 1},
	}, meta[0])
	b.rule(spoofTable, ch, join(payloadCmp(expr.PayloadBaseLLHeader, 6, expr.CmpOpNeq, p.mac),
		[]expr.Any{&expr.Counter{}, drop()}), meta[1])
	for _, sender := range [][]byte{ip, {0, 0, 0, 0}} {
		b.rule(spoofTable, ch, join(etherType(0x0806),
			// htype ethernet, ptype IPv4, hlen 6, plen 4
			payloadCmp(expr.PayloadBaseNetworkHeader, 0, expr.CmpOpEq, []byte{0, 1, 8, 0, 6, 4}),
			payloadCmp(expr.PayloadBaseNetworkHeader, 8, expr.CmpOpEq, p.mac),
			payloadCmp(expr.PayloadBaseNetworkHeader, 14, expr.CmpOpEq, sender),
			[]expr.Any{accept()}), "")
	}
	b.rule(spoofTable, ch, join(etherType(0x0800), l4proto(protoUDP),
		payloadCmp(expr.PayloadBaseTransportHeader, 0, expr.CmpOpEq, be16(67)),
		[]expr.Any{&expr.Counter{}, drop()}), "")
	b.rule(spoofTable, ch, join(etherType(0x0800),
		payloadCmp(expr.PayloadBaseNetworkHeader, 12, expr.CmpOpEq, ip), []expr.Any{accept()}), "")
	b.rule(spoofTable, ch, join(etherType(0x0800),
		payloadCmp(expr.PayloadBaseNetworkHeader, 12, expr.CmpOpEq, []byte{0, 0, 0, 0}),
		payloadCmp(expr.PayloadBaseNetworkHeader, 16, expr.CmpOpEq, []byte{255, 255, 255, 255}),
		l4proto(protoUDP),
		payloadCmp(expr.PayloadBaseTransportHeader, 0, expr.CmpOpEq, []byte{0, 68, 0, 67}),
		[]expr.Any{accept()}), "")
	addSpoofIPv6(b, ch, p)
	b.rule(spoofTable, ch, []expr.Any{&expr.Counter{}, drop()}, meta[2])
	b.addElems(mapPorts(), []nftables.SetElement{{Key: ifname(p.dev), VerdictData: jump(portChainName(p.id))}})
}

// delSpoofPort removes what addSpoofPort made.
func delSpoofPort(b *batch, p *port) {
	b.delElems(mapPorts(), []nftables.SetElement{{Key: ifname(p.dev)}})
	ch := &nftables.Chain{Name: portChainName(p.id), Table: spoofTable}
	b.c.FlushChain(ch)
	b.c.DelChain(ch)
}

// commentPrefix starts every comment Clipper reads back.
const commentPrefix = "clipper "

// comments are the three comments of a port chain, each short enough for
// nft (at most 127 bytes).
func (p *port) comments() [3]string {
	dns := make([]string, 0, len(p.dns))
	for _, a := range p.dns {
		dns = append(dns, a.String())
	}
	own := "0"
	if p.owned {
		own = "1"
	}
	up := ""
	if p.uplink {
		up = " up=1"
	}
	if p.vpc != "" {
		up += " vpc=" + p.vpc
	}
	return [3]string{
		fmt.Sprintf("%sid=%s dev=%s own=%s%s", commentPrefix, p.id, p.dev, own, up),
		fmt.Sprintf("%smac=%s ip=%s mark=%d", commentPrefix, p.mac, p.ip, p.mark),
		fmt.Sprintf("%sbr=%s gw=%s mtu=%d dns=%s", commentPrefix, p.bridge, p.gw, p.mtu, strings.Join(dns, ",")),
	}
}

// commentData encodes a rule comment the way nft does (a NUL-terminated
// string in a type-length-value record).
func commentData(s string) []byte {
	if len(s) > 127 {
		s = s[:127]
	}
	return append([]byte{0, byte(len(s) + 1)}, append([]byte(s), 0)...)
}

// commentOf reads a rule's comment back; "" if it has none.
func commentOf(udata []byte) string {
	for len(udata) >= 2 {
		typ, n := udata[0], int(udata[1])
		if len(udata) < 2+n {
			return ""
		}
		if typ == 0 {
			return strings.TrimRight(string(udata[2:2+n]), "\x00")
		}
		udata = udata[2+n:]
	}
	return ""
}

// portFromComments rebuilds a port from its chain's comments.
func portFromComments(comments []string) (*port, error) {
	kv := map[string]string{}
	for _, c := range comments {
		rest, ok := strings.CutPrefix(c, commentPrefix)
		if !ok {
			continue
		}
		for _, f := range strings.Fields(rest) {
			if k, v, ok := strings.Cut(f, "="); ok {
				kv[k] = v
			}
		}
	}
	p := &port{id: kv["id"], vpc: kv["vpc"], dev: kv["dev"], owned: kv["own"] == "1", bridge: kv["br"], uplink: kv["up"] == "1"}
	var err error
	if p.mac, err = net.ParseMAC(kv["mac"]); err != nil {
		return nil, fmt.Errorf("mac: %w", err)
	}
	if p.ip, err = netip.ParseAddr(kv["ip"]); err != nil {
		return nil, fmt.Errorf("ip: %w", err)
	}
	if p.gw, err = netip.ParsePrefix(kv["gw"]); err != nil {
		return nil, fmt.Errorf("gateway: %w", err)
	}
	mark, err := strconv.ParseUint(kv["mark"], 10, 32)
	if err != nil || uint32(mark)&MarkMask != MarkBase || uint32(mark) == MarkBase {
		return nil, fmt.Errorf("bad mark %q", kv["mark"])
	}
	p.mark = uint32(mark)
	if p.mtu, err = strconv.Atoi(kv["mtu"]); err != nil {
		return nil, fmt.Errorf("mtu: %w", err)
	}
	for _, s := range strings.Split(kv["dns"], ",") {
		if a, err := netip.ParseAddr(s); err == nil {
			p.dns = append(p.dns, a)
		}
	}
	if p.id == "" || p.dev == "" || p.bridge == "" {
		return nil, fmt.Errorf("incomplete port record")
	}
	return p, nil
}

// ipv6Reach is where an instance's IPv6 may go: the link (neighbour
// discovery with the node) and the metadata service.
var ipv6Reach = mergeAddrs([]addrSpan{
	prefixSpan(netip.MustParsePrefix("fe80::/10")),
	prefixSpan(netip.MustParsePrefix("ff02::/16")),
	prefixSpan(netip.PrefixFrom(MetadataIPv6, 128)),
})

// addSpoofIPv6 writes a port's IPv6 rules: its own link-local address (or
// :: while it checks for duplicates) to the node and link only, and no
// router advertisements or redirects.
func addSpoofIPv6(b *batch, ch *nftables.Chain, p *port) {
	ip6 := etherType(0x86dd)
	for _, typ := range []byte{134, 137} {
		b.rule(spoofTable, ch, join(ip6, l4proto(protoICMPv6),
			payloadCmp(expr.PayloadBaseTransportHeader, 0, expr.CmpOpEq, []byte{typ}),
			[]expr.Any{&expr.Counter{}, drop()}), "")
	}
	for _, src := range []netip.Addr{linkLocal(p.mac), netip.IPv6Unspecified()} {
		b.rule(spoofTable, ch, join(ip6,
			payloadCmp(expr.PayloadBaseNetworkHeader, 8, expr.CmpOpEq, src.AsSlice()),
			[]expr.Any{payload(expr.PayloadBaseNetworkHeader, 24, 16),
				b.anonSet(spoofTable, nftables.TypeIP6Addr, true, addrElems(ipv6Reach)), accept()}), "")
	}
}
