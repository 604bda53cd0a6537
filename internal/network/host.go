// Package network sets up instance networking on a node: a Linux bridge
// per network with its gateway address, outbound NAT, a DHCP server that
// hands every known MAC its fixed address and the network's true MTU, a
// DNS service on the gateway (package dnsd, dns.go) and router
// advertisements for the IPv6 metadata address (ra.go); a
// persistent tap per instance; stateful security groups (nftables, inet
// family, keyed on the instance's mark and address); MAC/IP/ARP
// anti-spoofing (bridge family), which also marks every packet with its
// port's mark so the metadata service knows who is asking; TCP MSS
// clamping; and the sysctls all of this depends on.
//
// The kernel holds the state: a restarted agent adopts the ports it finds
// (their records ride in nftables rule comments) and running VMs keep
// their network meanwhile.
package network

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"slices"
	"strings"
	"sync"

	"github.com/clipper-cloud/clipper/internal/dnsd"
	"github.com/clipper-cloud/clipper/internal/nodeproto"
	"github.com/clipper-cloud/clipper/internal/undo"
)

// Host is the node's instance networking. It implements agent.Network.
type Host struct {
	log     *slog.Logger
	hostDNS []netip.Addr
	guard   *sysctlGuard
	dnsCfg  dnsd.Config
	dns     *dnsd.Server // on every network's gateway (dns.go)

	mu       sync.Mutex
	bridges  map[string]*bridgeNet // by bridge name
	ports    map[string]*port      // by instance ID
	groups   map[string]groupState // defined security groups
	marks    map[uint32]string     // mark -> instance ID
	nextMark uint32
	nat      natRules
	pub      publicState // elastic IPs and port forwards (eip.go)

	underlay    netip.Addr       // VXLAN source; invalid: no overlay
	warnedLocal bool             // said once that there is no underlay
	peers       []nodeproto.Peer // last SetPeers
	peersKnown  bool             // SetPeers has been called
}

// port is one instance's attachment.
type port struct {
	id     string
	vpc    string // the network's VPC (DNS records come from its peers)
	dev    string // tap, or a device handed to AttachDevice
	owned  bool   // dev is a tap Clipper made (Detach deletes it)
	bridge string
	ip     netip.Addr
	mac    net.HardwareAddr
	mark   uint32
	groups []string
	gw     netip.Prefix
	mtu    int
	dns    []netip.Addr
	uplink bool // bridged onto an existing host bridge (Network.Uplink)
}

// sameRules reports whether o (nil: no port yet) has the rules p needs.
func (p *port) sameRules(o *port) bool {
	return o != nil && o.id == p.id && o.dev == p.dev && o.owned == p.owned && o.bridge == p.bridge &&
		o.ip == p.ip && o.mac.String() == p.mac.String() && o.mark == p.mark && slices.Equal(o.groups, p.groups) &&
		o.gw == p.gw && o.mtu == p.mtu && slices.Equal(o.dns, p.dns) && o.uplink == p.uplink && o.vpc == p.vpc
}

// groupState is what the node keeps of a defined group.
type groupState struct {
	fingerprint string
	peers       []string // groups whose member sets its rules look up
}

// bridgeNet is one network's bridge on this node.
type bridgeNet struct {
	name    string
	gateway netip.Prefix
	mtu     int
	mac     net.HardwareAddr // the gateway's, the same on every node
	vni     int              // overlay, 0 if none
	dhcp    *dhcpServer
	ra      *raSender // IPv6 metadata (ra.go); nil without IPv6
	raMTU   int
	raMAC   string
	// external is a host bridge Clipper did not make (bridged mode): it
	// is never changed, filtered as a network or deleted.
	external bool
}

