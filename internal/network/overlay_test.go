package network

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/clipper-cloud/clipper/internal/nodeproto"
	"github.com/clipper-cloud/clipper/internal/testutil/netns"
)

// The overlay lab has two nodes: the test's own namespace (node 1, with
// the lab's Host) and a second namespace where a copy of the test binary
// runs another Host (node 2) and takes its calls as JSON lines on stdin.
// A Host works on the namespace of the process that runs it, so the
// second node needs a process of its own. The nodes' underlay is a veth
// pair with MTU 1500: node 1 is 10.99.0.1, node 2 is 10.99.0.2.

// envNodeHelper, set to an underlay address, makes the test binary the
// second node (see TestMain).
const envNodeHelper = "CLIPPER_TEST_NODE_UNDERLAY"

const (
	underlay1 = "10.99.0.1"
	underlay2 = "10.99.0.2"
)

// netO is the overlay network: the same bridge, gateway and gateway MAC on
// both nodes, as the controller sends them.
var netO = vnet{bridge: "brov", gateway: "10.9.0.1/24", mtu: 1450, vni: 4242, gwMAC: "06:00:00:00:42:42"}

// helperReq is one call to the second node's Host.
type helperReq struct {
	Op     string                    `json:"op"` // attach, detach, peers, groups, restart
	ID     string                    `json:"id,omitempty"`
	Dev    string                    `json:"dev,omitempty"`
	Net    nodeproto.Network         `json:"net"`
	Peers  []nodeproto.Peer          `json:"peers,omitempty"`
	Groups []nodeproto.SecurityGroup `json:"groups,omitempty"`
}

type helperResp struct {
	Err  string         `json:"err,omitempty"`
	Port nodeproto.Port `json:"port"`
}

// nodeHelperMain serves the second node until stdin closes, then purges
// it.
func nodeHelperMain() int {
	addr, err := netip.ParseAddr(os.Getenv(envNodeHelper))
	if err != nil {
		fmt.Fprintln(os.Stderr, "node helper:", err)
		return 2
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo})).With("node", 2)
	h, err := New(log, WithUnderlay(addr))
	if err != nil {
		fmt.Fprintln(os.Stderr, "node helper:", err)
		return 1
	}
	ctx := context.Background()
	dec, enc := json.NewDecoder(os.Stdin), json.NewEncoder(os.Stdout)
	for {
		var r helperReq
		if err := dec.Decode(&r); err != nil {
			break
		}
		var resp helperResp
		var err error
		switch r.Op {
		case "attach":
			if resp.Port, err = h.AttachDevice(ctx, r.ID, r.Dev, r.Net); err == nil {
				err = waitBridgePort(r.Dev)
			}
		case "detach":
			err = h.Detach(ctx, r.ID)
		case "peers":
			err = h.SetPeers(ctx, r.Peers)
		case "groups":
			err = h.SetGroups(ctx, r.Groups, true)
		case "restart":
			h.Close()
			var nh *Host
			if nh, err = New(log, WithUnderlay(addr)); err == nil {
				h = nh
			}
		default:
			err = fmt.Errorf("unknown op %q", r.Op)
		}
		if err != nil {
			resp.Err = err.Error()
		}
		if err := enc.Encode(resp); err != nil {
			break
		}
	}
	h.Close()
	if err := h.Purge(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "node helper: purge:", err)
		return 1
	}
	return 0
}

// waitBridgePort waits until the bridge forwards through dev.
func waitBridgePort(dev string) error {
	deadline := time.Now().Add(3 * time.Second)
	for time.Now().Before(deadline) {
		b, err := os.ReadFile("/sys/class/net/" + dev + "/brport/state")
		if err == nil && strings.TrimSpace(string(b)) == "3" {
			return nil
		}
		time.Sleep(20 * time.Millisecond)
	}
	return fmt.Errorf("bridge port %s is not forwarding", dev)
}

