package network

import "net/netip"

// DNS: each network's bridge serves DNS on its gateway address (the name
// server DHCP hands out), with package dnsd. Instances look up the private
// names of their own network's instances, those on this node (its ports)
// and on other nodes (the peers the controller hands over); other names go
// to the node's upstream resolvers. Bridged-mode networks have no gateway
// on the node and no DNS service.

// WithDNSUpstreams sets the resolvers ("ADDR" or "ADDR:PORT") the DNS
// service forwards other names to, instead of the host's
// /etc/resolv.conf; an empty list forwards nothing (SERVFAIL).
func WithDNSUpstreams(addrs []string) Option {
	return func(h *Host) {
		h.dnsCfg.Upstreams = append([]string{}, addrs...)
	}
}

// syncDNS hands the DNS service every network's records. Called with h.mu
// held (or before the host is shared).
func (h *Host) syncDNS() {
	vpcOf := map[string]string{} // bridge -> VPC
	addrs := map[string][]netip.Addr{}
	for _, p := range h.ports {
		if p.uplink {
			continue
		}
		addrs[p.bridge] = append(addrs[p.bridge], p.ip)
		if p.vpc != "" {
			vpcOf[p.bridge] = p.vpc
		}
	}
	byVPC := map[string][]netip.Addr{}
	for _, pe := range h.peers {
		if a, err := netip.ParseAddr(pe.IP); err == nil && !pe.Gone && pe.VPCID != "" {
			byVPC[pe.VPCID] = append(byVPC[pe.VPCID], a)
		}
	}
	for name, br := range h.bridges {
		if br.external {
			continue
		}
		h.dns.SetRecords(name, append(addrs[name], byVPC[vpcOf[name]]...))
	}
}
