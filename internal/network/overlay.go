package network

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/clipper-cloud/clipper/internal/nodeproto"
)

// The overlay joins a network's bridges on different nodes with one VXLAN
// device per network and node ("vx<VNI>", a port of the bridge), sending
// from the node's underlay address to UDP port 4789 of the others. Its
// forwarding table comes from the controller, never from the underlay: no
// multicast groups, no learning. For every live instance of the network on
// another node there is a static entry MAC -> that node; broadcasts and
// unknown destinations go to every node that hosts the network (head-end
// replication, one all-zero MAC entry per node).
//
// The gateway is distributed: every node gives the network's bridge the
// same gateway address and MAC and answers for its own instances, so
// nothing of the gateway may cross the overlay. Instances of another
// subnet of the network on other nodes are routed to by the sender's node
// (a /32 route and a permanent neighbour entry per such instance, from the
// peers, so the gateway never has to ask over the overlay); such frames
// leave with the sending node's own router MAC instead of the gateway's.
// The reply comes back routed by the other node the same way. A chain per
// VXLAN device in the bridge table, run on frames entering from it
// (prerouting) and leaving through it (postrouting):
//
//	map overlay { type ifname : verdict }         vxlan device -> jump ovl-<vni>
//	chain prerouting:  ... iifname vmap @overlay
//	chain postrouting hook postrouting prio filter: oifname vmap @overlay
//	chain ovl-<vni>:
//	    oifname vx<vni> ether saddr <gateway MAC> ether daddr unicast ip:
//	        ether saddr set <node's router MAC> accept     routed to a peer
//	    ether saddr <gateway MAC> drop            the gateway stays local
//	    ether daddr <gateway MAC> drop
//	    arp sender or target <gateway IP> drop    each node answers for it
//	    udp dport { 67, 68 } drop                 and each node serves DHCP
//	    ether type { arp, ip } accept
//	    drop                                      IPv6, VLAN tags, the rest
//
// Frames from the overlay carry no port mark; bridged to a local
// instance, they pass br_netfilter's forward hook, where fwd_ingress sends
// them through the instance's ingress chain like local traffic.

// VXLANPort is the UDP port of the overlay (IANA's).
const VXLANPort = 4789

// Option configures a Host.
type Option func(*Host)

// WithUnderlay sets the node's underlay address: the source of its VXLAN
// packets and the address the controller gives as Peer.Node for the
// node's own instances. Without it the node joins no overlay and its
// networks stay local.
func WithUnderlay(addr netip.Addr) Option {
	return func(h *Host) { h.underlay = addr.Unmap() }
}

// UnderlayAddr reads a node's underlay address as nodes register it: an
// IP address, optionally with a port.
func UnderlayAddr(s string) (netip.Addr, error) {
	if ap, err := netip.ParseAddrPort(s); err == nil {
		return ap.Addr().Unmap(), nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Addr{}, fmt.Errorf("network: underlay address %q is not an IP address", s)
	}
	return a.Unmap(), nil
}

// VXLANName is a network's VXLAN device on every node (at most 15 bytes).
func VXLANName(vni int) string { return "vx" + strconv.Itoa(vni) }

func overlayChainName(vni int) string { return "ovl-" + strconv.Itoa(vni) }

// mapOverlay sends a frame entering or leaving through a VXLAN device to
// the device's chain.
func mapOverlay() *nftables.Set {
	return &nftables.Set{Table: spoofTable, Name: "overlay", IsMap: true,
		KeyType: nftables.TypeIFName, DataType: nftables.TypeVerdict, KeyByteOrder: binaryutil.NativeEndian}
}

// addOverlayBase declares the overlay map and the rules that look it up;
// addSpoofBase calls it after rewriting the prerouting chain.
func addOverlayBase(b *batch, pre *nftables.Chain) {
	b.addSet(mapOverlay(), nil)
	b.rule(spoofTable, pre, []expr.Any{
		&expr.Meta{Key: expr.MetaKeyIIFNAME, Register: 1},
		&expr.Lookup{SourceRegister: 1, SetName: mapOverlay().Name, IsDestRegSet: true},
	}, "")
	post := b.c.AddChain(&nftables.Chain{Name: "postrouting", Table: spoofTable, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookPostrouting, Priority: nftables.ChainPriorityRef(0)})
	b.c.FlushChain(post)
	b.rule(spoofTable, post, []expr.Any{
		&expr.Meta{Key: expr.MetaKeyOIFNAME, Register: 1},
		&expr.Lookup{SourceRegister: 1, SetName: mapOverlay().Name, IsDestRegSet: true},
	}, "")
}

