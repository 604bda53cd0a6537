package doctor

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"net/url"
	"slices"
	"strconv"
	"sync"
	"time"
)

// PathOptions says which path to diagnose and how.
type PathOptions struct {
	// Host is the target, a name or an address; with URL set it may be
	// empty and the URL's host is used.
	Host string
	// Port is the TCP port for TCP probes and the TLS check; 0 takes the
	// URL's port, else 443.
	Port int
	// TLS adds a TLS handshake check; URL adds a download and an upload.
	TLS bool
	URL string
	// Family is 4 or 6 to pick the address family of a name; 0 prefers IPv4.
	Family int
	// Methods are the probe methods to try, in order of preference
	// (default icmp, tcp, udp).
	Methods []Method
	// MaxHops bounds the locating trace (default 30).
	MaxHops int
	// StepTimeout bounds each step of the TLS check (default 3 s).
	StepTimeout time.Duration
	// Log receives progress at debug level; nil discards it.
	Log *slog.Logger
}

// udpPort is where UDP probes go: traceroute's first port, closed almost
// everywhere.
const udpPort = 33434

// graceForPreferred is how long a preferred method (ICMP) may still take
// once a fallback (TCP) has answered.
const graceForPreferred = 300 * time.Millisecond

// DiagnosePath probes the path to a host for its MTU, tells a working
// path-MTU discovery from a black hole, locates the bottleneck and, when
// asked, checks TLS and large transfers over it. It needs CAP_NET_RAW.
// A target that cannot be made to answer is the verdict unknown, not an
// error; errors are for bad options, names that do not resolve, missing
// privileges and a cancelled ctx.
func DiagnosePath(ctx context.Context, o PathOptions) (*Report, error) {
	start := time.Now()
	u, port, err := o.normalize()
	if err != nil {
		return nil, err
	}
	dst, err := resolve(ctx, o.Host, o.Family)
	if err != nil {
		return nil, err
	}
	src, err := localAddrFor(ctx, dst)
	if err != nil {
		return nil, err
	}
	mtu, ifname, err := localMTU(src)
	if err != nil {
		return nil, err
	}
	mtu = min(mtu, 65535)
	log := o.Log.With("target", dst.String())
	log.Debug("path", "source", src, "interface", ifname, "mtu", mtu)
	rep := &Report{Target: o.Host, Address: dst, Source: src, Interface: ifname, LocalMTU: mtu, Port: port}

	// The TLS check runs beside the probes: it has its own timeouts.
	tlsDone := func() *TLSReport { return nil }
	if o.TLS || u != nil {
		tlsDone = startTLSCheck(ctx, o, u, netip.AddrPortFrom(dst, uint16(port)), log)
	}
	pr, s, tried, probes, err := pickMethod(ctx, log, o.Methods, dst, src, uint16(port), mtu)
	rep.Probes, rep.Tried = probes, tried
	if err != nil {
		tlsDone()
		return nil, err
	}
	if pr == nil {
		rep.Verdict = VerdictUnknown
	} else {
		defer pr.Close()
		rep.Method = pr.method
		err = probePath(ctx, log, pr, s, o.MaxHops, rep)
	}
	rep.ProbeSeconds = time.Since(start).Seconds()
	rep.TLS = tlsDone()
	if err != nil {
		return nil, err
	}
	rep.Seconds = time.Since(start).Seconds()
	rep.explain()
	return rep, nil
}

// normalize fills in defaults and works out the URL and the TCP port.
func (o *PathOptions) normalize() (*url.URL, int, error) {
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	if o.MaxHops == 0 {
		o.MaxHops = 30
	}
	if len(o.Methods) == 0 {
		o.Methods = []Method{MethodICMP, MethodTCP, MethodUDP}
	}
	var u *url.URL
	if o.URL != "" {
		var err error
		if u, err = url.Parse(o.URL); err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
			return nil, 0, fmt.Errorf("--url %q: want an http or https URL", o.URL)
		}
		if o.Host == "" {
			o.Host = u.Hostname()
		}
		o.TLS = o.TLS || u.Scheme == "https"
	}
	if o.Host == "" {
		return nil, 0, errors.New("no host to diagnose")
	}
	port := o.Port
	if port == 0 && u != nil {
		port = 443
		if u.Scheme == "http" {
			port = 80
		}
		if p := u.Port(); p != "" {
			port, _ = strconv.Atoi(p)
		}
	}
	if port == 0 {
		port = 443
	}
	if port < 1 || port > 65535 {
		return nil, 0, fmt.Errorf("port %d out of range", port)
	}
	return u, port, nil
}

