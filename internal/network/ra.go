package network

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"syscall"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/net/ipv6"
	"golang.org/x/sys/unix"
)

// IPv6 metadata: instances have no IPv6 addresses, only their link-local
// one (fe80::/64, EUI-64 from the MAC, the kernel's default), and that is
// enough to reach the metadata service at [fd00:ec2::254]. Each network's
// bridge carries fd00:ec2::254 (so it answers neighbour solicitations for
// it) and sends router advertisements that make fd00:ec2::/64 on-link
// (prefix information, on-link flag only: no address autoconfiguration)
// and give the network's MTU, with a router lifetime of 0: the node is no
// IPv6 default router, so instances get no IPv6 route but this one. The
// anti-spoofing chain lets IPv6 from an instance's own link-local address
// (or from :: for duplicate address detection) to link-local, link-scope
// multicast and the metadata address only, and drops router
// advertisements and redirects from instances.

// metadataPrefix is the on-link prefix the advertisements announce.
var metadataPrefix = netip.MustParsePrefix("fd00:ec2::/64")

// raInterval is how often a bridge advertises unsolicited; raLifetime is
// how long an instance keeps the on-link route without hearing one.
const (
	raInterval = time.Minute
	raLifetime = 30 * time.Minute
)

// linkLocal is the EUI-64 link-local address of a MAC.
func linkLocal(mac net.HardwareAddr) netip.Addr {
	var a [16]byte
	a[0], a[1] = 0xfe, 0x80
	a[8], a[9], a[10], a[11] = mac[0]^0x02, mac[1], mac[2], 0xff
	a[12], a[13], a[14], a[15] = 0xfe, mac[3], mac[4], mac[5]
	return netip.AddrFrom16(a)
}

// routerAdvert builds the advertisement (ICMPv6 type 134; the kernel
// fills in the checksum).
func routerAdvert(mac net.HardwareAddr, mtu int) []byte {
	b := []byte{134, 0, 0, 0, 64, 0, 0, 0} // hop limit 64, no flags, router lifetime 0
	b = append(b, make([]byte, 8)...)      // reachable time, retransmit timer: unspecified
	b = append(b, 1, 1)                    // source link-layer address
	b = append(b, mac...)
	b = append(b, 5, 1, 0, 0) // MTU
	b = binary.BigEndian.AppendUint32(b, uint32(mtu))
	b = append(b, 3, 4, byte(metadataPrefix.Bits()), 0x80) // prefix information, on-link only
	life := uint32(raLifetime / time.Second)
	b = binary.BigEndian.AppendUint32(b, life)
	b = binary.BigEndian.AppendUint32(b, life)
	b = append(b, 0, 0, 0, 0)
	a := metadataPrefix.Addr().As16()
	return append(b, a[:]...)
}

// raSender advertises on one bridge: every raInterval and in answer to
// router solicitations.
type raSender struct {
	cancel context.CancelFunc
	done   chan struct{}
}

// startRA starts advertising on a bridge. Without IPv6 it logs that and
// returns nil (no IPv6 metadata on this node).
func startRA(bridge string, mac net.HardwareAddr, mtu int, log *slog.Logger) *raSender {
	log = log.With("ra", bridge)
	ifi, err := net.InterfaceByName(bridge)
	if err != nil {
		log.Warn("no router advertisements", "error", err)
		return nil
	}
	lc := net.ListenConfig{Control: func(_, _ string, c syscall.RawConn) error {
		var serr error
		err := c.Control(func(fd uintptr) { serr = unix.BindToDevice(int(fd), bridge) })
		return errors.Join(err, serr)
	}}
	conn, err := lc.ListenPacket(context.Background(), "ip6:ipv6-icmp", "::")
	if err != nil {
		log.Warn("no router advertisements: no IPv6 metadata on this network", "error", err)
		return nil
	}
	pc := ipv6.NewPacketConn(conn)
	var f ipv6.ICMPFilter
	f.SetAll(true)
	f.Accept(ipv6.ICMPTypeRouterSolicitation)
	err = errors.Join(pc.SetICMPFilter(&f), pc.SetMulticastHopLimit(255), pc.SetHopLimit(255),
		pc.SetMulticastInterface(ifi), pc.JoinGroup(ifi, &net.IPAddr{IP: net.ParseIP("ff02::2")}))
	if err != nil {
		conn.Close()
		log.Warn("no router advertisements", "error", err)
		return nil
	}
	ctx, cancel := context.WithCancel(context.Background())
	s := &raSender{cancel: cancel, done: make(chan struct{})}
	msg := routerAdvert(mac, mtu)
	all := &net.IPAddr{IP: net.ParseIP("ff02::1"), Zone: bridge}
	send := func() {
		if _, err := pc.WriteTo(msg, &ipv6.ControlMessage{HopLimit: 255, IfIndex: ifi.Index}, all); err != nil {
			log.Debug("router advertisement", "error", err)
		}
	}
	solicited := make(chan struct{}, 1)
	go func() {
		buf := make([]byte, 1500)
		for {
			if _, _, _, err := pc.ReadFrom(buf); err != nil {
				return // closed
			}
			select {
			case solicited <- struct{}{}:
			default:
			}
		}
	}()
	go func() {
		defer close(s.done)
		defer conn.Close()
		t := time.NewTicker(raInterval)
		defer t.Stop()
		send()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			case <-solicited:
				// At most one answer per solicitation burst.
				time.Sleep(50 * time.Millisecond)
			}
			send()
		}
	}()
	return s
}

func (s *raSender) stop() {
	if s == nil {
		return
	}
	s.cancel()
	<-s.done
}

// metadataOnBridge puts the IPv6 metadata address on a network's bridge
// (no duplicate address detection: every node's bridge has it), so the
// bridge answers neighbour solicitations for it.
func metadataOnBridge(name string) error {
	link, err := netlink.LinkByName(name)
	if err != nil {
		return fmt.Errorf("network: %s: %w", name, err)
	}
	a := &netlink.Addr{IPNet: prefixNet(netip.PrefixFrom(MetadataIPv6, 128)), Flags: unix.IFA_F_NODAD}
	if err := netlink.AddrReplace(link, a); err != nil {
		return fmt.Errorf("network: IPv6 metadata address on %s: %w", name, err)
	}
	return nil
}
