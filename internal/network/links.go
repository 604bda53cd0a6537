package network

import (
	"errors"
	"fmt"
	"net"
	"net/netip"

	"github.com/vishvananda/netlink"
)

// ensureBridgeLink creates the bridge if needed, sets its MTU and gateway
// address, and brings it up.
func ensureBridgeLink(name string, gw netip.Prefix, mtu int) error {
	link, err := netlink.LinkByName(name)
	if err != nil {
		var nf netlink.LinkNotFoundError
		if !errors.As(err, &nf) {
			return fmt.Errorf("network: look up bridge %s: %w", name, err)
		}
		br := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: name, MTU: mtu}}
		if err := netlink.LinkAdd(br); err != nil {
			return fmt.Errorf("network: create bridge %s: %w", name, err)
		}
		if link, err = netlink.LinkByName(name); err != nil {
			return err
		}
	}
	if link.Type() != "bridge" {
		return fmt.Errorf("network: %s exists and is a %s, not a bridge", name, link.Type())
	}
	if link.Attrs().MTU != mtu {
		if err := netlink.LinkSetMTU(link, mtu); err != nil {
			return fmt.Errorf("network: set MTU of %s: %w", name, err)
		}
	}
	addr := &netlink.Addr{IPNet: &net.IPNet{IP: gw.Addr().AsSlice(), Mask: net.CIDRMask(gw.Bits(), 32)}}
	if err := netlink.AddrReplace(link, addr); err != nil {
		return fmt.Errorf("network: address %s on %s: %w", gw, name, err)
	}
	if err := netlink.LinkSetUp(link); err != nil {
		return fmt.Errorf("network: bring up %s: %w", name, err)
	}
	return nil
}

// ensureTap creates a persistent tap on the bridge. QEMU opens it by name;
// it survives QEMU and agent restarts until Detach deletes it.
func ensureTap(name, bridge string, mtu int) error {
	br, err := netlink.LinkByName(bridge)
	if err != nil {
		return fmt.Errorf("network: bridge %s: %w", bridge, err)
	}
	link, err := netlink.LinkByName(name)
	if err != nil {
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
		if link, err = netlink.LinkByName(name); err != nil {
			return err
		}
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

// deleteLink removes a device; a missing device is not an error.
func deleteLink(name string) error {
	link, err := netlink.LinkByName(name)
	if err != nil {
		var nf netlink.LinkNotFoundError
		if errors.As(err, &nf) {
			return nil
		}
		return err
	}
	if err := netlink.LinkDel(link); err != nil {
		return fmt.Errorf("network: delete %s: %w", name, err)
	}
	return nil
}
