package network

import (
	"context"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/clipper-cloud/clipper/internal/nodeproto"
	"github.com/clipper-cloud/clipper/internal/testutil/netns"
	"github.com/clipper-cloud/clipper/internal/testutil/nftcheck"
)

// noICMP allows TCP from anywhere and no ICMP at all: only the fixed
// first rules can let "fragmentation needed" in.
func noICMP(id string) nodeproto.SecurityGroup {
	return nodeproto.SecurityGroup{ID: id,
		Ingress: []nodeproto.Rule{{Protocol: "tcp", FromPort: 0, ToPort: 65535, CIDRs: []string{"0.0.0.0/0"}}},
		Egress:  []nodeproto.Rule{{Protocol: "-1", CIDRs: []string{"0.0.0.0/0"}}}}
}

func checkFirstRules(t *testing.T, want int) {
	t.Helper()
	chains, err := nftcheck.FirstRules([]byte(sh(t, "nft", "-j", "list", "ruleset")), FilterTable)
	if err != nil {
		t.Fatal(err)
	}
	if len(chains) != want {
		t.Fatalf("checked %d instance chains (%v), want %d", len(chains), chains, want)
	}
}

// TestFirstRulesInLiveRuleset reads the kernel's rule set as nft prints it
// and checks that every instance chain begins with the fixed rules,
// before any rule of a group, after attaching, changing groups and rules,
// and re-attaching with other groups.
func TestFirstRulesInLiveRuleset(t *testing.T) {
	l := newLab(t)
	deny := nodeproto.SecurityGroup{ID: "sg-deny", Egress: []nodeproto.Rule{}}
	if err := l.h.SetGroups(l.ctx, []nodeproto.SecurityGroup{noICMP("sg-tcp"), deny}, true); err != nil {
		t.Fatal(err)
	}
	a := l.instance("i-a", net1, "10.7.0.10", "02:00:00:00:00:0a", true, "sg-tcp", "sg-deny")
	l.instance("i-b", net2, "10.8.0.10", "02:00:00:00:00:0b", true)
	checkFirstRules(t, 4)
	g := noICMP("sg-tcp")
	g.Ingress = append(g.Ingress, nodeproto.Rule{Protocol: "icmp", FromPort: 8, ToPort: 0, CIDRs: []string{"10.0.0.0/8"}})
	if err := l.h.SetGroups(l.ctx, []nodeproto.SecurityGroup{g}, false); err != nil {
		t.Fatal(err)
	}
	a.n.Groups = []string{"sg-deny"}
	a.attach(l)
	checkFirstRules(t, 4)
}

// TestFragNeededUntracked: "fragmentation needed" for a connection that
// conntrack does not know (its entry flushed in the middle, mid-stream
// pickup off) is not RELATED, so ct state accepts nothing of it; only the
// fixed rule lets it reach the instance. The instance serves 20 MB to a
// host behind a router whose route on has an MTU of 1400 (links of 1500,
// so the MSS does not shrink): without the ICMP the transfer stalls.
func TestFragNeededUntracked(t *testing.T) {
	l := newLab(t)
	if err := l.h.SetGroups(l.ctx, []nodeproto.SecurityGroup{noICMP("sg-tcp")}, true); err != nil {
		t.Fatal(err)
	}
	router := outsideNS(l) // 192.0.2.2
	router.Forward()
	far := netns.New(t, "far")
	netns.Link(t, router, "narrow", far, "eth0")
	router.Addr("narrow", "198.51.100.1/24")
	router.IP("route", "replace", "198.51.100.0/24", "dev", "narrow", "mtu", "1400")
	router.IP("route", "add", "10.7.0.0/24", "via", "192.0.2.1")
	far.Addr("eth0", "198.51.100.2/24")
	far.IP("route", "add", "default", "via", "198.51.100.1")
	sh(t, "ip", "route", "add", "198.51.100.0/24", "via", "192.0.2.2") // gone with up0

	a := l.instance("i-a", net1, "10.7.0.10", "02:00:00:00:00:0a", true, "sg-tcp")
	const size = 20 << 20
	ln, err := a.ns.Listen("tcp", ":80")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		var go1 [1]byte
		if _, err := c.Read(go1[:]); err != nil {
			return
		}
		_, _ = c.Write(make([]byte, size))
	}()

	// Mid-stream packets of a flushed connection stay untracked (ct state
	// invalid), and so does ICMP about them.
	old := sh(t, "sysctl", "-n", "net.netfilter.nf_conntrack_tcp_loose")
	sh(t, "sysctl", "-w", "net.netfilter.nf_conntrack_tcp_loose=0")
	t.Cleanup(func() { sh(t, "sysctl", "-w", "net.netfilter.nf_conntrack_tcp_loose="+strings.TrimSpace(old)) })

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := far.DialContext(ctx, "tcp", hostPort(a.ip(), 80))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := netlink.ConntrackTableFlush(netlink.ConntrackTable); err != nil {
		t.Fatal(err)
	}
	_ = c.SetDeadline(time.Now().Add(60 * time.Second))
	if _, err := c.Write([]byte("g")); err != nil {
		t.Fatal(err)
	}
	n, err := io.Copy(io.Discard, c)
	if n != size {
		t.Fatalf("received %d of %d bytes: %v", n, size, err)
	}
	if route := a.ns.Run("ip", "route", "get", "198.51.100.2"); !strings.Contains(route, "mtu 1400") {
		t.Errorf("the instance did not learn the path MTU: %s", route)
	}
}
