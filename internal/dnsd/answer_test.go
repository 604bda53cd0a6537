package dnsd

import (
	"context"
	"net"
	"net/netip"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/miekg/dns"
)

// fakeUpstream is a resolver on the loopback that answers every A query
// with 192.0.2.53 (and counts what it was asked).
type fakeUpstream struct {
	addr    string
	queries atomic.Int32
}

// listenBoth listens on one loopback port for UDP and TCP. The UDP port
// the kernel picks may be taken for TCP (by another test's connection), so
// it tries again with another.
func listenBoth(t testing.TB) (net.PacketConn, net.Listener) {
	t.Helper()
	var err error
	for range 20 {
		var pc net.PacketConn
		if pc, err = net.ListenPacket("udp4", "127.0.0.1:0"); err != nil {
			t.Fatal(err)
		}
		var ln net.Listener
		if ln, err = net.Listen("tcp4", pc.LocalAddr().String()); err == nil {
			return pc, ln
		}
		pc.Close()
	}
	t.Fatalf("no loopback port free for both UDP and TCP: %v", err)
	return nil, nil
}

func startUpstream(t testing.TB) *fakeUpstream {
	t.Helper()
	pc, ln := listenBoth(t)
	u := &fakeUpstream{addr: pc.LocalAddr().String()}
	h := dns.HandlerFunc(func(w dns.ResponseWriter, r *dns.Msg) {
		u.queries.Add(1)
		m := new(dns.Msg)
		m.SetReply(r)
		m.RecursionAvailable = true
		q := r.Question[0]
		switch {
		case q.Name == "big.example.":
			for i := range 60 {
				m.Answer = append(m.Answer, &dns.A{Hdr: header(q.Name, dns.TypeA, 5), A: net.IPv4(192, 0, 2, byte(i))})
			}
		case q.Qtype == dns.TypeA:
			m.Answer = append(m.Answer, &dns.A{Hdr: header(q.Name, dns.TypeA, 5), A: net.IPv4(192, 0, 2, 53)})
		}
		if _, udp := w.RemoteAddr().(*net.UDPAddr); udp {
			size := dns.MinMsgSize
			if opt := r.IsEdns0(); opt != nil {
				size = int(opt.UDPSize())
			}
			m.Truncate(size)
		}
		_ = w.WriteMsg(m)
	})
	for _, srv := range []*dns.Server{{PacketConn: pc, Handler: h}, {Listener: ln, Handler: h}} {
		go func() { _ = srv.ActivateAndServe() }()
		t.Cleanup(func() { _ = srv.Shutdown() })
	}
	return u
}

func testServer(t testing.TB, upstreams ...string) *Server {
	t.Helper()
	if upstreams == nil {
		upstreams = []string{}
	}
	s := New(nil, Config{Upstreams: upstreams})
	s.SetRecords("net1", []netip.Addr{netip.MustParseAddr("172.31.0.10"), netip.MustParseAddr("172.31.0.11")})
	s.SetRecords("net2", []netip.Addr{netip.MustParseAddr("10.1.0.5")})
	return s
}

func query(name string, typ uint16) *dns.Msg {
	m := new(dns.Msg)
	m.SetQuestion(name, typ)
	return m
}

func ask(t *testing.T, s *Server, network string, req *dns.Msg, tcp bool) *dns.Msg {
	t.Helper()
	m := s.answer(context.Background(), network, req, tcp)
	if m.Id != req.Id || !m.Response {
		t.Fatalf("reply id %d response=%v to query %d", m.Id, m.Response, req.Id)
	}
	if _, err := m.Pack(); err != nil {
		t.Fatalf("reply does not pack: %v", err)
	}
	return m
}