// New prepares the host for instance networking: it pins the sysctls the
// design depends on (and fails with a clear error if it cannot), declares
// Clipper's nftables tables, puts the metadata addresses on the loopback
// device and adopts the ports a previous agent left behind. The sysctls
// are checked again four times a second until Close; a change is logged
// as an error and undone.
func New(log *slog.Logger, opts ...Option) (*Host, error) {
	if log == nil {
		log = slog.Default()
	}
	log = log.With("component", "network")
	if err := hostSysctls.pinAll(); err != nil {
		return nil, err
	}
	if err := addMetadataAddrs(log); err != nil {
		return nil, err
	}
	b, err := newBatch()
	if err != nil {
		return nil, err
	}
	addBase(b)
	if err := b.commit("declare tables"); err != nil {
		return nil, err
	}
	h := &Host{log: log, hostDNS: hostResolvers(), bridges: map[string]*bridgeNet{}, ports: map[string]*port{},
		groups: map[string]groupState{}, marks: map[uint32]string{}, nat: natRules{}}
	for _, o := range opts {
		o(h)
	}
	h.dns = dnsd.New(log, h.dnsCfg)
	if err := h.adopt(); err != nil {
		h.closeDHCP()
		return nil, err
	}
	if err := h.adoptPublic(); err != nil {
		h.closeDHCP()
		return nil, err
	}
	h.syncDNS()
	h.guard = startGuard(log, hostSysctls, guardInterval)
	return h, nil
}

// TapName is the tap device of an instance (at most 15 bytes).
func TapName(instanceID string) string {
	id := strings.TrimPrefix(instanceID, "i-")
	if len(id) > 12 {
		id = id[len(id)-12:]
	}
	return "tap" + id
}

// Attach implements agent.Network: it creates (or updates) the instance's
// persistent tap on its network's bridge, with the bridge, NAT and DHCP
// server when the network is new on this node, the DHCP lease, the
// anti-spoofing chain and the security group chains. Calling it again with
// other groups (or another address) updates the rules in place in one
// transaction.
func (h *Host) Attach(ctx context.Context, id string, n nodeproto.Network) (nodeproto.Port, error) {
	return h.attach(id, TapName(id), true, n)
}

// AttachDevice is Attach for a device that already exists (one end of a
// veth pair whose other end plays the instance, in tests): it is put on the
// bridge instead of a tap, and Detach takes it off the bridge again but
// leaves it alone otherwise.
func (h *Host) AttachDevice(ctx context.Context, id, dev string, n nodeproto.Network) (nodeproto.Port, error) {
	if dev == "" || len(dev) > 15 {
		return nodeproto.Port{}, fmt.Errorf("network: bad device name %q", dev)
	}
	return h.attach(id, dev, false, n)
}

// netConfig is a parsed nodeproto.Network.
type netConfig struct {
	gw     netip.Prefix
	ip     netip.Addr
	mac    net.HardwareAddr
	mtu    int
	dns    []netip.Addr
	groups []string
	gwMAC  net.HardwareAddr
}

func parseNetwork(n nodeproto.Network) (netConfig, error) {
	var c netConfig
	var err error
	bridge := n.Bridge
	if n.Uplink != "" {
		bridge = n.Uplink
	}
	if bridge == "" || len(bridge) > 15 || strings.ContainsAny(bridge, "/ \t\n") {
		return c, fmt.Errorf("network: bad bridge name %q", bridge)
	}
	if c.gw, err = netip.ParsePrefix(n.Gateway); err != nil || !c.gw.Addr().Is4() || c.gw.Bits() > 30 {
		return c, fmt.Errorf("network: bad gateway %q", n.Gateway)
	}
	if c.ip, err = netip.ParseAddr(n.PrivateIP); err != nil || !c.gw.Contains(c.ip) || c.ip == c.gw.Addr() {
		return c, fmt.Errorf("network: address %q is not a host address of %s", n.PrivateIP, c.gw)
	}
	if c.mac, err = net.ParseMAC(n.MAC); err != nil || len(c.mac) != 6 || c.mac[0]&1 == 1 {
		return c, fmt.Errorf("network: bad MAC %q", n.MAC)
	}
	if c.gwMAC, err = gatewayMAC(n); err != nil {
		return c, err
	}
	c.mtu = n.MTU
	if c.mtu == 0 && n.Uplink == "" {
		c.mtu = 1500
	}
	// A bridged network without an MTU takes its host bridge's.
	if (c.mtu != 0 || n.Uplink == "") && (c.mtu < 576 || c.mtu > 65535) {
		return c, fmt.Errorf("network: bad MTU %d", n.MTU)
	}
	for _, f := range strings.FieldsFunc(n.DNS, func(r rune) bool { return r == ',' || r == ' ' }) {
		if a, err := netip.ParseAddr(f); err == nil && a.Is4() {
			c.dns = append(c.dns, a)
		}
	}
	for _, g := range n.Groups {
		if g != "" && !slices.Contains(c.groups, g) {
			c.groups = append(c.groups, g)
		}
	}
	return c, nil
}

