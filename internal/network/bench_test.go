package network

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/clipper-cloud/clipper/internal/nodeproto"
	"github.com/clipper-cloud/clipper/internal/testutil/netns"
)

// The benchmarks of issue 3: how long SetGroups takes for a group of 10
// and of 1,000 CIDR rules, and what those rules, the anti-spoofing chains
// and the rest of the node's rule set cost traffic between two instances
// on one node bridge.
//
// The "instances" are network namespaces attached with AttachDevice (the
// real bridge, nftables rule set and anti-spoofing chains), not VMs: under
// TCG a VM's throughput measures the emulator, not the network.

// benchRuns is how many times the throughput benchmarks measure each case;
// they report the median.
const benchRuns = 5

// benchPort is the port the traffic goes to, the only one the benchmark
// groups open to the instances' subnet.
const benchPort = 5201

// benchPorts are the ports the non-matching rules of a group open: "a
// handful of ports", the shape the compiler merges into address sets.
var benchPorts = []int{22, 80, 443, 3306, 5432, 6379, 8080, 9090}

// benchGroup is security group id with n ingress CIDR rules of which none
// matches traffic from net1, then a last rule that opens benchPort to net1;
// egress is open (EC2's default). Rule i is TCP from a /28 of 10.64.0.0/10,
// no two of them adjacent (so they do not merge into fewer ranges), to one
// of benchPorts, or with distinctPorts to a port of its own (so rules
// cannot share an address set: the compiler's worst case). variant changes
// one address of rule 0 so that successive calls differ.
func benchGroup(id string, n int, distinctPorts bool, variant int, members ...string) nodeproto.SecurityGroup {
	in := make([]nodeproto.Rule, 0, n+1)
	for i := range n {
		port := benchPorts[i%len(benchPorts)]
		if distinctPorts {
			port = 10000 + i
		}
		cidr := fmt.Sprintf("10.%d.%d.16/28", 64+i/200, i%200)
		if i == 0 {
			cidr = fmt.Sprintf("10.127.%d.%d/32", variant/256%256, variant%256)
		}
		in = append(in, nodeproto.Rule{Protocol: "tcp", FromPort: port, ToPort: port, CIDRs: []string{cidr}})
	}
	in = append(in, nodeproto.Rule{Protocol: "tcp", FromPort: benchPort, ToPort: benchPort,
		CIDRs: []string{net1.gw().Masked().String()}})
	return nodeproto.SecurityGroup{ID: id, Ingress: in,
		Egress:  []nodeproto.Rule{{Protocol: "-1", CIDRs: []string{"0.0.0.0/0"}}},
		Members: members}
}

// checkWorstCase fails unless the group's accept for traffic from net1 is
// in its last compiled ingress rule, so that every packet the group checks
// passes all the others first; it returns the number of compiled rules.
// (Rules with ports compile into one concatenated set lookup, so the
// benchmark groups are one rule whatever their size.)
func checkWorstCase(b *testing.B, g nodeproto.SecurityGroup) int {
	b.Helper()
	rules, errs := compileRules(g.Ingress)
	if len(errs) > 0 {
		b.Fatalf("group %s: %v", g.ID, errs)
	}
	last := rules[len(rules)-1]
	allow := pairSpan{Addr: prefixSpan(net1.gw().Masked()), Port: span{benchPort, benchPort}}
	if !slices.Contains(last.Pairs, allow) {
		b.Fatalf("group %s: the allow rule is not in the last of %d rules: %v", g.ID, len(rules), last)
	}
	return len(rules)
}