// addOverlayChain writes a VXLAN device's chain and its map entry.
func addOverlayChain(b *batch, vni int, gwMAC, routerMAC net.HardwareAddr, gwIP netip.Addr) {
	ch := b.regularChain(spoofTable, overlayChainName(vni))
	b.c.FlushChain(ch)
	ip := gwIP.AsSlice()
	b.rule(spoofTable, ch, join(metaCmp(expr.MetaKeyOIFNAME, ifname(VXLANName(vni))),
		payloadCmp(expr.PayloadBaseLLHeader, 6, expr.CmpOpEq, gwMAC),
		etherType(0x0800),
		[]expr.Any{
			payload(expr.PayloadBaseLLHeader, 0, 1),
			&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 1, Mask: []byte{1}, Xor: []byte{0}},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{0}},
			&expr.Immediate{Register: 1, Data: routerMAC},
			&expr.Payload{OperationType: expr.PayloadWrite, SourceRegister: 1, Base: expr.PayloadBaseLLHeader,
				Offset: 6, Len: 6},
			&expr.Counter{}, accept(),
		}), "clipper: routed to another subnet on another node")
	b.rule(spoofTable, ch, join(payloadCmp(expr.PayloadBaseLLHeader, 6, expr.CmpOpEq, gwMAC),
		[]expr.Any{&expr.Counter{}, drop()}), "clipper: the gateway stays on its node")
	b.rule(spoofTable, ch, join(payloadCmp(expr.PayloadBaseLLHeader, 0, expr.CmpOpEq, gwMAC),
		[]expr.Any{&expr.Counter{}, drop()}), "")
	for _, off := range []uint32{14, 24} { // sender, target protocol address
		b.rule(spoofTable, ch, join(etherType(0x0806),
			payloadCmp(expr.PayloadBaseNetworkHeader, 0, expr.CmpOpEq, []byte{0, 1, 8, 0, 6, 4}),
			payloadCmp(expr.PayloadBaseNetworkHeader, off, expr.CmpOpEq, ip),
			[]expr.Any{&expr.Counter{}, drop()}), "")
	}
	for _, port := range []uint16{67, 68} {
		b.rule(spoofTable, ch, join(etherType(0x0800), l4proto(protoUDP),
			payloadCmp(expr.PayloadBaseTransportHeader, 2, expr.CmpOpEq, be16(port)),
			[]expr.Any{&expr.Counter{}, drop()}), "clipper: every node serves DHCP")
	}
	b.rule(spoofTable, ch, join(etherType(0x0806), []expr.Any{accept()}), "")
	b.rule(spoofTable, ch, join(etherType(0x0800), []expr.Any{accept()}), "")
	b.rule(spoofTable, ch, []expr.Any{&expr.Counter{}, drop()}, "")
	b.addElems(mapOverlay(), []nftables.SetElement{{Key: ifname(VXLANName(vni)),
		VerdictData: jump(overlayChainName(vni))}})
}

// delOverlayChain removes what addOverlayChain made.
func delOverlayChain(b *batch, vni int) {
	b.delElems(mapOverlay(), []nftables.SetElement{{Key: ifname(VXLANName(vni))}})
	ch := &nftables.Chain{Name: overlayChainName(vni), Table: spoofTable}
	b.c.FlushChain(ch)
	b.c.DelChain(ch)
}

