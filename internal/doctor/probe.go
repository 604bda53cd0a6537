package doctor

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Method is the kind of packet a probe is made of.
type Method string

// Probe methods, in the order Diagnose tries them.
const (
	// MethodICMP sends ICMP echo requests; the target's echo reply means the
	// packet passed. An echo reply has the size of the request, so this
	// measures the smaller MTU of both directions.
	MethodICMP Method = "icmp"
	// MethodTCP sends TCP SYN segments carrying a payload to a port; a SYN-ACK
	// or a reset from the target means the packet passed. Only the forward
	// direction is measured (the answers are small).
	MethodTCP Method = "tcp"
	// MethodUDP sends UDP datagrams to a closed port; the target's ICMP port
	// unreachable means the packet passed. Hosts rate-limit those answers, so
	// this is the slowest method and the last resort.
	MethodUDP Method = "udp"
)

// outcomeKind says what came back for one probe.
type outcomeKind int

const (
	lost    outcomeKind = iota // nothing came back in time
	reached                    // the target itself answered
	tooBig                     // frag-needed / packet-too-big from a router
	expired                    // time exceeded from a router (TTL-limited probes)
	refused                    // another ICMP unreachable from a router
)

func (k outcomeKind) String() string {
	return [...]string{"lost", "reached", "too-big", "expired", "refused"}[k]
}

// probeSpec is one packet to send: its IP size in bytes (headers included)
// and its TTL / hop limit (0: the system default).
type probeSpec struct {
	size int
	ttl  int
}

// outcome is what came back for one probe.
type outcome struct {
	kind outcomeKind
	from netip.Addr    // who answered
	mtu  int           // next-hop MTU announced in a too-big answer (0: none)
	rtt  time.Duration // time to the answer
}

// exchanger sends batches of probes and collects their outcomes. The raw
// socket implementation is rawProber; tests use a simulated path.
type exchanger interface {
	// exchange sends one probe per spec and waits until every probe has an
	// answer, until maxWait has passed, or until settle has passed since the
	// first answer, whichever comes first. Probes without an answer are lost.
	exchange(ctx context.Context, specs []probeSpec, maxWait, settle time.Duration) ([]outcome, error)
	// sent is the number of probes sent so far.
	sent() int
}

// Header sizes in bytes.
const (
	ipv4Header = 20
	ipv6Header = 40
	icmpHeader = 8
	udpHeader  = 8
	tcpHeader  = 20
)

// minMTU is the protocol minimum MTU: every IPv4 link carries 68-byte
// packets, every IPv6 link 1280-byte packets.
func minMTU(v6 bool) int {
	if v6 {
		return 1280
	}
	return 68
}

func ipHeader(v6 bool) int {
	if v6 {
		return ipv6Header
	}
	return ipv4Header
}

// headerSize is the size of the IP and transport headers of a probe.
func headerSize(m Method, v6 bool) int {
	switch m {
	case MethodTCP:
		return ipHeader(v6) + tcpHeader
	case MethodUDP:
		return ipHeader(v6) + udpHeader
	default:
		return ipHeader(v6) + icmpHeader
	}
}

// rawProber sends probes on raw sockets and matches the answers that come
// back on a raw ICMP socket (and, for TCP, a raw TCP socket) to them.
// Probes set Don't Fragment and ignore the kernel's path-MTU cache
// (IP_PMTUDISC_PROBE), so every size up to the device MTU leaves the host.
type rawProber struct {
	log    *slog.Logger
	method Method
	dst    netip.Addr
	src    netip.Addr
	v6     bool
	port   uint16 // destination port (TCP, UDP)

	icmp *net.IPConn // receives every ICMP message to src; sends echo requests
	l4   *net.IPConn // raw TCP or UDP socket that sends probes (TCP: receives answers)
	hold int         // TCP: a bound socket that reserves sport (-1: none)

	echoID   uint16
	sport    uint16 // TCP source port; UDP: first of a range
	seqBase  uint32 // TCP: sequence number of probe 0
	wg       sync.WaitGroup
	sendMu   sync.Mutex // serialises sends and TTL changes
	curTTL   map[*net.IPConn]int
	mu       sync.Mutex
	next     uint32
	pending  map[uint32]*pending
	count    int
	readErr  error
	closed   bool
	nowFunc  func() time.Time
	udpRange uint32
	// reached, when set, is closed at the first answer from the target.
	reached     chan struct{}
	reachedOnce sync.Once
}

