package network

import (
	"context"
	"encoding/json"
	"slices"
	"testing"
	"time"

	"github.com/clipper-cloud/clipper/internal/nodeproto"
	"github.com/clipper-cloud/clipper/internal/testutil/netns"
)

// BenchmarkOverlayThroughput is issue 4's figure: TCP throughput (iperf3,
// one stream, 2 s) between two namespace instances on different nodes,
// across the VXLAN overlay with their security groups and anti-spoofing,
// next to the same two nodes talking over the bare underlay (a veth pair,
// MTU 1500). The two alternate, ovlBenchRuns times each; it reports their
// medians and the ratio (the issue asks for at least 0.9). The figures
// swing by a factor of two on a shared machine: read the median.
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
	startIperfServer(b, bi.ns)
	startIperfServer(b, o.ns2)
	here := netns.Current(b)

	var overlay, underlay []float64
	b.ResetTimer()
	for range b.N {
		for range ovlBenchRuns {
			overlay = append(overlay, ovlIperf(b, a.ns, bi.ip()))
			underlay = append(underlay, ovlIperf(b, here, underlay2))
		}
	}
	b.StopTimer()
	ov, ul := ovlMedian(overlay), ovlMedian(underlay)
	b.ReportMetric(ov/1e9, "overlay-Gbit/s")
	b.ReportMetric(ul/1e9, "underlay-Gbit/s")
	b.ReportMetric(ov/ul, "ratio")
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
