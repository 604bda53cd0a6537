package network

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"sort"
	"strings"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// PublicTable is the nftables table (ip family) that holds elastic IPs and
// port forwards. It is rewritten whole, in one transaction, on every change:
//
//	chain prerouting  hook prerouting prio dstnat:
//	    ip daddr <public> dnat to <private>               elastic IP, in
//	    ip daddr <listen> <proto> dport <port> dnat to <target>:<port>
//	chain output      hook output prio dstnat: the same, for the node's own
//	    connections
//	chain postrouting hook postrouting prio srcnat-10 (before the generic
//	    masquerade of clipper_nat, which then leaves these alone):
//	    ip saddr <private> oifname != <its bridge> snat to <public>
//	    ip saddr <its subnet> ip daddr <private> ct original daddr <public>
//	        masquerade                                    hairpin
//	    ct status dnat ct original daddr <listen> ct original proto-dst <port>
//	        <proto> masquerade                            forward replies
//	chain input       hook input prio filter: addresses Clipper put on the
//	    uplink only exist to be translated; what reaches the node itself
//	    on them is dropped
//	chain state       never run: its rule comments record the elastic IPs,
//	    forwards and uplink addresses, for a restarted agent to adopt
//
// Inbound traffic keeps its source address (no masquerade): the instance
// sees its real client. ICMP errors (fragmentation needed included) are
// RELATED in conntrack and translated with their connection, so Path MTU
// discovery works through the NAT; instance chains accept them first.
//
// The node answers ARP for a public or listen address on its uplink
// because it puts the address on the uplink as a /32 of host scope (never
// chosen as a source for the node's own traffic), and it sends gratuitous
// ARP whenever it takes an address or moves it to another instance.
const PublicTable = "clipper_public"

var publicTable = &nftables.Table{Family: nftables.TableFamilyIPv4, Name: PublicTable}

// eipEntry is one elastic IP association on this node.
type eipEntry struct {
	id      string // instance
	public  netip.Addr
	private netip.Addr
	bridge  string
	subnet  netip.Prefix
}

// publicState is the host's elastic IPs, forwards and uplink addresses.
type publicState struct {
	uplink   string                // configured uplink; "" is the default route's device
	eips     map[string]eipEntry   // by instance ID
	forwards []fwdEntry            // sorted by ID
	addrs    map[netip.Addr]string // addresses Clipper put on an uplink -> device
	stale    bool                  // the last apply failed: the next one must not be skipped
	declared bool                  // the table and its chains exist
}

// SetUplink names the device that faces the network public addresses and
// forward listen addresses live on (the node answers ARP for them there).
// Empty means the device of the IPv4 default route, looked up when needed.
func (h *Host) SetUplink(dev string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.pub.uplink = dev
}

// uplinkDev returns the uplink device, or "" when there is none.
func (h *Host) uplinkDev() string {
	if h.pub.uplink != "" {
		return h.pub.uplink
	}
	routes, err := netlink.RouteList(nil, netlink.FAMILY_V4)
	if err != nil {
		return ""
	}
	for _, r := range routes {
		if r.Dst != nil {
			if ones, _ := r.Dst.Mask.Size(); ones != 0 {
				continue
			}
		}
		if r.Table != 0 && r.Table != unix.RT_TABLE_MAIN {
			continue
		}
		if l, err := netlink.LinkByIndex(r.LinkIndex); err == nil {
			return l.Attrs().Name
		}
	}
	return ""
}

