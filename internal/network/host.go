// Package network sets up instance networking on a node: a Linux bridge per
// network with the gateway address, a persistent tap per instance, outbound
// NAT with nftables, and a DHCP server on each bridge that hands every known
// MAC its fixed address and the network's true MTU.
package network

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"strings"
	"sync"

	"github.com/clipper-cloud/clipper/internal/nodeproto"
)

// Host is the node's instance networking. It implements agent.Network.
type Host struct {
	log *slog.Logger
	dns []netip.Addr

	mu      sync.Mutex
	bridges map[string]*bridgeNet // by bridge name
	ports   map[string]port       // by instance ID
	nat     natRules
}

// port is one instance's attachment.
type port struct {
	bridge string
	tap    string
	mac    string
}

// bridgeNet is one network's bridge on this node.
type bridgeNet struct {
	name    string
	gateway netip.Prefix
	mtu     int
	dhcp    *dhcpServer
}

// New prepares the host for instance networking: it turns on IP forwarding
// and pins bridge-nf-call-iptables to 1 (so bridged traffic meets nftables),
// and fails with a clear error if it cannot.
func New(log *slog.Logger) (*Host, error) {
	for path, want := range map[string]string{
		"/proc/sys/net/ipv4/ip_forward":                 "1",
		"/proc/sys/net/bridge/bridge-nf-call-iptables":  "1",
		"/proc/sys/net/bridge/bridge-nf-call-ip6tables": "1",
	} {
		if err := pinSysctl(path, want); err != nil {
			return nil, err
		}
	}
	return &Host{log: log.With("component", "network"), dns: hostResolvers(), bridges: map[string]*bridgeNet{}, ports: map[string]port{}, nat: natRules{}}, nil
}

func pinSysctl(path, want string) error {
	if err := os.WriteFile(path, []byte(want), 0o644); err != nil {
		return fmt.Errorf("network: cannot set %s to %s: %w (the node agent needs root and a kernel with bridge netfilter)", path, want, err)
	}
	got, err := os.ReadFile(path)
	if err != nil || strings.TrimSpace(string(got)) != want {
		return fmt.Errorf("network: %s did not stay at %s", path, want)
	}
	return nil
}

// hostResolvers reads the host's non-loopback name servers to hand to
// guests by DHCP.
func hostResolvers() []netip.Addr {
	b, err := os.ReadFile("/etc/resolv.conf")
	if err != nil {
		return nil
	}
	var out []netip.Addr
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) == 2 && f[0] == "nameserver" {
			if a, err := netip.ParseAddr(f[1]); err == nil && a.Is4() && !a.IsLoopback() {
				out = append(out, a)
			}
		}
	}
	return out
}

// TapName is the tap device of an instance (at most 15 bytes).
func TapName(instanceID string) string {
	id := strings.TrimPrefix(instanceID, "i-")
	if len(id) > 12 {
		id = id[len(id)-12:]
	}
	return "tap" + id
}

// Attach implements agent.Network.
func (h *Host) Attach(ctx context.Context, id string, n nodeproto.Network) (nodeproto.Port, error) {
	gw, err := netip.ParsePrefix(n.Gateway)
	if err != nil || !gw.Addr().Is4() {
		return nodeproto.Port{}, fmt.Errorf("network: bad gateway %q", n.Gateway)
	}
	ip, err := netip.ParseAddr(n.PrivateIP)
	if err != nil || !gw.Contains(ip) {
		return nodeproto.Port{}, fmt.Errorf("network: address %q is not in %s", n.PrivateIP, gw)
	}
	mtu := n.MTU
	if mtu == 0 {
		mtu = 1500
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	br, err := h.ensureBridge(n.Bridge, gw, mtu)
	if err != nil {
		return nodeproto.Port{}, err
	}
	tap := TapName(id)
	if err := ensureTap(tap, n.Bridge, mtu); err != nil {
		return nodeproto.Port{}, err
	}
	dns := h.dns
	if len(dns) == 0 {
		dns = []netip.Addr{gw.Addr()}
	}
	br.dhcp.setLease(n.MAC, lease{ip: ip, hostname: hostname(ip), dns: dns})
	h.ports[id] = port{bridge: n.Bridge, tap: tap, mac: n.MAC}
	return nodeproto.Port{Tap: tap}, nil
}

// SetGroups implements agent.Network. Security groups are not enforced
// yet: the skeleton network accepts the definitions and ignores them.
func (h *Host) SetGroups(ctx context.Context, groups []nodeproto.SecurityGroup, full bool) error {
	return nil
}

// Detach implements agent.Network.
func (h *Host) Detach(ctx context.Context, id string) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	p, ok := h.ports[id]
	tap := TapName(id)
	if ok {
		if br := h.bridges[p.bridge]; br != nil {
			br.dhcp.removeLease(p.mac)
		}
		delete(h.ports, id)
	}
	return deleteLink(tap)
}

func hostname(ip netip.Addr) string {
	return "ip-" + strings.ReplaceAll(ip.String(), ".", "-")
}

// ensureBridge creates (or adopts) a network's bridge, its gateway address,
// NAT and DHCP server.
func (h *Host) ensureBridge(name string, gw netip.Prefix, mtu int) (*bridgeNet, error) {
	if br, ok := h.bridges[name]; ok && br.gateway == gw && br.mtu == mtu {
		return br, nil
	}
	if err := ensureBridgeLink(name, gw, mtu); err != nil {
		return nil, err
	}
	h.nat[name] = gw.Masked()
	if err := h.nat.apply(); err != nil {
		return nil, err
	}
	br := h.bridges[name]
	if br == nil {
		srv, err := startDHCP(name, gw, mtu, h.log)
		if err != nil {
			return nil, err
		}
		br = &bridgeNet{name: name, dhcp: srv}
		h.bridges[name] = br
	}
	br.gateway, br.mtu = gw, mtu
	br.dhcp.setNetwork(gw, mtu)
	h.log.Info("bridge ready", "bridge", name, "gateway", gw, "mtu", mtu)
	return br, nil
}

// Close stops the DHCP servers. Bridges, taps and NAT stay, so running VMs
// keep their network while the agent restarts.
func (h *Host) Close() error {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, br := range h.bridges {
		br.dhcp.close()
	}
	return nil
}
