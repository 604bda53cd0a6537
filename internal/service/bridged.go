package service

import (
	"context"
	"net/netip"
	"strings"

	"github.com/clipper-cloud/clipper/internal/model"
	"github.com/clipper-cloud/clipper/internal/store"
)

// Bridged networks: the classic "bridge br0 onto eth0" setup as a managed
// resource. The operator names a host bridge that exists on the nodes of a
// zone and the LAN behind it (its prefix, its router, and the range of
// addresses Clipper may hand out); Clipper records a VPC with that uplink
// and one subnet, with its own default security group. Instances launched
// into the subnet get a LAN address from the range by DHCP, the LAN's
// router as gateway, and still pass their security groups and the
// anti-spoofing chain on the node (see network/bridged.go).

// BridgedSpec describes a bridged network.
type BridgedSpec struct {
	Name    string // Name tag of the VPC and subnet
	Uplink  string // host bridge on the nodes
	CIDR    string // the LAN, e.g. 192.168.1.0/24
	Gateway string // the LAN's router, e.g. 192.168.1.1
	Range   string // FIRST-LAST addresses Clipper hands out
	Zone    string // default: the first zone
}

// BridgedNetwork is a bridged VPC with its subnet.
type BridgedNetwork struct {
	VPC    model.VPC
	Subnet model.Subnet
}

// validUplink checks a Linux interface name (at most 15 bytes, no slash,
// space or colon).
func validUplink(name string) bool {
	return name != "" && len(name) <= 15 && name != "." && name != ".." && !strings.ContainsAny(name, "/: \t\n\x00")
}

func (s *Service) checkBridged(spec *BridgedSpec) (netip.Prefix, netip.Addr, netip.Addr, netip.Addr, error) {
	var none netip.Prefix
	var zero netip.Addr
	if !validUplink(spec.Uplink) {
		return none, zero, zero, zero, model.InvalidParam("Uplink", "%q is not an interface name", spec.Uplink)
	}
	p, err := netip.ParsePrefix(spec.CIDR)
	if err != nil || !p.Addr().Is4() || p.Bits() < 8 || p.Bits() > 30 || p.Masked() != p {
		return none, zero, zero, zero, model.InvalidParam("CidrBlock", "%q is not an IPv4 network between /8 and /30", spec.CIDR)
	}
	gw, err := netip.ParseAddr(spec.Gateway)
	if err != nil || !p.Contains(gw) {
		return none, zero, zero, zero, model.InvalidParam("Gateway", "the gateway %q is not an address in %s", spec.Gateway, p)
	}
	a, b, ok := strings.Cut(spec.Range, "-")
	first, err1 := netip.ParseAddr(strings.TrimSpace(a))
	last, err2 := netip.ParseAddr(strings.TrimSpace(b))
	if !ok || err1 != nil || err2 != nil || !p.Contains(first) || !p.Contains(last) || last.Less(first) {
		return none, zero, zero, zero, model.InvalidParam("Range", "%q is not FIRST-LAST inside %s", spec.Range, p)
	}
	bcast := ipv4Add(p.Addr(), (uint64(1)<<(32-p.Bits()))-1)
	if first == p.Addr() || last == bcast || (!gw.Less(first) && !last.Less(gw)) {
		return none, zero, zero, zero, model.InvalidParam("Range",
			"the range %s must leave out the network and broadcast addresses and the gateway %s", spec.Range, gw)
	}
	if spec.Zone == "" {
		spec.Zone = s.cfg.Zones[0]
	}
	for _, z := range s.cfg.Zones {
		if z == spec.Zone {
			return p, gw, first, last, nil
		}
	}
	return none, zero, zero, zero, model.Errorf(model.KindInvalidParameter, model.ResZone, spec.Zone, "Invalid availability zone: [%s]", spec.Zone)
}