// setEIP associates (public valid) or dissociates an instance's elastic IP
// and applies the result. An address associated with another instance on
// this node moves: the newest association wins. Called with h.mu held.
func (h *Host) setEIP(p *port, public string, bridged bool) error {
	old, had := h.pub.eips[p.id]
	var want eipEntry
	if public != "" {
		a, err := netip.ParseAddr(public)
		if err != nil || !a.Is4() || a.IsUnspecified() || a.IsMulticast() || a.IsLoopback() {
			return fmt.Errorf("network: bad public address %q", public)
		}
		if bridged {
			h.log.Warn("elastic IP ignored: the instance is bridged onto a LAN", "instance", p.id, "public_ip", a)
			public = ""
		} else {
			want = eipEntry{id: p.id, public: a, private: p.ip, bridge: p.bridge, subnet: p.gw.Masked()}
		}
	}
	if public == "" {
		if !had {
			return nil
		}
		delete(h.pub.eips, p.id)
		return h.applyPublic(nil)
	}
	if had && old == want && !h.pub.stale {
		return nil
	}
	if h.pub.eips == nil {
		h.pub.eips = map[string]eipEntry{}
	}
	for id, e := range h.pub.eips {
		if id != p.id && e.public == want.public {
			h.log.Info("elastic IP moves", "public_ip", want.public, "from", id, "to", p.id)
			delete(h.pub.eips, id)
		}
	}
	h.pub.eips[p.id] = want
	return h.applyPublic([]netip.Addr{want.public})
}

// dropEIP removes an instance's elastic IP, if any. Called with h.mu held.
func (h *Host) dropEIP(id string) error {
	if _, ok := h.pub.eips[id]; !ok {
		return nil
	}
	delete(h.pub.eips, id)
	return h.applyPublic(nil)
}

// applyPublic rewrites the public table from the host's state, then puts
// the addresses it needs on the uplink (and takes away those it no longer
// needs). Gratuitous ARP goes out for every address taken and for those in
// announce (their instance changed). Called with h.mu held.
func (h *Host) applyPublic(announce []netip.Addr) (err error) {
	defer func() { h.pub.stale = err != nil }()
	next, err := h.writePublic(!h.pub.declared)
	if err != nil && h.pub.declared {
		// Someone deleted the table: declare it again.
		next, err = h.writePublic(true)
	}
	if err != nil {
		return err
	}
	h.pub.declared = true

	// Rules first: an address is announced only once it is translated.
	var errs []error
	for a, d := range h.pub.addrs {
		if next[a] != d {
			if err := delUplinkAddr(d, a); err != nil {
				errs = append(errs, err)
			}
		}
	}
	for _, a := range sortedAddrs(next) {
		d := next[a]
		if h.pub.addrs[a] != d {
			if err := addUplinkAddr(d, a); err != nil {
				errs = append(errs, err)
				delete(next, a)
				continue
			}
			announce = append(announce, a)
		}
	}
	h.pub.addrs = next
	for _, a := range announce {
		d, ok := next[a]
		if !ok {
			continue // not ours to announce (already local, or no uplink)
		}
		if err := sendGARP(d, a); err != nil {
			errs = append(errs, err)
		} else {
			h.log.Info("gratuitous ARP sent", "address", a, "device", d)
		}
	}
	return errors.Join(errs...)
}

