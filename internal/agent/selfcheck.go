package agent

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/clipper-cloud/clipper/internal/doctor"
	"github.com/clipper-cloud/clipper/internal/model"
	"github.com/clipper-cloud/clipper/internal/network"
)

// The overlay self-check: on start and every few minutes the agent probes
// the underlay address of every peer node (the nodes that host instances
// of the networks this node serves) with Don't-Fragment packets of the
// underlay MTU the overlay needs (the instance MTU the controller hands
// out plus VXLAN's 50 bytes), and compares its own underlay interface's
// MTU with it. A black hole or an MTU mismatch becomes a node condition in
// the next report. It runs in its own goroutine, off the convergence path.

// PeerChecker probes one peer node's underlay address with packets of
// mtu bytes; doctor.PeerChecker is the real one.
type PeerChecker interface {
	Check(ctx context.Context, peer netip.Addr, mtu int) (doctor.Condition, error)
}

// SelfCheckConfig tunes the overlay self-check.
type SelfCheckConfig struct {
	// Interval is the time between full rounds (default 5 minutes); a
	// negative interval turns the self-check off.
	Interval time.Duration
	// Poll is how often the agent looks for a changed set of peers or MTU,
	// which starts a round at once (default 10 s).
	Poll time.Duration
	// Checker probes peers (default: doctor.PeerChecker, ICMP echo).
	Checker PeerChecker
	// InterfaceMTU returns the MTU and name of the interface holding an
	// address (default: doctor.InterfaceMTU).
	InterfaceMTU func(netip.Addr) (int, string, error)
}

// Defaults of the self-check.
const (
	selfCheckInterval = 5 * time.Minute
	selfCheckPoll     = 10 * time.Second
	// selfCheckParallel bounds the peers probed at once.
	selfCheckParallel = 4
	// vxlanOverhead is what VXLAN over IPv4 adds to an instance's packet:
	// Ethernet 14, IPv4 20, UDP 8, VXLAN 8.
	vxlanOverhead = 50
)

// selfCheck holds the latest result and the last one the controller took.
type selfCheck struct {
	mu    sync.Mutex
	cur   *model.NodeSelfCheck
	acked *model.NodeSelfCheck
}

// checkTargets is what one round checks: this node's underlay address, the
// underlay MTU needed and the peer nodes.
type checkTargets struct {
	self  netip.Addr
	mtu   int
	peers []netip.Addr
}

func (t checkTargets) equal(o checkTargets) bool {
	return t.self == o.self && t.mtu == o.mtu && slices.Equal(t.peers, o.peers)
}

// selfCheckTargets works out what to check from the desired state: the
// largest MTU of the overlay networks of the node's instances, and the
// nodes their peers run on.
func (a *Agent) selfCheckTargets(self netip.Addr) checkTargets {
	t := checkTargets{self: self}
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, in := range a.insts {
		n := in.desired.Network
		if in.desired.Power != model.PowerAbsent && n.VNI > 0 && n.Uplink == "" && n.MTU > 0 {
			t.mtu = max(t.mtu, n.MTU+vxlanOverhead)
		}
	}
	for _, p := range a.net.peers {
		if p.VNI == 0 {
			continue
		}
		addr, err := network.UnderlayAddr(p.Node)
		if err == nil && addr != self && !slices.Contains(t.peers, addr) {
			t.peers = append(t.peers, addr)
		}
	}
	slices.SortFunc(t.peers, netip.Addr.Compare)
	if t.mtu == 0 {
		t.peers = nil // no overlay traffic of ours: nothing to prove
	}
	return t
}

