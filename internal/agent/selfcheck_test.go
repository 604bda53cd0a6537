package agent_test

import (
	"context"
	"fmt"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"

	"github.com/clipper-cloud/clipper/internal/agent"
	"github.com/clipper-cloud/clipper/internal/api"
	"github.com/clipper-cloud/clipper/internal/doctor"
	"github.com/clipper-cloud/clipper/internal/model"
	"github.com/clipper-cloud/clipper/internal/testutil/cloud"
	"github.com/clipper-cloud/clipper/internal/testutil/netns"
)

// The overlay self-check end to end: agent → node protocol report →
// controller store → native API, as `clipper node ls` reads it.

const emptySHA = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"

// fakeChecker answers peer checks from a table it can change, and keeps
// what it was asked.
type fakeChecker struct {
	mu     sync.Mutex
	status doctor.ConditionStatus
	asked  map[string]int // peer -> MTU asked
}

func (f *fakeChecker) Check(_ context.Context, peer netip.Addr, mtu int) (doctor.Condition, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.asked[peer.String()] = mtu
	c := doctor.Condition{Peer: peer, MTU: mtu, Status: f.status, Message: "fake " + string(f.status)}
	if f.status == doctor.PeerBlackHole {
		c.PathMTU = 1400
	}
	return c, nil
}

func (f *fakeChecker) set(s doctor.ConditionStatus) {
	f.mu.Lock()
	f.status = s
	f.mu.Unlock()
}

// startPair starts a cloud of two nodes at the given underlay addresses;
// node1 self-checks with checker and ifMTU, node2 not at all. Two
// instances in the default VPC (spread over both nodes) make them peers.
func startPair(t *testing.T, addr1, addr2 string, checker agent.PeerChecker, ifMTU func(netip.Addr) (int, string, error)) *cloud.Cloud {
	t.Helper()
	c := cloud.Start(t, cloud.Options{Nodes: 2, Agent: func(name string, cfg *agent.Config) {
		switch name {
		case "node1":
			cfg.Address = addr1
			cfg.SelfCheck = agent.SelfCheckConfig{Interval: 300 * time.Millisecond, Poll: 50 * time.Millisecond,
				Checker: checker, InterfaceMTU: ifMTU}
		case "node2":
			cfg.Address = addr2
			cfg.SelfCheck = agent.SelfCheckConfig{Interval: -1}
		}
	}})
	ami := c.ImportImage(t, "guest")
	run, err := c.EC2.RunInstances(context.Background(), &ec2.RunInstancesInput{ImageId: aws.String(ami),
		InstanceType: types.InstanceTypeT3Micro, MinCount: aws.Int32(2), MaxCount: aws.Int32(2)})
	if err != nil {
		t.Fatal(err)
	}
	for _, in := range run.Instances {
		c.WaitState(t, *in.InstanceId, types.InstanceStateNameRunning, 30*time.Second)
	}
	return c
}

