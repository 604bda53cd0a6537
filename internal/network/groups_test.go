package network

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/clipper-cloud/clipper/internal/nodeproto"
)

// defaultGroup has AWS's default-group semantics, as the controller sends
// them: everything from members of the group, everything out.
func defaultGroup(id string, members ...string) nodeproto.SecurityGroup {
	return nodeproto.SecurityGroup{ID: id,
		Ingress: []nodeproto.Rule{{Protocol: "-1", Groups: []string{id}}},
		Egress:  []nodeproto.Rule{{Protocol: "-1", CIDRs: []string{"0.0.0.0/0"}}},
		Members: members}
}

func TestSecurityGroups(t *testing.T) {
	l := newLab(t)
	web := defaultGroup("sg-web", "10.7.0.10", "10.7.0.11")
	if err := l.h.SetGroups(l.ctx, []nodeproto.SecurityGroup{web}, true); err != nil {
		t.Fatal(err)
	}
	a := l.instance("i-a", net1, "10.7.0.10", "02:00:00:00:00:0a", true, "sg-web")
	b := l.instance("i-b", net1, "10.7.0.11", "02:00:00:00:00:0b", true, "sg-web")
	out := l.outside()
	for _, i := range []*inst{a, b} {
		serveTCP(t, i.ns, ":80", i.id)
		serveTCP(t, i.ns, ":22", i.id)
	}
	serveTCP(t, out, ":80", "outside")
	serveTCP(t, out, ":8080", "outside")

	t.Run("members reach each other", func(t *testing.T) {
		mustReach(t, a.ns, hostPort(b.ip(), 80), "i-b")
		mustReach(t, b.ns, hostPort(a.ip(), 22), "i-a")
	})

	set := func(g nodeproto.SecurityGroup) time.Duration {
		t.Helper()
		start := time.Now()
		if err := l.h.SetGroups(l.ctx, []nodeproto.SecurityGroup{g}, false); err != nil {
			t.Fatal(err)
		}
		return time.Since(start)
	}

	t.Run("outside: 80 opens and closes with the rule, 22 stays closed", func(t *testing.T) {
		mustNotReach(t, out, hostPort(a.ip(), 80))
		mustNotReach(t, out, hostPort(a.ip(), 22))
		open := web
		open.Ingress = append([]nodeproto.Rule{{Protocol: "tcp", FromPort: 80, ToPort: 80, CIDRs: []string{"0.0.0.0/0"}}},
			web.Ingress...)
		took := set(open)
		t.Logf("rule applied in %v", took)
		if took > time.Second {
			t.Errorf("applying a rule took %v, want under a second", took)
		}
		// No retry: the next connection after SetGroups returns must pass.
		mustReach(t, out, hostPort(a.ip(), 80), "i-a")
		mustReach(t, out, hostPort(b.ip(), 80), "i-b")
		mustNotReach(t, out, hostPort(a.ip(), 22))
		set(web)
		mustNotReach(t, out, hostPort(a.ip(), 80))
		mustNotReach(t, out, hostPort(a.ip(), 22))
		// The members still reach each other.
		mustReach(t, a.ns, hostPort(b.ip(), 80), "i-b")
	})

	t.Run("egress rules", func(t *testing.T) {
		mustReach(t, a.ns, "192.0.2.2:8080", "outside")
		only80 := web
		only80.Egress = []nodeproto.Rule{{Protocol: "tcp", FromPort: 80, ToPort: 80, CIDRs: []string{"192.0.2.0/24"}}}
		set(only80)
		mustReach(t, a.ns, "192.0.2.2:80", "outside")
		mustNotReach(t, a.ns, "192.0.2.2:8080")
		// Egress applies between instances too: b's egress no longer
		// allows a, even though a's ingress would.
		mustNotReach(t, b.ns, hostPort(a.ip(), 80))
		set(web)
		mustReach(t, a.ns, "192.0.2.2:8080", "outside")
		mustReach(t, b.ns, hostPort(a.ip(), 80), "i-a")
	})

	t.Run("changing an instance's groups updates its rules in place", func(t *testing.T) {
		lone := nodeproto.SecurityGroup{ID: "sg-lone",
			Egress: []nodeproto.Rule{{Protocol: "-1", CIDRs: []string{"0.0.0.0/0"}}}, Members: []string{b.ip()}}
		webA := web
		webA.Members = []string{a.ip()}
		if err := l.h.SetGroups(l.ctx, []nodeproto.SecurityGroup{webA, lone}, true); err != nil {
			t.Fatal(err)
		}
		b.n.Groups = []string{"sg-lone"}
		b.attach(l)
		mustNotReach(t, a.ns, hostPort(b.ip(), 80))
		mustNotReach(t, b.ns, hostPort(a.ip(), 80))
		// The port kept its mark.
		if got := l.h.Ports()["i-b"].Mark; got != b.port.Mark {
			t.Errorf("mark changed from %#x to %#x", b.port.Mark, got)
		}
		b.n.Groups = []string{"sg-web"}
		if err := l.h.SetGroups(l.ctx, []nodeproto.SecurityGroup{web}, true); err != nil {
			t.Fatal(err)
		}
		b.attach(l)
		mustReach(t, a.ns, hostPort(b.ip(), 80), "i-b")
	})
}

