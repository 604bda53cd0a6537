package doctor

import (
	"encoding/binary"
	"log/slog"
	"net"
	"net/netip"
	"testing"
	"time"
)

// The answer parsers of rawProber, without sockets: probes are built by
// the prober itself, answers are the packets a router or the target would
// send back, IP header removed as the raw sockets deliver them.

var (
	testSrc4, testDst4 = netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("198.51.100.2")
	testSrc6, testDst6 = netip.MustParseAddr("2001:db8::1"), netip.MustParseAddr("2001:db8:1::2")
	testRouter4        = netip.MustParseAddr("203.0.113.1")
	testRouter6        = netip.MustParseAddr("2001:db8:ff::1")
)

// testProber is a prober with no sockets that expects answers to probes
// 0..n-1.
func testProber(m Method, v6 bool, n int) *rawProber {
	p := &rawProber{
		log: slog.New(slog.DiscardHandler), method: m, v6: v6, port: 443,
		pending: map[uint32]*pending{}, curTTL: map[*net.IPConn]int{}, hold: -1,
		nowFunc: time.Now, udpRange: 4096, echoID: 0x1234, seqBase: 0xdeadbeef, sport: 40001,
		src: testSrc4, dst: testDst4,
	}
	if v6 {
		p.src, p.dst = testSrc6, testDst6
	}
	if m == MethodUDP {
		p.port = udpPort
	}
	notify := make(chan struct{}, n)
	for id := range uint32(n) {
		p.pending[id] = &pending{id: id, spec: probeSpec{size: 1400}, notify: notify, sent: time.Now()}
	}
	p.next = uint32(n)
	return p
}

// ipHeaderFor is the IP header a probe of the prober goes out with.
func ipHeaderFor(p *rawProber, payload int) []byte {
	proto := byte(1)
	switch {
	case p.method == MethodTCP:
		proto = 6
	case p.method == MethodUDP:
		proto = 17
	case p.v6:
		proto = 58
	}
	if p.v6 {
		h := make([]byte, ipv6Header)
		h[0] = 6 << 4
		binary.BigEndian.PutUint16(h[4:], uint16(payload))
		h[6], h[7] = proto, 64
		copy(h[8:], p.src.AsSlice())
		copy(h[24:], p.dst.AsSlice())
		return h
	}
	h := make([]byte, ipv4Header)
	h[0] = 0x45
	binary.BigEndian.PutUint16(h[2:], uint16(ipv4Header+payload))
	h[6] = 0x40 // DF
	h[8], h[9] = 64, proto
	copy(h[12:], p.src.AsSlice())
	copy(h[16:], p.dst.AsSlice())
	return h
}

// icmpErrorFor is the ICMP error (type, code, the 4 bytes after the
// checksum) quoting probe id as routers do: its IP header and the start
// of its payload.
func icmpErrorFor(p *rawProber, id uint32, typ, code byte, rest uint32) []byte {
	probe, _ := p.build(id, 1400)
	quoted := append(ipHeaderFor(p, len(probe)), probe[:min(len(probe), 64)]...)
	b := make([]byte, icmpHeader, icmpHeader+len(quoted))
	b[0], b[1] = typ, code
	binary.BigEndian.PutUint32(b[4:], rest)
	return append(b, quoted...)
}

func outcomeOf(t *testing.T, p *rawProber, id uint32) outcome {
	t.Helper()
	p.mu.Lock()
	defer p.mu.Unlock()
	pd := p.pending[id]
	if !pd.done {
		return outcome{kind: lost}
	}
	return pd.out
}

