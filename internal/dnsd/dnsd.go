// Package dnsd is the DNS service a node gives its instances: the
// address DHCP hands them as their name server is their network's
// gateway, and on every network bridge the node listens there (UDP and
// TCP port 53, bound to the bridge).
//
// It answers the instances' private DNS names (ip-172-31-0-10.ec2.internal,
// see nodeproto.PrivateDNSName) with their private addresses, and the
// reverse (PTR) names of those addresses, from the records the node was
// given for the network the query came in on: an instance learns the names
// of its own network only. Under the private domain it is authoritative
// (NXDOMAIN for a name it does not hold). Every other query is forwarded to
// the node's upstream resolvers (the nameservers of the host's
// /etc/resolv.conf, read again when it changes, or a fixed list), with a
// bounded wait: an instance hears SERVFAIL rather than nothing when no
// upstream answers.
package dnsd

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/miekg/dns"
	"golang.org/x/sys/unix"

	"github.com/clipper-cloud/clipper/internal/nodeproto"
)

// Config configures a Server.
type Config struct {
	// Upstreams are the resolvers ("ADDR" or "ADDR:PORT") queries for
	// other names go to. Nil: the nameservers of ResolvConf. Empty but not
	// nil: none (such queries get SERVFAIL).
	Upstreams []string
	// ResolvConf is read for upstreams when Upstreams is nil; default
	// /etc/resolv.conf.
	ResolvConf string
	// Domain is the private domain; default nodeproto.PrivateDNSDomain.
	Domain string
}

// Server is the DNS service of one node.
type Server struct {
	log      *slog.Logger
	zone     string // the private domain, lower case, fully qualified
	up       *upstreams
	inflight chan struct{}

	mu    sync.RWMutex
	views map[string]view      // records by network
	lns   map[string]*listener // by network
}

// view is what one network's instances can look up.
type view struct {
	byName map[string]netip.Addr // fully qualified, lower case
	byAddr map[netip.Addr]string
}

// New returns a service with no network yet.
func New(log *slog.Logger, cfg Config) *Server {
	if log == nil {
		log = slog.Default()
	}
	if cfg.ResolvConf == "" {
		cfg.ResolvConf = "/etc/resolv.conf"
	}
	if cfg.Domain == "" {
		cfg.Domain = nodeproto.PrivateDNSDomain
	}
	return &Server{log: log.With("component", "dns"), zone: dns.Fqdn(strings.ToLower(cfg.Domain)),
		up: newUpstreams(cfg.Upstreams, cfg.ResolvConf), inflight: make(chan struct{}, maxForwards),
		views: map[string]view{}, lns: map[string]*listener{}}
}

// SetRecords replaces the addresses whose private names a network's
// instances can look up. Addresses that are not IPv4 are left out.
func (s *Server) SetRecords(network string, addrs []netip.Addr) {
	v := view{byName: map[string]netip.Addr{}, byAddr: map[netip.Addr]string{}}
	for _, a := range addrs {
		a = a.Unmap()
		if !a.Is4() {
			continue
		}
		name := dns.Fqdn(strings.ToLower(nodeproto.PrivateDNSName(a.String())))
		v.byName[name] = a
		v.byAddr[a] = name
	}
	s.mu.Lock()
	s.views[network] = v
	s.mu.Unlock()
}

func (s *Server) lookup(network, name string) (netip.Addr, bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	a, ok := s.views[network].byName[name]
	return a, ok
}