// selfCheckLoop runs a round after the first full sync, whenever the
// peers or the MTU change, and every Interval. It returns only when ctx
// ends (Run stops at the first loop that returns).
func (a *Agent) selfCheckLoop(ctx context.Context) error {
	cfg := a.cfg.SelfCheck
	self, err := network.UnderlayAddr(a.cfg.Address)
	if cfg.Interval < 0 || err != nil {
		if cfg.Interval >= 0 {
			a.log.Debug("overlay self-check off: the node has no underlay address", "address", a.cfg.Address)
		}
		<-ctx.Done()
		return ctx.Err()
	}
	select {
	case <-a.ready:
	case <-ctx.Done():
		return ctx.Err()
	}
	t := time.NewTicker(cfg.Poll)
	defer t.Stop()
	var last checkTargets
	var lastRound time.Time
	for first := true; ; first = false {
		if cur := a.selfCheckTargets(self); first || !cur.equal(last) || time.Since(lastRound) >= cfg.Interval {
			res := a.runSelfCheck(ctx, cur)
			if ctx.Err() != nil {
				return ctx.Err()
			}
			last, lastRound = cur, time.Now()
			a.setSelfCheck(res)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
}

// runSelfCheck checks the node's own underlay interface and then every
// peer, a few at a time.
func (a *Agent) runSelfCheck(ctx context.Context, t checkTargets) *model.NodeSelfCheck {
	res := &model.NodeSelfCheck{Checked: time.Now(), MTU: t.mtu, Conditions: []model.NodeCondition{}}
	if t.mtu == 0 {
		return res
	}
	if c, bad := a.checkOwnMTU(t); bad {
		res.Conditions = append(res.Conditions, c)
		return res // every peer would fail the same way: fix this first
	}
	conds := make([]*model.NodeCondition, len(t.peers))
	sem := make(chan struct{}, selfCheckParallel)
	var wg sync.WaitGroup
	for i, peer := range t.peers {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			conds[i] = a.checkPeer(ctx, peer, t.mtu)
		}()
	}
	wg.Wait()
	res.Peers = len(t.peers)
	for _, c := range conds {
		if c != nil {
			res.Conditions = append(res.Conditions, *c)
		}
	}
	return res
}

// checkOwnMTU compares the MTU of the interface that holds the node's
// underlay address with what the overlay needs.
func (a *Agent) checkOwnMTU(t checkTargets) (model.NodeCondition, bool) {
	mtu, ifname, err := a.cfg.SelfCheck.InterfaceMTU(t.self)
	if err != nil {
		a.log.Warn("overlay self-check: no interface holds the underlay address", "address", t.self, "error", err)
		return model.NodeCondition{}, false
	}
	if mtu >= t.mtu {
		return model.NodeCondition{}, false
	}
	return model.NodeCondition{Type: model.CondUnderlayMTU, Status: model.CondMTUMismatch, MTU: t.mtu, PathMTU: mtu,
		Message: fmt.Sprintf("the underlay interface %s (%s) has MTU %d, the overlay needs %d (instance MTU %d + %d for VXLAN): raise the interface's MTU or lower the cloud's --mtu to %d",
			ifname, t.self, mtu, t.mtu, t.mtu-vxlanOverhead, vxlanOverhead, mtu-vxlanOverhead)}, true
}

// checkPeer probes one peer; nil means healthy, or that the probe could
// not run (logged: no privileges, no route).
func (a *Agent) checkPeer(ctx context.Context, peer netip.Addr, mtu int) *model.NodeCondition {
	c, err := a.cfg.SelfCheck.Checker.Check(ctx, peer, mtu)
	if err != nil {
		if !errors.Is(err, context.Canceled) {
			a.log.Warn("overlay self-check: cannot probe a peer node", "peer", peer, "error", err)
		}
		return nil
	}
	if c.OK() {
		a.log.Debug("overlay self-check: peer ok", "peer", peer, "mtu", mtu, "probes", c.Probes)
		return nil
	}
	a.log.Warn("overlay self-check: path to a peer node is broken", "peer", peer, "status", c.Status, "mtu", mtu,
		"path_mtu", c.PathMTU, "message", c.Message)
	return &model.NodeCondition{Type: model.CondPeerPath, Status: string(c.Status), Peer: peer.String(), MTU: mtu,
		PathMTU: c.PathMTU, Message: c.Message}
}

// setSelfCheck records a finished round and has it reported.
func (a *Agent) setSelfCheck(res *model.NodeSelfCheck) {
	a.self.mu.Lock()
	a.self.cur = res
	a.self.mu.Unlock()
	a.kickReport()
}

// selfCheckReport is the self-check to put in a report: the latest, when
// the controller has not taken it yet or the report is full.
func (a *Agent) selfCheckReport(full bool) *model.NodeSelfCheck {
	a.self.mu.Lock()
	defer a.self.mu.Unlock()
	if a.self.cur != nil && (full || a.self.cur != a.self.acked) {
		return a.self.cur
	}
	return nil
}

// ackSelfCheck notes that the controller took sent.
func (a *Agent) ackSelfCheck(sent *model.NodeSelfCheck) {
	if sent == nil {
		return
	}
	a.self.mu.Lock()
	a.self.acked = sent
	a.self.mu.Unlock()
}

// selfCheckDefaults fills in the self-check's defaults.
func (c *SelfCheckConfig) defaults(a *Agent) {
	if c.Interval == 0 {
		c.Interval = selfCheckInterval
	}
	if c.Poll <= 0 {
		c.Poll = selfCheckPoll
	}
	if c.Checker == nil {
		c.Checker = doctor.PeerChecker{Log: a.log.With("component", "selfcheck")}
	}
	if c.InterfaceMTU == nil {
		c.InterfaceMTU = doctor.InterfaceMTU
	}
}