// startTLSCheck runs CheckTLS in the background; the returned function
// waits for its report.
func startTLSCheck(ctx context.Context, o PathOptions, u *url.URL, addr netip.AddrPort, log *slog.Logger) func() *TLSReport {
	sni := o.Host
	if u != nil {
		sni = u.Hostname()
	}
	if _, err := netip.ParseAddr(sni); err == nil {
		sni = "" // SNI carries names only
	}
	done := make(chan *TLSReport, 1)
	go func() {
		r, _ := CheckTLS(ctx, TLSOptions{Addr: addr, ServerName: sni, URL: u, StepTimeout: o.StepTimeout, Log: log})
		done <- r
	}()
	return sync.OnceValue(func() *TLSReport { return <-done })
}

// probePath finishes the search that pickMethod opened and, for a black
// hole, locates it; it fills rep.
func probePath(ctx context.Context, log *slog.Logger, pr *rawProber, s *searcher, maxHops int, rep *Report) error {
	// A local-MTU probe that vanished hints at a black hole: locate it while
	// the search narrows the size down.
	lctx, cancelLocate := context.WithCancel(ctx)
	defer cancelLocate()
	var loc location
	var locErr error
	var locWG sync.WaitGroup
	defer locWG.Wait()
	locStarted := false
	startLocate := func(small, big int) {
		locStarted = true
		locWG.Add(1)
		go func() {
			defer locWG.Done()
			loc, locErr = locate(lctx, pr, small, big, s.settle(), maxHops)
		}()
	}
	// Not for a paced search: the locating probes that reach the target
	// would spend the answers the search counts on.
	if s.hiVanished() && !s.cfg.sequential {
		startLocate(s.cfg.lo, s.cfg.hi)
	}
	res, err := s.refine(ctx)
	if ctx.Err() != nil {
		return ctx.Err()
	}
	if err != nil {
		log.Debug("search ended early", "err", err)
	}
	needLoc := res.verdict == VerdictBlackHole || res.verdict == VerdictPartial
	if needLoc && !locStarted && res.failMTU > 0 {
		startLocate(res.pathMTU, res.failMTU)
	}
	if !needLoc {
		cancelLocate()
	}
	locWG.Wait()
	if ctx.Err() != nil {
		return ctx.Err()
	}
	rep.fill(res)
	if needLoc && locErr == nil {
		rep.setLocation(loc)
	}
	rep.Probes += pr.sent()
	return nil
}

// resolve turns a name or address into one address of the wanted family.
func resolve(ctx context.Context, host string, family int) (netip.Addr, error) {
	if a, err := netip.ParseAddr(host); err == nil {
		if family == 4 && !a.Unmap().Is4() || family == 6 && a.Unmap().Is4() {
			return netip.Addr{}, fmt.Errorf("%s is not an IPv%d address", host, family)
		}
		return a.Unmap(), nil
	}
	network := "ip"
	switch family {
	case 4:
		network = "ip4"
	case 6:
		network = "ip6"
	}
	addrs, err := net.DefaultResolver.LookupNetIP(ctx, network, host)
	if err != nil {
		return netip.Addr{}, fmt.Errorf("resolve %s: %w", host, err)
	}
	for _, a := range addrs {
		if a.Unmap().Is4() {
			return a.Unmap(), nil
		}
	}
	if len(addrs) == 0 {
		return netip.Addr{}, fmt.Errorf("resolve %s: no address", host)
	}
	return addrs[0], nil
}

// candidate is one probe method being tried.
type candidate struct {
	m       Method
	p       *rawProber
	s       *searcher
	err     error
	cancel  context.CancelFunc
	done    chan struct{}
	reached chan struct{} // closed at the target's first answer
}

// answered reports whether the target has answered this method at all.
func (c *candidate) answered() bool {
	select {
	case <-c.reached:
		return true
	default:
		return false
	}
}

func (c *candidate) finished() bool {
	select {
	case <-c.done:
		return true
	default:
		return false
	}
}