// BenchmarkGroupApply measures SetGroups for one group of 10 or 1,000
// ingress CIDR rules (see benchGroup): one nftables transaction that
// rewrites the group's chains, plus the cleanup pass that follows it.
// Every iteration changes one address, so no call is skipped as unchanged.
func BenchmarkGroupApply(b *testing.B) {
	for _, c := range []struct {
		name     string
		n        int
		distinct bool
	}{{"rules=10", 10, false}, {"rules=1000", 1000, false}, {"rules=50,ports=50", 50, true}, {"rules=1000,ports=1000", 1000, true}} {
		b.Run(c.name, func(b *testing.B) {
			l := newLab(b)
			i := 0
			for b.Loop() {
				i++
				g := benchGroup("sg-bench", c.n, c.distinct, i)
				if err := l.h.SetGroups(l.ctx, []nodeproto.SecurityGroup{g}, true); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.Elapsed().Microseconds())/1000/float64(b.N), "ms/op")
		})
	}
}

// pair is two instances on net1 (a client and a server, both in group
// sg-bench) whose namespaces are also joined by a bare Linux bridge in a
// namespace of its own, with no nftables rules and with bridged packets
// not passed to netfilter (bridge-nf-call-iptables=0): the same two
// network stacks, with and without Clipper in between.
type pair struct {
	l              *lab
	client, server *inst
	bareServerIP   string
}

func newPair(b *testing.B) *pair {
	b.Helper()
	l := newLab(b)
	g := benchGroup("sg-bench", 10, false, 0, "10.7.0.10", "10.7.0.11")
	if err := l.h.SetGroups(l.ctx, []nodeproto.SecurityGroup{g}, true); err != nil {
		b.Fatal(err)
	}
	p := &pair{l: l, bareServerIP: "10.9.0.11",
		client: l.instance("i-client", net1, "10.7.0.10", "02:00:00:00:00:0a", true, "sg-bench"),
		server: l.instance("i-server", net1, "10.7.0.11", "02:00:00:00:00:0b", true, "sg-bench")}

	p.sideBridge(b, "bare", "eth1", "10.9.0", false)
	p.sideBridge(b, "floor", "eth2", "10.10.0", true)
	return p
}

// floorServerIP is the server's address on the floor bridge.
const floorServerIP = "10.10.0.11"

// sideBridge joins the pair on a second Linux bridge of their own in a
// namespace of its own, on dev with addresses PREFIX.10 and PREFIX.11: the
// bare bridge (no netfilter at all), or with stateful the floor that any
// stateful filtering of bridged traffic pays: br_netfilter on and a lone
// "ct state established,related accept" in the forward hook, so every
// packet goes through conntrack and nothing else.
func (p *pair) sideBridge(b *testing.B, name, dev, prefix string, stateful bool) {
	b.Helper()
	ns := netns.New(b, name)
	ns.Sysctl("net.bridge.bridge-nf-call-iptables", map[bool]string{false: "0", true: "1"}[stateful])
	ns.IP("link", "add", "br"+name, "type", "bridge")
	ns.IP("link", "set", "br"+name, "up")
	if stateful {
		ns.Nft("table inet floor {\n\tchain established {\n\t\ttype filter hook forward priority 0; policy accept;\n" +
			"\t\tct state established,related accept\n\t}\n}\n")
	}
	for i, inst := range []*netns.NS{p.client.ns, p.server.ns} {
		port := fmt.Sprintf("p%s%d", name, i)
		inst.IP("link", "add", dev, "type", "veth", "peer", "name", port, "netns", ns.Name)
		ns.IP("link", "set", port, "master", "br"+name)
		ns.IP("link", "set", port, "up")
		inst.IP("link", "set", dev, "up")
		inst.Addr(dev, fmt.Sprintf("%s.%d/24", prefix, 10+i))
	}
	for i := range 2 {
		waitForwardingIn(b, ns, fmt.Sprintf("p%s%d", name, i))
	}
}

// setRules gives sg-bench n rules (see benchGroup).
func (p *pair) setRules(b *testing.B, n int, distinct bool) error {
	b.Helper()
	g := benchGroup("sg-bench", n, distinct, 0, p.client.ip(), p.server.ip())
	checkWorstCase(b, g)
	return p.l.h.SetGroups(p.l.ctx, []nodeproto.SecurityGroup{g}, false)
}

func (p *pair) mustSetRules(b *testing.B, n int, distinct bool) {
	b.Helper()
	if err := p.setRules(b, n, distinct); err != nil {
		b.Fatal(err)
	}
}

