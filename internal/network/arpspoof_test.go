package network

import (
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/clipper-cloud/clipper/internal/nodeproto"
	"github.com/clipper-cloud/clipper/internal/testutil/netns"
)

// sendARP sends a gratuitous ARP (a broadcast request for claim, from
// claim) from ns's eth0 and its own MAC, three times.
func sendARP(t *testing.T, ns *netns.NS, claim netip.Addr) {
	t.Helper()
	err := ns.Do(func() error {
		ifi, err := net.InterfaceByName("eth0")
		if err != nil {
			return err
		}
		fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, int(htons(unix.ETH_P_ARP)))
		if err != nil {
			return err
		}
		defer unix.Close(fd)
		bcast := []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}
		ip := claim.AsSlice()
		f := append(append(append([]byte{}, bcast...), ifi.HardwareAddr...), 0x08, 0x06)
		f = append(f, 0, 1, 8, 0, 6, 4, 0, 1) // ethernet, IPv4, request
		f = append(append(f, ifi.HardwareAddr...), ip...)
		f = append(append(f, 0, 0, 0, 0, 0, 0), ip...) // target: the same address
		sa := &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_ARP), Ifindex: ifi.Index, Halen: 6}
		copy(sa.Addr[:], bcast)
		for range 3 {
			if err := unix.Sendto(fd, f, 0, sa); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatalf("send ARP from %s: %v", ns.Name, err)
	}
}

// neighMAC is the link address ns (nil: the node) has for ip on dev.
func neighMAC(t *testing.T, ns *netns.NS, dev, ip string) string {
	t.Helper()
	argv := []string{"ip", "neigh", "show", ip, "dev", dev}
	var out string
	if ns == nil {
		out = sh(t, argv...)
	} else {
		out = ns.Run(argv...)
	}
	f := strings.Fields(out)
	for i := range f {
		if f[i] == "lladdr" && i+1 < len(f) {
			return f[i+1]
		}
	}
	return ""
}

// TestGratuitousARPSpoof: an instance that announces another instance's
// address (from its own MAC, which the MAC check lets through) changes
// nobody's neighbour entry: not the node's, not another instance's.
// locktime 0 makes both take any ARP reply at once.
func TestGratuitousARPSpoof(t *testing.T) {
	l := newLab(t)
	web := defaultGroup("sg-web", "10.7.0.10", "10.7.0.11", "10.7.0.12")
	if err := l.h.SetGroups(l.ctx, []nodeproto.SecurityGroup{web}, true); err != nil {
		t.Fatal(err)
	}
	a := l.instance("i-a", net1, "10.7.0.10", "02:00:00:00:00:0a", true, "sg-web")
	b := l.instance("i-b", net1, "10.7.0.11", "02:00:00:00:00:0b", true, "sg-web")
	c := l.instance("i-c", net1, "10.7.0.12", "02:00:00:00:00:0c", true, "sg-web")
	sh(t, "sysctl", "-w", "net.ipv4.neigh."+net1.bridge+".locktime=0")
	c.ns.Sysctl("net.ipv4.neigh.eth0.locktime", "0")
	// The node and c know a's MAC (the node's entry is one an ARP
	// reply may replace).
	serveTCP(t, a.ns, ":80", "i-a")
	mustReach(t, c.ns, hostPort(a.ip(), 80), "i-a")
	sh(t, "ip", "neigh", "replace", a.ip(), "lladdr", a.n.MAC, "dev", net1.bridge, "nud", "stale")
	if got := neighMAC(t, nil, net1.bridge, a.ip()); got != a.n.MAC {
		t.Fatalf("the node's entry for %s is %q before the spoof", a.ip(), got)
	}
	if got := neighMAC(t, c.ns, "eth0", a.ip()); got != a.n.MAC {
		t.Fatalf("c's entry for %s is %q before the spoof", a.ip(), got)
	}

	// Control: b announcing its own address is let through and seen (so
	// the check below would see a spoof that got through).
	sh(t, "ip", "neigh", "replace", b.ip(), "lladdr", "02:00:00:00:00:ee", "dev", net1.bridge, "nud", "stale")
	sendARP(t, b.ns, netip.MustParseAddr(b.ip()))
	waitNeigh(t, nil, net1.bridge, b.ip(), b.n.MAC)

	sendARP(t, b.ns, netip.MustParseAddr(a.ip()))
	time.Sleep(300 * time.Millisecond) // the frames had time to arrive
	if got := neighMAC(t, nil, net1.bridge, a.ip()); got != a.n.MAC {
		t.Errorf("after b's gratuitous ARP the node's entry for %s is %q, want a's %s", a.ip(), got, a.n.MAC)
	}
	if got := neighMAC(t, c.ns, "eth0", a.ip()); got != a.n.MAC {
		t.Errorf("after b's gratuitous ARP c's entry for %s is %q, want a's %s", a.ip(), got, a.n.MAC)
	}
	mustReach(t, c.ns, hostPort(a.ip(), 80), "i-a")
}

// waitNeigh waits until the neighbour entry for ip is mac.
func waitNeigh(t *testing.T, ns *netns.NS, dev, ip, mac string) {
	t.Helper()
	deadline := time.Now().Add(3 * time.Second)
	for neighMAC(t, ns, dev, ip) != mac {
		if time.Now().After(deadline) {
			t.Fatalf("the entry for %s on %s is %q, want %s", ip, dev, neighMAC(t, ns, dev, ip), mac)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
