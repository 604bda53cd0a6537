package network

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sort"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Bridged mode (Network.Uplink): the instance's tap joins an existing host
// bridge, so the instance is a host on that LAN and the LAN's router
// (Network.Gateway) is its gateway. Clipper puts no address on the bridge,
// changes none of its settings, adds no NAT and never deletes it. Only an
// existing bridge is supported: enslaving a plain interface would move the
// node's own address into a new bridge and can cut the node off its
// network, so Clipper refuses and names the device.
//
// What still applies: the anti-spoofing chain (keyed on the tap) and the
// security groups (egress by the port's mark, ingress by bridge and
// address, both in the forward hook through br_netfilter). The host
// bridge is not one of Clipper's networks (not in the filter's bridges
// set): the rules for traffic between networks and from instances to the
// node do not apply to the LAN. The DHCP server on the bridge answers only
// the instances' MACs, naming the node's own address on the bridge as its
// server; the table below keeps the instances' DHCP requests and any IPv6
// from crossing between their taps and the LAN:
//
//	table bridge clipper_uplink
//	chain forward hook forward prio filter:
//	    iifname <tap> udp dport 67 drop      our server answers; no other may
//	    oifname <tap> ether type ip6 drop    instances have no IPv6 yet
//	    iifname <tap> ether type ip6 drop
//
// The guest sends its metadata requests to the LAN's router (the route to
// 169.254.169.254 goes through its gateway); a prerouting chain hands them
// to the node instead, before the bridge forwards them:
//
//	chain prerouting hook prerouting prio -190 (after anti-spoofing):
//	    iifname <tap> ip daddr 169.254.169.254 tcp dport 80
//	        ether daddr set <bridge MAC> meta pkttype set host
//
// so they reach the metadata service on the node's loopback address with
// the port's mark, as in routed mode; the answers go back over the bridge
// (the node needs an address on the LAN, as the classic recipe gives it).
// Elastic IPs are ignored (the instance has a LAN address already).
const UplinkTable = "clipper_uplink"

var uplinkTable = &nftables.Table{Family: nftables.TableFamilyBridge, Name: UplinkTable}

// ensureHostBridge prepares bridged mode on an existing host bridge: its
// DHCP server (for the instances' MACs only). The bridge itself is left
// as it is.
func (h *Host) ensureHostBridge(name string, gw netip.Prefix, mtu int) (*bridgeNet, error) {
	link, err := netlink.LinkByName(name)
	if err != nil {
		return nil, fmt.Errorf("network: uplink %s: %w", name, err)
	}
	if link.Type() != "bridge" {
		return nil, fmt.Errorf("network: uplink %s is a %s, not a bridge: bridged mode attaches instances to an existing "+
			"host bridge (moving %s into a new bridge would move the node's own address)", name, link.Type(), name)
	}
	if mtu == 0 {
		mtu = link.Attrs().MTU
	}
	br := h.bridges[name]
	if br != nil && !br.external {
		return nil, fmt.Errorf("network: uplink %s is one of Clipper's own bridges", name)
	}
	if br == nil {
		srv, err := startDHCP(name, gw, mtu, h.log)
		if err != nil {
			return nil, err
		}
		br = &bridgeNet{name: name, dhcp: srv, external: true}
		h.bridges[name] = br
		h.log.Info("host bridge in use (bridged mode)", "bridge", name, "gateway", gw)
	}
	br.gateway, br.mtu = gw, mtu
	br.dhcp.setNetwork(gw, mtu)
	br.dhcp.setServerID(bridgeAddrIn(link, gw))
	return br, nil
}

// bridgeAddrIn returns the bridge's own IPv4 address in gw's subnet, or
// an invalid address.
func bridgeAddrIn(link netlink.Link, gw netip.Prefix) netip.Addr {
	addrs, err := netlink.AddrList(link, netlink.FAMILY_V4)
	if err != nil {
		return netip.Addr{}
	}
	for _, a := range addrs {
		if ip, ok := netip.AddrFromSlice(a.IP); ok && gw.Masked().Contains(ip.Unmap()) {
			return ip.Unmap()
		}
	}
	return netip.Addr{}
}

