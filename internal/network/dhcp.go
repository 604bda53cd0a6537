package network

import (
	"encoding/binary"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"sync"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/dhcpv4/server4"

	"github.com/clipper-cloud/clipper/internal/nodeproto"
)

// leaseTime is the DHCP lease length; addresses are fixed, so it only
// bounds how long a guest keeps stale options.
const leaseTime = 12 * time.Hour

// lease is the fixed configuration of one MAC.
type lease struct {
	ip       netip.Addr
	hostname string
	dns      []netip.Addr
}

// dhcpServer answers DHCP on one bridge, only for MACs it knows.
type dhcpServer struct {
	bridge string
	log    *slog.Logger
	srv    *server4.Server

	mu      sync.Mutex
	gateway netip.Prefix
	mtu     int
	leases  map[string]lease // lower-case MAC
	// serverID, when valid, is the node's own address that replies name
	// as their server (bridged mode, where the gateway is the LAN's
	// router); otherwise the gateway is.
	serverID netip.Addr
}

func startDHCP(bridge string, gw netip.Prefix, mtu int, log *slog.Logger) (*dhcpServer, error) {
	d := &dhcpServer{bridge: bridge, log: log.With("dhcp", bridge), gateway: gw, mtu: mtu, leases: map[string]lease{}}
	srv, err := server4.NewServer(bridge, &net.UDPAddr{IP: net.IPv4zero, Port: dhcpv4.ServerPort}, d.handle)
	if err != nil {
		return nil, fmt.Errorf("network: DHCP server on %s: %w", bridge, err)
	}
	d.srv = srv
	go func() {
		if err := srv.Serve(); err != nil && !strings.Contains(err.Error(), "closed") {
			d.log.Error("DHCP server stopped", "error", err)
		}
	}()
	return d, nil
}

func (d *dhcpServer) setNetwork(gw netip.Prefix, mtu int) {
	d.mu.Lock()
	d.gateway, d.mtu = gw, mtu
	d.mu.Unlock()
}

func (d *dhcpServer) setServerID(a netip.Addr) {
	d.mu.Lock()
	d.serverID = a
	d.mu.Unlock()
}

func (d *dhcpServer) setLease(mac string, l lease) {
	d.mu.Lock()
	d.leases[strings.ToLower(mac)] = l
	d.mu.Unlock()
}

func (d *dhcpServer) removeLease(mac string) {
	d.mu.Lock()
	delete(d.leases, strings.ToLower(mac))
	d.mu.Unlock()
}

func (d *dhcpServer) close() {
	if d.srv != nil {
		d.srv.Close()
	}
}

// reply builds the answer to a request, or nil to stay silent.
func (d *dhcpServer) reply(m *dhcpv4.DHCPv4) (*dhcpv4.DHCPv4, error) {
	if m.OpCode != dhcpv4.OpcodeBootRequest {
		return nil, nil
	}
	d.mu.Lock()
	l, ok := d.leases[strings.ToLower(m.ClientHWAddr.String())]
	gw, mtu, sid := d.gateway, d.mtu, d.serverID
	d.mu.Unlock()
	bridged := sid.IsValid()
	if !bridged {
		sid = gw.Addr()
	}
	if !ok {
		return nil, nil // not ours: another server may answer
	}
	var typ dhcpv4.MessageType
	switch m.MessageType() {
	case dhcpv4.MessageTypeDiscover:
		typ = dhcpv4.MessageTypeOffer
	case dhcpv4.MessageTypeRequest:
		typ = dhcpv4.MessageTypeAck
		req := m.RequestedIPAddress()
		if req == nil || req.IsUnspecified() {
			req = m.ClientIPAddr
		}
		if req != nil && !req.IsUnspecified() && !req.Equal(l.ip.AsSlice()) {
			typ = dhcpv4.MessageTypeNak
		}
	case dhcpv4.MessageTypeInform:
		typ = dhcpv4.MessageTypeAck
	default:
		return nil, nil
	}
	mask := net.CIDRMask(gw.Bits(), 32)
	mods := []dhcpv4.Modifier{
		dhcpv4.WithMessageType(typ),
		dhcpv4.WithServerIP(sid.AsSlice()),
		dhcpv4.WithOption(dhcpv4.OptServerIdentifier(sid.AsSlice())),
	}
	if typ != dhcpv4.MessageTypeNak {
		var dns []net.IP
		for _, a := range l.dns {
			dns = append(dns, a.AsSlice())
		}
		mtuOpt := make([]byte, 2)
		binary.BigEndian.PutUint16(mtuOpt, uint16(mtu))
		mods = append(mods,
			dhcpv4.WithNetmask(mask),
			dhcpv4.WithRouter(gw.Addr().AsSlice()),
			dhcpv4.WithLeaseTime(uint32(leaseTime/time.Second)),
			dhcpv4.WithOption(dhcpv4.OptGeneric(dhcpv4.OptionInterfaceMTU, mtuOpt)),
			dhcpv4.WithOption(dhcpv4.OptHostName(l.hostname)),
			dhcpv4.WithOption(dhcpv4.OptBroadcastAddress(broadcast(gw))),
		)
		if len(dns) > 0 {
			mods = append(mods, dhcpv4.WithDNS(dns...))
		}
		if !bridged {
			// The gateway's DNS service answers the private names
			// (not in bridged mode, where the LAN's router is the
			// gateway).
			mods = append(mods, dhcpv4.WithOption(dhcpv4.OptDomainName(nodeproto.PrivateDNSDomain)))
		}
		if m.MessageType() != dhcpv4.MessageTypeInform {
			mods = append(mods, dhcpv4.WithYourIP(l.ip.AsSlice()))
		}
	}
	return dhcpv4.NewReplyFromRequest(m, mods...)
}

func (d *dhcpServer) handle(conn net.PacketConn, peer net.Addr, m *dhcpv4.DHCPv4) {
	resp, err := d.reply(m)
	if err != nil {
		d.log.Warn("DHCP reply", "mac", m.ClientHWAddr, "error", err)
		return
	}
	if resp == nil {
		return
	}
	dst := &net.UDPAddr{IP: net.IPv4bcast, Port: dhcpv4.ClientPort}
	if !m.GatewayIPAddr.IsUnspecified() && m.GatewayIPAddr != nil {
		dst = &net.UDPAddr{IP: m.GatewayIPAddr, Port: dhcpv4.ServerPort}
	} else if m.ClientIPAddr != nil && !m.ClientIPAddr.IsUnspecified() && resp.MessageType() != dhcpv4.MessageTypeNak {
		dst = &net.UDPAddr{IP: m.ClientIPAddr, Port: dhcpv4.ClientPort}
	}
	if _, err := conn.WriteTo(resp.ToBytes(), dst); err != nil {
		d.log.Warn("DHCP send", "mac", m.ClientHWAddr, "error", err)
		return
	}
	d.log.Debug("DHCP", "mac", m.ClientHWAddr, "type", resp.MessageType(), "ip", resp.YourIPAddr)
}

func broadcast(p netip.Prefix) net.IP {
	a := p.Masked().Addr().As4()
	v := binary.BigEndian.Uint32(a[:]) | (uint32(0xffffffff) >> p.Bits())
	out := make(net.IP, 4)
	binary.BigEndian.PutUint32(out, v)
	return out
}
