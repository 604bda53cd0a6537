package network

import (
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/clipper-cloud/clipper/internal/nodeproto"
	"github.com/clipper-cloud/clipper/internal/testutil/netns"
)

// bridgedLAN makes the node's own LAN: an existing bridge lan0 holding
// the node's address 192.168.50.10/24, and a namespace "lan" on it at
// 192.168.50.1 that plays the LAN's router and a host.
func bridgedLAN(t *testing.T) *netns.NS {
	t.Helper()
	removeLinkAtEnd(t, "lanp")
	lan := netns.New(t, "lan")
	sh(t, "ip", "link", "add", "lan0", "type", "bridge")
	t.Cleanup(func() { _ = deleteLink("lan0") })
	sh(t, "ip", "addr", "add", "192.168.50.10/24", "dev", "lan0")
	sh(t, "ip", "link", "set", "lan0", "up")
	sh(t, "ip", "link", "add", "lanp", "type", "veth", "peer", "name", "eth0", "netns", lan.Name)
	sh(t, "ip", "link", "set", "lanp", "master", "lan0")
	sh(t, "ip", "link", "set", "lanp", "up")
	lan.IP("link", "set", "eth0", "up")
	lan.Addr("eth0", "192.168.50.1/24")
	waitForwarding(t, "lanp")
	return lan
}

// bridgedInstance makes an instance namespace and attaches it to the host
// bridge uplink (eth0 left without an address).
func (l *lab) bridgedInstance(id, uplink, ip, mac string, groups ...string) *inst {
	t := l.t
	t.Helper()
	ns := netns.New(t, "i")
	dev := "v" + randHex(5)
	sh(t, "ip", "link", "add", dev, "type", "veth", "peer", "name", "eth0", "netns", ns.Name)
	ns.IP("link", "set", "eth0", "address", mac)
	ns.IP("link", "set", "eth0", "up")
	i := &inst{ns: ns, id: id, dev: dev, n: nodeproto.Network{VPCID: "vpc-lan", Uplink: uplink,
		Gateway: "192.168.50.1/24", MTU: 1500, PrivateIP: ip, MAC: mac, Groups: groups}}
	i.attach(l)
	return i
}

