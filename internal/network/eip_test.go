package network

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/clipper-cloud/clipper/internal/nodeproto"
	"github.com/clipper-cloud/clipper/internal/testutil/netns"
	"golang.org/x/sys/unix"
)

// publicGroup lets tcp 80 in from anywhere and everything out.
func publicGroup(id string) nodeproto.SecurityGroup {
	return nodeproto.SecurityGroup{ID: id,
		Ingress: []nodeproto.Rule{{Protocol: "tcp", FromPort: 80, ToPort: 80, CIDRs: []string{"0.0.0.0/0"}}},
		Egress:  []nodeproto.Rule{{Protocol: "-1", CIDRs: []string{"0.0.0.0/0"}}}}
}

// serveWho runs a server in ns on addr that answers every connection with
// "<name> <client address>" and closes it.
func serveWho(t testing.TB, ns *netns.NS, addr, name string) {
	t.Helper()
	ln, err := ns.Listen("tcp", addr)
	if err != nil {
		t.Fatalf("listen %s in %s: %v", addr, ns.Name, err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			host, _, _ := net.SplitHostPort(c.RemoteAddr().String())
			fmt.Fprintf(c, "hello from %s %s\n", name, host)
			c.Close()
		}
	}()
}

// serveWhoUDP answers every datagram to addr in ns with "hello from <name>
// <client address>".
func serveWhoUDP(t testing.TB, ns *netns.NS, addr, name string) {
	t.Helper()
	var pc net.PacketConn
	if err := ns.Do(func() error {
		var err error
		pc, err = net.ListenPacket("udp4", addr)
		return err
	}); err != nil {
		t.Fatalf("listen udp %s in %s: %v", addr, ns.Name, err)
	}
	t.Cleanup(func() { pc.Close() })
	go func() {
		buf := make([]byte, 1500)
		for {
			_, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			host, _, _ := net.SplitHostPort(from.String())
			pc.WriteTo([]byte(fmt.Sprintf("hello from %s %s\n", name, host)), from)
		}
	}()
}

// probeUDP sends datagrams from ns to addr until one is answered (the
// first may be lost while ARP resolves), within timeout.
func probeUDP(ns *netns.NS, addr string, timeout time.Duration) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	c, err := ns.DialContext(ctx, "udp4", addr)
	if err != nil {
		return "", err
	}
	defer c.Close()
	buf := make([]byte, 1500)
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if _, err := c.Write([]byte("who\n")); err != nil {
			return "", err
		}
		_ = c.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
		if n, err := c.Read(buf); err == nil {
			return strings.TrimSpace(string(buf[:n])), nil
		}
	}
	return "", fmt.Errorf("udp %s: no answer in %v", addr, timeout)
}

// who connects from ns to addr and returns the server's name and the
// client address it saw.
func who(t testing.TB, ns *netns.NS, addr string) (name, client string) {
	t.Helper()
	line, err := probe(ns, addr, 2*time.Second)
	if err != nil {
		t.Fatalf("%s -> %s: %v (want it open)", ns.Name, addr, err)
	}
	f := strings.Fields(line)
	if len(f) != 4 {
		t.Fatalf("%s -> %s: got %q", ns.Name, addr, line)
	}
	return f[2], f[3]
}

func mustSeeUDP(t testing.TB, ns *netns.NS, addr, want string) {
	t.Helper()
	got, err := probeUDP(ns, addr, 2*time.Second)
	if err != nil || got != want {
		t.Fatalf("%s -> udp %s: %q %v, want %q", ns.Name, addr, got, err, want)
	}
}

func mustSee(t testing.TB, ns *netns.NS, addr, wantName, wantClient string) {
	t.Helper()
	name, client := who(t, ns, addr)
	if name != wantName || client != wantClient {
		t.Fatalf("%s -> %s: reached %s as %s, want %s as %s", ns.Name, addr, name, client, wantName, wantClient)
	}
}

// arpWatch captures ARP packets on dev in ns.
type arpWatch struct {
	fd int
}

func watchARP(t testing.TB, ns *netns.NS, dev string) *arpWatch {
	t.Helper()
	w := &arpWatch{fd: -1}
	err := ns.Do(func() error {
		ifi, err := net.InterfaceByName(dev)
		if err != nil {
			return err
		}
		proto := htons(unix.ETH_P_ARP)
		fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, int(proto))
		if err != nil {
			return err
		}
		w.fd = fd
		return unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: proto, Ifindex: ifi.Index})
	})
	if err != nil {
		t.Fatalf("ARP capture in %s: %v", ns.Name, err)
	}
	t.Cleanup(func() { unix.Close(w.fd) })
	return w
}