func (s *Server) reverse(network, name string) (string, bool) {
	a, ok := reverseAddr(name)
	if !ok {
		return "", false
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	host, ok := s.views[network].byAddr[a]
	return host, ok
}

// isOwn reports whether host:port is one of the service's own listeners.
func (s *Server) isOwn(hostport string) bool {
	ap, err := netip.ParseAddrPort(hostport)
	if err != nil || ap.Port() != 53 {
		return false
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	for _, l := range s.lns {
		if l.addr == ap.Addr() {
			return true
		}
	}
	return false
}

// listener is the UDP and TCP service on one network's gateway.
type listener struct {
	dev  string
	addr netip.Addr
	srvs []*dns.Server
}

// Listen serves a network on addr port 53, UDP and TCP, on sockets bound
// to the network's device dev (so networks whose gateways share an
// address stay apart, and nothing outside the bridge is answered). It
// replaces an earlier listener of the network on another address or
// device; the same one again is a no-op.
func (s *Server) Listen(network, dev string, addr netip.Addr) error {
	addr = addr.Unmap()
	s.mu.Lock()
	old := s.lns[network]
	s.mu.Unlock()
	if old != nil && old.dev == dev && old.addr == addr {
		return nil
	}
	if old != nil {
		s.stopListener(network)
	}
	l, err := s.open(network, dev, addr)
	if err != nil {
		return err
	}
	s.mu.Lock()
	s.lns[network] = l
	s.mu.Unlock()
	s.log.Info("DNS listening", "network", network, "device", dev, "address", addr)
	return nil
}

func (s *Server) open(network, dev string, addr netip.Addr) (*listener, error) {
	lc := net.ListenConfig{Control: func(_, _ string, c syscall.RawConn) error {
		var serr error
		err := c.Control(func(fd uintptr) {
			serr = errors.Join(unix.BindToDevice(int(fd), dev),
				unix.SetsockoptInt(int(fd), unix.IPPROTO_IP, unix.IP_FREEBIND, 1))
		})
		return errors.Join(err, serr)
	}}
	hp := netip.AddrPortFrom(addr, 53).String()
	ctx := context.Background()
	pc, err := lc.ListenPacket(ctx, "udp4", hp)
	if err != nil {
		return nil, fmt.Errorf("dnsd: listen on udp %s (%s): %w", hp, dev, err)
	}
	ln, err := lc.Listen(ctx, "tcp4", hp)
	if err != nil {
		pc.Close()
		return nil, fmt.Errorf("dnsd: listen on tcp %s (%s): %w", hp, dev, err)
	}
	l := &listener{dev: dev, addr: addr}
	for _, srv := range []*dns.Server{
		{PacketConn: pc, Net: "udp", Handler: s.handler(network, false), UDPSize: udpSize},
		{Listener: ln, Net: "tcp", Handler: s.handler(network, true), ReadTimeout: 5 * time.Second,
			IdleTimeout: func() time.Duration { return 8 * time.Second }, MaxTCPQueries: 128},
	} {
		started, failed := make(chan struct{}), make(chan error, 1)
		srv.NotifyStartedFunc = func() { close(started) }
		go func() {
			if err := srv.ActivateAndServe(); err != nil {
				s.log.Error("DNS service stopped", "network", network, "net", srv.Net, "error", err)
				failed <- err
			}
		}()
		select {
		case <-started:
			l.srvs = append(l.srvs, srv)
		case err := <-failed:
			l.close()
			pc.Close()
			ln.Close()
			return nil, fmt.Errorf("dnsd: serve %s (%s): %w", hp, dev, err)
		}
	}
	return l, nil
}

// handler answers a network's queries.
func (s *Server) handler(network string, tcp bool) dns.Handler {
	return dns.HandlerFunc(func(w dns.ResponseWriter, req *dns.Msg) {
		m := s.answer(context.Background(), network, req, tcp)
		if err := w.WriteMsg(m); err != nil {
			s.log.Debug("DNS reply", "network", network, "error", err)
		}
	})
}

// Stop stops serving a network and forgets its records.
func (s *Server) Stop(network string) {
	s.stopListener(network)
	s.mu.Lock()
	delete(s.views, network)
	s.mu.Unlock()
}

func (s *Server) stopListener(network string) {
	s.mu.Lock()
	l := s.lns[network]
	delete(s.lns, network)
	s.mu.Unlock()
	if l != nil {
		l.close()
		s.log.Info("DNS stopped", "network", network, "address", l.addr)
	}
}

func (l *listener) close() {
	for _, srv := range l.srvs {
		_ = srv.Shutdown()
	}
}

// Close stops serving every network.
func (s *Server) Close() {
	s.mu.RLock()
	var nets []string
	for n := range s.lns {
		nets = append(nets, n)
	}
	s.mu.RUnlock()
	for _, n := range nets {
		s.Stop(n)
	}
}