// writePublic rewrites the public table's rules in one transaction and
// returns the uplink addresses they guard. Declaring the table and its
// chains makes a transaction take milliseconds longer (the kernel waits
// for its readers), so it happens only when declare is set; otherwise
// only rules change.
func (h *Host) writePublic(declare bool) (map[netip.Addr]string, error) {
	b, err := newBatch()
	if err != nil {
		return nil, err
	}
	c := b.c
	natChain := func(name string, hook *nftables.ChainHook, prio nftables.ChainPriority) *nftables.Chain {
		return &nftables.Chain{Name: name, Table: publicTable, Type: nftables.ChainTypeNAT,
			Hooknum: hook, Priority: nftables.ChainPriorityRef(prio)}
	}
	pre := natChain("prerouting", nftables.ChainHookPrerouting, *nftables.ChainPriorityNATDest)
	out := natChain("output", nftables.ChainHookOutput, *nftables.ChainPriorityNATDest)
	post := natChain("postrouting", nftables.ChainHookPostrouting, *nftables.ChainPriorityNATSource-10)
	input := baseChain(publicTable, "input", nftables.ChainHookInput, *nftables.ChainPriorityFilter)
	state := &nftables.Chain{Name: "state", Table: publicTable}
	chains := []*nftables.Chain{pre, out, post, input, state}
	if declare {
		c.AddTable(publicTable)
		for _, ch := range chains {
			c.AddChain(ch)
		}
	}
	for _, ch := range chains {
		c.FlushChain(ch)
	}

	ids := make([]string, 0, len(h.pub.eips))
	for id := range h.pub.eips {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	for _, id := range ids {
		e := h.pub.eips[id]
		dnat := join(payloadCmp(expr.PayloadBaseNetworkHeader, 16, expr.CmpOpEq, e.public.AsSlice()),
			[]expr.Any{&expr.Counter{}}, natTo(expr.NATTypeDestNAT, e.private, 0))
		b.rule(publicTable, pre, dnat, "")
		b.rule(publicTable, out, dnat, "")
		b.rule(publicTable, post, join(
			payloadCmp(expr.PayloadBaseNetworkHeader, 12, expr.CmpOpEq, e.private.AsSlice()),
			[]expr.Any{
				&expr.Meta{Key: expr.MetaKeyOIFNAME, Register: 1},
				&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: ifname(e.bridge)},
				&expr.Counter{},
			}, natTo(expr.NATTypeSourceNAT, e.public, 0)), "")
		b.rule(publicTable, post, join(inSubnet(12, e.subnet),
			payloadCmp(expr.PayloadBaseNetworkHeader, 16, expr.CmpOpEq, e.private.AsSlice()),
			ctOriginal(expr.CtKeyDST, e.public.AsSlice()),
			[]expr.Any{&expr.Counter{}, &expr.Masq{}}), "")
		b.rule(publicTable, state, []expr.Any{&expr.Counter{}}, fmt.Sprintf("%seip id=%s pub=%s priv=%s br=%s net=%s",
			commentPrefix, e.id, e.public, e.private, e.bridge, e.subnet))
	}
	for _, f := range h.pub.forwards {
		dnat := join(fwdMatch(f), []expr.Any{&expr.Counter{}}, natTo(expr.NATTypeDestNAT, f.target, f.targetPort))
		b.rule(publicTable, pre, dnat, "")
		b.rule(publicTable, out, dnat, "")
		b.rule(publicTable, post, join(ctDNAT(), l4proto(f.proto),
			ctOriginal(expr.CtKeyDST, f.listen.AsSlice()),
			ctOriginal(expr.CtKeyPROTODST, be16(f.listenPort)),
			[]expr.Any{&expr.Counter{}, &expr.Masq{}}), "")
		b.rule(publicTable, state, []expr.Any{&expr.Counter{}}, f.comment())
	}

	// The addresses the node must answer ARP for.
	dev := h.uplinkDev()
	want := h.wantAddrs()
	if len(want) > 0 && dev == "" {
		h.log.Warn("no uplink (no default route and none configured): public addresses are translated but not announced")
	}
	next := map[netip.Addr]string{}
	for _, a := range want {
		if d, ours := h.pub.addrs[a]; ours {
			next[a] = d
		} else if dev != "" && !isLocalAddr(a) {
			next[a] = dev
		}
	}
	for _, a := range sortedAddrs(next) {
		b.rule(publicTable, input, join(payloadCmp(expr.PayloadBaseNetworkHeader, 16, expr.CmpOpEq, a.AsSlice()),
			[]expr.Any{&expr.Counter{}, drop()}), "")
		b.rule(publicTable, state, []expr.Any{&expr.Counter{}}, fmt.Sprintf("%saddr ip=%s dev=%s", commentPrefix, a, next[a]))
	}
	if err := b.commit("apply elastic IPs and forwards"); err != nil {
		return nil, err
	}
	return next, nil
}

// wantAddrs lists every public and listen address, sorted and unique.
func (h *Host) wantAddrs() []netip.Addr {
	var out []netip.Addr
	for _, e := range h.pub.eips {
		out = append(out, e.public)
	}
	for _, f := range h.pub.forwards {
		out = append(out, f.listen)
	}
	slices.SortFunc(out, func(a, b netip.Addr) int { return a.Compare(b) })
	return slices.Compact(out)
}

func sortedAddrs(m map[netip.Addr]string) []netip.Addr {
	out := make([]netip.Addr, 0, len(m))
	for a := range m {
		out = append(out, a)
	}
	slices.SortFunc(out, func(a, b netip.Addr) int { return a.Compare(b) })
	return out
}