type pending struct {
	id     uint32
	spec   probeSpec
	sent   time.Time
	out    outcome
	done   bool
	notify chan<- struct{} // gets one value when out is set
}

// reservePort binds a TCP socket (not listening) to a free port on src, so
// no connection of this host uses the port while probes do: the kernel
// answers the target's SYN-ACKs to it with a reset.
func reservePort(src netip.Addr) (int, uint16, error) {
	var sa unix.Sockaddr
	domain := unix.AF_INET
	if src.Is4() {
		sa = &unix.SockaddrInet4{Addr: src.As4()}
	} else {
		domain = unix.AF_INET6
		sa6 := &unix.SockaddrInet6{Addr: src.As16()}
		if z := src.Zone(); z != "" {
			if ifc, err := net.InterfaceByName(z); err == nil {
				sa6.ZoneId = uint32(ifc.Index)
			}
		}
		sa = sa6
	}
	fd, err := unix.Socket(domain, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return -1, 0, fmt.Errorf("reserve a TCP port: %w", err)
	}
	if err := unix.Bind(fd, sa); err != nil {
		unix.Close(fd)
		return -1, 0, fmt.Errorf("reserve a TCP port: %w", err)
	}
	got, err := unix.Getsockname(fd)
	if err != nil {
		unix.Close(fd)
		return -1, 0, fmt.Errorf("reserve a TCP port: %w", err)
	}
	switch a := got.(type) {
	case *unix.SockaddrInet4:
		return fd, uint16(a.Port), nil
	case *unix.SockaddrInet6:
		return fd, uint16(a.Port), nil
	}
	unix.Close(fd)
	return -1, 0, fmt.Errorf("reserve a TCP port: odd address %T", got)
}

// localAddrFor returns the source address the kernel would use toward dst.
func localAddrFor(ctx context.Context, dst netip.Addr) (netip.Addr, error) {
	network := "udp4"
	if dst.Is6() && !dst.Is4In6() {
		network = "udp6"
	}
	var d net.Dialer
	c, err := d.DialContext(ctx, network, netip.AddrPortFrom(dst, 9).String())
	if err != nil {
		return netip.Addr{}, fmt.Errorf("no route to %s: %w", dst, err)
	}
	defer c.Close()
	ap := c.LocalAddr().(*net.UDPAddr).AddrPort()
	return ap.Addr(), nil
}

// localMTU returns the MTU of the interface that holds src.
func localMTU(src netip.Addr) (int, string, error) {
	ifs, err := net.Interfaces()
	if err != nil {
		return 0, "", err
	}
	for _, ifc := range ifs {
		addrs, err := ifc.Addrs()
		if err != nil {
			continue
		}
		for _, a := range addrs {
			ipn, ok := a.(*net.IPNet)
			if !ok {
				continue
			}
			if ip, ok := netip.AddrFromSlice(ipn.IP); ok && ip.Unmap() == src.WithZone("") {
				return ifc.MTU, ifc.Name, nil
			}
		}
	}
	return 0, "", fmt.Errorf("no interface holds %s", src)
}

