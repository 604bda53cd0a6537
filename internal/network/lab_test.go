package network

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/clipper-cloud/clipper/internal/nodeproto"
	"github.com/clipper-cloud/clipper/internal/testutil/netns"
)

// The integration tests run inside a namespace of their own that plays the
// node (see TestMain); "instances", "outside" hosts and routers are further
// namespaces joined to it by veth pairs.
func TestMain(m *testing.M) {
	if os.Getenv(envNodeHelper) != "" {
		os.Exit(nodeHelperMain()) // a second node (overlay_test.go)
	}
	os.Exit(netns.RunInside(m, "nw"))
}

// lab is a node with its Host, for one test.
type lab struct {
	t   testing.TB
	h   *Host
	ctx context.Context
}

// testLog is an slog handler's writer that goes to the test log until the
// test ends (DHCP goroutines may log late).
type testLog struct {
	mu   sync.Mutex
	t    testing.TB
	done bool
}

func (w *testLog) Write(b []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.done {
		w.t.Log(strings.TrimRight(string(b), "\n"))
	}
	return len(b), nil
}

func newLab(t testing.TB, opts ...Option) *lab {
	t.Helper()
	netns.RequireInside(t)
	w := &testLog{t: t}
	level := slog.LevelWarn
	if testing.Verbose() {
		level = slog.LevelInfo
	}
	h, err := New(slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: level})), opts...)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	t.Cleanup(func() {
		if t.Failed() {
			out, _ := exec.Command("nft", "list", "ruleset").CombinedOutput()
			t.Logf("node ruleset:\n%s", out)
		}
		h.Close()
		if err := h.Purge(ctx); err != nil {
			t.Errorf("purge: %v", err)
		}
		w.mu.Lock()
		w.done = true
		w.mu.Unlock()
	})
	return &lab{t: t, h: h, ctx: ctx}
}

// sh runs a command in the node's namespace.
func sh(t testing.TB, argv ...string) string {
	t.Helper()
	out, err := exec.Command(argv[0], argv[1:]...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s: %v: %s", strings.Join(argv, " "), err, out)
	}
	return string(out)
}

func randHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// inst is an "instance": a namespace whose eth0 is one end of a veth
// pair; the other end is attached on the node with AttachDevice.
type inst struct {
	ns   *netns.NS
	id   string
	dev  string
	n    nodeproto.Network
	port nodeproto.Port
}

// vnet describes a test network.
type vnet struct {
	bridge, gateway string
	mtu             int
	vni             int    // overlay (overlay_test.go)
	gwMAC           string // the distributed gateway's MAC
}

var (
	net1 = vnet{bridge: "brt1", gateway: "10.7.0.1/24", mtu: 1500}
	net2 = vnet{bridge: "brt2", gateway: "10.8.0.1/24", mtu: 1450}
)

func (v vnet) gw() netip.Prefix { return netip.MustParsePrefix(v.gateway) }

// instance makes an instance namespace with ip on network v and attaches
// it. configure=false leaves eth0 without an address (for DHCP).
func (l *lab) instance(id string, v vnet, ip, mac string, configure bool, groups ...string) *inst {
	t := l.t
	t.Helper()
	ns := netns.New(t, "i")
	dev := "v" + randHex(5)
	sh(t, "ip", "link", "add", dev, "type", "veth", "peer", "name", "eth0", "netns", ns.Name)
	ns.IP("link", "set", "eth0", "address", mac)
	ns.IP("link", "set", "eth0", "mtu", fmt.Sprint(v.mtu))
	ns.IP("link", "set", "eth0", "up")
	if configure {
		ns.Addr("eth0", fmt.Sprintf("%s/%d", ip, v.gw().Bits()))
		ns.IP("route", "add", "default", "via", v.gw().Addr().String())
	}
	i := &inst{ns: ns, id: id, dev: dev, n: nodeproto.Network{VPCID: "vpc-" + v.bridge, Bridge: v.bridge,
		Gateway: v.gateway, MTU: v.mtu, PrivateIP: ip, MAC: mac, Groups: groups, VNI: v.vni, GatewayMAC: v.gwMAC}}
	i.attach(l)
	return i
}

func (i *inst) attach(l *lab) {
	l.t.Helper()
	port, err := l.h.AttachDevice(l.ctx, i.id, i.dev, i.n)
	if err != nil {
		l.t.Fatalf("attach %s: %v", i.id, err)
	}
	i.port = port
	waitForwarding(l.t, i.dev)
}

// waitForwarding waits until the bridge forwards through dev: a port that
// just came up stays disabled until the kernel's link watcher (up to a
// second) sees its carrier.
func waitForwarding(t testing.TB, dev string) {
	t.Helper()
	deadline := time.Now().Add(3 * time.Second)
	for time.Now().Before(deadline) {
		b, err := os.ReadFile("/sys/class/net/" + dev + "/brport/state")
		if err == nil && strings.TrimSpace(string(b)) == "3" {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("bridge port %s is not forwarding", dev)
}

func (i *inst) ip() string { return i.n.PrivateIP }

// outside makes a host "outside" the node: 192.0.2.2/24 behind the node's
// device up0 (192.0.2.1), with its default route through the node.
func (l *lab) outside() *netns.NS {
	t := l.t
	t.Helper()
	ns := netns.New(t, "o")
	sh(t, "ip", "link", "add", "up0", "type", "veth", "peer", "name", "eth0", "netns", ns.Name)
	sh(t, "ip", "addr", "add", "192.0.2.1/24", "dev", "up0")
	sh(t, "ip", "link", "set", "up0", "up")
	ns.IP("link", "set", "eth0", "up")
	ns.Addr("eth0", "192.0.2.2/24")
	ns.IP("route", "add", "default", "via", "192.0.2.1")
	return ns
}

// serveTCP runs a server in ns on addr that answers every connection with
// "hello from <name>" and closes it.
func serveTCP(t testing.TB, ns *netns.NS, addr, name string) {
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
			fmt.Fprintf(c, "hello from %s\n", name)
			c.Close()
		}
	}()
}

// probe connects from ns to addr and returns the greeting, or an error
// when the connection does not open within the timeout.
func probe(ns *netns.NS, addr string, timeout time.Duration) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	c, err := ns.DialContext(ctx, "tcp", addr)
	if err != nil {
		return "", err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(timeout))
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil && err != io.EOF {
		return "", err
	}
	return strings.TrimSpace(line), nil
}

const probeTimeout = 700 * time.Millisecond

// mustReach fails the test unless ns reaches addr (served by want).
func mustReach(t testing.TB, ns *netns.NS, addr, want string) {
	t.Helper()
	got, err := probe(ns, addr, 2*time.Second)
	if err != nil {
		t.Fatalf("%s -> %s: %v (want it open)", ns.Name, addr, err)
	}
	if got != "hello from "+want {
		t.Fatalf("%s -> %s: got %q, want the server %s", ns.Name, addr, got, want)
	}
}

// mustNotReach fails the test if ns reaches addr.
func mustNotReach(t testing.TB, ns *netns.NS, addr string) {
	t.Helper()
	if got, err := probe(ns, addr, probeTimeout); err == nil {
		t.Fatalf("%s -> %s: connected (%q), want it closed", ns.Name, addr, got)
	}
}

func hostPort(ip string, port int) string { return net.JoinHostPort(ip, fmt.Sprint(port)) }
