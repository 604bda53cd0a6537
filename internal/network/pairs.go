package network

import (
	"cmp"
	"net/netip"
	"slices"
)

// disjointPairs cuts the union of address . port rectangles into disjoint
// ones, as a concatenated interval set needs (the kernel refuses elements
// that overlap). It cuts along each axis in turn (into the intervals
// between the rectangles' edges, each with the merged ranges of the other
// axis that cover it) and keeps the cut with fewer rectangles: CIDRs nest
// or are disjoint, so one of the two stays close to the number of rules.
func disjointPairs(in []pairSpan) []pairSpan {
	if len(in) == 0 {
		return nil
	}
	byPort := cutByPort(in)
	if len(byPort) <= len(in) {
		return byPort
	}
	if byAddr := cutByAddr(in); len(byAddr) < len(byPort) {
		return byAddr
	}
	return byPort
}

// cutByPort cuts the port axis at every rectangle's edges; within each
// piece the covering rectangles' address ranges are merged, and
// neighbouring pieces with the same addresses are joined.
func cutByPort(in []pairSpan) []pairSpan {
	var bounds []uint32
	for _, r := range in {
		bounds = append(bounds, uint32(r.Port.lo), uint32(r.Port.hi)+1)
	}
	slices.Sort(bounds)
	bounds = slices.Compact(bounds)
	order := sortedBy(in, func(a, b pairSpan) int { return cmp.Compare(a.Port.lo, b.Port.lo) })
	var out []pairSpan
	var active []pairSpan
	var last []addrSpan // addresses of the previous piece, nil if it was empty
	lastAt := 0         // where the previous piece's rectangles start in out
	next := 0
	for i := 0; i+1 < len(bounds); i++ {
		lo, hi := bounds[i], bounds[i+1]-1
		for ; next < len(order) && uint32(order[next].Port.lo) <= lo; next++ {
			active = append(active, order[next])
		}
		active = slices.DeleteFunc(active, func(r pairSpan) bool { return uint32(r.Port.hi) < lo })
		if len(active) == 0 {
			last = nil
			continue
		}
		addrs := make([]addrSpan, len(active))
		for j, r := range active {
			addrs[j] = r.Addr
		}
		addrs = mergeAddrs(addrs)
		if last != nil && slices.Equal(last, addrs) {
			for j := lastAt; j < len(out); j++ {
				out[j].Port.hi = uint16(hi)
			}
			continue
		}
		lastAt, last = len(out), addrs
		for _, a := range addrs {
			out = append(out, pairSpan{Addr: a, Port: span{uint16(lo), uint16(hi)}})
		}
	}
	return out
}

// addrBound is a point on the address axis: an address, or the point past
// the family's last address.
type addrBound struct {
	a   netip.Addr
	end bool
}

func compareBound(x, y addrBound) int {
	if x.end || y.end {
		return cmp.Compare(boolInt(x.end), boolInt(y.end))
	}
	return x.a.Compare(y.a)
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

func pastEnd(a netip.Addr) addrBound {
	if n := a.Next(); n.IsValid() {
		return addrBound{a: n}
	}
	return addrBound{end: true}
}

// cutByAddr is cutByPort with the axes swapped. All rectangles are of one
// family.
func cutByAddr(in []pairSpan) []pairSpan {
	var bounds []addrBound
	for _, r := range in {
		bounds = append(bounds, addrBound{a: r.Addr.lo}, pastEnd(r.Addr.hi))
	}
	slices.SortFunc(bounds, compareBound)
	bounds = slices.CompactFunc(bounds, func(x, y addrBound) bool { return compareBound(x, y) == 0 })
	order := sortedBy(in, func(a, b pairSpan) int { return a.Addr.lo.Compare(b.Addr.lo) })
	var out []pairSpan
	var active []pairSpan
	var last []span
	lastAt := 0
	next := 0
	for i := 0; i+1 < len(bounds); i++ {
		lo, hi := bounds[i].a, bounds[i+1].a.Prev()
		if bounds[i+1].end {
			hi = lastAddr(lo)
		}
		for ; next < len(order) && order[next].Addr.lo.Compare(lo) <= 0; next++ {
			active = append(active, order[next])
		}
		active = slices.DeleteFunc(active, func(r pairSpan) bool { return r.Addr.hi.Compare(lo) < 0 })
		if len(active) == 0 {
			last = nil
			continue
		}
		ports := make([]span, len(active))
		for j, r := range active {
			ports[j] = r.Port
		}
		ports = mergeSpans(ports)
		if last != nil && slices.Equal(last, ports) {
			for j := lastAt; j < len(out); j++ {
				out[j].Addr.hi = hi
			}
			continue
		}
		lastAt, last = len(out), ports
		for _, p := range ports {
			out = append(out, pairSpan{Addr: addrSpan{lo, hi}, Port: p})
		}
	}
	return out
}

// lastAddr is the last address of a's family.
func lastAddr(a netip.Addr) netip.Addr {
	return prefixSpan(netip.PrefixFrom(a, 0).Masked()).hi
}

func sortedBy(in []pairSpan, f func(a, b pairSpan) int) []pairSpan {
	s := slices.Clone(in)
	slices.SortFunc(s, f)
	return s
}
