package network

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/clipper-cloud/clipper/internal/nodeproto"
	"github.com/clipper-cloud/clipper/internal/testutil/netns"
)

// BenchmarkOverlayThroughput is issue 4's figure: TCP throughput (iperf3,
// one stream, 2 s) between two namespace instances on different nodes,
// across the VXLAN overlay with their security groups and anti-spoofing,
// next to the same two namespaces over the bare underlay: a second link
// from each to its node, routed node to node without encapsulation,
// bridge or rules of their own (MTU 1500). The two alternate,
// ovlBenchRuns times each; it reports their medians and the ratio (the
// issue asks for at least 0.9), and the nodes' own throughput over their
// veth for scale. The figures swing by a factor of two on a shared
// machine: read the median.
func BenchmarkOverlayThroughput(b *testing.B) {
	o := newOverlayLab(b)
	g := nodeproto.SecurityGroup{ID: "sg-bench",
		Ingress: []nodeproto.Rule{{Protocol: "-1", Groups: []string{"sg-bench"}}},
		Egress:  []nodeproto.Rule{{Protocol: "-1", CIDRs: []string{"0.0.0.0/0"}}},
		Members: []string{"10.9.0.10", "10.9.0.20"}}
	pa := nodeproto.Peer{ID: "i-a", VPCID: "vpc-brov", IP: "10.9.0.10", MAC: "02:00:00:00:09:0a", Groups: []string{g.ID}, Node: underlay1, VNI: netO.vni}
	pb := nodeproto.Peer{ID: "i-b", VPCID: "vpc-brov", IP: "10.9.0.20", MAC: "02:00:00:00:09:14", Groups: []string{g.ID}, Node: underlay2, VNI: netO.vni}
	o.setGroups(g)
	o.setPeers(pa, pb)
	a := o.instance(pa.ID, netO, pa.IP, pa.MAC, true, g.ID)
	bi := o.remoteInstance(pb.ID, netO, pb.IP, pb.MAC, g.ID)
	mustPing(b, a.ns, bi.ip(), 1450)
	here := netns.Current(b)
	bareIP := bareRoute(b, here, a.ns, o.ns2, bi.ns)
	mustPing(b, a.ns, bareIP, 1500)
	startIperfServer(b, bi.ns)
	startIperfServer(b, o.ns2)

	mv := newMinimalVXLAN(b)

	var overlay, bare, nodes, mvx, mrt []float64
	b.ResetTimer()
	for range b.N {
		for range ovlBenchRuns {
			overlay = append(overlay, ovlIperf(b, a.ns, bi.ip()))
			bare = append(bare, ovlIperf(b, a.ns, bareIP))
			mvx = append(mvx, ovlIperf(b, mv.client, "10.97.0.2"))
			mrt = append(mrt, ovlIperf(b, mv.client, "10.97.2.2"))
		}
		nodes = append(nodes, ovlIperf(b, here, underlay2))
	}
	b.StopTimer()
	ov, ul := ovlMedian(overlay), ovlMedian(bare)
	b.ReportMetric(ov/1e9, "overlay-Gbit/s")
	b.ReportMetric(ul/1e9, "underlay-Gbit/s")
	b.ReportMetric(ov/ul, "ratio")
	b.ReportMetric(ovlMedian(mvx)/1e9, "plain-vxlan-Gbit/s")
	b.ReportMetric(ovlMedian(mrt)/1e9, "plain-routed-Gbit/s")
	b.ReportMetric(ovlMedian(mvx)/ovlMedian(mrt), "plain-vxlan-ratio")
	b.ReportMetric(ovlMedian(nodes)/1e9, "node-to-node-Gbit/s")
}

// minimalVXLAN is the reference the overlay is read against: the same
// shape (two instance namespaces, each behind its node namespace, nodes on
// one veth underlay) with nothing but a bridge and a VXLAN device per node
// (static forwarding entries, no learning) and no rules, conntrack or
// anti-spoofing, next to the same two instances routed over that underlay.
// Its VXLAN/routed ratio is what encapsulation costs in this kernel before
// Clipper adds anything.
type minimalVXLAN struct{ client *netns.NS }