// remoteNode is the second node, driven through its helper process.
type remoteNode struct {
	t      testing.TB
	ns     *netns.NS
	mu     sync.Mutex
	stdin  io.WriteCloser
	dec    *json.Decoder
	stderr bytes.Buffer
}

func startRemoteNode(t testing.TB, ns *netns.NS, underlay string) *remoteNode {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	n := &remoteNode{t: t, ns: ns}
	cmd := exec.Command("ip", "netns", "exec", ns.Name, exe, "-test.run=^$")
	cmd.Env = append(os.Environ(), envNodeHelper+"="+underlay)
	cmd.Stderr = writerTo(&n.mu, &n.stderr)
	if n.stdin, err = cmd.StdinPipe(); err != nil {
		t.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	n.dec = json.NewDecoder(out)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		n.stdin.Close() // the helper purges its node and exits
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("node 2: %v", err)
			}
		case <-time.After(15 * time.Second):
			_ = cmd.Process.Kill()
			<-done
			t.Errorf("node 2 did not exit")
		}
		if t.Failed() || testing.Verbose() {
			n.mu.Lock()
			t.Logf("node 2 log:\n%s", n.stderr.String())
			n.mu.Unlock()
		}
	})
	return n
}

type lockedWriter struct {
	mu *sync.Mutex
	w  io.Writer
}

func (w lockedWriter) Write(b []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.w.Write(b)
}

func writerTo(mu *sync.Mutex, w io.Writer) io.Writer { return lockedWriter{mu, w} }

// do calls the second node's Host and fails the test on error.
func (n *remoteNode) do(r helperReq) nodeproto.Port {
	n.t.Helper()
	if err := json.NewEncoder(n.stdin).Encode(r); err != nil {
		n.t.Fatalf("node 2 %s: %v", r.Op, err)
	}
	var resp helperResp
	if err := n.dec.Decode(&resp); err != nil {
		n.t.Fatalf("node 2 %s: %v", r.Op, err)
	}
	if resp.Err != "" {
		n.t.Fatalf("node 2 %s: %s", r.Op, resp.Err)
	}
	return resp.Port
}

// overlayLab is two nodes joined by their underlay.
type overlayLab struct {
	*lab
	ns2 *netns.NS
	n2  *remoteNode
}

func newOverlayLab(t testing.TB) *overlayLab {
	t.Helper()
	netns.RequireInside(t)
	ns2 := netns.New(t, "n2")
	netns.Link(t, netns.Current(t), "ul1", ns2, "ul0")
	sh(t, "ip", "addr", "add", underlay1+"/24", "dev", "ul1")
	ns2.Addr("ul0", underlay2+"/24")
	l := newLab(t, WithUnderlay(netip.MustParseAddr(underlay1)))
	return &overlayLab{lab: l, ns2: ns2, n2: startRemoteNode(t, ns2, underlay2)}
}

// remoteInstance is lab.instance on node 2.
func (o *overlayLab) remoteInstance(id string, v vnet, ip, mac string, groups ...string) *inst {
	t := o.t
	t.Helper()
	ns := netns.New(t, "i")
	dev := "v" + randHex(5)
	o.ns2.IP("link", "add", dev, "type", "veth", "peer", "name", "eth0", "netns", ns.Name)
	ns.IP("link", "set", "eth0", "address", mac)
	ns.IP("link", "set", "eth0", "mtu", fmt.Sprint(v.mtu))
	ns.IP("link", "set", "eth0", "up")
	ns.Addr("eth0", fmt.Sprintf("%s/%d", ip, v.gw().Bits()))
	ns.IP("route", "add", "default", "via", v.gw().Addr().String())
	i := &inst{ns: ns, id: id, dev: dev, n: nodeproto.Network{VPCID: "vpc-" + v.bridge, Bridge: v.bridge,
		Gateway: v.gateway, MTU: v.mtu, PrivateIP: ip, MAC: mac, Groups: groups, VNI: v.vni, GatewayMAC: v.gwMAC}}
	i.port = o.n2.do(helperReq{Op: "attach", ID: id, Dev: dev, Net: i.n})
	return i
}

