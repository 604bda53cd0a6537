package service

import (
	"context"
	"net/netip"
	"testing"

	"github.com/clipper-cloud/clipper/internal/model"
	"github.com/clipper-cloud/clipper/internal/nodeproto"
)

func FuzzParseForward(f *testing.F) {
	for _, s := range [][3]string{
		{"tcp", "198.51.100.7:8080", "172.31.0.5:80"},
		{"", "198.51.100.7:53", "10.0.0.1:53"},
		{"UDP", "1.2.3.4:1", "5.6.7.8:65535"},
		{"sctp", "1.2.3.4:1", "5.6.7.8:2"},
		{"tcp", "[::1]:80", "1.2.3.4:80"},
		{"tcp", "1.2.3.4:0", "1.2.3.4:99999"},
		{"tcp", "0.0.0.0:80", " 1.2.3.4:80 "},
	} {
		f.Add(s[0], s[1], s[2])
	}
	f.Fuzz(func(t *testing.T, proto, listen, to string) {
		p, l, d, err := ParseForward(proto, listen, to)
		if err != nil {
			return
		}
		if p != "tcp" && p != "udp" {
			t.Fatalf("protocol %q accepted", p)
		}
		for _, ap := range []struct{ a, b any }{{l.Addr().Is4(), l.Port() != 0}, {d.Addr().Is4(), d.Port() != 0}} {
			if ap.a != true || ap.b != true {
				t.Fatalf("accepted %q -> %q: %v %v", listen, to, l, d)
			}
		}
	})
}

// TestForwardListenChecks: a forward listens on a public pool address that
// is no elastic IP, once per protocol and port, and all the forwards of an
// address are on one node; elastic IPs are not allocated from addresses
// forwards use.
func TestForwardListenChecks(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t)
	f.svc.cfg.PublicPools = []netip.Prefix{netip.MustParsePrefix("198.51.100.4/30")} // .5 and .6
	create := func(proto, listen, node string) (model.Forward, error) {
		return f.svc.CreateForward(ctx, f.caller, ForwardSpec{Protocol: proto, Listen: listen, To: "192.0.2.9:80", Node: node})
	}
	if _, err := create("tcp", "203.0.113.5:80", ""); model.KindOf(err) != model.KindInvalidParameter {
		t.Fatalf("a listen address outside the pool: %v", err)
	}
	if _, err := create("tcp", "198.51.100.5:8080", ""); err != nil {
		t.Fatal(err)
	}
	if _, err := create("tcp", "198.51.100.5:8080", ""); model.KindOf(err) != model.KindDuplicate {
		t.Fatalf("the same forward twice: %v", err)
	}
	if _, err := create("udp", "198.51.100.5:8080", ""); err != nil {
		t.Fatalf("udp on the port tcp has: %v", err)
	}
	if _, err := f.svc.AllocateAddress(ctx, f.caller, "198.51.100.5", nil); model.KindOf(err) != model.KindInUse {
		t.Fatalf("allocating a forward's address: %v", err)
	}
	a, err := f.svc.AllocateAddress(ctx, f.caller, "", nil)
	if err != nil || a.PublicIP != "198.51.100.6" {
		t.Fatalf("allocate: %+v %v, want the address no forward has", a, err)
	}
	if _, err := f.svc.AllocateAddress(ctx, f.caller, "", nil); model.KindOf(err) != model.KindInsufficientCapacity {
		t.Fatalf("allocate with the pool used up: %v", err)
	}
	if _, err := create("tcp", "198.51.100.6:8080", ""); model.KindOf(err) != model.KindInUse {
		t.Fatalf("a forward on an elastic IP: %v", err)
	}
	if _, err := f.svc.RegisterNode(ctx, nodeproto.Registration{Name: "n2", Capacity: model.Capacity{VCPUs: 1, MemoryMiB: 1}}); err != nil {
		t.Fatal(err)
	}
	if _, err := create("tcp", "198.51.100.5:9000", "n2"); model.KindOf(err) != model.KindInUse {
		t.Fatalf("an address's forwards on two nodes: %v", err)
	}
	if _, err := create("tcp", "198.51.100.5:9000", "n1"); err != nil {
		t.Fatalf("another port of the address on its node: %v", err)
	}
}