func newMinimalVXLAN(b *testing.B) minimalVXLAN {
	b.Helper()
	var nodes, insts [2]*netns.NS
	for i := range 2 {
		nodes[i], insts[i] = netns.New(b, fmt.Sprintf("mvn%d", i+1)), netns.New(b, fmt.Sprintf("mvi%d", i+1))
		nodes[i].Sysctl("net.ipv4.ip_forward", "1")
	}
	netns.Link(b, nodes[0], "u1", nodes[1], "u2")
	nodes[0].Addr("u1", "10.96.0.1/24")
	nodes[1].Addr("u2", "10.96.0.2/24")
	for i := range 2 {
		n, in, me, other := nodes[i], insts[i], i+1, 2-i
		mac := func(k int) string { return fmt.Sprintf("02:00:00:00:97:%02x", k) }
		n.IP("link", "add", "br0", "type", "bridge")
		n.IP("link", "set", "br0", "up")
		netns.Link(b, n, "t0", in, "eth0")
		n.IP("link", "set", "t0", "master", "br0")
		n.IP("link", "set", "t0", "mtu", "1450")
		in.IP("link", "set", "eth0", "mtu", "1450")
		in.IP("link", "set", "eth0", "address", mac(me))
		in.Addr("eth0", fmt.Sprintf("10.97.0.%d/24", me))
		in.IP("neigh", "replace", fmt.Sprintf("10.97.0.%d", other), "lladdr", mac(other), "dev", "eth0")
		n.IP("link", "add", "vx0", "type", "vxlan", "id", "97", "local", fmt.Sprintf("10.96.0.%d", me),
			"dstport", "4789", "nolearning")
		n.IP("link", "set", "vx0", "master", "br0")
		n.IP("link", "set", "vx0", "up")
		n.Run("bridge", "fdb", "append", mac(other), "dev", "vx0", "dst", fmt.Sprintf("10.96.0.%d", other))
		netns.Link(b, n, "r0", in, "eth1")
		n.Addr("r0", fmt.Sprintf("10.97.%d.1/24", me))
		in.Addr("eth1", fmt.Sprintf("10.97.%d.2/24", me))
		in.IP("route", "add", fmt.Sprintf("10.97.%d.0/24", other), "via", fmt.Sprintf("10.97.%d.1", me))
		n.IP("route", "add", fmt.Sprintf("10.97.%d.0/24", other), "via", fmt.Sprintf("10.96.0.%d", other))
	}
	waitForwardingIn(b, nodes[0], "t0")
	waitForwardingIn(b, nodes[1], "t0")
	mustPing(b, insts[0], "10.97.0.2", 1450)
	mustPing(b, insts[0], "10.97.2.2", 1500)
	startIperfServer(b, insts[1])
	return minimalVXLAN{client: insts[0]}
}

// bareRoute gives instance namespaces ia (on node n1) and ib (on n2) a
// second link to their node, 10.98.1.0/24 and 10.98.2.0/24, routed over
// the underlay; it returns ib's address there.
func bareRoute(b *testing.B, n1, ia, n2, ib *netns.NS) string {
	b.Helper()
	netns.Link(b, n1, "bare1", ia, "eth1")
	netns.Link(b, n2, "bare2", ib, "eth1")
	n1.Addr("bare1", "10.98.1.1/24")
	ia.Addr("eth1", "10.98.1.2/24")
	n2.Addr("bare2", "10.98.2.1/24")
	ib.Addr("eth1", "10.98.2.2/24")
	ia.IP("route", "add", "10.98.2.0/24", "via", "10.98.1.1")
	ib.IP("route", "add", "10.98.1.0/24", "via", "10.98.2.1")
	n1.IP("route", "add", "10.98.2.0/24", "via", underlay2)
	n2.IP("route", "add", "10.98.1.0/24", "via", underlay1)
	return "10.98.2.2"
}

const ovlBenchRuns = 5

// startIperfServer runs iperf3 -s in ns until the benchmark ends.
func startIperfServer(b *testing.B, ns *netns.NS) {
	b.Helper()
	p := ns.Start("iperf3", "-s", "--forceflush")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := p.WaitFor(ctx, "Server listening"); err != nil {
		b.Fatal(err)
	}
}

// ovlIperf measures one 2-second single-stream TCP run from ns to ip, in
// bit/s received.
func ovlIperf(b *testing.B, ns *netns.NS, ip string) float64 {
	b.Helper()
	out, err := ns.Output("iperf3", "-c", ip, "-t", "2", "-J")
	if err != nil {
		b.Fatalf("iperf3 to %s: %v: %s", ip, err, out)
	}
	var r struct {
		End struct {
			SumReceived struct {
				BitsPerSecond float64 `json:"bits_per_second"`
			} `json:"sum_received"`
		} `json:"end"`
	}
	if err := json.Unmarshal([]byte(out), &r); err != nil || r.End.SumReceived.BitsPerSecond == 0 {
		b.Fatalf("iperf3 to %s: %v: %s", ip, err, out)
	}
	return r.End.SumReceived.BitsPerSecond
}

func ovlMedian(v []float64) float64 {
	s := slices.Clone(v)
	slices.Sort(s)
	return s[len(s)/2]
}
