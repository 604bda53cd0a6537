package network

import (
	"encoding/binary"
	"log/slog"
	"net"
	"net/netip"
	"testing"

	"github.com/insomniacslk/dhcp/dhcpv4"

	"github.com/clipper-cloud/clipper/internal/nodeproto"
)

// These tests need neither root nor a namespace: they call the DHCP
// server's reply logic directly.

var (
	knownMAC   = net.HardwareAddr{0x02, 0, 0, 0, 0, 0x0a}
	unknownMAC = net.HardwareAddr{0x02, 0, 0, 0, 0, 0x0b}
)

func testDHCP() *dhcpServer {
	d := &dhcpServer{bridge: "br-test", log: slog.New(slog.DiscardHandler), leases: map[string]lease{},
		gateway: netip.MustParsePrefix("172.31.0.1/20"), mtu: 1450}
	d.setLease("02:00:00:00:00:0A", lease{ip: netip.MustParseAddr("172.31.0.10"), hostname: "ip-172-31-0-10",
		dns: []netip.Addr{netip.MustParseAddr("172.31.0.1")}})
	return d
}

func mtuOf(t *testing.T, m *dhcpv4.DHCPv4) int {
	t.Helper()
	b := m.Options.Get(dhcpv4.OptionInterfaceMTU)
	if len(b) != 2 {
		t.Fatalf("option 26 is %v", b)
	}
	return int(binary.BigEndian.Uint16(b))
}

func TestDHCPOffer(t *testing.T) {
	d := testDHCP()
	disc, err := dhcpv4.NewDiscovery(knownMAC)
	if err != nil {
		t.Fatal(err)
	}
	offer, err := d.reply(disc)
	if err != nil || offer == nil {
		t.Fatalf("no offer: %v", err)
	}
	for what, ok := range map[string]bool{
		"type offer":          offer.MessageType() == dhcpv4.MessageTypeOffer,
		"the fixed address":   offer.YourIPAddr.Equal(net.IPv4(172, 31, 0, 10)),
		"the gateway":         len(offer.Router()) == 1 && offer.Router()[0].Equal(net.IPv4(172, 31, 0, 1)),
		"the DNS server":      len(offer.DNS()) == 1 && offer.DNS()[0].Equal(net.IPv4(172, 31, 0, 1)),
		"the domain":          offer.DomainName() == nodeproto.PrivateDNSDomain,
		"the host name":       offer.HostName() == "ip-172-31-0-10",
		"the mask":            net.IP(offer.SubnetMask()).Equal(net.IPv4(255, 255, 240, 0)),
		"the lease time":      offer.IPAddressLeaseTime(0) == leaseTime,
		"the server":          offer.ServerIdentifier().Equal(net.IPv4(172, 31, 0, 1)),
		"the same xid":        offer.TransactionID == disc.TransactionID,
		"the client's MAC":    offer.ClientHWAddr.String() == knownMAC.String(),
		"broadcast 172.31.15": offer.BroadcastAddress().Equal(net.IPv4(172, 31, 15, 255)),
	} {
		if !ok {
			t.Errorf("offer lacks %s:\n%s", what, offer.Summary())
		}
	}
	if got := mtuOf(t, offer); got != 1450 {
		t.Errorf("option 26: MTU %d, want 1450", got)
	}

	req, err := dhcpv4.NewRequestFromOffer(offer)
	if err != nil {
		t.Fatal(err)
	}
	ack, err := d.reply(req)
	if err != nil || ack == nil || ack.MessageType() != dhcpv4.MessageTypeAck || !ack.YourIPAddr.Equal(net.IPv4(172, 31, 0, 10)) {
		t.Fatalf("request for the offered address: %v %v", ack, err)
	}
	if mtuOf(t, ack) != 1450 {
		t.Error("the ACK lacks the MTU")
	}

	// The network's MTU changes: the next answer says so.
	d.setNetwork(netip.MustParsePrefix("172.31.0.1/20"), 1400)
	if ack, _ = d.reply(req); mtuOf(t, ack) != 1400 {
		t.Errorf("after setNetwork: MTU %d", mtuOf(t, ack))
	}
}

