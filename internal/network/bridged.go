package network

import (
	"errors"
	"fmt"
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
// The instance metadata service is not reachable in bridged mode (the
// guest sends 169.254.169.254 to the LAN's router), and elastic IPs are
// ignored (the instance has a LAN address already).
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
	for _, p := range h.ports {
		if p.uplink {
			devs = append(devs, p.dev)
		}
	}
	sort.Strings(devs)
	b, err := newBatch()
	if err != nil {
		return err
	}
	c := b.c
	c.AddTable(uplinkTable)
	fwd := c.AddChain(baseChain(uplinkTable, "forward", nftables.ChainHookForward, *nftables.ChainPriorityFilter))
	c.FlushChain(fwd)
	ip6 := etherType(unix.ETH_P_IPV6)
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