// ensureOverlay joins a bridge to its network's overlay (vni 0: none):
// rules first, then the VXLAN device, then its forwarding entries (once
// the peers are known). Called with h.mu held.
func (h *Host) ensureOverlay(br *bridgeNet, vni int) error {
	if br.vni != 0 && br.vni != vni {
		if err := h.removeOverlay(br); err != nil {
			return err
		}
	}
	if vni == 0 {
		return nil
	}
	if vni < 0 || vni >= 1<<24 {
		return fmt.Errorf("network: bad VNI %d", vni)
	}
	if !h.underlay.IsValid() || !h.underlay.Is4() {
		if !h.warnedLocal {
			// Fine for a single node (clipper up); with several, their
			// instances cannot reach each other.
			h.log.Info("no IPv4 underlay address: networks stay on this node (set the node's --address to join others)",
				"bridge", br.name)
			h.warnedLocal = true
		}
		return nil
	}
	b, err := newBatch()
	if err != nil {
		return err
	}
	addOverlayChain(b, vni, br.mac, routerMAC(h.underlay), br.gateway.Addr())
	if err := b.commit("overlay rules of " + br.name); err != nil {
		return err
	}
	br.vni = vni
	if err := ensureVXLANLink(VXLANName(vni), vni, h.underlay, br.name, br.mtu); err != nil {
		return err
	}
	// The node routes between a local subnet and a remote one on the
	// same bridge: an ICMP redirect would send the guest looking for the
	// other instance on the link, where its ARP goes unanswered.
	for _, dev := range []string{"all", br.name} {
		if err := os.WriteFile("/proc/sys/net/ipv4/conf/"+dev+"/send_redirects", []byte("0"), 0o644); err != nil {
			return fmt.Errorf("network: no ICMP redirects from %s: %w", dev, err)
		}
	}
	if h.peersKnown {
		return h.syncFDB(br)
	}
	return nil
}

// removeOverlay takes a bridge off its overlay: the VXLAN device goes
// (with its forwarding entries), then its rules.
func (h *Host) removeOverlay(br *bridgeNet) error {
	if br.vni == 0 {
		return nil
	}
	if err := deleteLink(VXLANName(br.vni)); err != nil {
		return err
	}
	if err := h.syncRoutes(br, nil); err != nil {
		return err
	}
	b, err := newBatch()
	if err != nil {
		return err
	}
	delOverlayChain(b, br.vni)
	if err := b.commit("remove overlay of " + br.name); err != nil {
		return err
	}
	br.vni = 0
	return nil
}

// ensureVXLANLink creates (or repairs) a VXLAN device and puts it on the
// bridge: learning off, no group, the node's underlay address as source.
func ensureVXLANLink(name string, vni int, local netip.Addr, bridge string, mtu int) error {
	link, err := netlink.LinkByName(name)
	if err != nil && !isNotFound(err) {
		return fmt.Errorf("network: look up %s: %w", name, err)
	}
	if err == nil {
		vx, ok := link.(*netlink.Vxlan)
		if !ok || vx.VxlanId != vni || vx.Port != VXLANPort || vx.Learning || vx.Group != nil && !vx.Group.IsUnspecified() ||
			!vx.SrcAddr.Equal(local.AsSlice()) {
			if err := netlink.LinkDel(link); err != nil {
				return fmt.Errorf("network: replace %s: %w", name, err)
			}
			link = nil
		}
	} else {
		link = nil
	}
	if link == nil {
		vx := &netlink.Vxlan{LinkAttrs: netlink.LinkAttrs{Name: name, MTU: mtu}, VxlanId: vni,
			SrcAddr: local.AsSlice(), Port: VXLANPort, Learning: false}
		if err := netlink.LinkAdd(vx); err != nil {
			return fmt.Errorf("network: create %s: %w", name, err)
		}
	}
	return attachLink(name, bridge, mtu)
}

// SetPeers implements agent.Network: peers is every live instance of the
// networks the node serves (the node's own included). Each VXLAN device's
// forwarding table is made to hold exactly an entry MAC -> node for every
// instance of its network on another node and an all-zero entry per such
// node; entries of gone instances and nodes are removed. Applying the same
// peers again changes nothing.
func (h *Host) SetPeers(ctx context.Context, peers []nodeproto.Peer) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.peers = append(h.peers[:0:0], peers...)
	h.peersKnown = true
	h.syncDNS()
	var errs []error
	for _, br := range h.bridges {
		if br.vni != 0 {
			errs = append(errs, h.syncFDB(br))
		}
	}
	return errors.Join(errs...)
}

// fdbKey is one forwarding entry of a VXLAN device.
type fdbKey struct {
	mac string
	dst netip.Addr
}

var zeroMAC = net.HardwareAddr{0, 0, 0, 0, 0, 0}