// setPeers and setGroups hand both nodes the same state, as the agents
// would get it.
func (o *overlayLab) setPeers(peers ...nodeproto.Peer) {
	o.t.Helper()
	if err := o.h.SetPeers(o.ctx, peers); err != nil {
		o.t.Fatalf("node 1 peers: %v", err)
	}
	o.n2.do(helperReq{Op: "peers", Peers: peers})
}

func (o *overlayLab) setGroups(groups ...nodeproto.SecurityGroup) {
	o.t.Helper()
	if err := o.h.SetGroups(o.ctx, groups, true); err != nil {
		o.t.Fatalf("node 1 groups: %v", err)
	}
	o.n2.do(helperReq{Op: "groups", Groups: groups})
}

// fdb lists the overlay forwarding entries of node 1 ("mac dst" lines,
// sorted).
func (o *overlayLab) fdb(vni int) string {
	out := sh(o.t, "bridge", "fdb", "show", "dev", VXLANName(vni))
	var lines []string
	re := regexp.MustCompile(`^([0-9a-f:]{17}) dst (\S+) self`)
	for _, l := range strings.Split(out, "\n") {
		if m := re.FindStringSubmatch(l); m != nil {
			lines = append(lines, m[1]+" "+m[2])
		}
	}
	slices.Sort(lines)
	return strings.Join(lines, "\n")
}

// ping sends one ping of size bytes (IP packet) with DF set.
func ping(ns *netns.NS, dst string, size int) error {
	_, err := ns.Output("ping", "-c1", "-W2", "-M", "do", "-s", strconv.Itoa(size-28), dst)
	return err
}

func mustPing(t testing.TB, ns *netns.NS, dst string, size int) {
	t.Helper()
	var err error
	for range 3 { // the first probe may wait for ARP over the overlay
		if err = ping(ns, dst, size); err == nil {
			return
		}
	}
	t.Fatalf("%s: ping %s (%d bytes, DF): %v", ns.Name, dst, size, err)
}