// CreateBridgedNetwork records a bridged network in the caller's account.
func (s *Service) CreateBridgedNetwork(ctx context.Context, c Caller, spec BridgedSpec) (BridgedNetwork, error) {
	p, gw, first, last, err := s.checkBridged(&spec)
	if err != nil {
		return BridgedNetwork{}, err
	}
	var tags []model.Tag
	if spec.Name != "" {
		tags = []model.Tag{{Key: "Name", Value: spec.Name}}
	}
	if err := validateTags(tags); err != nil {
		return BridgedNetwork{}, err
	}
	var out BridgedNetwork
	err = s.update(ctx, func(tx store.Tx) error {
		if _, err := s.ensureDefaultNetwork(tx, c.AccountID); err != nil {
			return err
		}
		if err := checkRangeFree(tx, c.AccountID, spec.Uplink, first, last); err != nil {
			return err
		}
		now := s.nowMS()
		v := model.VPC{ID: model.NewID(model.PrefixVPC), AccountID: c.AccountID, CIDR: p.String(), Uplink: spec.Uplink, Created: now}
		if err := tx.InsertVPC(v); err != nil {
			return err
		}
		sn := model.Subnet{ID: model.NewID(model.PrefixSubnet), VPCID: v.ID, AccountID: c.AccountID, Zone: spec.Zone,
			CIDR: p.String(), Gateway: gw.String(), RangeFirst: first.String(), RangeLast: last.String(), Created: now}
		if err := tx.InsertSubnet(sn); err != nil {
			return err
		}
		if err := createDefaultGroup(tx, c.AccountID, v.ID, now); err != nil {
			return err
		}
		for _, id := range []string{v.ID, sn.ID} {
			if err := tx.SetTags(c.AccountID, id, tags); err != nil {
				return err
			}
		}
		v.Tags, sn.Tags = tags, tags
		out = BridgedNetwork{VPC: v, Subnet: sn}
		return nil
	})
	return out, err
}

// checkRangeFree refuses a range that overlaps another bridged network's
// on the same uplink: both would hand out the same LAN addresses.
func checkRangeFree(tx store.Tx, accountID, uplink string, first, last netip.Addr) error {
	nets, err := bridgedNetworks(tx, accountID)
	if err != nil {
		return err
	}
	for _, n := range nets {
		a, _ := netip.ParseAddr(n.Subnet.RangeFirst)
		b, _ := netip.ParseAddr(n.Subnet.RangeLast)
		if n.VPC.Uplink == uplink && !last.Less(a) && !b.Less(first) {
			return model.Errorf(model.KindInUse, "", n.VPC.ID, "The range overlaps %s-%s of %s on %s", a, b, n.VPC.ID, uplink)
		}
	}
	return nil
}

func bridgedNetworks(tx store.Tx, accountID string) ([]BridgedNetwork, error) {
	vpcs, err := tx.ListVPCs(accountID)
	if err != nil {
		return nil, err
	}
	subnets, err := tx.ListSubnets(accountID)
	if err != nil {
		return nil, err
	}
	byVPC := map[string]model.Subnet{}
	for _, sn := range subnets {
		byVPC[sn.VPCID] = sn
	}
	var out []BridgedNetwork
	for _, v := range vpcs {
		if v.Uplink != "" {
			out = append(out, BridgedNetwork{VPC: v, Subnet: byVPC[v.ID]})
		}
	}
	return out, nil
}

// BridgedNetworks lists the caller's bridged networks.
func (s *Service) BridgedNetworks(ctx context.Context, c Caller) ([]BridgedNetwork, error) {
	var out []BridgedNetwork
	err := s.view(ctx, func(tx store.Tx) error {
		var err error
		if out, err = bridgedNetworks(tx, c.AccountID); err != nil {
			return err
		}
		tags, err := tx.Tags(c.AccountID, nil)
		if err != nil {
			return err
		}
		for i := range out {
			out[i].VPC.Tags, out[i].Subnet.Tags = tags[out[i].VPC.ID], tags[out[i].Subnet.ID]
		}
		return nil
	})
	return out, err
}

// DeleteBridgedNetwork removes a bridged network that no live instance uses.
func (s *Service) DeleteBridgedNetwork(ctx context.Context, c Caller, vpcID string) error {
	return s.update(ctx, func(tx store.Tx) error {
		v, err := tx.GetVPC(vpcID)
		if err != nil || v.AccountID != c.AccountID || v.Uplink == "" {
			return model.Errorf(model.KindNotFound, model.ResVPC, vpcID, "The bridged network '%s' does not exist", vpcID)
		}
		subnets, err := tx.ListSubnets(c.AccountID)
		if err != nil {
			return err
		}
		for _, sn := range subnets {
			if sn.VPCID != vpcID {
				continue
			}
			if n, err := tx.SubnetUsed(sn.ID); err != nil || n > 0 {
				if err != nil {
					return err
				}
				return model.Errorf(model.KindDependencyViolation, model.ResVPC, vpcID,
					"The network '%s' has %d instances that are not terminated", vpcID, n)
			}
		}
		return tx.DeleteVPC(vpcID)
	})
}