func (h *Host) attach(id, dev string, owned bool, n nodeproto.Network) (nodeproto.Port, error) {
	if id == "" {
		return nodeproto.Port{}, errors.New("network: empty instance ID")
	}
	c, err := parseNetwork(n)
	if err != nil {
		return nodeproto.Port{}, err
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	u := undo.New()
	defer u.Run()

	old := h.ports[id]
	if other, ok := h.portByDev(dev); ok && other.id != id {
		return nodeproto.Port{}, fmt.Errorf("network: device %s already belongs to %s", dev, other.id)
	}
	bridge, bridged := n.Bridge, n.Uplink != ""
	var br *bridgeNet
	if bridged {
		// Bridged mode: the instance is on the LAN of an existing host
		// bridge; no overlay, no NAT, no gateway address (bridged.go).
		bridge = n.Uplink
		if br, err = h.ensureHostBridge(bridge, c.gw, c.mtu); err == nil {
			c.mtu = br.mtu // the bridge's own when the network gives none
		}
	} else {
		br, err = h.ensureBridge(bridge, c.gw, c.mtu, c.gwMAC)
	}
	if err != nil {
		return nodeproto.Port{}, err
	}
	u.Add(func() { h.removeBridgeIfUnused(bridge) })
	if !bridged {
		if err := h.ensureOverlay(br, n.VNI); err != nil {
			return nodeproto.Port{}, err
		}
	}
	dns := c.dns
	if len(dns) == 0 {
		dns = h.hostDNS
	}
	if len(dns) == 0 {
		dns = []netip.Addr{c.gw.Addr()}
	}
	p := &port{id: id, vpc: n.VPCID, dev: dev, owned: owned, bridge: bridge, ip: c.ip, mac: c.mac, groups: c.groups,
		gw: c.gw, mtu: c.mtu, dns: dns, uplink: bridged}
	if old != nil {
		p.mark = old.mark
	} else {
		if p.mark, err = h.allocMark(id); err != nil {
			return nodeproto.Port{}, err
		}
		u.Add(func() { delete(h.marks, p.mark) })
	}

	// Rules first, device second: a device never carries traffic that
	// its rules do not see. Rules that would not change are not
	// rewritten (a transaction that declares chains takes milliseconds:
	// moving an elastic IP should not wait for it).
	if !p.sameRules(old) {
		b, err := newBatch()
		if err != nil {
			return nodeproto.Port{}, err
		}
		if old != nil {
			if old.dev != p.dev {
				delSpoofPort(b, old)
			}
			if old.bridge != p.bridge || old.ip != p.ip {
				delInstance(b, old)
			}
		}
		if !p.uplink {
			addBridgeElems(b, p.bridge)
		}
		addSpoofPort(b, p)
		addInstance(b, p)
		if err := b.commit("attach " + id); err != nil {
			return nodeproto.Port{}, err
		}
	}
	if old == nil {
		u.Add(func() { h.removeRules(p) })
	}
	if owned {
		err = ensureTap(dev, p.bridge, p.mtu)
	} else {
		err = attachLink(dev, p.bridge, p.mtu)
	}
	if err != nil {
		return nodeproto.Port{}, err
	}
	if old != nil {
		if old.dev != p.dev {
			h.releaseDevice(old)
		}
		if ob := h.bridges[old.bridge]; ob != nil && (old.bridge != p.bridge || old.mac.String() != p.mac.String()) {
			ob.dhcp.removeLease(old.mac.String())
		}
	}
	br.dhcp.setLease(p.mac.String(), lease{ip: p.ip, hostname: hostname(p.ip), dns: p.dns})
	h.ports[id] = p
	h.marks[p.mark] = id
	if old != nil && old.bridge != p.bridge {
		h.removeBridgeIfUnused(old.bridge)
	}
	u.Success()
	h.syncDNS()
	h.log.Info("port attached", "instance", id, "device", dev, "bridge", p.bridge, "ip", p.ip,
		"mac", p.mac.String(), "mark", fmt.Sprintf("%#x", p.mark), "groups", p.groups)
	h.cleanupGroups()
	if bridged || (old != nil && old.uplink) {
		if err := h.applyUplinkPorts(); err != nil {
			return nodeproto.Port{Tap: dev, Mark: p.mark}, err
		}
	}
	if err := h.setEIP(p, n.PublicIP, bridged); err != nil {
		return nodeproto.Port{Tap: dev, Mark: p.mark}, err
	}
	return nodeproto.Port{Tap: dev, Mark: p.mark}, nil
}

func (h *Host) portByDev(dev string) (*port, bool) {
	for _, p := range h.ports {
		if p.dev == dev {
			return p, true
		}
	}
	return nil, false
}

// allocMark hands out the next free mark, cycling through the mark space
// so that a freed mark is reused as late as possible.
func (h *Host) allocMark(id string) (uint32, error) {
	const space = ^MarkMask // low bits
	for range space {
		h.nextMark = h.nextMark%space + 1
		m := MarkBase | h.nextMark
		if _, used := h.marks[m]; !used {
			h.marks[m] = id
			return m, nil
		}
	}
	return 0, errors.New("network: no free port marks")
}

// Detach implements agent.Network: it takes the device off the network
// first (a tap is deleted, a device from AttachDevice leaves the bridge),
// then removes the port's rules, map entries and DHCP lease, and the
// bridge, NAT and DHCP server of a network that has no port left.
// Detaching an unknown ID removes a leftover tap by that ID's name, if any.
func (h *Host) Detach(ctx context.Context, id string) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	p, ok := h.ports[id]
	if !ok {
		return deleteLink(TapName(id))
	}
	if err := h.releaseDevice(p); err != nil {
		return err
	}
	if err := h.removeRules(p); err != nil {
		return err
	}
	if br := h.bridges[p.bridge]; br != nil {
		br.dhcp.removeLease(p.mac.String())
	}
	delete(h.ports, id)
	delete(h.marks, p.mark)
	if err := h.dropEIP(id); err != nil {
		h.log.Warn("remove elastic IP", "instance", id, "error", err)
	}
	if p.uplink {
		if err := h.applyUplinkPorts(); err != nil {
			h.log.Warn("bridged port rules", "instance", id, "error", err)
		}
	}
	h.removeBridgeIfUnused(p.bridge)
	h.syncDNS()
	h.cleanupGroups()
	h.log.Info("port detached", "instance", id, "device", p.dev)
	return nil
}