// gratuitous waits for a gratuitous ARP for ip and returns its sender MAC.
func (w *arpWatch) gratuitous(ip netip.Addr, timeout time.Duration) (net.HardwareAddr, error) {
	deadline := time.Now().Add(timeout)
	buf := make([]byte, 128)
	for time.Now().Before(deadline) {
		tv := unix.NsecToTimeval(int64(time.Until(deadline)) + 1000)
		_ = unix.SetsockoptTimeval(w.fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv)
		n, _, err := unix.Recvfrom(w.fd, buf, 0)
		if err != nil {
			if errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EINTR) {
				continue
			}
			return nil, err
		}
		p := buf[:n]
		if n >= 28 && bytes.Equal(p[14:18], ip.AsSlice()) && bytes.Equal(p[24:28], ip.AsSlice()) {
			return net.HardwareAddr(bytes.Clone(p[8:14])), nil
		}
	}
	return nil, fmt.Errorf("no gratuitous ARP for %s in %v", ip, timeout)
}

func linkMAC(t testing.TB, dev string) string {
	t.Helper()
	ifi, err := net.InterfaceByName(dev)
	if err != nil {
		t.Fatal(err)
	}
	return ifi.HardwareAddr.String()
}

// hasAddr reports whether dev in the node's namespace holds a.
func hasAddr(t testing.TB, dev, a string) bool {
	t.Helper()
	return strings.Contains(sh(t, "ip", "-4", "-o", "addr", "show", "dev", dev), " "+a+"/32 ")
}

// publicRules returns the rules of the public table (empty when it has
// none or does not exist), without the declarations of empty chains.
func publicRules(t testing.TB) string {
	t.Helper()
	out, err := exec.Command("nft", "-a", "list", "table", "ip", PublicTable).CombinedOutput()
	if err != nil {
		return ""
	}
	var rules []string
	for _, line := range strings.Split(string(out), "\n") {
		line = strings.TrimSpace(line)
		if strings.Contains(line, "# handle") && !strings.HasPrefix(line, "chain ") && !strings.HasPrefix(line, "table ") {
			rules = append(rules, line)
		}
	}
	return strings.Join(rules, "\n")
}

// outsideNS is l.outside() that also removes the node's end of the link
// when the test ends: deleting a namespace takes its veth pairs away
// asynchronously, and the next test's outside() needs the name.
func outsideNS(l *lab) *netns.NS {
	removeLinkAtEnd(l.t, "up0")
	return l.outside()
}

// removeLinkAtEnd deletes dev once the test and the cleanups registered
// after this call are done, and waits until it is gone.
func removeLinkAtEnd(t testing.TB, dev string) {
	t.Cleanup(func() {
		deadline := time.Now().Add(3 * time.Second)
		for time.Now().Before(deadline) {
			_ = deleteLink(dev)
			if _, err := net.InterfaceByName(dev); err != nil {
				return
			}
			time.Sleep(20 * time.Millisecond)
		}
		t.Errorf("%s is still there", dev)
	})
}