func TestPrivateNames(t *testing.T) {
	s := testServer(t)
	for _, c := range []struct {
		name    string
		network string
		q       *dns.Msg
		rcode   int
		answer  string // the first answer's value, "" for none
		auth    bool
	}{
		{"A of an instance", "net1", query("ip-172-31-0-10.ec2.internal.", dns.TypeA), dns.RcodeSuccess, "172.31.0.10", true},
		{"case does not matter", "net1", query("IP-172-31-0-11.EC2.Internal.", dns.TypeA), dns.RcodeSuccess, "172.31.0.11", true},
		{"ANY gives the A", "net1", query("ip-172-31-0-10.ec2.internal.", dns.TypeANY), dns.RcodeSuccess, "172.31.0.10", true},
		{"AAAA of an instance: no data", "net1", query("ip-172-31-0-10.ec2.internal.", dns.TypeAAAA), dns.RcodeSuccess, "", true},
		{"unknown instance", "net1", query("ip-172-31-0-99.ec2.internal.", dns.TypeA), dns.RcodeNameError, "", true},
		{"another network's instance", "net1", query("ip-10-1-0-5.ec2.internal.", dns.TypeA), dns.RcodeNameError, "", true},
		{"its own network", "net2", query("ip-10-1-0-5.ec2.internal.", dns.TypeA), dns.RcodeSuccess, "10.1.0.5", true},
		{"a network with no records", "net3", query("ip-10-1-0-5.ec2.internal.", dns.TypeA), dns.RcodeNameError, "", true},
		{"the domain's SOA", "net1", query("ec2.internal.", dns.TypeSOA), dns.RcodeSuccess, "ns.ec2.internal.", true},
		{"the domain's A: no data", "net1", query("ec2.internal.", dns.TypeA), dns.RcodeSuccess, "", true},
		{"PTR of an instance", "net1", query("10.0.31.172.in-addr.arpa.", dns.TypePTR), dns.RcodeSuccess, "ip-172-31-0-10.ec2.internal.", true},
		{"PTR of another network's instance: forwarded, no upstream", "net1", query("5.0.1.10.in-addr.arpa.", dns.TypePTR), dns.RcodeServerFailure, "", false},
		{"other names without upstreams", "net1", query("example.com.", dns.TypeA), dns.RcodeServerFailure, "", false},
		{"zone transfer", "net1", query("ec2.internal.", dns.TypeAXFR), dns.RcodeRefused, "", false},
	} {
		t.Run(c.name, func(t *testing.T) {
			m := ask(t, s, c.network, c.q, false)
			if m.Rcode != c.rcode {
				t.Fatalf("rcode %s, want %s:\n%v", dns.RcodeToString[m.Rcode], dns.RcodeToString[c.rcode], m)
			}
			if m.Authoritative != c.auth {
				t.Errorf("authoritative=%v, want %v", m.Authoritative, c.auth)
			}
			got := ""
			if len(m.Answer) > 0 {
				f := strings.Fields(m.Answer[0].String())
				got = f[len(f)-1]
				if _, ok := m.Answer[0].(*dns.SOA); ok {
					got = m.Answer[0].(*dns.SOA).Ns
				}
			}
			if got != c.answer {
				t.Errorf("answer %q, want %q:\n%v", got, c.answer, m)
			}
			if c.auth && c.answer == "" && len(m.Ns) != 1 {
				t.Errorf("a negative answer without the SOA:\n%v", m)
			}
		})
	}
}

func TestRecordsReplaced(t *testing.T) {
	s := testServer(t)
	s.SetRecords("net1", []netip.Addr{netip.MustParseAddr("172.31.0.12"), netip.MustParseAddr("fd00::1")})
	if m := ask(t, s, "net1", query("ip-172-31-0-10.ec2.internal.", dns.TypeA), false); m.Rcode != dns.RcodeNameError {
		t.Errorf("a removed record still answers: %v", m)
	}
	if m := ask(t, s, "net1", query("ip-172-31-0-12.ec2.internal.", dns.TypeA), false); len(m.Answer) != 1 {
		t.Errorf("a new record does not answer: %v", m)
	}
}

