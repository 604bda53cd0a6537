package dnsd

import (
	"context"
	"net/netip"
	"strings"

	"github.com/miekg/dns"
)

// TTLs of the answers the service makes itself: short, because an
// instance's address goes away with it.
const (
	recordTTL   = 60
	negativeTTL = 30
)

// udpSize is the largest UDP answer the service sends to a client that
// says it takes more than 512 bytes (EDNS0), the size DNS Flag Day 2020
// settled on.
const udpSize = 1232

// answer builds the reply to one query that arrived on a network's
// listener; it never returns nil. Names under the private domain and
// reverse names of known addresses are answered from the network's
// records (authoritatively); everything else is forwarded upstream.
func (s *Server) answer(ctx context.Context, network string, req *dns.Msg, tcp bool) *dns.Msg {
	if req.Response {
		return reply(req, dns.RcodeFormatError)
	}
	if req.Opcode != dns.OpcodeQuery {
		return reply(req, dns.RcodeNotImplemented)
	}
	if len(req.Question) != 1 {
		return reply(req, dns.RcodeFormatError)
	}
	q := req.Question[0]
	if q.Qclass != dns.ClassINET {
		return reply(req, dns.RcodeRefused)
	}
	switch q.Qtype {
	case dns.TypeAXFR, dns.TypeIXFR:
		return reply(req, dns.RcodeRefused)
	}
	name := strings.ToLower(q.Name)
	var m *dns.Msg
	switch {
	case dns.IsSubDomain(s.zone, name):
		m = s.local(network, req, name)
	case isReverse(name):
		if host, ok := s.reverse(network, name); ok {
			m = reply(req, dns.RcodeSuccess)
			m.Authoritative = true
			if q.Qtype == dns.TypePTR || q.Qtype == dns.TypeANY {
				m.Answer = append(m.Answer, &dns.PTR{Hdr: header(q.Name, dns.TypePTR, recordTTL), Ptr: host})
			}
		}
	}
	if m == nil {
		m = s.forward(ctx, req, tcp)
	}
	return fit(req, m, tcp)
}

// local answers a name under the private domain.
func (s *Server) local(network string, req *dns.Msg, name string) *dns.Msg {
	q := req.Question[0]
	m := reply(req, dns.RcodeSuccess)
	m.Authoritative = true
	if name == s.zone {
		if q.Qtype == dns.TypeSOA || q.Qtype == dns.TypeANY {
			m.Answer = append(m.Answer, s.soa())
		} else {
			m.Ns = append(m.Ns, s.soa())
		}
		return m
	}
	addr, ok := s.lookup(network, name)
	if !ok {
		m.Rcode = dns.RcodeNameError
		m.Ns = append(m.Ns, s.soa())
		return m
	}
	if q.Qtype == dns.TypeA || q.Qtype == dns.TypeANY {
		m.Answer = append(m.Answer, &dns.A{Hdr: header(q.Name, dns.TypeA, recordTTL), A: addr.AsSlice()})
		return m
	}
	m.Ns = append(m.Ns, s.soa()) // the name exists, with no record of this type
	return m
}

// soa is the private domain's start of authority, for negative answers.
func (s *Server) soa() dns.RR {
	return &dns.SOA{Hdr: header(s.zone, dns.TypeSOA, negativeTTL), Ns: "ns." + s.zone, Mbox: "hostmaster." + s.zone,
		Serial: 1, Refresh: 3600, Retry: 600, Expire: 86400, Minttl: negativeTTL}
}

func header(name string, typ uint16, ttl uint32) dns.RR_Header {
	return dns.RR_Header{Name: name, Rrtype: typ, Class: dns.ClassINET, Ttl: ttl}
}

// reply starts an answer to req with rcode.
func reply(req *dns.Msg, rcode int) *dns.Msg {
	m := new(dns.Msg)
	m.SetRcode(req, rcode)
	m.RecursionAvailable = true
	return m
}

// isReverse reports whether name is an IPv4 reverse-lookup name.
func isReverse(name string) bool { return strings.HasSuffix(name, ".in-addr.arpa.") }

// reverseAddr reads the address of a four-label IPv4 reverse name.
func reverseAddr(name string) (netip.Addr, bool) {
	labels := strings.Split(strings.TrimSuffix(name, ".in-addr.arpa."), ".")
	if len(labels) != 4 {
		return netip.Addr{}, false
	}
	a, err := netip.ParseAddr(labels[3] + "." + labels[2] + "." + labels[1] + "." + labels[0])
	if err != nil || !a.Is4() {
		return netip.Addr{}, false
	}
	return a, true
}

// fit makes m a reply to req that the client can take: its ID and
// question, an OPT record if the client sent one, and over UDP no more
// than the client's buffer (truncated, with TC set, past that).
func fit(req, m *dns.Msg, tcp bool) *dns.Msg {
	m.Id = req.Id
	m.Question = req.Question
	m.Response = true
	// An upstream's OPT (or one we add) is rebuilt for this client.
	extra := m.Extra[:0]
	for _, rr := range m.Extra {
		if rr.Header().Rrtype != dns.TypeOPT {
			extra = append(extra, rr)
		}
	}
	m.Extra = extra
	size := dns.MinMsgSize
	if opt := req.IsEdns0(); opt != nil {
		size = max(dns.MinMsgSize, min(int(opt.UDPSize()), udpSize))
		m.SetEdns0(udpSize, false)
	}
	if !tcp {
		m.Truncate(size)
	}
	return m
}
