package doctor

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"time"
)

// ConditionStatus is the state of the path to one peer, as a node reports it.
type ConditionStatus string

// Peer conditions.
const (
	// PeerOK: packets of the configured MTU reach the peer.
	PeerOK ConditionStatus = "ok"
	// PeerBlackHole: packets of the configured MTU vanish without an ICMP
	// error; PathMTU says what passes.
	PeerBlackHole ConditionStatus = "black-hole"
	// PeerMTUMismatch: a router on the way announces a smaller MTU than the
	// configured one (discovery works, but the overlay is configured too big).
	PeerMTUMismatch ConditionStatus = "mtu-mismatch"
	// PeerUnreachable: not even the smallest probes get an answer.
	PeerUnreachable ConditionStatus = "unreachable"
)

// Condition is the result of a peer self-check, ready to be shown as a node
// condition.
type Condition struct {
	Peer   netip.Addr      `json:"peer"`
	Status ConditionStatus `json:"status"`
	// MTU is the size the check was asked to prove (IP packet bytes);
	// PathMTU the largest size that passes, when less (0 when MTU passes or
	// nothing does).
	MTU     int `json:"mtu"`
	PathMTU int `json:"path_mtu,omitempty"`
	// From is the router that announced the smaller MTU (mtu-mismatch).
	From netip.Addr `json:"from,omitzero"`
	// Message says it in words.
	Message   string    `json:"message"`
	Probes    int       `json:"probes"`
	CheckedAt time.Time `json:"checked_at"`
}

// OK reports whether the condition is healthy.
func (c Condition) OK() bool { return c.Status == PeerOK }

// PeerChecker probes overlay or underlay peers. The zero value is ready to
// use; the node agent keeps one and calls Check for each peer on start and
// every few minutes.
type PeerChecker struct {
	// Log receives progress at debug level; nil discards it.
	Log *slog.Logger
	// Method is the probe kind (default ICMP echo).
	Method Method
	// Port is the port for TCP or UDP probes.
	Port uint16
}

// CheckPeer checks with a zero PeerChecker that IP packets of mtu bytes
// reach peer with Don't Fragment set.
func CheckPeer(ctx context.Context, peer netip.Addr, mtu int) (Condition, error) {
	return PeerChecker{}.Check(ctx, peer, mtu)
}

// Check sends mtu-byte probes to peer. If they pass the peer is ok, at once;
// if not, it searches for the size that passes and tells a black hole from
// an MTU mismatch that a router announces. Errors are for a probe that
// could not be sent (no privileges, no route) or a cancelled ctx; a peer
// that does not answer is a condition, not an error.
func (pc PeerChecker) Check(ctx context.Context, peer netip.Addr, mtu int) (Condition, error) {
	log := pc.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	m := pc.Method
	if m == "" {
		m = MethodICMP
	}
	peer = peer.Unmap()
	c := Condition{Peer: peer, MTU: mtu, CheckedAt: time.Now()}
	v6 := peer.Is6()
	lo := max(minMTU(v6), headerSize(m, v6))
	if mtu < lo || mtu > 65535 {
		return c, fmt.Errorf("mtu %d out of range %d..65535", mtu, lo)
	}
	src, err := localAddrFor(ctx, peer)
	if err != nil {
		return c, err
	}
	if local, ifname, err := localMTU(src); err == nil && local < mtu {
		c.Status, c.PathMTU = PeerMTUMismatch, local
		c.Message = fmt.Sprintf("configured MTU %d, but the interface toward %s (%s) has MTU %d", mtu, peer, ifname, local)
		return c, nil
	}
	p, err := newRawProber(ctx, log, m, peer, src, pc.Port, nil)
	if err != nil {
		return c, err
	}
	defer p.Close()
	s := newSearcher(log, p, defaultSearchConfig(lo, mtu))
	err = s.first(ctx)
	c.Probes = p.sent()
	if errors.Is(err, errUnreachable) {
		c.Status = PeerUnreachable
		c.Message = fmt.Sprintf("%s answers no %s probe, not even %d-byte ones", peer, m, lo)
		return c, nil
	}
	if err != nil {
		return c, err
	}
	res, err := s.refine(ctx)
	c.Probes = p.sent()
	if err != nil && !errors.Is(err, errUnreachable) {
		if ctx.Err() != nil {
			return c, ctx.Err()
		}
		log.Debug("peer check ended early", "peer", peer, "err", err)
	}
	return peerCondition(c, res), nil
}

// InterfaceMTU returns the MTU and the name of the interface that holds
// addr: the node self-check compares it with what the overlay needs.
func InterfaceMTU(addr netip.Addr) (int, string, error) {
	return localMTU(addr.Unmap())
}

// peerCondition turns a search result into a peer condition.
func peerCondition(c Condition, res searchResult) Condition {
	switch res.verdict {
	case VerdictOK:
		c.Status = PeerOK
		c.Message = fmt.Sprintf("%d-byte packets reach %s", c.MTU, c.Peer)
	case VerdictPMTUDOK:
		c.Status, c.PathMTU, c.From = PeerMTUMismatch, res.pathMTU, res.ptbFrom
		c.Message = fmt.Sprintf("configured MTU %d, but %s announces MTU %d toward %s: lower the overlay MTU to %d or raise the underlay's",
			c.MTU, res.ptbFrom, res.ptbMTU, c.Peer, res.pathMTU)
	case VerdictBlackHole, VerdictPartial:
		c.Status, c.PathMTU = PeerBlackHole, res.pathMTU
		c.Message = fmt.Sprintf("configured MTU %d, but packets above %d bytes to %s vanish without an ICMP error (%s)",
			c.MTU, res.pathMTU, c.Peer, res.evidence)
	default:
		c.Status = PeerUnreachable
		c.Message = fmt.Sprintf("%s does not answer", c.Peer)
	}
	return c
}