func TestOverlay(t *testing.T) {
	o := newOverlayLab(t)
	all := []nodeproto.Rule{{Protocol: "-1", CIDRs: []string{"0.0.0.0/0"}}}
	icmpFrom := func(g string) nodeproto.Rule {
		return nodeproto.Rule{Protocol: "icmp", FromPort: -1, ToPort: -1, Groups: []string{g}}
	}
	sgA := nodeproto.SecurityGroup{ID: "sg-a", Ingress: []nodeproto.Rule{icmpFrom("sg-b")}, Egress: all, Members: []string{"10.9.0.10"}}
	sgB := nodeproto.SecurityGroup{ID: "sg-b", Ingress: []nodeproto.Rule{icmpFrom("sg-a")}, Egress: all, Members: []string{"10.9.0.20"}}
	// As an agent does: groups and peers first, then the ports.
	pa := nodeproto.Peer{ID: "i-a", VPCID: "vpc-brov", IP: "10.9.0.10", MAC: "02:00:00:00:09:0a", Groups: []string{"sg-a"}, Node: underlay1, VNI: netO.vni}
	pb := nodeproto.Peer{ID: "i-b", VPCID: "vpc-brov", IP: "10.9.0.20", MAC: "02:00:00:00:09:14", Groups: []string{"sg-b"}, Node: underlay2, VNI: netO.vni}
	o.setGroups(sgA, sgB)
	o.setPeers(pa, pb)
	a := o.instance("i-a", netO, pa.IP, pa.MAC, true, "sg-a")
	b := o.remoteInstance("i-b", netO, pb.IP, pb.MAC, "sg-b")
	serveTCP(t, a.ns, ":80", "i-a")
	serveTCP(t, b.ns, ":80", "i-b")

	wantFDB := "00:00:00:00:00:00 " + underlay2 + "\n" + pb.MAC + " " + underlay2
	if got := o.fdb(netO.vni); got != wantFDB {
		t.Fatalf("node 1 overlay entries:\n%s\nwant:\n%s", got, wantFDB)
	}
	vx := sh(t, "ip", "-d", "link", "show", VXLANName(netO.vni))
	for _, want := range []string{"mtu 1450", "master brov", "vxlan id 4242", "local " + underlay1, "dstport 4789", "nolearning"} {
		if !strings.Contains(vx, want) {
			t.Errorf("vxlan device lacks %q:\n%s", want, vx)
		}
	}

	t.Run("full-size packets cross, larger ones do not", func(t *testing.T) {
		mustPing(t, a.ns, b.ip(), 1450)
		mustPing(t, b.ns, a.ip(), 1450)
		if err := ping(a.ns, b.ip(), 1451); err == nil {
			t.Error("a 1451-byte packet with DF crossed a 1450 network")
		}
	})

	t.Run("the gateway is local on each node", func(t *testing.T) {
		for _, i := range []*inst{a, b} {
			mustPing(t, i.ns, netO.gw().Addr().String(), 64)
			out := i.ns.Run("ip", "neigh", "show", netO.gw().Addr().String())
			if !strings.Contains(out, netO.gwMAC) {
				t.Errorf("%s: gateway neighbour %q, want MAC %s", i.id, out, netO.gwMAC)
			}
		}
		// The bridge has not seen the gateway's MAC come out of the
		// overlay (it would, were node 2's gateway frames crossing).
		learned := sh(t, "bridge", "fdb", "show", "br", "brov")
		for _, l := range strings.Split(learned, "\n") {
			if strings.HasPrefix(l, netO.gwMAC) && strings.Contains(l, "dev "+VXLANName(netO.vni)) {
				t.Errorf("gateway MAC learned on the overlay: %s", l)
			}
		}
		rules := sh(t, "nft", "list", "chain", "bridge", AntiSpoofTable, overlayChainName(netO.vni))
		if !regexp.MustCompile(`counter packets [1-9]`).MatchString(rules) {
			t.Errorf("no gateway frame was stopped at the overlay:\n%s", rules)
		}
	})

	t.Run("security groups across nodes", func(t *testing.T) {
		mustNotReach(t, a.ns, hostPort(b.ip(), 80)) // node 2 enforces b's ingress
		mustNotReach(t, b.ns, hostPort(a.ip(), 80)) // node 1 enforces a's ingress
		open := sgB
		open.Ingress = append([]nodeproto.Rule{{Protocol: "tcp", FromPort: 80, ToPort: 81, Groups: []string{"sg-a"}}}, sgB.Ingress...)
		o.setGroups(sgA, open)
		mustReach(t, a.ns, hostPort(b.ip(), 80), "i-b")
		mustNotReach(t, b.ns, hostPort(a.ip(), 80))
		o.setGroups(sgA, sgB)
		mustNotReach(t, a.ns, hostPort(b.ip(), 80))
		mustPing(t, a.ns, b.ip(), 64)
	})

	t.Run("guests that ignore the MTU get their MSS clamped", func(t *testing.T) {
		open := sgB
		open.Ingress = append([]nodeproto.Rule{{Protocol: "tcp", FromPort: 80, ToPort: 81, Groups: []string{"sg-a"}}}, sgB.Ingress...)
		o.setGroups(sgA, open)
		defer o.setGroups(sgA, sgB)
		for _, i := range []*inst{a, b} {
			i.ns.IP("link", "set", "eth0", "mtu", "1500")
			defer i.ns.IP("link", "set", "eth0", "mtu", "1450")
		}
		serveSink(t, b.ns, ":81")
		c, err := a.ns.DialContext(o.ctx, "tcp", hostPort(b.ip(), 81))
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if mss := tcpMSS(t, c); mss > 1410 {
			t.Errorf("MSS %d across a 1450 overlay, want at most 1410", mss)
		}
		payload := bytes.Repeat([]byte("x"), 1<<20)
		_ = c.SetDeadline(time.Now().Add(10 * time.Second))
		if _, err := c.Write(payload); err != nil {
			t.Fatalf("send 1 MiB: %v", err)
		}
		_ = c.(*net.TCPConn).CloseWrite()
		got, err := io.ReadAll(c)
		if err != nil || strings.TrimSpace(string(got)) != strconv.Itoa(len(payload)) {
			t.Fatalf("sink got %q bytes (%v), want %d", got, err, len(payload))
		}
	})

	t.Run("gone peers leave, applying twice changes nothing", func(t *testing.T) {
		o.setPeers(pa) // the agents dropped b
		if got := o.fdb(netO.vni); got != "" {
			t.Fatalf("entries left for a gone peer:\n%s", got)
		}
		if err := ping(a.ns, b.ip(), 64); err == nil {
			// The bridge may still know b's MAC, but the overlay has no
			// way to node 2 any more.
			t.Error("b reachable after it left the overlay")
		}
		o.setPeers(pa, pb)
		o.setPeers(pa, pb)
		if got := o.fdb(netO.vni); got != wantFDB {
			t.Fatalf("entries after re-adding:\n%s\nwant:\n%s", got, wantFDB)
		}
		mustPing(t, a.ns, b.ip(), 1450)
	})

	t.Run("restarted hosts adopt the overlay", func(t *testing.T) {
		o.n2.do(helperReq{Op: "restart"})
		o.h.Close()
		w := &testLog{t: t}
		h, err := New(slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelWarn})),
			WithUnderlay(netip.MustParseAddr(underlay1)))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			h.Close()
			w.mu.Lock()
			w.done = true
			w.mu.Unlock()
		})
		o.h = h
		// Until the agent hands over peers again, the entries stay.
		if got := o.fdb(netO.vni); got != wantFDB {
			t.Fatalf("entries after restart:\n%s\nwant:\n%s", got, wantFDB)
		}
		mustPing(t, a.ns, b.ip(), 1450)
		o.setPeers(pa, pb)
		if got := o.fdb(netO.vni); got != wantFDB {
			t.Fatalf("entries after restart and SetPeers:\n%s\nwant:\n%s", got, wantFDB)
		}
		mustPing(t, b.ns, a.ip(), 1450)
		if err := o.h.Detach(o.ctx, a.id); err != nil {
			t.Fatal(err)
		}
		if _, err := os.Stat("/sys/class/net/" + VXLANName(netO.vni)); err == nil {
			t.Error("vxlan device left after the network's last port went")
		}
	})
}

