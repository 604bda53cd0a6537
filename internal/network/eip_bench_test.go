package network

import (
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/clipper-cloud/clipper/internal/nodeproto"
)

// BenchmarkEIPMove measures the node's share of moving an elastic IP: the
// time from the Attach that gives the address to another instance on the
// same node to the first TCP connection from outside that reaches the new
// holder (through the node's ARP answer, DNAT and the instance's ingress
// rules). It is not AssociateAddress to first packet: the API call, the
// controller and the long polls are left out, and both instances are on
// one node (test/e2e's BenchmarkEIPMoveAcrossNodes measures the whole
// span across two nodes with real VMs).
// Each operation moves the address once; ns/op is the mean, p50-ms and
// max-ms the median and the worst move.
func BenchmarkEIPMove(b *testing.B) {
	l := newLab(b)
	l.h.SetUplink("up0")
	if err := l.h.SetGroups(l.ctx, []nodeproto.SecurityGroup{publicGroup("sg-pub")}, true); err != nil {
		b.Fatal(err)
	}
	out := outsideNS(l)
	insts := []*inst{
		l.instance("i-a", net1, "10.7.0.10", "02:00:00:00:00:0a", true, "sg-pub"),
		l.instance("i-b", net1, "10.7.0.11", "02:00:00:00:00:0b", true, "sg-pub"),
	}
	for _, i := range insts {
		serveWho(b, i.ns, ":80", i.id)
	}
	const eip = "192.0.2.100"
	pub := hostPort(eip, 80)
	move := func(to *inst) {
		to.n.PublicIP = eip
		if _, err := l.h.AttachDevice(l.ctx, to.id, to.dev, to.n); err != nil {
			b.Fatal(err)
		}
	}
	release := func(from *inst) {
		from.n.PublicIP = ""
		if _, err := l.h.AttachDevice(l.ctx, from.id, from.dev, from.n); err != nil {
			b.Fatal(err)
		}
	}
	// firstReach connects until a connection reaches want.
	firstReach := func(want string) {
		deadline := time.Now().Add(5 * time.Second)
		for time.Now().Before(deadline) {
			line, err := probe(out, pub, 200*time.Millisecond)
			if err == nil && strings.HasPrefix(line, "hello from "+want+" ") {
				return
			}
		}
		b.Fatalf("%s never reached %s", pub, want)
	}
	move(insts[0])
	firstReach(insts[0].id)

	var took []time.Duration
	b.ResetTimer()
	for n := range b.N {
		to, from := insts[(n+1)%2], insts[n%2]
		start := time.Now()
		move(to)
		firstReach(to.id)
		took = append(took, time.Since(start))
		b.StopTimer()
		release(from)
		b.StartTimer()
	}
	b.StopTimer()
	slices.Sort(took)
	b.ReportMetric(float64(took[len(took)/2].Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(took[len(took)-1].Microseconds())/1000, "max-ms")
}