// wantFDB lists the forwarding entries of a network's VXLAN device.
func (h *Host) wantFDB(vni int) map[fdbKey]bool {
	want := map[fdbKey]bool{}
	for _, p := range h.peers {
		if p.Gone || p.VNI != vni || p.Node == "" {
			continue
		}
		dst, err := UnderlayAddr(p.Node)
		if err != nil || !dst.Is4() || dst == h.underlay {
			continue
		}
		mac, err := net.ParseMAC(p.MAC)
		if err != nil || len(mac) != 6 || mac[0]&1 == 1 {
			h.log.Warn("peer with a bad MAC left out of the overlay", "instance", p.ID, "mac", p.MAC)
			continue
		}
		want[fdbKey{mac.String(), dst}] = true
		want[fdbKey{zeroMAC.String(), dst}] = true
	}
	return want
}

// syncFDB makes a VXLAN device's forwarding table what wantFDB says.
func (h *Host) syncFDB(br *bridgeNet) error {
	name := VXLANName(br.vni)
	link, err := netlink.LinkByName(name)
	if err != nil {
		return fmt.Errorf("network: %s: %w", name, err)
	}
	idx := link.Attrs().Index
	want := h.wantFDB(br.vni)
	have, err := netlink.NeighList(idx, unix.AF_BRIDGE)
	if err != nil {
		return fmt.Errorf("network: forwarding table of %s: %w", name, err)
	}
	var errs []error
	added, removed := 0, 0
	for _, n := range have {
		if n.LinkIndex != idx || n.Flags&netlink.NTF_SELF == 0 || n.IP == nil {
			continue // the bridge's own entries for the port
		}
		dst, ok := netip.AddrFromSlice(n.IP)
		k := fdbKey{n.HardwareAddr.String(), dst.Unmap()}
		if ok && want[k] {
			delete(want, k)
			continue
		}
		if err := netlink.NeighDel(&n); err != nil {
			errs = append(errs, fmt.Errorf("network: remove %s -> %s from %s: %w", n.HardwareAddr, n.IP, name, err))
			continue
		}
		removed++
	}
	for k := range want {
		mac, _ := net.ParseMAC(k.mac)
		n := &netlink.Neigh{LinkIndex: idx, Family: unix.AF_BRIDGE, State: netlink.NUD_PERMANENT | netlink.NUD_NOARP,
			Flags: netlink.NTF_SELF, HardwareAddr: mac, IP: k.dst.AsSlice()}
		add := netlink.NeighSet
		if k.mac == zeroMAC.String() {
			add = netlink.NeighAppend // one entry per node: replication
		}
		if err := add(n); err != nil {
			errs = append(errs, fmt.Errorf("network: add %s -> %s to %s: %w", k.mac, k.dst, name, err))
			continue
		}
		added++
	}
	if added+removed > 0 {
		h.log.Info("overlay forwarding updated", "device", name, "added", added, "removed", removed)
	}
	errs = append(errs, h.syncRoutes(br, h.wantRoutes(br)))
	return errors.Join(errs...)
}

// routeProto marks the routes Clipper adds (rtnetlink protocol number).
const routeProto netlink.RouteProtocol = 0xc1

// routerMAC is the source MAC of frames a node routes into the overlay:
// locally administered, one per node.
func routerMAC(underlay netip.Addr) net.HardwareAddr {
	sum := sha256.Sum256([]byte("clipper-router:" + underlay.String()))
	mac := net.HardwareAddr(sum[:6])
	mac[0] = mac[0]&0xfc | 0x02
	return mac
}

// wantRoutes lists the instances of the bridge's network on other nodes
// that are outside the bridge's subnet: the node routes to them.
func (h *Host) wantRoutes(br *bridgeNet) map[netip.Addr]string {
	want := map[netip.Addr]string{}
	for _, p := range h.peers {
		if p.Gone || p.VNI != br.vni || p.Node == "" {
			continue
		}
		dst, err := UnderlayAddr(p.Node)
		if err != nil || dst == h.underlay {
			continue
		}
		ip, err := netip.ParseAddr(p.IP)
		mac, err2 := net.ParseMAC(p.MAC)
		if err != nil || err2 != nil || !ip.Is4() || br.gateway.Contains(ip) {
			continue
		}
		want[ip] = mac.String()
	}
	return want
}