// newRawProber opens the sockets for probing dst with method m. It needs
// CAP_NET_RAW. reached, if not nil, is closed at the target's first answer.
func newRawProber(ctx context.Context, log *slog.Logger, m Method, dst, src netip.Addr, port uint16, reached chan struct{}) (*rawProber, error) {
	v6 := dst.Is6() && !dst.Is4In6()
	p := &rawProber{
		log: log, method: m, dst: dst, src: src, v6: v6, port: port,
		pending: map[uint32]*pending{}, curTTL: map[*net.IPConn]int{}, hold: -1,
		nowFunc: time.Now, udpRange: 4096, reached: reached,
	}
	var rnd [8]byte
	if _, err := rand.Read(rnd[:]); err != nil {
		return nil, err
	}
	p.echoID = binary.BigEndian.Uint16(rnd[0:])
	p.seqBase = binary.BigEndian.Uint32(rnd[2:])
	p.sport = 40000 + binary.BigEndian.Uint16(rnd[6:])%16384

	fam, icmpProto := "ip4", "ip4:icmp"
	if v6 {
		fam, icmpProto = "ip6", "ip6:ipv6-icmp"
	}
	var lc net.ListenConfig
	laddr := src.String()
	c, err := lc.ListenPacket(ctx, icmpProto, laddr)
	if err != nil {
		return nil, fmt.Errorf("raw ICMP socket (needs root or CAP_NET_RAW): %w", err)
	}
	p.icmp = c.(*net.IPConn)
	switch m {
	case MethodTCP:
		// Reserve the source port so no local connection takes it.
		p.hold, p.sport, err = reservePort(src)
		if err != nil {
			p.Close()
			return nil, err
		}
		c, err = lc.ListenPacket(ctx, fam+":tcp", laddr)
	case MethodUDP:
		c, err = lc.ListenPacket(ctx, fam+":udp", laddr)
	}
	if err != nil {
		p.Close()
		return nil, fmt.Errorf("raw %s socket: %w", m, err)
	}
	if m != MethodICMP {
		p.l4 = c.(*net.IPConn)
	}
	if err := p.setDF(p.sender()); err != nil {
		p.Close()
		return nil, err
	}
	p.wg.Add(1)
	go p.readLoop(p.icmp, p.handleICMP)
	if m == MethodTCP {
		p.wg.Add(1)
		go p.readLoop(p.l4, p.handleTCP)
	}
	return p, nil
}

func (p *rawProber) sender() *net.IPConn {
	if p.l4 != nil {
		return p.l4
	}
	return p.icmp
}

// setDF makes the socket send with Don't Fragment and without regard to the
// kernel's cached path MTU.
func (p *rawProber) setDF(c *net.IPConn) error {
	rc, err := c.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	err = rc.Control(func(fd uintptr) {
		if p.v6 {
			serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_IPV6, unix.IPV6_MTU_DISCOVER, unix.IPV6_PMTUDISC_PROBE)
			if serr == nil {
				serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_IPV6, unix.IPV6_DONTFRAG, 1)
			}
			return
		}
		serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_IP, unix.IP_MTU_DISCOVER, unix.IP_PMTUDISC_PROBE)
	})
	if err != nil {
		return err
	}
	if serr != nil {
		return fmt.Errorf("set don't-fragment: %w", serr)
	}
	return nil
}

// setTTL sets the TTL / hop limit for the next sends on c; 0 restores 64.
// Callers hold sendMu.
func (p *rawProber) setTTL(c *net.IPConn, ttl int) error {
	if ttl == 0 {
		ttl = 64
	}
	if p.curTTL[c] == ttl {
		return nil
	}
	rc, err := c.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	err = rc.Control(func(fd uintptr) {
		if p.v6 {
			serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_IPV6, unix.IPV6_UNICAST_HOPS, ttl)
		} else {
			serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_IP, unix.IP_TTL, ttl)
		}
	})
	if err == nil {
		err = serr
	}
	if err == nil {
		p.curTTL[c] = ttl
	}
	return err
}

// Close closes the sockets and waits for the readers to stop.
func (p *rawProber) Close() error {
	p.mu.Lock()
	p.closed = true
	p.mu.Unlock()
	if p.icmp != nil {
		p.icmp.Close()
	}
	if p.l4 != nil {
		p.l4.Close()
	}
	if p.hold >= 0 {
		unix.Close(p.hold)
	}
	p.wg.Wait()
	return nil
}