// natTo: snat|dnat to addr[:port].
func natTo(t expr.NATType, addr netip.Addr, port uint16) []expr.Any {
	out := []expr.Any{&expr.Immediate{Register: 1, Data: addr.AsSlice()}}
	n := &expr.NAT{Type: t, Family: unix.NFPROTO_IPV4, RegAddrMin: 1, RegAddrMax: 1}
	if port != 0 {
		out = append(out, &expr.Immediate{Register: 2, Data: be16(port)})
		n.RegProtoMin, n.RegProtoMax, n.Specified = 2, 2, true
	}
	return append(out, n)
}

// inSubnet: ip saddr (off 12) or daddr (off 16) & mask == subnet.
func inSubnet(off uint32, p netip.Prefix) []expr.Any {
	net4 := p.Masked().Addr().As4()
	return []expr.Any{
		payload(expr.PayloadBaseNetworkHeader, off, 4),
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4, Mask: prefixMask(p.Bits()), Xor: []byte{0, 0, 0, 0}},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: net4[:]},
	}
}

// ctOriginal: ct original <key> == data.
func ctOriginal(key expr.CtKey, data []byte) []expr.Any {
	return []expr.Any{
		&expr.Ct{Register: 1, Key: key, Direction: 0},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: data},
	}
}

// ctDNAT: ct status dnat.
func ctDNAT() []expr.Any {
	const ipsDstNAT = 1 << 5
	return []expr.Any{
		&expr.Ct{Register: 1, Key: expr.CtKeySTATUS},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4, Mask: ne32(ipsDstNAT), Xor: ne32(0)},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: ne32(0)},
	}
}

// isLocalAddr reports whether a is an address of one of the node's devices.
func isLocalAddr(a netip.Addr) bool {
	addrs, err := netlink.AddrList(nil, netlink.FAMILY_V4)
	if err != nil {
		return false
	}
	for _, x := range addrs {
		if ip, ok := netip.AddrFromSlice(x.IP); ok && ip.Unmap() == a {
			return true
		}
	}
	return false
}

func uplinkAddr(a netip.Addr) *netlink.Addr {
	return &netlink.Addr{IPNet: prefixNet(netip.PrefixFrom(a, 32)), Scope: unix.RT_SCOPE_HOST}
}

func addUplinkAddr(dev string, a netip.Addr) error {
	link, err := netlink.LinkByName(dev)
	if err != nil {
		return fmt.Errorf("network: uplink %s: %w", dev, err)
	}
	if err := netlink.AddrReplace(link, uplinkAddr(a)); err != nil {
		return fmt.Errorf("network: put %s on %s: %w", a, dev, err)
	}
	return nil
}

func delUplinkAddr(dev string, a netip.Addr) error {
	link, err := netlink.LinkByName(dev)
	if err != nil {
		if isNotFound(err) {
			return nil
		}
		return err
	}
	if err := netlink.AddrDel(link, uplinkAddr(a)); err != nil && !errors.Is(err, unix.EADDRNOTAVAIL) {
		return fmt.Errorf("network: take %s off %s: %w", a, dev, err)
	}
	return nil
}

// sendGARP announces that dev's MAC now answers for a: one ARP request and
// one ARP reply, both broadcast, with a as sender and target address.
func sendGARP(dev string, a netip.Addr) error {
	link, err := netlink.LinkByName(dev)
	if err != nil {
		return fmt.Errorf("network: gratuitous ARP on %s: %w", dev, err)
	}
	mac := link.Attrs().HardwareAddr
	if len(mac) != 6 {
		return fmt.Errorf("network: gratuitous ARP: %s has no Ethernet address", dev)
	}
	proto := htons(unix.ETH_P_ARP)
	fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("network: gratuitous ARP: %w", err)
	}
	// Closing a packet socket waits for an RCU grace period (tens of
	// milliseconds): the announcement need not wait for it.
	defer func() { go unix.Close(fd) }()
	to := &unix.SockaddrLinklayer{Protocol: proto, Ifindex: link.Attrs().Index, Halen: 6,
		Addr: [8]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}}
	for _, op := range []uint16{1, 2} {
		if err := unix.Sendto(fd, arpPacket(op, mac, a, mac, a), 0, to); err != nil {
			return fmt.Errorf("network: gratuitous ARP on %s: %w", dev, err)
		}
	}
	return nil
}