func TestMalformedQueries(t *testing.T) {
	s := testServer(t)
	two := query("ip-172-31-0-10.ec2.internal.", dns.TypeA)
	two.Question = append(two.Question, two.Question[0])
	none := query("x.", dns.TypeA)
	none.Question = nil
	update := query("ec2.internal.", dns.TypeSOA)
	update.Opcode = dns.OpcodeUpdate
	resp := query("ip-172-31-0-10.ec2.internal.", dns.TypeA)
	resp.Response = true
	chaos := query("version.bind.", dns.TypeTXT)
	chaos.Question[0].Qclass = dns.ClassCHAOS
	for _, c := range []struct {
		name  string
		q     *dns.Msg
		rcode int
	}{
		{"two questions", two, dns.RcodeFormatError},
		{"no question", none, dns.RcodeFormatError},
		{"an update", update, dns.RcodeNotImplemented},
		{"a response", resp, dns.RcodeFormatError},
		{"class CHAOS", chaos, dns.RcodeRefused},
	} {
		t.Run(c.name, func(t *testing.T) {
			if m := ask(t, s, "net1", c.q, false); m.Rcode != c.rcode {
				t.Errorf("rcode %s, want %s", dns.RcodeToString[m.Rcode], dns.RcodeToString[c.rcode])
			}
		})
	}
}

func TestForward(t *testing.T) {
	up := startUpstream(t)
	s := testServer(t, up.addr)
	for _, tcp := range []bool{false, true} {
		m := ask(t, s, "net1", query("example.com.", dns.TypeA), tcp)
		if m.Rcode != dns.RcodeSuccess || len(m.Answer) != 1 || m.Answer[0].(*dns.A).A.String() != "192.0.2.53" {
			t.Errorf("tcp=%v: forwarded answer %v", tcp, m)
		}
	}
	// Private names never go upstream.
	before := up.queries.Load()
	ask(t, s, "net1", query("ip-172-31-0-99.ec2.internal.", dns.TypeA), false)
	if up.queries.Load() != before {
		t.Error("a private name was forwarded")
	}
}

func TestForwardTruncatesForUDP(t *testing.T) {
	up := startUpstream(t)
	s := testServer(t, up.addr)
	m := ask(t, s, "net1", query("big.example.", dns.TypeA), false)
	if b, _ := m.Pack(); len(b) > dns.MinMsgSize || !m.Truncated {
		t.Errorf("a %d-byte UDP answer to a client without EDNS (truncated=%v)", len(b), m.Truncated)
	}
	q := query("big.example.", dns.TypeA)
	q.SetEdns0(4096, false)
	m = ask(t, s, "net1", q, false)
	if b, _ := m.Pack(); len(b) > udpSize || m.IsEdns0() == nil {
		t.Errorf("a %d-byte UDP answer to an EDNS client, opt %v", len(b), m.IsEdns0())
	}
	if m = ask(t, s, "net1", query("big.example.", dns.TypeA), true); m.Truncated || len(m.Answer) != 60 {
		t.Errorf("TCP answer truncated=%v with %d records", m.Truncated, len(m.Answer))
	}
}

func TestUnreachableUpstreamFailsFast(t *testing.T) {
	// A closed port on the loopback: the upstream refuses at once, and the
	// instance hears SERVFAIL rather than waiting.
	pc, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := pc.LocalAddr().String()
	pc.Close()
	s := testServer(t, closed)
	if m := ask(t, s, "net1", query("example.com.", dns.TypeA), false); m.Rcode != dns.RcodeServerFailure {
		t.Errorf("rcode %s, want SERVFAIL", dns.RcodeToString[m.Rcode])
	}
}

func TestForwardNeverLoopsToItself(t *testing.T) {
	s := testServer(t, "172.31.0.1")
	s.lns["net1"] = &listener{dev: "br1", addr: netip.MustParseAddr("172.31.0.1")}
	if m := ask(t, s, "net1", query("example.com.", dns.TypeA), false); m.Rcode != dns.RcodeServerFailure {
		t.Errorf("rcode %s, want SERVFAIL", dns.RcodeToString[m.Rcode])
	}
}
