package network

import (
	"context"
	"net"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/clipper-cloud/clipper/internal/nodeproto"
	"github.com/clipper-cloud/clipper/internal/testutil/netns"
)

// lookup asks the DNS server at server (ip:53) from inside ns.
func lookup(t *testing.T, ns *netns.NS, server, name string, typ uint16, tcp bool) *dns.Msg {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	proto := "udp"
	if tcp {
		proto = "tcp"
	}
	c, err := ns.DialContext(ctx, proto, server)
	if err != nil {
		t.Fatalf("dial %s %s from %s: %v", proto, server, ns.Name, err)
	}
	defer c.Close()
	q := new(dns.Msg)
	q.SetQuestion(dns.Fqdn(name), typ)
	cl := &dns.Client{Net: proto, Timeout: 5 * time.Second}
	m, _, err := cl.ExchangeWithConnContext(ctx, q, &dns.Conn{Conn: c})
	if err != nil {
		t.Fatalf("%s %s from %s: %v", proto, name, ns.Name, err)
	}
	return m
}

func firstA(m *dns.Msg) string {
	for _, rr := range m.Answer {
		if a, ok := rr.(*dns.A); ok {
			return a.A.String()
		}
	}
	return ""
}

// serveFakeDNS runs a resolver in ns on addr:53 that answers every A query
// with 203.0.113.7, standing in for the node's upstream.
func serveFakeDNS(t *testing.T, ns *netns.NS, addr string) {
	t.Helper()
	var pc net.PacketConn
	if err := ns.Do(func() error {
		var err error
		pc, err = net.ListenPacket("udp4", net.JoinHostPort(addr, "53"))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	srv := &dns.Server{PacketConn: pc, Handler: dns.HandlerFunc(func(w dns.ResponseWriter, r *dns.Msg) {
		m := new(dns.Msg)
		m.SetReply(r)
		if r.Question[0].Qtype == dns.TypeA {
			m.Answer = append(m.Answer, &dns.A{Hdr: dns.RR_Header{Name: r.Question[0].Name, Rrtype: dns.TypeA,
				Class: dns.ClassINET, Ttl: 5}, A: net.IPv4(203, 0, 113, 7)})
		}
		_ = w.WriteMsg(m)
	})}
	go func() { _ = srv.ActivateAndServe() }()
	t.Cleanup(func() { _ = srv.Shutdown() })
}

// TestDNS checks the DNS service on the gateway, from instances: private
// names of the network's instances (local ones and the controller's peers
// on other nodes) over UDP and TCP, PTR, nothing of another network, and
// other names forwarded to an upstream resolver (a fake one, in the
// "outside" namespace: no query leaves the machine).
func TestDNS(t *testing.T) {
	l := newLab(t, WithDNSUpstreams([]string{"192.0.2.2"}))
	out := l.outside()
	serveFakeDNS(t, out, "192.0.2.2")
	a := l.instance("i-a", net1, "10.7.0.10", "02:00:00:00:00:0a", true)
	l.instance("i-b", net1, "10.7.0.11", "02:00:00:00:00:0b", true)
	c := l.instance("i-c", net2, "10.8.0.10", "02:00:00:00:00:0c", true)
	gw1, gw2 := "10.7.0.1:53", "10.8.0.1:53"

	for _, tcp := range []bool{false, true} {
		m := lookup(t, a.ns, gw1, "ip-10-7-0-11.ec2.internal", dns.TypeA, tcp)
		if firstA(m) != "10.7.0.11" || !m.Authoritative {
			t.Errorf("tcp=%v: the name of an instance on the same network: %v", tcp, m)
		}
	}
	if m := lookup(t, a.ns, gw1, "11.0.7.10.in-addr.arpa", dns.TypePTR, false); len(m.Answer) != 1 ||
		m.Answer[0].(*dns.PTR).Ptr != "ip-10-7-0-11.ec2.internal." {
		t.Errorf("PTR: %v", m)
	}
	if m := lookup(t, a.ns, gw1, "ip-10-8-0-10.ec2.internal", dns.TypeA, false); m.Rcode != dns.RcodeNameError {
		t.Errorf("an instance of another network resolves: %v", m)
	}
	if m := lookup(t, c.ns, gw2, "ip-10-8-0-10.ec2.internal", dns.TypeA, false); firstA(m) != "10.8.0.10" {
		t.Errorf("net2 does not resolve its own instance: %v", m)
	}

	// An instance of the network on another node, from the controller.
	peer := nodeproto.Peer{ID: "i-far", VPCID: a.n.VPCID, IP: "10.7.0.20", MAC: "02:00:00:00:00:20"}
	if err := l.h.SetPeers(l.ctx, []nodeproto.Peer{peer}); err != nil {
		t.Fatal(err)
	}
	if m := lookup(t, a.ns, gw1, "ip-10-7-0-20.ec2.internal", dns.TypeA, false); firstA(m) != "10.7.0.20" {
		t.Errorf("a peer on another node does not resolve: %v", m)
	}
	peer.Gone = true
	if err := l.h.SetPeers(l.ctx, []nodeproto.Peer{peer}); err != nil {
		t.Fatal(err)
	}
	if m := lookup(t, a.ns, gw1, "ip-10-7-0-20.ec2.internal", dns.TypeA, false); m.Rcode != dns.RcodeNameError {
		t.Errorf("a peer that is gone still resolves: %v", m)
	}

	if m := lookup(t, a.ns, gw1, "www.example.test", dns.TypeA, false); firstA(m) != "203.0.113.7" {
		t.Errorf("other names are not forwarded upstream: %v", m)
	}

	// A detached instance's name goes with it.
	if err := l.h.Detach(l.ctx, "i-b"); err != nil {
		t.Fatal(err)
	}
	if m := lookup(t, a.ns, gw1, "ip-10-7-0-11.ec2.internal", dns.TypeA, false); m.Rcode != dns.RcodeNameError {
		t.Errorf("a detached instance still resolves: %v", m)
	}
	// The outside cannot use the node as a resolver.
	if m, err := exchangeFrom(out, "10.7.0.1:53", "www.example.test"); err == nil {
		t.Errorf("the gateway's DNS answered the outside: %v", m)
	}
}

// exchangeFrom asks server from ns with a short timeout and returns the
// error of a query nobody answers.
func exchangeFrom(ns *netns.NS, server, name string) (*dns.Msg, error) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	c, err := ns.DialContext(ctx, "udp", server)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	q := new(dns.Msg)
	q.SetQuestion(dns.Fqdn(name), dns.TypeA)
	m, _, err := (&dns.Client{Timeout: time.Second}).ExchangeWithConnContext(ctx, q, &dns.Conn{Conn: c})
	return m, err
}