func (p *rawProber) sent() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.count
}

func (p *rawProber) exchange(ctx context.Context, specs []probeSpec, maxWait, settle time.Duration) ([]outcome, error) {
	notify := make(chan struct{}, len(specs))
	ps := make([]*pending, 0, len(specs))
	defer func() { p.forget(ps) }()
	for _, s := range specs {
		pd, err := p.send(s, notify)
		if err != nil {
			return nil, err
		}
		ps = append(ps, pd)
	}
	deadline := time.NewTimer(maxWait)
	defer deadline.Stop()
	var settled <-chan time.Time
wait:
	for answered := 0; answered < len(ps); {
		select {
		case <-notify:
			answered++
			if settled == nil {
				t := time.NewTimer(settle)
				defer t.Stop()
				settled = t.C
			}
		case <-deadline.C:
			break wait
		case <-settled:
			break wait
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	out := make([]outcome, len(ps))
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.readErr != nil {
		return nil, p.readErr
	}
	for i, pd := range ps {
		if pd.done {
			out[i] = pd.out
		}
	}
	return out, nil
}

// forget removes probes from the pending table: late answers are ignored.
func (p *rawProber) forget(ps []*pending) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, pd := range ps {
		if p.pending[pd.id] == pd {
			delete(p.pending, pd.id)
		}
	}
}

// send builds and sends one probe and registers it as pending; notify gets
// a value when its answer arrives.
func (p *rawProber) send(s probeSpec, notify chan<- struct{}) (*pending, error) {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil, net.ErrClosed
	}
	id := p.next
	p.next++
	switch p.method {
	case MethodUDP:
		id %= p.udpRange
	default:
		id %= 1 << 16
	}
	pd := &pending{id: id, spec: s, notify: notify}
	p.pending[id] = pd
	p.count++
	p.mu.Unlock()

	pkt, c := p.build(id, s.size)
	p.sendMu.Lock()
	err := p.setTTL(c, s.ttl)
	if err == nil {
		p.mu.Lock()
		pd.sent = p.nowFunc()
		p.mu.Unlock()
		_, err = c.WriteToIP(pkt, &net.IPAddr{IP: p.dst.AsSlice(), Zone: p.dst.Zone()})
	}
	p.sendMu.Unlock()
	switch {
	case errors.Is(err, syscall.EMSGSIZE):
		// The local stack refuses the size: it cannot leave this host.
		p.resolve(id, outcome{kind: tooBig, from: p.src})
		return pd, nil
	case errors.Is(err, syscall.EHOSTUNREACH), errors.Is(err, syscall.ENETUNREACH), errors.Is(err, syscall.EHOSTDOWN):
		// No neighbour answers (ARP/ND failed) or no route: this probe
		// goes nowhere, which is an answer, not a failure of the tool.
		p.resolve(id, outcome{kind: refused, from: p.src})
		return pd, nil
	}
	if err != nil {
		return nil, fmt.Errorf("send %d-byte %s probe: %w", s.size, p.method, err)
	}
	return pd, nil
}