// serveSink runs a server in ns that reads everything a client sends and
// answers with the byte count.
func serveSink(t testing.TB, ns *netns.NS, addr string) {
	t.Helper()
	ln, err := ns.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				_ = c.SetDeadline(time.Now().Add(20 * time.Second))
				n, _ := io.Copy(io.Discard, c)
				fmt.Fprintf(c, "%d\n", n)
			}()
		}
	}()
}

// tcpMSS reads a connection's send MSS.
func tcpMSS(t testing.TB, c net.Conn) int {
	t.Helper()
	rc, err := c.(*net.TCPConn).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var mss int
	var serr error
	if err := rc.Control(func(fd uintptr) { mss, serr = unix.GetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_MAXSEG) }); err != nil {
		t.Fatal(err)
	}
	if serr != nil {
		t.Fatal(serr)
	}
	return mss
}

// TestOverlayRoutesBetweenSubnets puts two subnets of one network on two
// nodes (as two availability zones would): each node routes to the other
// subnet's instances over the overlay, and the security groups still
// apply at the receiving instance's node.
func TestOverlayRoutesBetweenSubnets(t *testing.T) {
	o := newOverlayLab(t)
	zoneA, zoneB := netO, netO
	zoneB.gateway = "10.9.16.1/24"
	all := []nodeproto.Rule{{Protocol: "-1", CIDRs: []string{"0.0.0.0/0"}}}
	icmp := nodeproto.Rule{Protocol: "icmp", FromPort: -1, ToPort: -1, CIDRs: []string{"10.9.0.0/16"}}
	sgA := nodeproto.SecurityGroup{ID: "sg-a", Ingress: []nodeproto.Rule{icmp}, Egress: all, Members: []string{"10.9.0.10"}}
	sgB := nodeproto.SecurityGroup{ID: "sg-b", Ingress: []nodeproto.Rule{icmp}, Egress: all, Members: []string{"10.9.16.20"}}
	pa := nodeproto.Peer{ID: "i-a", VPCID: "vpc-brov", IP: "10.9.0.10", MAC: "02:00:00:00:09:0a", Groups: []string{"sg-a"}, Node: underlay1, VNI: netO.vni}
	pb := nodeproto.Peer{ID: "i-b", VPCID: "vpc-brov", IP: "10.9.16.20", MAC: "02:00:00:00:09:14", Groups: []string{"sg-b"}, Node: underlay2, VNI: netO.vni}
	o.setGroups(sgA, sgB)
	o.setPeers(pa, pb)
	a := o.instance("i-a", zoneA, pa.IP, pa.MAC, true, "sg-a")
	b := o.remoteInstance("i-b", zoneB, pb.IP, pb.MAC, "sg-b")
	serveTCP(t, b.ns, ":80", "i-b")
	serveTCP(t, a.ns, ":80", "i-a")

	if out := sh(t, "ip", "route", "show", "dev", "brov"); !strings.Contains(out, "10.9.16.20 proto") {
		t.Errorf("node 1 has no route to the other subnet's instance:\n%s", out)
	}
	mustPing(t, a.ns, b.ip(), 1450)
	mustPing(t, b.ns, a.ip(), 1450)
	mustNotReach(t, a.ns, hostPort(b.ip(), 80))
	mustNotReach(t, b.ns, hostPort(a.ip(), 80))
	open := sgB
	open.Ingress = append(open.Ingress, nodeproto.Rule{Protocol: "tcp", FromPort: 80, ToPort: 80, Groups: []string{"sg-a"}})
	o.setGroups(sgA, open)
	mustReach(t, a.ns, hostPort(b.ip(), 80), "i-b")
	mustNotReach(t, b.ns, hostPort(a.ip(), 80))
	// Routed frames leave with node 1's router MAC, not the gateway's.
	rules := sh(t, "nft", "list", "chain", "bridge", AntiSpoofTable, overlayChainName(netO.vni))
	if !regexp.MustCompile(`ether saddr set \S+ counter packets [1-9]`).MatchString(rules) {
		t.Errorf("no routed frame had its source MAC rewritten:\n%s", rules)
	}
	// The guest was not told to look for b on its link.
	if out := a.ns.Run("ip", "route", "get", b.ip()); !strings.Contains(out, "via "+zoneA.gw().Addr().String()) {
		t.Errorf("a's route to b: %s", out)
	}

	// b leaves: its route and neighbour entry go.
	o.setPeers(pa)
	if out := sh(t, "ip", "route", "show", "dev", "brov"); strings.Contains(out, "10.9.16.20") {
		t.Errorf("route left for a gone peer:\n%s", out)
	}
	if out := sh(t, "ip", "neigh", "show", "dev", "brov", "nud", "permanent"); strings.Contains(out, "10.9.16.20") {
		t.Errorf("neighbour entry left for a gone peer:\n%s", out)
	}
}