func TestParseAnswers(t *testing.T) {
	for _, m := range []Method{MethodICMP, MethodTCP, MethodUDP} {
		for _, v6 := range []bool{false, true} {
			name := string(m) + "/v4"
			router, fragType, fragCode, ttlType, unreachType := testRouter4, byte(3), byte(4), byte(11), byte(3)
			if v6 {
				name = string(m) + "/v6"
				router, fragType, fragCode, ttlType, unreachType = testRouter6, 2, 0, 3, 1
			}
			t.Run(name, func(t *testing.T) {
				p := testProber(m, v6, 8)
				// Probe 1: too big, next-hop MTU 1400.
				rest := uint32(1400) // IPv4 keeps it in the low 16 bits, ICMPv6 in all 32
				p.handleICMP(icmpErrorFor(p, 1, fragType, fragCode, rest), router, time.Now())
				if o := outcomeOf(t, p, 1); o.kind != tooBig || o.mtu != 1400 || o.from != router {
					t.Errorf("too-big answer: %+v, want too-big 1400 from %s", o, router)
				}
				// Probe 2: time exceeded at the router.
				p.handleICMP(icmpErrorFor(p, 2, ttlType, 0, 0), router, time.Now())
				if o := outcomeOf(t, p, 2); o.kind != expired || o.from != router {
					t.Errorf("time exceeded: %+v, want expired from %s", o, router)
				}
				// Probe 3: another unreachable from a router.
				p.handleICMP(icmpErrorFor(p, 3, unreachType, 1, 0), router, time.Now())
				if o := outcomeOf(t, p, 3); o.kind != refused {
					t.Errorf("unreachable from a router: %+v, want refused", o)
				}
				// Probe 4: the target's own answer.
				switch m {
				case MethodICMP:
					reply := make([]byte, 8)
					reply[0] = 0
					if v6 {
						reply[0] = 129
					}
					binary.BigEndian.PutUint16(reply[4:], p.echoID)
					binary.BigEndian.PutUint16(reply[6:], 4)
					p.handleICMP(reply, p.dst, time.Now())
				case MethodTCP:
					seg := make([]byte, tcpHeader)
					binary.BigEndian.PutUint16(seg[0:], p.port)
					binary.BigEndian.PutUint16(seg[2:], p.sport)
					binary.BigEndian.PutUint32(seg[8:], p.seqBase+4<<16+1)
					seg[13] = 0x12 // SYN-ACK
					p.handleTCP(seg, p.dst, time.Now())
				case MethodUDP:
					code := byte(3) // port unreachable
					if v6 {
						code = 4
					}
					p.handleICMP(icmpErrorFor(p, 4, unreachType, code, 0), p.dst, time.Now())
				}
				if o := outcomeOf(t, p, 4); o.kind != reached || o.from != p.dst {
					t.Errorf("target's answer: %+v, want reached from %s", o, p.dst)
				}
				// An answer quoting someone else's packet is ignored.
				other := testProber(m, v6, 8)
				other.echoID, other.sport, other.seqBase = 0x4321, 50000, 7
				other.dst = router
				p.handleICMP(icmpErrorFor(other, 5, fragType, fragCode, 1280), router, time.Now())
				if o := outcomeOf(t, p, 5); o.kind != lost {
					t.Errorf("answer to another prober's packet matched probe 5: %+v", o)
				}
			})
		}
	}
}

// FuzzParseAnswers feeds arbitrary bytes to the ICMP and TCP answer
// parsers of every method and family. They must never panic, and whatever
// they match must make sense: the target's answers come from the target,
// too-big answers from anyone, and only probes that were sent resolve.
func FuzzParseAnswers(f *testing.F) {
	for _, m := range []Method{MethodICMP, MethodTCP, MethodUDP} {
		for _, v6 := range []bool{false, true} {
			p := testProber(m, v6, 4)
			f.Add(byte(0), icmpErrorFor(p, 1, 3, 4, 1400), v6, true)
			f.Add(byte(1), icmpErrorFor(p, 2, 2, 0, 1280), v6, true)
			f.Add(byte(2), icmpErrorFor(p, 3, 11, 0, 0), v6, false)
		}
	}
	f.Add(byte(0), []byte{0, 0, 0, 0, 0x12, 0x34, 0, 1}, false, false)
	f.Add(byte(3), []byte{129, 0, 0, 0, 0x12, 0x34, 0, 2}, true, false)
	syn := make([]byte, tcpHeader)
	binary.BigEndian.PutUint16(syn[0:], 443)
	binary.BigEndian.PutUint16(syn[2:], 40001)
	binary.BigEndian.PutUint32(syn[8:], 0xdeadbeef+1)
	syn[13] = 0x12
	f.Add(byte(4), syn, false, false)
	f.Add(byte(0), []byte{3, 4, 0, 0, 0, 0, 5, 120, 0x4f}, false, true)
	f.Add(byte(1), []byte{}, true, true)
	f.Fuzz(func(t *testing.T, sel byte, b []byte, v6, fromRouter bool) {
		m := []Method{MethodICMP, MethodTCP, MethodUDP}[int(sel)%3]
		const n = 16
		p := testProber(m, v6, n)
		from := p.dst
		if fromRouter {
			from = testRouter4
			if v6 {
				from = testRouter6
			}
		}
		p.handleICMP(b, from, time.Now())
		if m == MethodTCP {
			p.handleTCP(b, from, time.Now())
		}
		p.mu.Lock()
		defer p.mu.Unlock()
		if len(p.pending) != n {
			t.Fatalf("%d pending probes after parsing, want %d", len(p.pending), n)
		}
		for id, pd := range p.pending {
			if !pd.done {
				continue
			}
			if id >= n {
				t.Fatalf("probe %d never sent, but resolved", id)
			}
			o := pd.out
			if o.from != from {
				t.Fatalf("probe %d resolved as from %s, the packet came from %s", id, o.from, from)
			}
			if o.kind == reached && from != p.dst {
				t.Fatalf("probe %d reached the target, but %s answered", id, from)
			}
			if o.kind != tooBig && o.mtu != 0 {
				t.Fatalf("probe %d: %s with MTU %d", id, o.kind, o.mtu)
			}
		}
	})
}