// build returns the packet after the IP header for probe id of IP size size,
// and the socket to send it on.
func (p *rawProber) build(id uint32, size int) ([]byte, *net.IPConn) {
	n := size - ipHeader(p.v6)
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i)
	}
	switch p.method {
	case MethodTCP:
		binary.BigEndian.PutUint16(b[0:], p.sport)
		binary.BigEndian.PutUint16(b[2:], p.port)
		binary.BigEndian.PutUint32(b[4:], p.seqBase+id<<16)
		binary.BigEndian.PutUint32(b[8:], 0)
		b[12] = 5 << 4
		b[13] = 0x02 // SYN
		binary.BigEndian.PutUint16(b[14:], 65535)
		binary.BigEndian.PutUint32(b[16:], 0)
		binary.BigEndian.PutUint16(b[16:], transportChecksum(p.src, p.dst, unix.IPPROTO_TCP, b))
		return b, p.l4
	case MethodUDP:
		binary.BigEndian.PutUint16(b[0:], p.sport+uint16(id))
		binary.BigEndian.PutUint16(b[2:], p.port)
		binary.BigEndian.PutUint16(b[4:], uint16(n))
		binary.BigEndian.PutUint16(b[6:], 0)
		cs := transportChecksum(p.src, p.dst, unix.IPPROTO_UDP, b)
		if cs == 0 {
			cs = 0xffff
		}
		binary.BigEndian.PutUint16(b[6:], cs)
		return b, p.l4
	default:
		if p.v6 {
			b[0] = 128 // echo request; the kernel fills in the checksum
		} else {
			b[0] = 8
		}
		b[1] = 0
		binary.BigEndian.PutUint16(b[2:], 0)
		binary.BigEndian.PutUint16(b[4:], p.echoID)
		binary.BigEndian.PutUint16(b[6:], uint16(id))
		if !p.v6 {
			binary.BigEndian.PutUint16(b[2:], checksum(b, 0))
		}
		return b, p.icmp
	}
}

// checksum is the Internet checksum of b, starting from sum.
func checksum(b []byte, sum uint32) uint16 {
	for i := 0; i+1 < len(b); i += 2 {
		sum += uint32(b[i])<<8 | uint32(b[i+1])
	}
	if len(b)%2 == 1 {
		sum += uint32(b[len(b)-1]) << 8
	}
	for sum > 0xffff {
		sum = sum>>16 + sum&0xffff
	}
	return ^uint16(sum)
}

// transportChecksum is the TCP/UDP checksum with the pseudo-header.
func transportChecksum(src, dst netip.Addr, proto int, seg []byte) uint16 {
	var sum uint32
	add := func(a netip.Addr) {
		s := a.Unmap().AsSlice()
		for i := 0; i < len(s); i += 2 {
			sum += uint32(s[i])<<8 | uint32(s[i+1])
		}
	}
	add(src)
	add(dst)
	sum += uint32(proto)
	sum += uint32(len(seg))
	return checksum(seg, sum)
}

func (p *rawProber) readLoop(c *net.IPConn, handle func([]byte, netip.Addr, time.Time)) {
	defer p.wg.Done()
	buf := make([]byte, 65536)
	for {
		n, from, err := c.ReadFromIP(buf)
		if err != nil {
			p.mu.Lock()
			if !p.closed && !errors.Is(err, net.ErrClosed) {
				p.readErr = err
			}
			p.mu.Unlock()
			return
		}
		addr, ok := netip.AddrFromSlice(from.IP)
		if !ok {
			continue
		}
		if !p.v6 {
			addr = addr.Unmap()
		}
		handle(buf[:n], addr, p.nowFunc())
	}
}

// resolve records the answer for probe id, unless it has one already.
func (p *rawProber) resolve(id uint32, o outcome) {
	p.mu.Lock()
	defer p.mu.Unlock()
	pd, ok := p.pending[id]
	if !ok || pd.done {
		return
	}
	if !pd.sent.IsZero() {
		o.rtt = p.nowFunc().Sub(pd.sent)
	}
	pd.out = o
	pd.done = true
	pd.notify <- struct{}{}
	if o.kind == reached && p.reached != nil {
		p.reachedOnce.Do(func() { close(p.reached) })
	}
}

// handleICMP matches an ICMP message (IP header removed) to a probe.
func (p *rawProber) handleICMP(b []byte, from netip.Addr, _ time.Time) {
	if len(b) < icmpHeader {
		return
	}
	typ, code := b[0], b[1]
	if p.v6 {
		switch typ {
		case 129: // echo reply
			p.echoReply(b, from)
		case 1, 2, 3: // unreachable, packet too big, time exceeded
			mtu := 0
			if typ == 2 {
				mtu = int(binary.BigEndian.Uint32(b[4:8]))
			}
			p.icmpError(b[icmpHeader:], from, typ == 2, typ == 3, mtu)
		}
		return
	}
	switch typ {
	case 0:
		p.echoReply(b, from)
	case 3, 11:
		frag := typ == 3 && code == 4
		mtu := 0
		if frag {
			mtu = int(binary.BigEndian.Uint16(b[6:8]))
		}
		p.icmpError(b[icmpHeader:], from, frag, typ == 11, mtu)
	}
}