// syncRoutes makes the bridge's /32 routes (protocol routeProto) and
// permanent neighbour entries exactly want (address -> MAC).
func (h *Host) syncRoutes(br *bridgeNet, want map[netip.Addr]string) error {
	link, err := netlink.LinkByName(br.name)
	if err != nil {
		return fmt.Errorf("network: %s: %w", br.name, err)
	}
	idx := link.Attrs().Index
	var errs []error
	routes, err := netlink.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{LinkIndex: idx, Protocol: routeProto},
		netlink.RT_FILTER_OIF|netlink.RT_FILTER_PROTOCOL)
	if err != nil {
		return fmt.Errorf("network: routes of %s: %w", br.name, err)
	}
	haveRoute := map[netip.Addr]bool{}
	for _, r := range routes {
		a, ok := netip.AddrFromSlice(r.Dst.IP)
		ones, _ := r.Dst.Mask.Size()
		if _, wanted := want[a.Unmap()]; ok && ones == 32 && wanted {
			haveRoute[a.Unmap()] = true
			continue
		}
		if err := netlink.RouteDel(&r); err != nil {
			errs = append(errs, fmt.Errorf("network: remove route %s: %w", r.Dst, err))
		}
	}
	neighs, err := netlink.NeighList(idx, netlink.FAMILY_V4)
	if err != nil {
		return fmt.Errorf("network: neighbours of %s: %w", br.name, err)
	}
	haveNeigh := map[netip.Addr]bool{}
	for _, n := range neighs {
		if n.State&netlink.NUD_PERMANENT == 0 {
			continue
		}
		a, ok := netip.AddrFromSlice(n.IP)
		if mac, wanted := want[a.Unmap()]; ok && wanted && mac == n.HardwareAddr.String() {
			haveNeigh[a.Unmap()] = true
			continue
		}
		if err := netlink.NeighDel(&n); err != nil {
			errs = append(errs, fmt.Errorf("network: remove neighbour %s: %w", n.IP, err))
		}
	}
	for ip, m := range want {
		if !haveNeigh[ip] {
			mac, _ := net.ParseMAC(m)
			if err := netlink.NeighSet(&netlink.Neigh{LinkIndex: idx, Family: netlink.FAMILY_V4, State: netlink.NUD_PERMANENT,
				IP: ip.AsSlice(), HardwareAddr: mac}); err != nil {
				errs = append(errs, fmt.Errorf("network: neighbour %s on %s: %w", ip, br.name, err))
			}
		}
		if !haveRoute[ip] {
			if err := netlink.RouteReplace(&netlink.Route{LinkIndex: idx, Dst: prefixNet(netip.PrefixFrom(ip, 32)),
				Scope: netlink.SCOPE_LINK, Protocol: routeProto}); err != nil {
				errs = append(errs, fmt.Errorf("network: route to %s on %s: %w", ip, br.name, err))
			}
		}
	}
	return errors.Join(errs...)
}

// adoptOverlay finds the VXLAN device a previous agent put on an adopted
// bridge. Its forwarding entries stay as they are until SetPeers.
func (h *Host) adoptOverlay(br *bridgeNet) error {
	brLink, err := netlink.LinkByName(br.name)
	if err != nil {
		return err
	}
	links, err := netlink.LinkList()
	if err != nil {
		return err
	}
	for _, l := range links {
		vx, ok := l.(*netlink.Vxlan)
		if !ok || vx.MasterIndex != brLink.Attrs().Index || vx.Name != VXLANName(vx.VxlanId) {
			continue
		}
		br.vni = vx.VxlanId
		if h.underlay.IsValid() {
			return h.ensureOverlay(br, vx.VxlanId)
		}
		return nil
	}
	return nil
}

// gatewayMAC is the bridge MAC of a network: the controller's (the same on
// every node) or, from an older controller, one derived from the bridge.
func gatewayMAC(n nodeproto.Network) (net.HardwareAddr, error) {
	if n.GatewayMAC == "" {
		return bridgeMAC(n.Bridge), nil
	}
	mac, err := net.ParseMAC(n.GatewayMAC)
	if err != nil || len(mac) != 6 || mac[0]&1 == 1 || strings.EqualFold(n.GatewayMAC, zeroMAC.String()) {
		return nil, fmt.Errorf("network: bad gateway MAC %q", n.GatewayMAC)
	}
	return mac, nil
}
