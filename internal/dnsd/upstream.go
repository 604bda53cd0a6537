package dnsd

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"sync"
	"time"

	"github.com/miekg/dns"
)

// Timeouts of forwarded queries: each upstream gets perUpstream, a query
// at most forwardTimeout in all, so an instance always hears back (with
// SERVFAIL at worst) well before its resolver's own 5-second timeout.
const (
	perUpstream    = 1500 * time.Millisecond
	forwardTimeout = 3 * time.Second
)

// maxForwards bounds the queries in flight upstream at once; past it the
// service answers SERVFAIL instead of queueing (an instance cannot make it
// hold unbounded goroutines and sockets).
const maxForwards = 256

// libcDefault is where the C library's resolver sends queries when
// resolv.conf names no server.
const libcDefault = "127.0.0.1:53"

// forward sends req to the upstreams in turn and returns the first answer,
// or SERVFAIL when there is no upstream or none answers in time.
func (s *Server) forward(ctx context.Context, req *dns.Msg, tcp bool) *dns.Msg {
	ups := s.up.servers()
	if len(ups) == 0 {
		return reply(req, dns.RcodeServerFailure)
	}
	select {
	case s.inflight <- struct{}{}:
		defer func() { <-s.inflight }()
	default:
		return reply(req, dns.RcodeServerFailure)
	}
	ctx, cancel := context.WithTimeout(ctx, forwardTimeout)
	defer cancel()
	c := &dns.Client{Net: "udp", Timeout: perUpstream, UDPSize: udpSize}
	if tcp {
		c.Net = "tcp"
	}
	q := req.Copy()
	q.Id = dns.Id()
	if q.IsEdns0() == nil {
		// Ask for answers as large as we take; fit cuts them down to
		// what this client takes.
		q.SetEdns0(udpSize, false)
	}
	var errs []error
	for _, up := range ups {
		if s.isOwn(up) {
			continue // a resolv.conf naming the node's own gateway would loop
		}
		resp, _, err := c.ExchangeContext(ctx, q, up)
		if err == nil && resp != nil && resp.Id == q.Id {
			return resp
		}
		errs = append(errs, fmt.Errorf("%s: %w", up, err))
		if ctx.Err() != nil {
			break
		}
	}
	s.log.Debug("no upstream answered", "name", req.Question[0].Name, "error", errors.Join(errs...))
	return reply(req, dns.RcodeServerFailure)
}

// upstreams is the list of resolvers queries go to: fixed, or the
// nameservers of a resolv.conf, read again whenever the file changes.
type upstreams struct {
	fixed []string
	path  string

	mu    sync.Mutex
	stamp string // size and modification time the list was read at
	list  []string
}

func newUpstreams(fixed []string, path string) *upstreams {
	u := &upstreams{path: path}
	if fixed != nil {
		u.fixed = []string{}
		for _, a := range fixed {
			if ap, err := hostPort(a); err == nil {
				u.fixed = append(u.fixed, ap)
			}
		}
	}
	return u
}

// hostPort reads "ADDR" or "ADDR:PORT" (IPv6 in brackets with a port) into
// host:port, port 53 by default.
func hostPort(s string) (string, error) {
	if ap, err := netip.ParseAddrPort(s); err == nil {
		return ap.String(), nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return "", fmt.Errorf("dnsd: upstream %q: not an address", s)
	}
	return netip.AddrPortFrom(a.Unmap(), 53).String(), nil
}

func (u *upstreams) servers() []string {
	if u.fixed != nil {
		return u.fixed
	}
	fi, err := os.Stat(u.path)
	stamp := "missing"
	if err == nil {
		stamp = fmt.Sprint(fi.Size(), fi.ModTime().UnixNano())
	}
	u.mu.Lock()
	defer u.mu.Unlock()
	if stamp != u.stamp {
		u.stamp, u.list = stamp, readResolvConf(u.path)
	}
	return u.list
}

// readResolvConf lists the nameservers of a resolv.conf as host:port, or
// the C library's default when it names none. Loopback resolvers (a
// local stub such as 127.0.0.53) are kept: the node agent runs in the
// host's namespace and reaches them, even though instances could not.
func readResolvConf(path string) []string {
	cc, err := dns.ClientConfigFromFile(path)
	if err != nil || len(cc.Servers) == 0 {
		return []string{libcDefault}
	}
	var out []string
	for _, srv := range cc.Servers {
		a, err := netip.ParseAddr(srv)
		if err != nil {
			continue
		}
		out = append(out, net.JoinHostPort(a.Unmap().String(), cc.Port))
	}
	if len(out) == 0 {
		return []string{libcDefault}
	}
	return out
}