func TestElasticIP(t *testing.T) {
	l := newLab(t)
	l.h.SetUplink("up0")
	if err := l.h.SetGroups(l.ctx, []nodeproto.SecurityGroup{publicGroup("sg-pub")}, true); err != nil {
		t.Fatal(err)
	}
	out := outsideNS(l)
	a := l.instance("i-a", net1, "10.7.0.10", "02:00:00:00:00:0a", true, "sg-pub")
	b := l.instance("i-b", net1, "10.7.0.11", "02:00:00:00:00:0b", true, "sg-pub")
	serveWho(t, a.ns, ":80", "i-a")
	serveWho(t, b.ns, ":80", "i-b")
	serveWho(t, out, ":8080", "outside")
	const eip = "192.0.2.100"
	pub := hostPort(eip, 80)
	upMAC := linkMAC(t, "up0")

	arp := watchARP(t, out, "eth0")
	a.n.PublicIP = eip
	a.attach(l)
	if mac, err := arp.gratuitous(netip.MustParseAddr(eip), 2*time.Second); err != nil {
		t.Fatal(err)
	} else if mac.String() != upMAC {
		t.Fatalf("gratuitous ARP from %s, want the uplink's %s", mac, upMAC)
	}

	t.Run("inbound keeps the client address", func(t *testing.T) {
		mustSee(t, out, pub, "i-a", "192.0.2.2")
		// The node answered ARP for the address on its uplink.
		neigh := out.Run("ip", "neigh", "show", eip)
		if !strings.Contains(neigh, upMAC) {
			t.Fatalf("outside's neighbour entry for %s: %q, want %s", eip, neigh, upMAC)
		}
	})
	t.Run("outbound leaves from the public address", func(t *testing.T) {
		mustSee(t, a.ns, "192.0.2.2:8080", "outside", eip)
		mustSee(t, b.ns, "192.0.2.2:8080", "outside", "192.0.2.1") // no EIP: the node's address
	})
	t.Run("instances reach each other by private and public address", func(t *testing.T) {
		mustSee(t, b.ns, hostPort(a.ip(), 80), "i-a", b.ip())
		name, _ := who(t, b.ns, pub) // hairpin
		if name != "i-a" {
			t.Fatalf("b -> %s reached %s", pub, name)
		}
	})
	t.Run("re-attach is idempotent", func(t *testing.T) {
		before := publicRules(t)
		a.attach(l)
		if after := publicRules(t); after != before {
			t.Fatalf("rules changed on a second attach:\n%s\nthen\n%s", before, after)
		}
	})
	t.Run("move to another instance", func(t *testing.T) {
		b.n.PublicIP = eip
		b.attach(l)
		if _, err := arp.gratuitous(netip.MustParseAddr(eip), 2*time.Second); err != nil {
			t.Fatal(err)
		}
		mustSee(t, out, pub, "i-b", "192.0.2.2")
		a.n.PublicIP = "" // the controller's update for the old holder
		a.attach(l)
		mustSee(t, out, pub, "i-b", "192.0.2.2")
		mustSee(t, a.ns, "192.0.2.2:8080", "outside", "192.0.2.1")
		mustSee(t, b.ns, "192.0.2.2:8080", "outside", eip)
	})
	t.Run("a restarted agent adopts the association", func(t *testing.T) {
		h2, err := New(l.h.log)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { h2.Close() })
		if e, ok := h2.pub.eips["i-b"]; !ok || e.public.String() != eip {
			t.Fatalf("adopted %+v, want i-b's %s", h2.pub.eips, eip)
		}
		if h2.pub.addrs[netip.MustParseAddr(eip)] != "up0" {
			t.Fatalf("adopted addresses %v", h2.pub.addrs)
		}
	})
	t.Run("dissociation undoes everything", func(t *testing.T) {
		b.n.PublicIP = ""
		b.attach(l)
		if hasAddr(t, "up0", eip) {
			t.Fatalf("%s still on up0", eip)
		}
		if r := publicRules(t); r != "" {
			t.Fatalf("rules left:\n%s", r)
		}
		mustSee(t, b.ns, "192.0.2.2:8080", "outside", "192.0.2.1")
		out.Run("ip", "neigh", "flush", "dev", "eth0")
		mustNotReach(t, out, pub)
	})
	t.Run("detach removes the association", func(t *testing.T) {
		a.n.PublicIP = eip
		a.attach(l)
		mustSee(t, out, pub, "i-a", "192.0.2.2")
		if err := l.h.Detach(l.ctx, a.id); err != nil {
			t.Fatal(err)
		}
		if hasAddr(t, "up0", eip) || publicRules(t) != "" {
			t.Fatalf("detach left %s on up0 or rules:\n%s", eip, publicRules(t))
		}
	})
}

