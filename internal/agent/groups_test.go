package agent

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/clipper-cloud/clipper/internal/nodeproto"
)

// TestPeerListOrder checks that the peer list stays sorted by instance ID
// as answers add, update and remove peers, and after a full answer.
func TestPeerListOrder(t *testing.T) {
	n := newNetState()
	mk := func(id string, gone bool) nodeproto.Peer {
		return nodeproto.Peer{ID: id, VPCID: "vpc-1", IP: "10.0.0." + id[2:], Gone: gone}
	}
	check := func(step string, want ...string) {
		t.Helper()
		var got []string
		for _, p := range n.peerList() {
			got = append(got, p.ID)
		}
		if !slices.Equal(got, want) {
			t.Fatalf("%s: peers %v, want %v", step, got, want)
		}
	}
	n.merge(nodeproto.Desired{Full: true, Peers: []nodeproto.Peer{mk("i-5", false), mk("i-2", false), mk("i-8", false)}})
	check("full", "i-2", "i-5", "i-8")
	n.merge(nodeproto.Desired{Peers: []nodeproto.Peer{mk("i-3", false), mk("i-9", false), mk("i-1", false), mk("i-3", false)}})
	check("added", "i-1", "i-2", "i-3", "i-5", "i-8", "i-9")
	n.merge(nodeproto.Desired{Peers: []nodeproto.Peer{mk("i-5", true), mk("i-7", true), mk("i-2", false)}})
	check("removed and updated", "i-1", "i-2", "i-3", "i-8", "i-9")
	n.merge(nodeproto.Desired{Full: true, Peers: []nodeproto.Peer{mk("i-4", false), mk("i-6", true)}})
	check("full again", "i-4")
	for i := 20; i > 10; i-- {
		n.merge(nodeproto.Desired{Peers: []nodeproto.Peer{mk(fmt.Sprintf("i-%d", i), false)}})
	}
	n.merge(nodeproto.Desired{Peers: []nodeproto.Peer{mk("i-15", true)}})
	check("one by one", "i-11", "i-12", "i-13", "i-14", "i-16", "i-17", "i-18", "i-19", "i-20", "i-4")
}

// TestGroupMembersKept checks the members build hands over, kept as peers
// come and go, against members worked out afresh from the peers.
func TestGroupMembersKept(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	n := newNetState()
	groups := []string{"sg-a", "sg-b", "sg-c", "sg-d"}
	for step := range 400 {
		d := nodeproto.Desired{Full: step%97 == 0}
		if d.Full {
			d.Groups = []nodeproto.SecurityGroup{{ID: "sg-a"}, {ID: "sg-b"}}
		}
		for range rng.IntN(6) + 1 {
			p := peer(rng, groups)
			d.Peers = append(d.Peers, p)
		}
		n.merge(d)
		want := map[string][]string{}
		for _, p := range n.peers {
			for _, g := range p.Groups {
				want[g] = append(want[g], p.IP)
			}
		}
		got := map[string][]string{}
		for _, g := range n.build() {
			if g.Members != nil {
				got[g.ID] = g.Members
			}
			if _, known := n.groups[g.ID]; !known && len(g.Members) == 0 {
				t.Fatalf("step %d: member-only group %s without members", step, g.ID)
			}
		}
		for g, m := range want {
			slices.Sort(m)
			if !slices.Equal(got[g], m) {
				t.Fatalf("step %d: group %s members %v, want %v", step, g, got[g], m)
			}
		}
		if len(got) != len(want) {
			t.Fatalf("step %d: groups with members %v, want %v", step, got, want)
		}
	}
}

// peer makes a random peer among a few IDs and addresses, so that peers
// are added, moved between groups, readdressed and removed.
func peer(rng *rand.Rand, groups []string) nodeproto.Peer {
	p := nodeproto.Peer{ID: fmt.Sprintf("i-%d", rng.IntN(30)), VPCID: "vpc-1", IP: fmt.Sprintf("10.0.0.%d", rng.IntN(12)),
		Gone: rng.IntN(4) == 0}
	for range rng.IntN(3) {
		p.Groups = append(p.Groups, groups[rng.IntN(len(groups))])
	}
	return p
}
