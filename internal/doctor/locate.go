package doctor

import (
	"context"
	"net/netip"
	"time"
)

// Hop is one router on the path (or the target), as TTL-limited probes see
// it.
type Hop struct {
	// TTL is the hop's distance from this host.
	TTL int `json:"ttl"`
	// Addr is the address that answered small probes at this TTL; zero when
	// the hop stays silent.
	Addr netip.Addr `json:"addr,omitzero"`
	// Passes reports whether probes of the failing size still reach this
	// hop.
	Passes bool `json:"passes_failing_size"`
	// Target marks the hop that is the target itself.
	Target bool `json:"target,omitempty"`
}

// location is where the bottleneck is.
type location struct {
	hops []Hop
	last int // index in hops of the last hop that answers at the failing size (-1: none)
	next int // index of the first hop after it that answers small probes (-1: unknown)
}

// lastHop returns the last hop that answers at the failing size.
func (l location) lastHop() (Hop, bool) {
	if l.last < 0 {
		return Hop{}, false
	}
	return l.hops[l.last], true
}

// nextHop returns the hop after the bottleneck, if known.
func (l location) nextHop() (Hop, bool) {
	if l.next < 0 {
		return Hop{}, false
	}
	return l.hops[l.next], true
}

// hopBatches are the TTL ranges probed at once: short paths take one
// round, long ones three.
var hopBatches = [][2]int{{1, 4}, {5, 12}, {13, 64}}

// locate sends TTL-limited probes of a size that passes (small) and of one
// that vanishes (big). Every router answers a probe whose TTL runs out on
// it — the TTL check comes before the MTU check — so the last TTL at which
// big probes still get an answer names the last hop before the bottleneck:
// the link after it (or the hop's own egress) is the suspect.
//
// Small probes go once per TTL, big ones twice: routers rate-limit
// time-exceeded answers (Linux: a burst of 6 per destination, then one a
// second), so every hop gets at most three per batch.
func locate(ctx context.Context, x exchanger, small, big int, wait time.Duration, maxHops int) (location, error) {
	loc := location{last: -1, next: -1}
	for _, batch := range hopBatches {
		first, last := batch[0], min(batch[1], maxHops)
		if first > last {
			break
		}
		var specs []probeSpec
		for ttl := first; ttl <= last; ttl++ {
			specs = append(specs, probeSpec{size: small, ttl: ttl}, probeSpec{size: big, ttl: ttl}, probeSpec{size: big, ttl: ttl})
		}
		outs, err := x.exchange(ctx, specs, wait, wait)
		if err != nil {
			return loc, err
		}
		done := false
		for i := 0; i < len(outs); i += 3 {
			h := Hop{TTL: first + i/3}
			sm := outs[i]
			switch sm.kind {
			case expired, reached, tooBig, refused:
				h.Addr = sm.from
			}
			h.Target = sm.kind == reached
			for _, o := range outs[i+1 : i+3] {
				switch o.kind {
				case expired, reached:
					h.Passes = true
					if !h.Addr.IsValid() {
						h.Addr = o.from
					}
				}
			}
			if !done {
				loc.hops = append(loc.hops, h)
			}
			if h.Target {
				done = true
			}
		}
		if done {
			break
		}
	}
	for i, h := range loc.hops {
		if h.Passes && !h.Target {
			loc.last = i
		}
	}
	for i := loc.last + 1; i < len(loc.hops); i++ {
		if loc.hops[i].Addr.IsValid() {
			loc.next = i
			break
		}
	}
	return loc, nil
}