// waitNode polls the node listing until ok accepts node's entry.
func waitNode(t *testing.T, c *cloud.Cloud, name string, what string, ok func(api.NodeInfo) bool) api.NodeInfo {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	var last api.NodeInfo
	for time.Now().Before(deadline) {
		var nodes []api.NodeInfo
		if err := c.Client.Do(context.Background(), "GET", api.Prefix+"nodes", nil, 0, emptySHA, &nodes); err != nil {
			t.Fatal(err)
		}
		for _, n := range nodes {
			if n.Name == name {
				last = n
				if ok(n) {
					return n
				}
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("%s: never %s; last %+v (self-check %+v)", name, what, last, last.SelfCheck)
	return last
}

func hasCondition(status, peer string) func(api.NodeInfo) bool {
	return func(n api.NodeInfo) bool {
		if n.SelfCheck == nil {
			return false
		}
		for _, c := range n.SelfCheck.Conditions {
			if c.Status == status && c.Peer == peer {
				return true
			}
		}
		return false
	}
}

func healthy(n api.NodeInfo) bool {
	return n.SelfCheck != nil && n.SelfCheck.Peers > 0 && len(n.SelfCheck.Conditions) == 0
}

func TestSelfCheckReportsConditions(t *testing.T) {
	fc := &fakeChecker{status: doctor.PeerBlackHole, asked: map[string]int{}}
	ifMTU := 1500
	var mu sync.Mutex
	c := startPair(t, "192.0.2.1", "192.0.2.2", fc, func(netip.Addr) (int, string, error) {
		mu.Lock()
		defer mu.Unlock()
		return ifMTU, "eth0", nil
	})

	n := waitNode(t, c, "node1", "reported the black hole", hasCondition(model.CondBlackHole, "192.0.2.2"))
	cond := n.SelfCheck.Conditions[0]
	// The overlay's instance MTU (1450) plus VXLAN's 50 bytes.
	if n.SelfCheck.MTU != 1500 || cond.MTU != 1500 || cond.PathMTU != 1400 || cond.Type != model.CondPeerPath || n.SelfCheck.Peers != 1 {
		t.Errorf("self-check %+v, want MTU 1500, one peer, black hole at 1400", n.SelfCheck)
	}
	if got := n.SelfCheck.Summary(); got != "black-hole to 192.0.2.2" {
		t.Errorf("summary %q", got)
	}
	fc.mu.Lock()
	if len(fc.asked) != 1 || fc.asked["192.0.2.2"] != 1500 {
		t.Errorf("checker asked %v, want only 192.0.2.2 at 1500 (never the node itself)", fc.asked)
	}
	fc.mu.Unlock()
	if n2 := waitNode(t, c, "node2", "listed", func(api.NodeInfo) bool { return true }); n2.SelfCheck != nil {
		t.Errorf("node2 (self-check off) reported %+v", n2.SelfCheck)
	}

	// Fixed: the next round clears the condition.
	fc.set(doctor.PeerOK)
	waitNode(t, c, "node1", "healthy again", healthy)

	// The node's own underlay interface too small: one condition, and the
	// peers are not probed (they would all fail the same way).
	mu.Lock()
	ifMTU = 1450
	mu.Unlock()
	n = waitNode(t, c, "node1", "reported its small interface", func(n api.NodeInfo) bool {
		return n.SelfCheck != nil && len(n.SelfCheck.Conditions) == 1 && n.SelfCheck.Conditions[0].Type == model.CondUnderlayMTU
	})
	if cond := n.SelfCheck.Conditions[0]; cond.Status != model.CondMTUMismatch || cond.MTU != 1500 || cond.PathMTU != 1450 {
		t.Errorf("underlay condition %+v, want mtu-mismatch 1450 < 1500", cond)
	}
}

// nsChecker runs the real peer check inside a namespace: its raw sockets
// are made there, and keep working from any goroutine.
type nsChecker struct{ ns *netns.NS }

func (c nsChecker) Check(ctx context.Context, peer netip.Addr, mtu int) (doctor.Condition, error) {
	var cond doctor.Condition
	err := c.ns.Do(func() error {
		var err error
		cond, err = doctor.PeerChecker{}.Check(ctx, peer, mtu)
		return err
	})
	return cond, err
}

func (c nsChecker) interfaceMTU(a netip.Addr) (int, string, error) {
	var mtu int
	var name string
	err := c.ns.Do(func() error {
		var err error
		mtu, name, err = doctor.InterfaceMTU(a)
		return err
	})
	return mtu, name, err
}

// A real black hole between two nodes' underlay addresses: node1 sits in
// a namespace behind two routers, the second of which has a 1400-byte
// route MTU and drops its frag-needed; node2's address is on the far side.
// The agent's self-check probes for real and the condition reaches the API.
func TestSelfCheckBlackHole(t *testing.T) {
	netns.Require(t)
	hosts := []*netns.NS{netns.New(t, "n1"), netns.New(t, "r1"), netns.New(t, "r2"), netns.New(t, "n2")}
	for i := 0; i+1 < len(hosts); i++ {
		netns.Link(t, hosts[i], fmt.Sprintf("right%d", i), hosts[i+1], fmt.Sprintf("left%d", i))
		hosts[i].Addr(fmt.Sprintf("right%d", i), fmt.Sprintf("10.78.%d.1/24", i))
		hosts[i+1].Addr(fmt.Sprintf("left%d", i), fmt.Sprintf("10.78.%d.2/24", i))
	}
	r1, r2 := hosts[1], hosts[2]
	r1.Forward()
	r2.Forward()
	hosts[0].IP("route", "add", "default", "via", "10.78.0.2")
	r1.IP("route", "add", "10.78.2.0/24", "via", "10.78.1.2")
	r2.IP("route", "add", "10.78.0.0/24", "via", "10.78.1.1")
	hosts[3].IP("route", "add", "default", "via", "10.78.2.1")
	r2.IP("route", "replace", "10.78.2.0/24", "dev", "right2", "mtu", "1400")
	r2.Nft(`table inet blackhole {
	chain out {
		type filter hook output priority 0; policy accept;
		icmp type destination-unreachable icmp code frag-needed drop
	}
}
`)
	ck := nsChecker{hosts[0]}
	c := startPair(t, "10.78.0.1", "10.78.2.2", ck, ck.interfaceMTU)
	n := waitNode(t, c, "node1", "reported the black hole", hasCondition(model.CondBlackHole, "10.78.2.2"))
	cond := n.SelfCheck.Conditions[0]
	if cond.MTU != 1500 || cond.PathMTU != 1400 {
		t.Errorf("condition %+v, want 1500-byte packets failing and 1400 passing (found by probing)", cond)
	}
	t.Logf("node1: %s: %s", n.SelfCheck.Summary(), cond.Message)

	// Let frag-needed through: discovery works, but the overlay is still
	// configured bigger than the path: an MTU mismatch named by r2.
	r2.Run("nft", "delete", "table", "inet", "blackhole")
	n = waitNode(t, c, "node1", "reported the mismatch", hasCondition(model.CondMTUMismatch, "10.78.2.2"))
	if cond := n.SelfCheck.Conditions[0]; cond.PathMTU != 1400 {
		t.Errorf("condition %+v, want path MTU 1400", cond)
	}
}