func (h *Host) releaseDevice(p *port) error {
	if p.owned {
		return deleteLink(p.dev)
	}
	return releaseLink(p.dev)
}

func (h *Host) removeRules(p *port) error {
	b, err := newBatch()
	if err != nil {
		return err
	}
	delSpoofPort(b, p)
	delInstance(b, p)
	return b.commit("detach " + p.id)
}

// Ports returns the ports the host serves, adopted ones included, so a
// restarted agent can learn each instance's mark again.
func (h *Host) Ports() map[string]nodeproto.Port {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := make(map[string]nodeproto.Port, len(h.ports))
	for id, p := range h.ports {
		out[id] = nodeproto.Port{Tap: p.dev, Mark: p.mark}
	}
	return out
}

func hostname(ip netip.Addr) string {
	return "ip-" + strings.ReplaceAll(ip.String(), ".", "-")
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
			if a, err := netip.ParseAddr(f[1]); err == nil && a.Is4() && !a.IsLoopback() && len(out) < 3 {
				out = append(out, a)
			}
		}
	}
	return out
}

// ensureBridge creates (or adopts) a network's bridge, its gateway address
// and MAC (nil: keep the bridge's), NAT and DHCP server.
func (h *Host) ensureBridge(name string, gw netip.Prefix, mtu int, mac net.HardwareAddr) (*bridgeNet, error) {
	br := h.bridges[name]
	if br != nil && br.gateway == gw && br.mtu == mtu && (mac == nil || mac.String() == br.mac.String()) {
		return br, nil
	}
	var old netip.Prefix
	if br != nil {
		old = br.gateway
	}
	mac, err := ensureBridgeLink(name, gw, old, mtu, mac)
	if err != nil {
		return nil, err
	}
	h.nat[name] = gw.Masked()
	if err := h.nat.apply(); err != nil {
		return nil, err
	}
	if br == nil {
		srv, err := startDHCP(name, gw, mtu, h.log)
		if err != nil {
			return nil, err
		}
		br = &bridgeNet{name: name, dhcp: srv}
		h.bridges[name] = br
	}
	br.gateway, br.mtu, br.mac = gw, mtu, mac
	br.dhcp.setNetwork(gw, mtu)
	if br.ra == nil || br.raMTU != mtu || br.raMAC != mac.String() {
		br.ra.stop()
		br.ra = nil
		if ipv6On() {
			if err := metadataOnBridge(name); err != nil {
				h.log.Warn("no IPv6 metadata on the network", "bridge", name, "error", err)
			} else {
				br.ra = startRA(name, mac, mtu, h.log)
			}
		}
		br.raMTU, br.raMAC = mtu, mac.String()
	}
	if err := h.dns.Listen(name, name, gw.Addr()); err != nil {
		// Instances work without names; say so loudly.
		h.log.Error("no DNS service on the network's gateway", "bridge", name, "error", err)
	}
	h.log.Info("bridge ready", "bridge", name, "gateway", gw, "mtu", mtu)
	return br, nil
}

