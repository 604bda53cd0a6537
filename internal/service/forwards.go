package service

import (
	"context"
	"net/netip"
	"strings"

	"github.com/clipper-cloud/clipper/internal/model"
	"github.com/clipper-cloud/clipper/internal/store"
)

// ForwardSpec is what `clipper forward create` asks for.
type ForwardSpec struct {
	Protocol string // tcp (default) or udp
	Listen   string // PUBLIC_IP:PORT on a node
	To       string // ADDR:PORT: an instance's private address or any address the node reaches
	Node     string // node name; default: the node of the target instance, or the only node
}

// ParseForward checks a forward's addresses: each must be IPv4:PORT with a
// port in 1-65535, and the protocol tcp or udp.
func ParseForward(protocol, listen, to string) (proto string, l, t netip.AddrPort, err error) {
	proto = strings.ToLower(strings.TrimSpace(protocol))
	if proto == "" {
		proto = "tcp"
	}
	if proto != "tcp" && proto != "udp" {
		return "", l, t, model.InvalidParam("protocol", "The protocol must be tcp or udp, not %q", protocol)
	}
	parse := func(name, s string) (netip.AddrPort, error) {
		ap, err := netip.ParseAddrPort(strings.TrimSpace(s))
		if err != nil || !ap.Addr().Is4() || ap.Port() == 0 || ap.Addr().IsUnspecified() || ap.Addr().IsMulticast() {
			return ap, model.InvalidParam(name, "%s must be an IPv4 address and a port (1-65535), like 198.51.100.7:8080, not %q", name, s)
		}
		return ap, nil
	}
	if l, err = parse("listen", listen); err != nil {
		return
	}
	t, err = parse("to", to)
	return
}

// CreateForward adds a port forward: connections to Listen on the node
// that carries it go to To, translated there (DNAT, and MASQUERADE so the
// answers come back through the node).
func (s *Service) CreateForward(ctx context.Context, c Caller, spec ForwardSpec) (model.Forward, error) {
	proto, listen, to, err := ParseForward(spec.Protocol, spec.Listen, spec.To)
	if err != nil {
		return model.Forward{}, err
	}
	if !s.inPool(listen.Addr()) {
		return model.Forward{}, model.InvalidParam("listen", "The listen address %s is not in the public pool (%s)", listen.Addr(), s.poolList())
	}
	var f model.Forward
	err = s.update(ctx, func(tx store.Tx) error {
		nodeID, err := s.forwardNode(tx, c, spec.Node, to.Addr())
		if err != nil {
			return err
		}
		if err := checkListen(tx, proto, listen, nodeID); err != nil {
			return err
		}
		rev, err := tx.NextRev()
		if err != nil {
			return err
		}
		f = model.Forward{ID: model.NewID(model.PrefixForward), AccountID: c.AccountID, Protocol: proto,
			ListenIP: listen.Addr().String(), ListenPort: int(listen.Port()), TargetIP: to.Addr().String(),
			TargetPort: int(to.Port()), NodeID: nodeID, Rev: rev, Created: s.nowMS()}
		return tx.InsertForward(f)
	})
	if err != nil {
		return model.Forward{}, err
	}
	s.notify.NodesChanged(f.NodeID)
	s.log.Info("forward created", "forward", f.ID, "protocol", f.Protocol, "listen", spec.Listen, "to", spec.To, "node", f.NodeID)
	return f, nil
}

// checkListen refuses a listen address that is an elastic IP's (its DNAT
// takes every port), the same protocol, address and port as another
// forward, or an address other forwards have on another node (two nodes
// would answer ARP for it).
func checkListen(tx store.Tx, proto string, listen netip.AddrPort, nodeID string) error {
	ip := listen.Addr().String()
	if a, err := tx.GetAddressByIP(ip); err == nil {
		return model.Errorf(model.KindInUse, model.ResAddress, ip,
			"The address %s is the elastic IP %s: a forward needs a pool address that is not allocated", ip, a.ID)
	} else if model.KindOf(err) != model.KindNotFound {
		return err
	}
	fws, err := tx.ListForwards("")
	if err != nil {
		return err
	}
	for _, f := range fws {
		if f.ListenIP != ip {
			continue
		}
		if f.Protocol == proto && f.ListenPort == int(listen.Port()) {
			return model.Errorf(model.KindDuplicate, model.ResForward, f.ID,
				"%s %s is forwarded already, by %s", proto, listen, f.ID)
		}
		if f.NodeID != nodeID {
			return model.Errorf(model.KindInUse, model.ResAddress, ip,
				"The address %s has forwards on another node (%s): the forwards of one address go on one node", ip, f.ID)
		}
	}
	return nil
}

// poolList names the public pools for messages.
func (s *Service) poolList() string {
	if len(s.cfg.PublicPools) == 0 {
		return "none: the operator sets one with --public-pool"
	}
	names := make([]string, len(s.cfg.PublicPools))
	for i, p := range s.cfg.PublicPools {
		names[i] = p.String()
	}
	return strings.Join(names, ", ")
}

// forwardNode picks the node that carries a forward: the named one, else
// the node of the instance that holds the target address, else the only
// node there is.
func (s *Service) forwardNode(tx store.Tx, c Caller, name string, target netip.Addr) (string, error) {
	if name != "" {
		n, err := tx.GetNodeByName(name)
		if err != nil {
			return "", err
		}
		return n.ID, nil
	}
	insts, err := tx.ListInstances(store.InstanceQuery{AccountID: c.AccountID, Live: true})
	if err != nil {
		return "", err
	}
	for _, i := range insts {
		if i.PrivateIP == target.String() && i.NodeID != "" {
			return i.NodeID, nil
		}
	}
	nodes, err := tx.ListNodes()
	if err != nil {
		return "", err
	}
	if len(nodes) == 1 {
		return nodes[0].ID, nil
	}
	return "", model.InvalidParam("node", "%s is no instance's address: name the node that carries the forward", target)
}

// DeleteForward removes a port forward by ID.
func (s *Service) DeleteForward(ctx context.Context, c Caller, id string) error {
	var f model.Forward
	err := s.update(ctx, func(tx store.Tx) error {
		var err error
		f, err = tx.GetForward(id)
		if err != nil || f.AccountID != c.AccountID {
			return model.NotFound(model.ResForward, id)
		}
		return tx.DeleteForward(id)
	})
	if err == nil {
		s.notify.NodesChanged(f.NodeID)
	}
	return err
}

// Forwards lists the caller's port forwards.
func (s *Service) Forwards(ctx context.Context, c Caller) ([]model.Forward, error) {
	var out []model.Forward
	err := s.view(ctx, func(tx store.Tx) error {
		var err error
		out, err = tx.ListForwards(c.AccountID)
		return err
	})
	return out, err
}
