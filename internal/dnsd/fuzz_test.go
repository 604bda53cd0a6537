package dnsd

import (
	"context"
	"testing"

	"github.com/miekg/dns"
)

// FuzzAnswer feeds the query handler whatever unpacks as a DNS message:
// it must answer every one (never panic, never return nil), with the
// query's ID, in a message that packs, within the client's UDP size, and
// without forwarding anything (no upstreams: forwarded queries get
// SERVFAIL).
func FuzzAnswer(f *testing.F) {
	seed := func(m *dns.Msg) {
		b, err := m.Pack()
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b, false)
		f.Add(b, true)
	}
	seed(query("ip-172-31-0-10.ec2.internal.", dns.TypeA))
	seed(query("IP-172-31-0-10.EC2.INTERNAL.", dns.TypeAAAA))
	seed(query("ec2.internal.", dns.TypeSOA))
	seed(query("10.0.31.172.in-addr.arpa.", dns.TypePTR))
	seed(query("1.2.3.in-addr.arpa.", dns.TypePTR))
	seed(query("example.com.", dns.TypeMX))
	e := query("ip-172-31-0-11.ec2.internal.", dns.TypeANY)
	e.SetEdns0(65535, true)
	seed(e)
	f.Add([]byte{}, false)
	f.Add([]byte{0, 1, 0x81, 0x80, 0, 2, 0, 0, 0, 0, 0, 0}, false)
	s := New(nil, Config{Upstreams: []string{}})
	s.SetRecords("net1", nil)
	ts := testServer(f)
	f.Fuzz(func(t *testing.T, b []byte, tcp bool) {
		req := new(dns.Msg)
		if err := req.Unpack(b); err != nil {
			return
		}
		for _, srv := range []*Server{s, ts} {
			m := srv.answer(context.Background(), "net1", req, tcp)
			if m == nil {
				t.Fatal("no answer")
			}
			if m.Id != req.Id {
				t.Fatalf("answer id %d to query %d", m.Id, req.Id)
			}
			out, err := m.Pack()
			if err != nil {
				t.Fatalf("answer does not pack: %v\n%v", err, m)
			}
			limit := dns.MinMsgSize
			if opt := req.IsEdns0(); opt != nil {
				limit = max(limit, min(int(opt.UDPSize()), udpSize))
			}
			if !tcp && len(out) > limit {
				t.Fatalf("%d-byte UDP answer, limit %d", len(out), limit)
			}
		}
	})
}