// removeBridgeIfUnused tears down a network's bridge, NAT and DHCP server
// once no port uses it.
func (h *Host) removeBridgeIfUnused(name string) {
	for _, p := range h.ports {
		if p.bridge == name {
			return
		}
	}
	br := h.bridges[name]
	if br == nil {
		return
	}
	br.dhcp.close()
	br.ra.stop()
	if br.external {
		delete(h.bridges, name)
		h.log.Info("host bridge no longer used", "bridge", name)
		return
	}
	h.dns.Stop(name)
	if err := h.removeOverlay(br); err != nil {
		h.log.Warn("remove overlay", "bridge", name, "error", err)
	}
	delete(h.bridges, name)
	delete(h.nat, name)
	if err := h.nat.apply(); err != nil {
		h.log.Warn("NAT after removing a bridge", "bridge", name, "error", err)
	}
	if b, err := newBatch(); err == nil {
		delBridgeElems(b, name)
		if err := b.commit("remove bridge " + name); err != nil {
			h.log.Warn("remove bridge from the filter sets", "bridge", name, "error", err)
		}
	}
	if err := deleteLink(name); err != nil {
		h.log.Warn("delete bridge", "bridge", name, "error", err)
	}
	h.log.Info("bridge removed", "bridge", name)
}

// Close stops the DHCP servers and the sysctl guard. Bridges, taps and
// rules stay, so running VMs keep their network while the agent restarts.
func (h *Host) Close() error {
	h.guard.stop()
	h.mu.Lock()
	defer h.mu.Unlock()
	h.closeDHCP()
	h.dns.Close()
	return nil
}

func (h *Host) closeDHCP() {
	for _, br := range h.bridges {
		br.dhcp.close()
		br.ra.stop()
		br.ra = nil
	}
}

// Purge removes all of Clipper's networking from the node: every port
// (taps deleted, other devices taken off their bridge), every bridge, and
// Clipper's nftables tables. For uninstalling, and for tests.
func (h *Host) Purge(ctx context.Context) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	var errs []error
	for _, p := range h.ports {
		errs = append(errs, h.releaseDevice(p))
	}
	for name, br := range h.bridges {
		br.dhcp.close()
		br.ra.stop()
		if br.vni != 0 {
			errs = append(errs, deleteLink(VXLANName(br.vni)))
		}
		if !br.external {
			errs = append(errs, deleteLink(name))
		}
	}
	h.dns.Close()
	h.peers, h.peersKnown = nil, false
	h.ports, h.bridges, h.marks, h.groups, h.nat = map[string]*port{}, map[string]*bridgeNet{},
		map[uint32]string{}, map[string]groupState{}, natRules{}
	errs = append(errs, deleteTables(), h.purgePublic())
	return errors.Join(errs...)
}