func TestBridgedMode(t *testing.T) {
	l := newLab(t)
	if err := l.h.SetGroups(l.ctx, []nodeproto.SecurityGroup{publicGroup("sg-pub")}, true); err != nil {
		t.Fatal(err)
	}
	lan := bridgedLAN(t)
	serveWho(t, lan, ":8080", "lan")
	addrsBefore := sh(t, "ip", "-4", "-o", "addr", "show", "dev", "lan0")

	// A DHCP server on the LAN would hear the instance if its requests
	// crossed the bridge.
	var heard net.PacketConn
	if err := lan.Do(func() (err error) { heard, err = net.ListenPacket("udp4", ":67"); return err }); err != nil {
		t.Fatal(err)
	}
	defer heard.Close()

	i := l.bridgedInstance("i-br", "lan0", "192.168.50.20", "02:00:00:00:00:20", "sg-pub")

	t.Run("DHCP gives the instance its LAN address and the LAN's router", func(t *testing.T) {
		script := filepath.Join(t.TempDir(), "lease.sh")
		if err := os.WriteFile(script, []byte("#!/bin/sh\n[ \"$1\" = bound ] && echo \"lease $ip $subnet $router $serverid\"\nexit 0\n"), 0o755); err != nil {
			t.Fatal(err)
		}
		out, err := i.ns.Output("busybox", "udhcpc", "-i", "eth0", "-f", "-q", "-n", "-t", "4", "-T", "1", "-s", script)
		if err != nil {
			t.Fatalf("udhcpc: %v: %s", err, out)
		}
		if !strings.Contains(out, "lease 192.168.50.20 255.255.255.0 192.168.50.1 192.168.50.10") {
			t.Fatalf("udhcpc: %s", out)
		}
		_ = heard.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
		if _, from, err := heard.ReadFrom(make([]byte, 1500)); err == nil {
			t.Fatalf("the LAN heard a DHCP request from %s", from)
		}
	})
	i.ns.Addr("eth0", "192.168.50.20/24")
	i.ns.IP("route", "add", "default", "via", "192.168.50.1")
	serveWho(t, i.ns, ":80", "i-br")
	serveWho(t, i.ns, ":22", "i-br")

	t.Run("the instance is on the LAN without NAT", func(t *testing.T) {
		mustSee(t, lan, "192.168.50.20:80", "i-br", "192.168.50.1")
		mustSee(t, i.ns, "192.168.50.1:8080", "lan", "192.168.50.20")
	})
	t.Run("groups apply", func(t *testing.T) {
		mustNotReach(t, lan, "192.168.50.20:22")
	})
	t.Run("metadata requests reach the node with the port's mark", func(t *testing.T) {
		marks := markListener(t, net.ListenConfig{}, "tcp4", "169.254.169.254:80")
		// The instance's route to the metadata address goes through the
		// LAN's router, which knows nothing of it.
		mustReach(t, i.ns, "169.254.169.254:80", "metadata")
		if m := <-marks; uint32(m) != i.port.Mark {
			t.Errorf("connection mark %#x, want the port's %#x", m, i.port.Mark)
		}
	})
	t.Run("the node keeps its own connectivity and the bridge its setup", func(t *testing.T) {
		mustSee(t, netns.Current(t), "192.168.50.1:8080", "lan", "192.168.50.10")
		if after := sh(t, "ip", "-4", "-o", "addr", "show", "dev", "lan0"); after != addrsBefore {
			t.Fatalf("lan0 addresses changed:\n%s\nto\n%s", addrsBefore, after)
		}
		if out := tryCmd("nft", "list", "table", "ip", NATTable); strings.Contains(out, "192.168.50") {
			t.Fatalf("NAT for the LAN:\n%s", out)
		}
	})
	t.Run("anti-spoofing applies", func(t *testing.T) {
		i.ns.IP("addr", "add", "192.168.50.99/24", "dev", "eth0")
		_, err := probe(i.ns, "192.168.50.1:8080", probeTimeout)
		if err != nil {
			t.Fatalf("own address: %v", err)
		}
		if got, err := i.ns.Output("ping", "-c", "1", "-W", "1", "-I", "192.168.50.99", "192.168.50.1"); err == nil {
			t.Fatalf("a spoofed source got through: %s", got)
		}
	})
	t.Run("a plain interface is refused", func(t *testing.T) {
		n := i.n
		n.Uplink = "lanp"
		_, err := l.h.AttachDevice(l.ctx, "i-x", "lo", n)
		if err == nil || !strings.Contains(err.Error(), "not a bridge") {
			t.Fatalf("attach to a plain interface: %v", err)
		}
	})
	t.Run("a restarted agent adopts the port and leaves the bridge alone", func(t *testing.T) {
		h2, err := New(l.h.log)
		if err != nil {
			t.Fatal(err)
		}
		defer h2.Close()
		if p := h2.ports[i.id]; p == nil || !p.uplink || p.bridge != "lan0" {
			t.Fatalf("adopted %+v", p)
		}
		if after := sh(t, "ip", "-4", "-o", "addr", "show", "dev", "lan0"); after != addrsBefore {
			t.Fatalf("lan0 addresses changed:\n%s\nto\n%s", addrsBefore, after)
		}
		mustSee(t, lan, "192.168.50.20:80", "i-br", "192.168.50.1")
	})
	t.Run("detach leaves the host bridge alone", func(t *testing.T) {
		if err := l.h.Detach(l.ctx, i.id); err != nil {
			t.Fatal(err)
		}
		if _, err := net.InterfaceByName("lan0"); err != nil {
			t.Fatalf("lan0: %v", err)
		}
		if after := sh(t, "ip", "-4", "-o", "addr", "show", "dev", "lan0"); after != addrsBefore {
			t.Fatalf("lan0 addresses changed:\n%s\nto\n%s", addrsBefore, after)
		}
		if m := sh(t, "ip", "-o", "link", "show", "master", "lan0"); strings.Contains(m, i.dev) {
			t.Fatalf("%s is still on lan0", i.dev)
		}
		if out := tryCmd("nft", "list", "table", "bridge", UplinkTable); strings.Contains(out, "drop") {
			t.Fatalf("bridged-mode rules left:\n%s", out)
		}
		mustSee(t, netns.Current(t), "192.168.50.1:8080", "lan", "192.168.50.10")
	})
}

// tryCmd runs a command in the node's namespace and returns its output,
// without failing the test.
func tryCmd(argv ...string) string {
	out, _ := exec.Command(argv[0], argv[1:]...).CombinedOutput()
	return string(out)
}
