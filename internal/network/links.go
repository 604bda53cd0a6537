package network

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// bridgeMAC is a stable, locally administered MAC for a bridge: without
// one the bridge takes the lowest MAC of its ports, which changes as ports
// come and go and leaves guests with a stale gateway in their ARP cache.
func bridgeMAC(name string) net.HardwareAddr {
	sum := sha256.Sum256([]byte("clipper-bridge:" + name))
	mac := net.HardwareAddr(sum[:6])
	mac[0] = mac[0]&0xfc | 0x02 // unicast, locally administered
	return mac
}

func isNotFound(err error) bool {
	var nf netlink.LinkNotFoundError
	return errors.As(err, &nf) || errors.Is(err, unix.ENODEV)
}

// ensureBridgeLink creates the bridge if needed, sets its MAC (nil: keep
// the MAC of an existing bridge), MTU and gateway address (removing old,
// the previous gateway, if it changed), and brings it up. It returns the
// bridge's MAC.
func ensureBridgeLink(name string, gw, old netip.Prefix, mtu int, mac net.HardwareAddr) (net.HardwareAddr, error) {
	link, err := netlink.LinkByName(name)
	if err == nil && mac == nil {
		mac = link.Attrs().HardwareAddr
	}
	if mac == nil {
		mac = bridgeMAC(name)
	}
	if err != nil {
		if !isNotFound(err) {
			return nil, fmt.Errorf("network: look up bridge %s: %w", name, err)
		}
		br := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: name, MTU: mtu, HardwareAddr: mac}}
		if err := netlink.LinkAdd(br); err != nil {
			return nil, fmt.Errorf("network: create bridge %s: %w", name, err)
		}
		if link, err = netlink.LinkByName(name); err != nil {
			return nil, err
		}
	}
	if link.Type() != "bridge" {
		return nil, fmt.Errorf("network: %s exists and is a %s, not a bridge", name, link.Type())
	}
	if link.Attrs().HardwareAddr.String() != mac.String() {
		if err := netlink.LinkSetHardwareAddr(link, mac); err != nil {
			return nil, fmt.Errorf("network: set MAC of %s: %w", name, err)
		}
	}
	if link.Attrs().MTU != mtu {
		if err := netlink.LinkSetMTU(link, mtu); err != nil {
			return nil, fmt.Errorf("network: set MTU of %s: %w", name, err)
		}
	}
	if old.IsValid() && old != gw {
		_ = netlink.AddrDel(link, &netlink.Addr{IPNet: prefixNet(old)})
	}
	if err := netlink.AddrReplace(link, &netlink.Addr{IPNet: prefixNet(gw)}); err != nil {
		return nil, fmt.Errorf("network: address %s on %s: %w", gw, name, err)
	}
	if err := netlink.LinkSetUp(link); err != nil {
		return nil, fmt.Errorf("network: bring up %s: %w", name, err)
	}
	return mac, nil
}

func prefixNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}

// ensureTap creates a persistent tap on the bridge. QEMU opens it by name;
// it survives QEMU and agent restarts until Detach deletes it.
func ensureTap(name, bridge string, mtu int) error {
	if _, err := netlink.LinkByName(name); err != nil {
		if !isNotFound(err) {
			return fmt.Errorf("network: look up %s: %w", name, err)
		}
		tap := &netlink.Tuntap{
			LinkAttrs: netlink.LinkAttrs{Name: name, MTU: mtu},
			Mode:      netlink.TUNTAP_MODE_TAP,
			Flags:     netlink.TUNTAP_NO_PI | netlink.TUNTAP_VNET_HDR,
			Queues:    1,
		}
		if err := netlink.LinkAdd(tap); err != nil {
			return fmt.Errorf("network: create tap %s: %w", name, err)
		}
		// LinkAdd for a tun/tap keeps the queue file open; persistence
		// keeps the device once it is closed.
		for _, f := range tap.Fds {
			f.Close()
		}
	}
	return attachLink(name, bridge, mtu)
}

// attachLink puts an existing device on the bridge with the network's MTU
// and brings it up.
func attachLink(name, bridge string, mtu int) error {
	br, err := netlink.LinkByName(bridge)
	if err != nil {
		return fmt.Errorf("network: bridge %s: %w", bridge, err)
	}
	link, err := netlink.LinkByName(name)
	if err != nil {
		return fmt.Errorf("network: device %s: %w", name, err)
	}
	if link.Attrs().MTU != mtu {
		if err := netlink.LinkSetMTU(link, mtu); err != nil {
			return fmt.Errorf("network: set MTU of %s: %w", name, err)
		}
	}
	if link.Attrs().MasterIndex != br.Attrs().Index {
		if err := netlink.LinkSetMaster(link, br); err != nil {
			return fmt.Errorf("network: attach %s to %s: %w", name, bridge, err)
		}
	}
	if err := netlink.LinkSetUp(link); err != nil {
		return fmt.Errorf("network: bring up %s: %w", name, err)
	}
	return nil
}

// releaseLink takes a device off its bridge; a missing device is not an
// error.
func releaseLink(name string) error {
	link, err := netlink.LinkByName(name)
	if err != nil {
		if isNotFound(err) {
			return nil
		}
		return err
	}
	if link.Attrs().MasterIndex == 0 {
		return nil
	}
	if err := netlink.LinkSetNoMaster(link); err != nil && !isNotFound(err) {
		// The device can vanish between the lookup and the change (a
		// tap goes with its QEMU, a veth with its peer's namespace).
		return fmt.Errorf("network: take %s off its bridge: %w", name, err)
	}
	return nil
}

// deleteLink removes a device; a missing device is not an error.
func deleteLink(name string) error {
	link, err := netlink.LinkByName(name)
	if err != nil {
		if isNotFound(err) {
			return nil
		}
		return err
	}
	if err := netlink.LinkDel(link); err != nil && !isNotFound(err) {
		return fmt.Errorf("network: delete %s: %w", name, err)
	}
	return nil
}

// addMetadataAddrs makes the metadata addresses local to the node (on the
// loopback device), so a guest's packets for them, sent to its gateway,
// are delivered to the metadata service. The IPv6 address is skipped (with
// a warning) when the node has IPv6 turned off.
func addMetadataAddrs(log *slog.Logger) error {
	lo, err := netlink.LinkByName("lo")
	if err != nil {
		return fmt.Errorf("network: loopback: %w", err)
	}
	if err := netlink.LinkSetUp(lo); err != nil {
		return fmt.Errorf("network: bring up lo: %w", err)
	}
	if err := netlink.AddrReplace(lo, &netlink.Addr{IPNet: prefixNet(netip.PrefixFrom(MetadataIPv4, 32))}); err != nil {
		return fmt.Errorf("network: metadata address %s on lo: %w", MetadataIPv4, err)
	}
	if !ipv6On() {
		log.Warn("IPv6 is off: no IPv6 metadata address", "address", MetadataIPv6)
		return nil
	}
	v6 := &netlink.Addr{IPNet: prefixNet(netip.PrefixFrom(MetadataIPv6, 128)), Flags: unix.IFA_F_NODAD}
	if err := netlink.AddrReplace(lo, v6); err != nil {
		log.Warn("no IPv6 metadata address", "address", MetadataIPv6, "error", err)
	}
	return nil
}

// ipv6On reports whether the node has IPv6.
func ipv6On() bool {
	_, err := os.Stat("/proc/sys/net/ipv6")
	return err == nil
}
