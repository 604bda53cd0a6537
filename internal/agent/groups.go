package agent

import (
	"context"
	"slices"
	"sort"

	"github.com/clipper-cloud/clipper/internal/nodeproto"
)

// netState is the agent's copy of the security groups and peers its
// instances need.
type netState struct {
	groups map[string]nodeproto.SecurityGroup // rules, by ID
	peers  map[string]nodeproto.Peer          // by instance ID
	vpcs   map[string]bool                    // networks with full peer lists
	// order is the IDs of peers, sorted, and members the sorted addresses
	// of each group's peers, kept as peers come and go: every answer that
	// brings a peer hands the network the whole sorted lists, and sorting
	// them afresh each time was most of the agent's work at a few
	// thousand instances.
	order   []string
	members map[string][]string // group ID -> peer IPs (one per membership)
}

func newNetState() *netState {
	return &netState{groups: map[string]nodeproto.SecurityGroup{}, peers: map[string]nodeproto.Peer{}, vpcs: map[string]bool{},
		members: map[string][]string{}}
}

// merge applies one desired-state answer; it reports whether the group
// definitions or members changed.
func (n *netState) merge(d nodeproto.Desired) bool {
	if d.Full {
		n.groups = map[string]nodeproto.SecurityGroup{}
		n.peers = map[string]nodeproto.Peer{}
		n.vpcs = map[string]bool{}
		for _, di := range d.Instances {
			if di.Network.VPCID != "" {
				n.vpcs[di.Network.VPCID] = true
			}
		}
	}
	changed := d.Full
	for _, g := range d.Groups {
		n.groups[g.ID] = g
		changed = true
	}
	for _, p := range d.Peers {
		old, had := n.peers[p.ID]
		if p.Gone {
			delete(n.peers, p.ID)
		} else {
			n.peers[p.ID] = p
		}
		if !d.Full {
			if had != !p.Gone {
				n.reorder(p.ID, !p.Gone)
			}
			if had {
				n.unjoin(old)
			}
			if !p.Gone {
				n.join(p)
			}
		}
		n.vpcs[p.VPCID] = true
		changed = true
	}
	if d.Full {
		n.order = n.order[:0]
		n.members = map[string][]string{}
		for id, p := range n.peers {
			n.order = append(n.order, id)
			for _, g := range p.Groups {
				n.members[g] = append(n.members[g], p.IP)
			}
		}
		slices.Sort(n.order)
		for _, m := range n.members {
			slices.Sort(m)
		}
	}
	return changed
}

// join adds a peer's address to the members of its groups.
func (n *netState) join(p nodeproto.Peer) {
	for _, g := range p.Groups {
		m := n.members[g]
		k, _ := slices.BinarySearch(m, p.IP)
		n.members[g] = slices.Insert(m, k, p.IP)
	}
}

// unjoin takes a peer's address out of the members of its groups.
func (n *netState) unjoin(p nodeproto.Peer) {
	for _, g := range p.Groups {
		m := n.members[g]
		if k, found := slices.BinarySearch(m, p.IP); found {
			m = slices.Delete(m, k, k+1)
		}
		if len(m) == 0 {
			delete(n.members, g)
		} else {
			n.members[g] = m
		}
	}
}

// reorder adds a peer's ID to order, or removes it.
func (n *netState) reorder(id string, add bool) {
	k, found := slices.BinarySearch(n.order, id)
	switch {
	case add && !found:
		n.order = slices.Insert(n.order, k, id)
	case !add && found:
		n.order = slices.Delete(n.order, k, k+1)
	}
}

// needsFull reports whether an instance refers to a group or a network the
// agent has no full picture of (placed here after the last full sync).
func (n *netState) needsFull(instances []nodeproto.DesiredInstance) bool {
	for _, di := range instances {
		if di.Network.VPCID != "" && !n.vpcs[di.Network.VPCID] {
			return true
		}
		for _, g := range di.Network.Groups {
			if _, ok := n.groups[g]; !ok {
				return true
			}
		}
	}
	return false
}

// build returns every group with its members filled in, plus member-only
// entries for groups that rules refer to but no local instance is in.
func (n *netState) build() []nodeproto.SecurityGroup {
	out := make([]nodeproto.SecurityGroup, 0, len(n.groups))
	for id, g := range n.groups {
		g.Members = slices.Clone(n.members[id])
		out = append(out, g)
	}
	for id, m := range n.members {
		if _, ok := n.groups[id]; !ok {
			out = append(out, nodeproto.SecurityGroup{ID: id, Members: slices.Clone(m), Ingress: []nodeproto.Rule{}, Egress: []nodeproto.Rule{}})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

// peerList returns the peers sorted by instance ID.
func (n *netState) peerList() []nodeproto.Peer {
	out := make([]nodeproto.Peer, 0, len(n.order))
	for _, id := range n.order {
		out = append(out, n.peers[id])
	}
	return out
}

// applyGroups hands the network the current groups and peers.
func (a *Agent) applyGroups(ctx context.Context, full bool) {
	a.mu.Lock()
	groups := a.net.build()
	peers := a.net.peerList()
	a.mu.Unlock()
	if err := a.cfg.Network.SetGroups(ctx, groups, full); err != nil {
		a.log.Error("apply security groups", "error", err)
	}
	if err := a.cfg.Network.SetPeers(ctx, peers); err != nil {
		a.log.Error("apply overlay peers", "error", err)
	}
}