func TestForwards(t *testing.T) {
	l := newLab(t)
	l.h.SetUplink("up0")
	pub := publicGroup("sg-pub")
	pub.Ingress = append(pub.Ingress, nodeproto.Rule{Protocol: "udp", FromPort: 53, ToPort: 53, CIDRs: []string{"0.0.0.0/0"}})
	if err := l.h.SetGroups(l.ctx, []nodeproto.SecurityGroup{pub}, true); err != nil {
		t.Fatal(err)
	}
	out := outsideNS(l)
	a := l.instance("i-a", net1, "10.7.0.10", "02:00:00:00:00:0a", true, "sg-pub")
	serveWho(t, a.ns, ":80", "i-a")
	serveWho(t, a.ns, ":22", "i-a")
	serveWhoUDP(t, a.ns, ":53", "i-a")
	serveWhoUDP(t, a.ns, ":54", "i-a")
	// A server the node reaches that is no instance, and that has no
	// route back to the outside: replies come back through the node.
	removeLinkAtEnd(t, "up1")
	srv := netns.New(t, "s")
	sh(t, "ip", "link", "add", "up1", "type", "veth", "peer", "name", "eth0", "netns", srv.Name)
	sh(t, "ip", "addr", "add", "192.0.3.1/24", "dev", "up1")
	sh(t, "ip", "link", "set", "up1", "up")
	srv.IP("link", "set", "eth0", "up")
	srv.Addr("eth0", "192.0.3.2/24")
	serveWho(t, srv, ":22", "srv")
	serveWhoUDP(t, srv, ":53", "srv")

	fs := []nodeproto.Forward{
		{ID: "fwd-web", Protocol: "tcp", ListenIP: "192.0.2.50", ListenPort: 8080, TargetIP: a.ip(), TargetPort: 80},
		{ID: "fwd-ssh", Protocol: "tcp", ListenIP: "192.0.2.50", ListenPort: 2222, TargetIP: a.ip(), TargetPort: 22},
		{ID: "fwd-srv", Protocol: "tcp", ListenIP: "192.0.2.51", ListenPort: 2222, TargetIP: "192.0.3.2", TargetPort: 22},
		{ID: "fwd-local", Protocol: "tcp", ListenIP: "192.0.2.1", ListenPort: 9022, TargetIP: "192.0.3.2", TargetPort: 22},
		// UDP: the same port as a TCP forward, to another target.
		{ID: "fwd-udp", Protocol: "udp", ListenIP: "192.0.2.50", ListenPort: 8080, TargetIP: a.ip(), TargetPort: 53},
		{ID: "fwd-udp-closed", Protocol: "udp", ListenIP: "192.0.2.50", ListenPort: 5454, TargetIP: a.ip(), TargetPort: 54},
		{ID: "fwd-udp-srv", Protocol: "udp", ListenIP: "192.0.2.51", ListenPort: 5353, TargetIP: "192.0.3.2", TargetPort: 53},
	}
	arp := watchARP(t, out, "eth0")
	if err := l.h.SetForwards(l.ctx, fs); err != nil {
		t.Fatal(err)
	}
	for _, ip := range []string{"192.0.2.50", "192.0.2.51"} {
		if _, err := arp.gratuitous(netip.MustParseAddr(ip), 2*time.Second); err != nil {
			t.Fatal(err)
		}
	}

	t.Run("to an instance", func(t *testing.T) {
		mustSee(t, out, "192.0.2.50:8080", "i-a", "10.7.0.1") // masqueraded
	})
	t.Run("udp to an instance", func(t *testing.T) {
		mustSeeUDP(t, out, "192.0.2.50:8080", "hello from i-a 10.7.0.1") // masqueraded, the tcp forward on the port untouched
		mustSee(t, out, "192.0.2.50:8080", "i-a", "10.7.0.1")
	})
	t.Run("udp to an address that is no instance", func(t *testing.T) {
		mustSeeUDP(t, out, "192.0.2.51:5353", "hello from srv 192.0.3.1")
	})
	t.Run("udp passes the instance's groups", func(t *testing.T) {
		if got, err := probeUDP(out, "192.0.2.50:5454", probeTimeout); err == nil {
			t.Fatalf("udp 54 is closed in sg-pub, got %q", got)
		}
		open := pub
		open.Ingress = append(slices.Clone(pub.Ingress), nodeproto.Rule{Protocol: "udp", FromPort: 54, ToPort: 54, CIDRs: []string{"0.0.0.0/0"}})
		if err := l.h.SetGroups(l.ctx, []nodeproto.SecurityGroup{open}, true); err != nil {
			t.Fatal(err)
		}
		mustSeeUDP(t, out, "192.0.2.50:5454", "hello from i-a 10.7.0.1")
		if err := l.h.SetGroups(l.ctx, []nodeproto.SecurityGroup{pub}, true); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("an instance's groups still apply", func(t *testing.T) {
		mustNotReach(t, out, "192.0.2.50:2222") // port 22 is closed in sg-pub
	})
	t.Run("to an address that is no instance", func(t *testing.T) {
		mustSee(t, out, "192.0.2.51:2222", "srv", "192.0.3.1")
		mustSee(t, a.ns, "192.0.2.51:2222", "srv", "192.0.3.1") // from an instance too
	})
	t.Run("on an address the node already has", func(t *testing.T) {
		mustSee(t, out, "192.0.2.1:9022", "srv", "192.0.3.1")
		if hasAddr(t, "up0", "192.0.2.1") {
			t.Fatal("the node's own address was taken over as a /32")
		}
	})
	t.Run("other ports of a listen address do not reach the node", func(t *testing.T) {
		serveWho(t, netns.Current(t), "192.0.2.50:7000", "node")
		mustNotReach(t, out, "192.0.2.50:7000")
	})
	t.Run("same list again changes nothing", func(t *testing.T) {
		before := publicRules(t)
		rev := append([]nodeproto.Forward(nil), fs...)
		slices.Reverse(rev)
		if err := l.h.SetForwards(l.ctx, rev); err != nil {
			t.Fatal(err)
		}
		if after := publicRules(t); after != before {
			t.Fatalf("rules changed:\n%s\nthen\n%s", before, after)
		}
	})
	t.Run("a bad forward is refused, the others apply", func(t *testing.T) {
		bad := append([]nodeproto.Forward{{ID: "fwd-bad", Protocol: "sctp", ListenIP: "192.0.2.52", ListenPort: 1,
			TargetIP: "192.0.3.2", TargetPort: 22}}, fs[2])
		if err := l.h.SetForwards(l.ctx, bad); err == nil {
			t.Fatal("an sctp forward was accepted")
		}
		mustSee(t, out, "192.0.2.51:2222", "srv", "192.0.3.1")
		mustNotReach(t, out, "192.0.2.50:8080")
		if hasAddr(t, "up0", "192.0.2.50") {
			t.Fatal("192.0.2.50 is still on up0")
		}
	})
	t.Run("an empty list removes everything", func(t *testing.T) {
		if err := l.h.SetForwards(l.ctx, nil); err != nil {
			t.Fatal(err)
		}
		mustNotReach(t, out, "192.0.2.51:2222")
		if got, err := probeUDP(out, "192.0.2.51:5353", probeTimeout); err == nil {
			t.Fatalf("udp forward still answers: %q", got)
		}
		if hasAddr(t, "up0", "192.0.2.51") || publicRules(t) != "" {
			t.Fatalf("left behind: %s", publicRules(t))
		}
	})
}

// TestElasticIPPathMTU: a router beyond the node whose next link has a
// smaller MTU answers an instance's big packets with "fragmentation
// needed", addressed to the elastic IP; the node translates the ICMP back
// to the instance (it is RELATED to the connection) and the instance
// learns the path MTU.
func TestElasticIPPathMTU(t *testing.T) {
	l := newLab(t)
	l.h.SetUplink("up0")
	if err := l.h.SetGroups(l.ctx, []nodeproto.SecurityGroup{publicGroup("sg-pub")}, true); err != nil {
		t.Fatal(err)
	}
	router := outsideNS(l) // 192.0.2.2, routes on to "far"
	router.Forward()
	far := netns.New(t, "far")
	netns.Link(t, router, "narrow", far, "eth0")
	router.IP("link", "set", "narrow", "mtu", "1400")
	far.IP("link", "set", "eth0", "mtu", "1400")
	router.Addr("narrow", "198.51.100.1/24")
	far.Addr("eth0", "198.51.100.2/24")
	far.IP("route", "add", "default", "via", "198.51.100.1")
	sh(t, "ip", "route", "add", "198.51.100.0/24", "via", "192.0.2.2") // gone with up0

	a := l.instance("i-a", net1, "10.7.0.10", "02:00:00:00:00:0a", true, "sg-pub")
	a.n.PublicIP = "192.0.2.100"
	a.attach(l)

	// 1472 bytes of ICMP payload make a 1500-byte packet with DF set.
	out, err := a.ns.Output("ping", "-c", "1", "-W", "2", "-M", "do", "-s", "1472", "198.51.100.2")
	if err == nil {
		t.Fatalf("a 1500-byte packet crossed a 1400 link: %s", out)
	}
	if !strings.Contains(out, "mtu = 1400") {
		t.Fatalf("no fragmentation-needed answer reached the instance: %s", out)
	}
	if route := a.ns.Run("ip", "route", "get", "198.51.100.2"); !strings.Contains(route, "mtu 1400") {
		t.Fatalf("the instance did not learn the path MTU: %s", route)
	}
	// And what fits goes through, from the elastic IP.
	a.ns.Run("ping", "-c", "1", "-W", "2", "-M", "do", "-s", "1372", "198.51.100.2")
}