func TestDHCPRefusesWhatIsNotItsToGive(t *testing.T) {
	d := testDHCP()
	disc, _ := dhcpv4.NewDiscovery(unknownMAC)
	if m, err := d.reply(disc); m != nil || err != nil {
		t.Errorf("an unknown MAC got an answer: %v %v", m, err)
	}
	// Another address than the lease's: NAK, without an address.
	other, _ := dhcpv4.NewDiscovery(knownMAC, dhcpv4.WithMessageType(dhcpv4.MessageTypeRequest),
		dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(net.IPv4(172, 31, 0, 99))))
	nak, err := d.reply(other)
	if err != nil || nak == nil || nak.MessageType() != dhcpv4.MessageTypeNak || !nak.YourIPAddr.IsUnspecified() {
		t.Errorf("a request for another address: %v %v", nak, err)
	}
	// Renewing from its address (ciaddr) is fine.
	renew, _ := dhcpv4.NewDiscovery(knownMAC, dhcpv4.WithMessageType(dhcpv4.MessageTypeRequest),
		dhcpv4.WithClientIP(net.IPv4(172, 31, 0, 10)))
	if ack, _ := d.reply(renew); ack == nil || ack.MessageType() != dhcpv4.MessageTypeAck {
		t.Errorf("a renewal: %v", ack)
	}
	// Inform: options, no address.
	inf, _ := dhcpv4.NewInform(knownMAC, net.IPv4(172, 31, 0, 10))
	if ack, _ := d.reply(inf); ack == nil || ack.MessageType() != dhcpv4.MessageTypeAck || !ack.YourIPAddr.IsUnspecified() {
		t.Errorf("an inform: %v", ack)
	}
	// Messages a server does not answer.
	for _, typ := range []dhcpv4.MessageType{dhcpv4.MessageTypeRelease, dhcpv4.MessageTypeDecline, dhcpv4.MessageTypeOffer} {
		m, _ := dhcpv4.NewDiscovery(knownMAC, dhcpv4.WithMessageType(typ))
		if r, _ := d.reply(m); r != nil {
			t.Errorf("%s got an answer", typ)
		}
	}
	boot, _ := dhcpv4.NewDiscovery(knownMAC, dhcpv4.WithReply(&dhcpv4.DHCPv4{}))
	boot.OpCode = dhcpv4.OpcodeBootReply
	if r, _ := d.reply(boot); r != nil {
		t.Error("a BOOTREPLY got an answer")
	}
	// A lease removed: silence.
	d.removeLease(knownMAC.String())
	disc, _ = dhcpv4.NewDiscovery(knownMAC)
	if r, _ := d.reply(disc); r != nil {
		t.Error("a removed lease still answers")
	}
}

func TestDHCPBridgedModeNamesTheNode(t *testing.T) {
	d := testDHCP()
	d.setServerID(netip.MustParseAddr("172.31.0.5"))
	disc, _ := dhcpv4.NewDiscovery(knownMAC)
	offer, _ := d.reply(disc)
	if offer == nil || !offer.ServerIdentifier().Equal(net.IPv4(172, 31, 0, 5)) || offer.DomainName() != "" {
		t.Errorf("bridged mode: %v", offer)
	}
}

// FuzzDHCPReply: whatever parses as DHCP, the reply logic answers without
// panicking, and only ever the known MAC, with its own address.
func FuzzDHCPReply(f *testing.F) {
	disc, _ := dhcpv4.NewDiscovery(knownMAC)
	f.Add(disc.ToBytes())
	req, _ := dhcpv4.NewDiscovery(knownMAC, dhcpv4.WithMessageType(dhcpv4.MessageTypeRequest),
		dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(net.IPv4(172, 31, 0, 99))))
	f.Add(req.ToBytes())
	inf, _ := dhcpv4.NewInform(unknownMAC, net.IPv4(172, 31, 0, 11))
	f.Add(inf.ToBytes())
	f.Add([]byte{1, 1, 6, 0})
	d := testDHCP()
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := dhcpv4.FromBytes(b)
		if err != nil {
			return
		}
		r, err := d.reply(m)
		if err != nil || r == nil {
			return
		}
		if r.ClientHWAddr.String() != knownMAC.String() {
			t.Fatalf("answered %s", r.ClientHWAddr)
		}
		if !r.YourIPAddr.IsUnspecified() && !r.YourIPAddr.Equal(net.IPv4(172, 31, 0, 10)) {
			t.Fatalf("handed out %s", r.YourIPAddr)
		}
		_ = r.ToBytes()
	})
}