// applyUplinkPorts rewrites the bridged-mode table for the bridged ports
// the host has. Called with h.mu held.
func (h *Host) applyUplinkPorts() error {
	var devs []string
	var ports []*port
	for _, p := range h.ports {
		if p.uplink {
			devs = append(devs, p.dev)
			ports = append(ports, p)
		}
	}
	sort.Strings(devs)
	sort.Slice(ports, func(i, j int) bool { return ports[i].dev < ports[j].dev })
	b, err := newBatch()
	if err != nil {
		return err
	}
	c := b.c
	c.AddTable(uplinkTable)
	fwd := c.AddChain(baseChain(uplinkTable, "forward", nftables.ChainHookForward, *nftables.ChainPriorityFilter))
	c.FlushChain(fwd)
	pre := c.AddChain(baseChain(uplinkTable, "prerouting", nftables.ChainHookPrerouting, *nftables.ChainPriorityRef(-190)))
	c.FlushChain(pre)
	ip6 := etherType(unix.ETH_P_IPV6)
	for _, p := range ports {
		link, err := netlink.LinkByName(p.bridge)
		if err != nil {
			return fmt.Errorf("network: uplink %s: %w", p.bridge, err)
		}
		b.rule(uplinkTable, pre, metadataToHost(p.dev, link.Attrs().HardwareAddr), "")
	}
	for _, dev := range devs {
		in := metaCmp(expr.MetaKeyIIFNAME, ifname(dev))
		b.rule(uplinkTable, fwd, join(in, etherType(unix.ETH_P_IP), l4proto(protoUDP),
			payloadCmp(expr.PayloadBaseTransportHeader, 2, expr.CmpOpEq, be16(67)),
			[]expr.Any{&expr.Counter{}, drop()}), "")
		b.rule(uplinkTable, fwd, join(metaCmp(expr.MetaKeyOIFNAME, ifname(dev)), ip6, []expr.Any{&expr.Counter{}, drop()}), "")
		b.rule(uplinkTable, fwd, join(in, ip6, []expr.Any{&expr.Counter{}, drop()}), "")
	}
	return b.commit("bridged-mode rules")
}

// metadataToHost delivers a port's metadata requests to the node: the
// frame is readdressed to the bridge's own MAC and marked for the host.
func metadataToHost(dev string, bridgeMAC net.HardwareAddr) []expr.Any {
	return join(metaCmp(expr.MetaKeyIIFNAME, ifname(dev)), etherType(unix.ETH_P_IP),
		payloadCmp(expr.PayloadBaseNetworkHeader, 16, expr.CmpOpEq, MetadataIPv4.AsSlice()),
		l4proto(protoTCP), payloadCmp(expr.PayloadBaseTransportHeader, 2, expr.CmpOpEq, be16(80)),
		[]expr.Any{
			&expr.Immediate{Register: 1, Data: bridgeMAC},
			&expr.Payload{OperationType: expr.PayloadWrite, SourceRegister: 1, Base: expr.PayloadBaseLLHeader, Offset: 0, Len: 6},
			&expr.Immediate{Register: 1, Data: []byte{unix.PACKET_HOST}},
			&expr.Meta{Key: expr.MetaKeyPKTTYPE, SourceRegister: true, Register: 1},
			&expr.Counter{},
		})
}

// deleteUplinkTable removes the bridged-mode table; a missing one is fine.
func deleteUplinkTable() error {
	c, err := nftables.New()
	if err != nil {
		return err
	}
	tables, err := c.ListTablesOfFamily(nftables.TableFamilyBridge)
	if err != nil {
		return err
	}
	for _, t := range tables {
		if t.Name == UplinkTable {
			c.DelTable(t)
			if err := c.Flush(); err != nil {
				return errors.Join(errors.New("network: delete the bridged-mode table"), err)
			}
		}
	}
	return nil
}