// waitForwardingIn is waitForwarding for a bridge port in another namespace.
func waitForwardingIn(b *testing.B, ns *netns.NS, dev string) {
	b.Helper()
	deadline := time.Now().Add(3 * time.Second)
	for time.Now().Before(deadline) {
		out, err := ns.Output("cat", "/sys/class/net/"+dev+"/brport/state")
		if err == nil && strings.TrimSpace(out) == "3" {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	b.Fatalf("bridge port %s in %s is not forwarding", dev, ns.Name)
}

// iperf3 runs a 3-second single-stream TCP test from client to the iperf3
// server at ip and returns the receiver's rate in Gbit/s.
func iperf3(b *testing.B, client *netns.NS, ip string) float64 {
	b.Helper()
	var last error
	for range 3 {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		out, err := client.Command(ctx, "iperf3", "-c", ip, "-p", fmt.Sprint(benchPort), "-t", "3", "-J").Output()
		cancel()
		var res struct {
			Error string `json:"error"`
			End   struct {
				SumReceived struct {
					BitsPerSecond float64 `json:"bits_per_second"`
				} `json:"sum_received"`
			} `json:"end"`
		}
		if jerr := json.Unmarshal(out, &res); jerr != nil {
			last = fmt.Errorf("%v: %v: %s", err, jerr, out)
		} else if res.Error != "" {
			// "the server is busy": the previous test is still ending.
			last = errors.New(res.Error)
		} else if err != nil {
			last = err
		} else if res.End.SumReceived.BitsPerSecond > 0 {
			return res.End.SumReceived.BitsPerSecond / 1e9
		} else {
			last = fmt.Errorf("no rate in %s", out)
		}
		time.Sleep(200 * time.Millisecond)
	}
	b.Fatalf("iperf3 to %s: %v", ip, last)
	return 0
}

// medianRatio is the median of a[i]/b[i]: figures measured back to back
// in one round share the machine's load of the moment (it is shared, and
// single runs vary by ±30%), so their ratio is steadier than the ratio of
// the medians.
func medianRatio(a, b []float64) float64 {
	r := make([]float64, len(a))
	for i := range a {
		r[i] = a[i] / b[i]
	}
	return median(r)
}

func median(v []float64) float64 {
	s := slices.Clone(v)
	slices.Sort(s)
	if len(s)%2 == 0 {
		return (s[len(s)/2-1] + s[len(s)/2]) / 2
	}
	return s[len(s)/2]
}

// BenchmarkThroughput measures single-stream TCP throughput (iperf3, 3
// seconds, median of benchRuns) between two instances on one node bridge
// whose group has 10 or 1,000 CIDR rules, none of which matches the
// traffic except the last (see benchGroup), and between the same two
// namespaces over a bare Linux bridge and over the floor bridge (nothing
// but br_netfilter and conntrack, see sideBridge), back to back in each
// round. It reports each in Gbit/s, and the median over the rounds of the
// ratios 1,000 rules / 10 rules, Clipper (10 rules) / bare, floor / bare
// (what stateful filtering of bridged traffic costs in this kernel at the
// least) and Clipper / floor (what Clipper adds to that).
//
// The group rules are stateful: only the first packet of a connection in
// each direction goes through them (then "ct state established" accepts),
// so this measures the node's per-packet cost (br_netfilter, conntrack,
// anti-spoofing, dispatch maps), not the group rules'. BenchmarkConnRate
// measures what the group rules cost.
func BenchmarkThroughput(b *testing.B) {
	p := newPair(b)
	srv := p.server.ns.Start("iperf3", "-s", "-p", fmt.Sprint(benchPort), "--forceflush")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := srv.WaitFor(ctx, "Server listening"); err != nil {
		b.Fatal(err)
	}
	var bare, floor, r10, r1000 []float64
	for b.Loop() {
		bare, floor, r10, r1000 = nil, nil, nil, nil
		for range benchRuns {
			bare = append(bare, iperf3(b, p.client.ns, p.bareServerIP))
			floor = append(floor, iperf3(b, p.client.ns, floorServerIP))
			p.mustSetRules(b, 10, false)
			r10 = append(r10, iperf3(b, p.client.ns, p.server.ip()))
			p.mustSetRules(b, 1000, false)
			r1000 = append(r1000, iperf3(b, p.client.ns, p.server.ip()))
		}
	}
	b.Logf("Gbit/s per run: bare %.2f, floor %.2f, 10 rules %.2f, 1000 rules %.2f", bare, floor, r10, r1000)
	b.ReportMetric(median(bare), "bare-Gbit/s")
	b.ReportMetric(median(floor), "floor-Gbit/s")
	b.ReportMetric(medianRatio(floor, bare), "floor/bare")
	b.ReportMetric(medianRatio(r10, floor), "clipper/floor")
	b.ReportMetric(median(r10), "rules10-Gbit/s")
	b.ReportMetric(median(r1000), "rules1000-Gbit/s")
	b.ReportMetric(medianRatio(r1000, r10), "rules1000/rules10")
	b.ReportMetric(medianRatio(r10, bare), "clipper/bare")
	b.ReportMetric(0, "ns/op")
}

// connRate opens and resets TCP connections from ns to addr one after the
// other for d and returns how many it opened per second. Every connection
// is new to conntrack, so its SYN goes through the group rules.
func connRate(b *testing.B, ns *netns.NS, addr string, d time.Duration) float64 {
	b.Helper()
	var n int
	start := time.Now()
	err := ns.Do(func() error {
		for time.Since(start) < d {
			c, err := net.DialTimeout("tcp", addr, time.Second)
			if err != nil {
				return err
			}
			// Reset instead of closing: no TIME_WAIT piles up.
			_ = c.(*net.TCPConn).SetLinger(0)
			c.Close()
			n++
		}
		return nil
	})
	if err != nil {
		b.Fatalf("connect to %s: %v", addr, err)
	}
	return float64(n) / time.Since(start).Seconds()
}

// BenchmarkConnRate measures new TCP connections per second (one at a
// time, 1 second, median of benchRuns) between the two instances of
// BenchmarkThroughput: over the bare bridge, and through groups of 10 and
// 1,000 CIDR rules on a handful of ports (which compile to a handful of
// address-set lookups), and of 50 and 1,000 rules each on a port of its
// own (which compile to 50 and 1,000 nftables rules: no shared address
// set). The SYN of each connection passes every group rule before the
// allow.
func BenchmarkConnRate(b *testing.B) {
	p := newPair(b)
	ln, err := p.server.ns.Listen("tcp", fmt.Sprintf(":%d", benchPort))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	cases := []struct {
		name     string
		n        int
		distinct bool
	}{{"rules10", 10, false}, {"rules1000", 1000, false}, {"rules50x50ports", 50, true}, {"rules1000x1000ports", 1000, true}}
	bareAddr := hostPort(p.bareServerIP, benchPort)
	var bare []float64
	var rates [][]float64
	for b.Loop() {
		bare = nil
		rates = make([][]float64, len(cases))
		for range benchRuns {
			bare = append(bare, connRate(b, p.client.ns, bareAddr, time.Second))
			for i, c := range cases {
				p.mustSetRules(b, c.n, c.distinct)
				rates[i] = append(rates[i], connRate(b, p.client.ns, hostPort(p.server.ip(), benchPort), time.Second))
			}
		}
	}
	b.Logf("conn/s per run: bare %.0f", bare)
	b.ReportMetric(median(bare), "bare-conn/s")
	for i, c := range cases {
		b.Logf("conn/s per run: %s %.0f", c.name, rates[i])
		b.ReportMetric(median(rates[i]), c.name+"-conn/s")
		if i > 0 {
			b.ReportMetric(medianRatio(rates[i], rates[0]), c.name+"/rules10")
		}
	}
	b.ReportMetric(0, "ns/op")
}