// TestManyPortRules: a group of rules on hundreds of distinct ports and
// CIDRs (one concatenated interval set in the kernel) lets through
// exactly the address and port pairs its rules name, ICMP by type too.
func TestManyPortRules(t *testing.T) {
	l := newLab(t)
	var in []nodeproto.Rule
	for i := range 300 {
		// None of these match the outside host (192.0.2.2).
		in = append(in, nodeproto.Rule{Protocol: "tcp", FromPort: 10000 + i, ToPort: 10000 + i,
			CIDRs: []string{fmt.Sprintf("10.%d.%d.0/24", 64+i/200, i%200)}})
	}
	in = append(in,
		nodeproto.Rule{Protocol: "tcp", FromPort: 8000, ToPort: 8100, CIDRs: []string{"192.0.2.0/24"}},
		nodeproto.Rule{Protocol: "tcp", FromPort: 9000, ToPort: 9000, CIDRs: []string{"192.0.2.3/32"}},
		nodeproto.Rule{Protocol: "icmp", FromPort: 8, ToPort: 0, CIDRs: []string{"192.0.2.0/24"}})
	g := nodeproto.SecurityGroup{ID: "sg-many", Ingress: in,
		Egress: []nodeproto.Rule{{Protocol: "-1", CIDRs: []string{"0.0.0.0/0"}}}}
	if err := l.h.SetGroups(l.ctx, []nodeproto.SecurityGroup{g}, true); err != nil {
		t.Fatal(err)
	}
	a := l.instance("i-a", net1, "10.7.0.10", "02:00:00:00:00:0a", true, "sg-many")
	out := l.outside()
	for _, p := range []string{":8000", ":8050", ":8101", ":9000", ":10000"} {
		serveTCP(t, a.ns, p, "i-a")
	}
	mustReach(t, out, hostPort(a.ip(), 8000), "i-a")
	mustReach(t, out, hostPort(a.ip(), 8050), "i-a")
	mustNotReach(t, out, hostPort(a.ip(), 8101))
	mustNotReach(t, out, hostPort(a.ip(), 9000))  // only from 192.0.2.3
	mustNotReach(t, out, hostPort(a.ip(), 10000)) // only from 10.64.0.0/24
	if _, err := out.Output("ping", "-c", "1", "-W", "2", a.ip()); err != nil {
		t.Errorf("echo request allowed by type 8 code 0 did not pass: %v", err)
	}
	// The same group compiles to one rule in the kernel.
	chain := sh(t, "nft", "list", "chain", "inet", FilterTable, groupChainName("sg-many", dirIn))
	if n := strings.Count(chain, "accept"); n != 2 {
		t.Errorf("%d accept rules in the group chain, want 2 (tcp, icmp):\n%.2000s", n, chain)
	}
}
