package doctor_test

import (
	"os"
	"testing"

	"github.com/clipper-cloud/clipper/internal/doctor"
)

// The node self-check: a peer behind a black hole at 1400, checked at the
// configured 1500 and at 1400, and a peer behind a router that announces
// its MTU.
func TestCheckPeer(t *testing.T) {
	t.Parallel()
	tp := newTopo(t, 2)
	tp.bottleneck(2, routeMTU)
	tp.dropPTB(2)
	check := func(mtu string) doctor.Condition {
		t.Helper()
		exe, err := os.Executable()
		if err != nil {
			t.Fatal(err)
		}
		var c doctor.Condition
		runJSON(t, tp.client, &c, "env", "CLIPPER_DOCTOR_HELPER=peer", exe, tp.serverAddr(false), mtu)
		return c
	}
	c := check("1500")
	if c.Status != doctor.PeerBlackHole || c.PathMTU != routeMTU {
		t.Errorf("at 1500: %+v, want black-hole with path MTU %d", c, routeMTU)
	}
	if c := check("1400"); c.Status != doctor.PeerOK {
		t.Errorf("at 1400: %+v, want ok", c)
	}
	if c := check("9000"); c.Status != doctor.PeerMTUMismatch || c.PathMTU != 1500 {
		t.Errorf("at 9000: %+v, want mtu-mismatch with the interface's 1500", c)
	}
	tp.routers[1].Run("nft", "delete", "table", "inet", "blackhole")
	c = check("1500")
	if c.Status != doctor.PeerMTUMismatch || c.PathMTU != routeMTU || c.From.String() != tp.routerAddr(2, false) {
		t.Errorf("with frag-needed: %+v, want mtu-mismatch %d from %s", c, routeMTU, tp.routerAddr(2, false))
	}
}