// startCandidate opens a prober for method m and runs the search's first
// round in the background.
func startCandidate(ctx context.Context, log *slog.Logger, m Method, dst, src netip.Addr, port uint16, mtu int) *candidate {
	cctx, cancel := context.WithCancel(ctx)
	c := &candidate{m: m, cancel: cancel, done: make(chan struct{}), reached: make(chan struct{})}
	if m == MethodUDP {
		port = udpPort // a closed port answers with port unreachable
	}
	go func() {
		defer close(c.done)
		p, err := newRawProber(cctx, log, m, dst, src, port, c.reached)
		if err != nil {
			c.err = err
			return
		}
		c.p = p
		v6 := dst.Is6()
		cfg := searchConfigFor(m, max(minMTU(v6), headerSize(m, v6)), mtu)
		var x exchanger = p
		if cfg.sequential {
			x = newPacer(p)
		}
		c.s = newSearcher(log, x, cfg)
		c.err = c.s.first(cctx)
	}()
	return c
}

// pickMethod runs the first round of each method in order of preference
// (ICMP echo, then TCP, then UDP) and keeps the most preferred one that
// answers. A method starts only when the ones before it have failed or got
// no answer at all for fallbackDelay, so a target that answers echo sees
// ICMP only; a fallback that answers first waits a moment
// (graceForPreferred) for a better one. It returns a nil prober when nothing answers.
func pickMethod(ctx context.Context, log *slog.Logger, methods []Method, dst, src netip.Addr, port uint16, mtu int) (*rawProber, *searcher, []Method, int, error) {
	next := 0
	more := func() *candidate {
		if next == len(methods) {
			return nil
		}
		next++
		return startCandidate(ctx, log, methods[next-1], dst, src, port, mtu)
	}
	pick, cs := choose(ctx, more)
	probes := 0
	var tried []Method
	for _, c := range cs {
		tried = append(tried, c.m)
		if c == pick {
			continue
		}
		c.cancel()
		<-c.done
		if c.p != nil {
			probes += c.p.sent()
			c.p.Close()
		}
	}
	if pick != nil {
		return pick.p, pick.s, tried, probes, nil
	}
	if ctx.Err() != nil {
		return nil, nil, tried, probes, ctx.Err()
	}
	// A method that could not even start (no privileges) is an error; one
	// that got no answer is not.
	for _, c := range cs {
		if c.err != nil && !errors.Is(c.err, errUnreachable) {
			return nil, nil, tried, probes, c.err
		}
	}
	return nil, nil, tried, probes, nil
}

// fallbackDelay is how long a method may stay silent before the next one
// starts beside it.
const fallbackDelay = 200 * time.Millisecond

// choose starts candidates from more (in order of preference) and returns
// the first that answered and whose betters have failed or had their grace
// time, with every candidate started; a nil pick when all fail or ctx ends.
func choose(ctx context.Context, more func() *candidate) (*candidate, []*candidate) {
	var cs []*candidate
	if c := more(); c != nil {
		cs = append(cs, c)
	}
	fallback := time.NewTimer(fallbackDelay)
	defer fallback.Stop()
	var grace <-chan time.Time
	graceOver := false
	for {
		allDone := true
		for _, c := range cs {
			if !c.finished() {
				allDone = false
				if graceOver {
					continue
				}
				break
			}
			if c.err == nil {
				return c, cs
			}
		}
		if ctx.Err() != nil {
			return nil, cs
		}
		if allDone {
			c := more()
			if c == nil {
				return nil, cs
			}
			cs = append(cs, c)
			fallback.Reset(fallbackDelay)
			continue
		}
		if grace == nil {
			for _, c := range cs {
				if c.finished() && c.err == nil {
					t := time.NewTimer(graceForPreferred + 4*c.s.rtt)
					defer t.Stop()
					grace = t.C
					break
				}
			}
		}
		switch waitAny(ctx, cs, grace, fallback.C) {
		case 1:
			graceOver = true
		case 2:
			if slices.ContainsFunc(cs, (*candidate).answered) {
				break // a method works; its round is still running
			}
			if c := more(); c != nil {
				cs = append(cs, c)
				fallback.Reset(fallbackDelay)
			}
		}
	}
}

// waitAny returns 0 when one more candidate finishes or ctx ends, 1 when
// the grace timer fires and 2 when the fallback timer does.
func waitAny(ctx context.Context, cs []*candidate, grace, fallback <-chan time.Time) int {
	one := make(chan struct{}, len(cs))
	stop := make(chan struct{})
	defer close(stop)
	for _, c := range cs {
		if c.finished() {
			continue
		}
		go func() {
			select {
			case <-c.done:
				one <- struct{}{}
			case <-stop:
			}
		}()
	}
	select {
	case <-one:
	case <-grace:
		return 1
	case <-fallback:
		return 2
	case <-ctx.Done():
	}
	return 0
}