// arpPacket builds an Ethernet/IPv4 ARP packet. A gratuitous request
// leaves the target hardware address zero.
func arpPacket(op uint16, sha net.HardwareAddr, spa netip.Addr, tha net.HardwareAddr, tpa netip.Addr) []byte {
	p := []byte{0, 1, 8, 0, 6, 4}
	p = append(p, be16(op)...)
	p = append(p, sha...)
	p = append(p, spa.AsSlice()...)
	if op == 1 {
		p = append(p, 0, 0, 0, 0, 0, 0)
	} else {
		p = append(p, tha...)
	}
	return append(p, tpa.AsSlice()...)
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

// adoptPublic reads back the state chain a previous agent left, so the
// rules of instances not attached again yet survive the first change, and
// addresses that are no longer wanted are taken off the uplink.
func (h *Host) adoptPublic() error {
	h.pub.eips, h.pub.addrs = map[string]eipEntry{}, map[netip.Addr]string{}
	c, err := nftables.New()
	if err != nil {
		return fmt.Errorf("network: nftables: %w", err)
	}
	rules, err := c.GetRules(publicTable, &nftables.Chain{Name: "state", Table: publicTable})
	if err != nil {
		return nil // no table yet
	}
	for _, r := range rules {
		s, ok := strings.CutPrefix(commentOf(r.UserData), commentPrefix)
		if !ok {
			continue
		}
		kind, rest, _ := strings.Cut(s, " ")
		kv := map[string]string{}
		for _, f := range strings.Fields(rest) {
			if k, v, ok := strings.Cut(f, "="); ok {
				kv[k] = v
			}
		}
		switch kind {
		case "eip":
			e := eipEntry{id: kv["id"], bridge: kv["br"]}
			var e1, e2, e3 error
			e.public, e1 = netip.ParseAddr(kv["pub"])
			e.private, e2 = netip.ParseAddr(kv["priv"])
			e.subnet, e3 = netip.ParsePrefix(kv["net"])
			if err := errors.Join(e1, e2, e3); err != nil || e.id == "" || e.bridge == "" {
				h.log.Warn("cannot adopt elastic IP", "record", s)
				continue
			}
			h.pub.eips[e.id] = e
		case "fwd":
			f, err := fwdFromRecord(kv)
			if err != nil {
				h.log.Warn("cannot adopt port forward", "record", s, "error", err)
				continue
			}
			h.pub.forwards = append(h.pub.forwards, f)
		case "addr":
			if a, err := netip.ParseAddr(kv["ip"]); err == nil && kv["dev"] != "" {
				h.pub.addrs[a] = kv["dev"]
			}
		}
	}
	sortForwards(h.pub.forwards)
	if len(h.pub.eips)+len(h.pub.forwards)+len(h.pub.addrs) > 0 {
		h.log.Info("elastic IPs and forwards adopted", "eips", len(h.pub.eips), "forwards", len(h.pub.forwards))
	}
	return nil
}

// purgePublic removes the public table and the addresses on the uplink.
// Called with h.mu held.
func (h *Host) purgePublic() error {
	var errs []error
	for a, d := range h.pub.addrs {
		errs = append(errs, delUplinkAddr(d, a))
	}
	h.pub = publicState{uplink: h.pub.uplink, eips: map[string]eipEntry{}, addrs: map[netip.Addr]string{}}
	c, err := nftables.New()
	if err != nil {
		return errors.Join(append(errs, err)...)
	}
	tables, err := c.ListTablesOfFamily(nftables.TableFamilyIPv4)
	if err != nil {
		return errors.Join(append(errs, err)...)
	}
	for _, t := range tables {
		if t.Name == PublicTable {
			c.DelTable(t)
			errs = append(errs, c.Flush())
		}
	}
	errs = append(errs, deleteUplinkTable())
	return errors.Join(errs...)
}
