package agent

import (
	"fmt"
	"slices"
	"testing"

	"github.com/clipper-cloud/clipper/internal/nodeproto"
)

// TestPeerListOrder checks that the peer list stays sorted by instance ID
// as answers add, update and remove peers, and after a full answer.
func TestPeerListOrder(t *testing.T) {
	n := newNetState()
	peer := func(id string, gone bool) nodeproto.Peer {
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
	n.merge(nodeproto.Desired{Full: true, Peers: []nodeproto.Peer{peer("i-5", false), peer("i-2", false), peer("i-8", false)}})
	check("full", "i-2", "i-5", "i-8")
	n.merge(nodeproto.Desired{Peers: []nodeproto.Peer{peer("i-3", false), peer("i-9", false), peer("i-1", false), peer("i-3", false)}})
	check("added", "i-1", "i-2", "i-3", "i-5", "i-8", "i-9")
	n.merge(nodeproto.Desired{Peers: []nodeproto.Peer{peer("i-5", true), peer("i-7", true), peer("i-2", false)}})
	check("removed and updated", "i-1", "i-2", "i-3", "i-8", "i-9")
	n.merge(nodeproto.Desired{Full: true, Peers: []nodeproto.Peer{peer("i-4", false), peer("i-6", true)}})
	check("full again", "i-4")
	for i := 20; i > 10; i-- {
		n.merge(nodeproto.Desired{Peers: []nodeproto.Peer{peer(fmt.Sprintf("i-%d", i), false)}})
	}
	n.merge(nodeproto.Desired{Peers: []nodeproto.Peer{peer("i-15", true)}})
	check("one by one", "i-11", "i-12", "i-13", "i-14", "i-16", "i-17", "i-18", "i-19", "i-20", "i-4")
}