func (p *rawProber) echoReply(b []byte, from netip.Addr) {
	if p.method != MethodICMP || from != p.dst.WithZone("") || binary.BigEndian.Uint16(b[4:]) != p.echoID {
		return
	}
	p.resolve(uint32(binary.BigEndian.Uint16(b[6:])), outcome{kind: reached, from: from})
}

// icmpError matches an ICMP error by the packet it quotes.
func (p *rawProber) icmpError(q []byte, from netip.Addr, frag, ttl bool, mtu int) {
	var proto int
	var src, dst netip.Addr
	if p.v6 {
		if len(q) < ipv6Header+8 || q[0]>>4 != 6 {
			return
		}
		proto = int(q[6])
		src, _ = netip.AddrFromSlice(q[8:24])
		dst, _ = netip.AddrFromSlice(q[24:40])
		q = q[ipv6Header:]
	} else {
		if len(q) < ipv4Header || q[0]>>4 != 4 {
			return
		}
		ihl := int(q[0]&0x0f) * 4
		if ihl < ipv4Header || len(q) < ihl+8 {
			return
		}
		proto = int(q[9])
		src, _ = netip.AddrFromSlice(q[12:16])
		dst, _ = netip.AddrFromSlice(q[16:20])
		q = q[ihl:]
	}
	if dst != p.dst.WithZone("") || src != p.src.WithZone("") {
		return
	}
	var id uint32
	switch p.method {
	case MethodICMP:
		want := unix.IPPROTO_ICMP
		if p.v6 {
			want = unix.IPPROTO_ICMPV6
		}
		if proto != want || binary.BigEndian.Uint16(q[4:]) != p.echoID {
			return
		}
		id = uint32(binary.BigEndian.Uint16(q[6:]))
	case MethodTCP:
		if proto != unix.IPPROTO_TCP || binary.BigEndian.Uint16(q[0:]) != p.sport || binary.BigEndian.Uint16(q[2:]) != p.port {
			return
		}
		id = (binary.BigEndian.Uint32(q[4:]) - p.seqBase) >> 16
	case MethodUDP:
		if proto != unix.IPPROTO_UDP || binary.BigEndian.Uint16(q[2:]) != p.port {
			return
		}
		id = uint32(binary.BigEndian.Uint16(q[0:]) - p.sport)
		if id >= p.udpRange {
			return
		}
	}
	o := outcome{from: from}
	switch {
	case frag:
		o.kind, o.mtu = tooBig, mtu
	case ttl:
		o.kind = expired
	case from == p.dst.WithZone(""):
		o.kind = reached // the target itself answered (port unreachable and the like)
	default:
		o.kind = refused
	}
	p.resolve(id, o)
}

// handleTCP matches a SYN-ACK or reset from the target to a TCP probe.
func (p *rawProber) handleTCP(b []byte, from netip.Addr, _ time.Time) {
	if len(b) < tcpHeader || from != p.dst.WithZone("") {
		return
	}
	if binary.BigEndian.Uint16(b[0:]) != p.port || binary.BigEndian.Uint16(b[2:]) != p.sport {
		return
	}
	flags := b[13]
	const syn, rst, ack = 0x02, 0x04, 0x10
	if flags&ack == 0 || flags&(syn|rst) == 0 {
		return
	}
	id := (binary.BigEndian.Uint32(b[8:]) - 1 - p.seqBase) >> 16
	p.resolve(id, outcome{kind: reached, from: from})
}
