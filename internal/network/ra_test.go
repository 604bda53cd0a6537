package network

import (
	"context"
	"errors"
	"net"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func TestLinkLocal(t *testing.T) {
	mac, _ := net.ParseMAC("02:00:00:00:00:0a")
	if got := linkLocal(mac).String(); got != "fe80::ff:fe00:a" {
		t.Errorf("EUI-64 link-local of %s: %s", mac, got)
	}
}

// TestIPv6Metadata: an instance with nothing but its link-local address
// learns from the node's router advertisement that fd00:ec2::/64 is on
// the link (and no default route), reaches [fd00:ec2::254]:80, and the
// node sees its port's mark on the connection. From another source
// address it gets nowhere.
func TestIPv6Metadata(t *testing.T) {
	l := newLab(t)
	a := l.instance("i-a", net1, "10.7.0.10", "02:00:00:00:00:0a", true)
	marks := markListener(t, net.ListenConfig{Control: freebind6}, "tcp6", "[fd00:ec2::254]:80")

	// The advertisement answers the instance's solicitation.
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(a.ns.Run("ip", "-6", "route", "show", "fd00:ec2::/64"), "dev eth0") {
		if time.Now().After(deadline) {
			t.Fatalf("no on-link route to fd00:ec2::/64; routes:\n%s", a.ns.Run("ip", "-6", "route"))
		}
		a.ns.Run("ip", "link", "set", "eth0", "down")
		a.ns.Run("ip", "link", "set", "eth0", "up") // solicit again
		time.Sleep(500 * time.Millisecond)
	}
	if r := a.ns.Run("ip", "-6", "route"); strings.Contains(r, "default") {
		t.Errorf("the instance got an IPv6 default route:\n%s", r)
	}
	mustReach(t, a.ns, "[fd00:ec2::254]:80", "metadata")
	if m := <-marks; uint32(m) != a.port.Mark {
		t.Errorf("connection mark %#x, want the port's %#x", m, a.port.Mark)
	}

	// Another source address (here one of the metadata prefix) is not
	// the instance's link-local one: dropped.
	a.ns.IP("-6", "addr", "add", "fd00:ec2::99/64", "dev", "eth0", "nodad")
	err := a.ns.Do(func() error {
		d := net.Dialer{Timeout: probeTimeout, LocalAddr: &net.TCPAddr{IP: net.ParseIP("fd00:ec2::99")}}
		c, err := d.Dial("tcp6", "[fd00:ec2::254]:80")
		if err == nil {
			c.Close()
		}
		return err
	})
	if err == nil {
		t.Error("a spoofed IPv6 source reached the metadata address")
	}
}

// markListener stands in for the metadata service on addr: it answers
// "hello from metadata" and sends the packet mark of every connection it
// accepts (what the real service identifies instances by) on the channel.
func markListener(t *testing.T, lc net.ListenConfig, network, addr string) <-chan int {
	t.Helper()
	ln, err := lc.Listen(context.Background(), network, addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	marks := make(chan int, 4)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			raw, _ := c.(*net.TCPConn).SyscallConn()
			_ = raw.Control(func(fd uintptr) {
				m, _ := unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_MARK)
				marks <- m
			})
			c.Write([]byte("hello from metadata\n"))
			c.Close()
		}
	}()
	return marks
}

// freebind6 lets a test listen on the metadata address before it is local.
func freebind6(_, _ string, c syscall.RawConn) error {
	var serr error
	err := c.Control(func(fd uintptr) { serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_IPV6, unix.IPV6_FREEBIND, 1) })
	return errors.Join(err, serr)
}
