package service

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"time"

	"github.com/clipper-cloud/clipper/internal/model"
	"github.com/clipper-cloud/clipper/internal/store"
)

// derivedID makes a stable resource ID from a seed: an account's default
// network has the same IDs however many controllers create it.
func derivedID(prefix, seed string) string {
	h := sha256.Sum256([]byte(seed))
	return prefix + hex.EncodeToString(h[:])[:17]
}

// DefaultVPC returns the ID of the account's default VPC.
func (s *Service) DefaultVPC(accountID string) string {
	return derivedID(model.PrefixVPC, "vpc/"+accountID)
}

func defaultGroupID(vpcID string) string { return derivedID(model.PrefixGroup, "sg/"+vpcID+"/default") }

// BridgeName is the node bridge of a VPC (at most 15 bytes).
func BridgeName(vpcID string) string {
	id := vpcID[len(model.PrefixVPC):]
	if len(id) > 12 {
		id = id[:12]
	}
	return "cb" + id
}

// ensureDefaultNetwork creates the account's default VPC, a default subnet
// per zone and the default security group the first time they are needed.
func (s *Service) ensureDefaultNetwork(tx store.Tx, accountID string) (model.VPC, error) {
	id := s.DefaultVPC(accountID)
	v, err := tx.GetVPC(id)
	if err == nil || !errors.Is(err, model.ErrNotFound) {
		return v, err
	}
	now := s.nowMS()
	v = model.VPC{ID: id, AccountID: accountID, CIDR: s.cfg.VPCCIDR.Masked().String(), Default: true, Created: now}
	if err := tx.InsertVPC(v); err != nil {
		return v, err
	}
	base := s.cfg.VPCCIDR.Masked()
	size := uint64(1) << (32 - s.cfg.SubnetBits)
	for k, zone := range s.cfg.Zones {
		start := ipv4Add(base.Addr(), uint64(k)*size)
		if !base.Contains(start) {
			return v, fmt.Errorf("zone %s: no room for subnet %d in %s", zone, k, base)
		}
		sn := model.Subnet{ID: derivedID(model.PrefixSubnet, "subnet/"+accountID+"/"+zone), VPCID: id, AccountID: accountID,
			Zone: zone, CIDR: netip.PrefixFrom(start, s.cfg.SubnetBits).String(), Default: true, Created: now}
		if err := tx.InsertSubnet(sn); err != nil {
			return v, err
		}
	}
	return v, createDefaultGroup(tx, accountID, id, now)
}

// createDefaultGroup makes a VPC's default security group with AWS's
// rules: all traffic from members of the group, all egress.
func createDefaultGroup(tx store.Tx, accountID, vpcID string, now time.Time) error {
	rev, err := tx.NextRev()
	if err != nil {
		return err
	}
	g := model.SecurityGroup{ID: defaultGroupID(vpcID), AccountID: accountID, VPCID: vpcID, Name: model.DefaultGroup,
		Description: "default VPC security group", Rev: rev, Created: now}
	if err := tx.InsertGroup(g); err != nil {
		return err
	}
	for _, r := range []model.GroupRule{
		{GroupID: g.ID, Protocol: model.ProtocolAll, FromPort: -1, ToPort: -1, PeerGroup: g.ID},
		{GroupID: g.ID, Egress: true, Protocol: model.ProtocolAll, FromPort: -1, ToPort: -1, CIDR: "0.0.0.0/0"},
	} {
		r.ID, r.Created = model.NewID(model.PrefixRule), now
		if err := tx.InsertRule(r); err != nil {
			return err
		}
	}
	return nil
}

// subnetFor picks the subnet of a launch: the given one, or the default
// subnet of the zone.
func (s *Service) subnetFor(tx store.Tx, accountID, zone, subnetID string) (model.Subnet, error) {
	if _, err := s.ensureDefaultNetwork(tx, accountID); err != nil {
		return model.Subnet{}, err
	}
	if subnetID != "" {
		sn, err := tx.GetSubnet(subnetID)
		if err != nil || sn.AccountID != accountID {
			return model.Subnet{}, model.Errorf(model.KindNotFound, model.ResSubnet, subnetID, "The subnet ID '%s' does not exist", subnetID)
		}
		if zone != "" && zone != sn.Zone {
			return model.Subnet{}, model.InvalidParam("Placement.AvailabilityZone",
				"Subnet %s is in %s, not in %s", subnetID, sn.Zone, zone)
		}
		return sn, nil
	}
	for _, z := range s.cfg.Zones {
		if z == zone {
			return tx.GetSubnet(derivedID(model.PrefixSubnet, "subnet/"+accountID+"/"+zone))
		}
	}
	return model.Subnet{}, model.Errorf(model.KindInvalidParameter, model.ResZone, zone, "Invalid availability zone: [%s]", zone)
}

func ipv4Add(a netip.Addr, n uint64) netip.Addr {
	b := a.As4()
	v := uint64(b[0])<<24 | uint64(b[1])<<16 | uint64(b[2])<<8 | uint64(b[3])
	v += n
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
}

// gateway is the router address of a subnet (its first host address).
func gateway(p netip.Prefix) netip.Addr { return ipv4Add(p.Masked().Addr(), 1) }

// macFor derives an instance's MAC from its network and address: unique
// within the network by construction (addresses are), locally administered.
func macFor(vpcID string, ip netip.Addr) string {
	h := sha256.Sum256([]byte(vpcID))
	b := ip.As4()
	return fmt.Sprintf("02:%02x:%02x:%02x:%02x:%02x", h[0], b[0], b[1], b[2], b[3])
}

// allocateAddress picks a free private IP in a subnet (and its MAC). Like
// AWS, the first four addresses and the last are reserved. Addresses are
// drawn at random and checked against an index, so a launch costs the same
// in an empty subnet and in a busy one; taken holds those handed out in
// this transaction. want, if valid, is the address the caller asked for.
func allocateAddress(tx store.Tx, sn model.Subnet, taken map[netip.Addr]bool, want netip.Addr) (netip.Addr, string, error) {
	p, first, last, err := subnetRange(sn)
	if err != nil {
		return netip.Addr{}, "", err
	}
	usable := ipv4Diff(first, last) + 1
	if want.IsValid() {
		if !p.Contains(want) || want.Less(first) || last.Less(want) {
			return netip.Addr{}, "", model.InvalidParam("PrivateIpAddress", "Address %s is not a usable address of subnet %s (%s)", want, sn.ID, sn.CIDR)
		}
		used, err := tx.AddressInUse(sn.ID, want.String())
		if err != nil {
			return netip.Addr{}, "", err
		}
		if used || taken[want] {
			return netip.Addr{}, "", model.Errorf(model.KindInUse, model.ResInterface, want.String(), "Address %s is in use", want)
		}
		taken[want] = true
		return want, macFor(sn.VPCID, want), nil
	}
	for attempt := 0; attempt < 64; attempt++ {
		var b [8]byte
		if _, err := rand.Read(b[:]); err != nil {
			return netip.Addr{}, "", err
		}
		ip := ipv4Add(first, binary.BigEndian.Uint64(b[:])%usable)
		if ok, err := freeAddress(tx, sn, taken, ip); err != nil || ok {
			return ip, macFor(sn.VPCID, ip), err
		}
	}
	// Nearly full (or unlucky): look at every address once.
	for k := uint64(0); k < usable && usable <= maxScan; k++ {
		ip := ipv4Add(first, k)
		if ok, err := freeAddress(tx, sn, taken, ip); err != nil || ok {
			return ip, macFor(sn.VPCID, ip), err
		}
	}
	return netip.Addr{}, "", model.Errorf(model.KindInsufficientCapacity, "subnet", sn.ID,
		"There are not enough free addresses in subnet '%s' (%s) to satisfy the request", sn.ID, sn.CIDR)
}

// maxScan bounds the address scan after random draws failed (a /16).
const maxScan = 1 << 16

// freeAddress reports whether ip is free, and takes it if so.
func freeAddress(tx store.Tx, sn model.Subnet, taken map[netip.Addr]bool, ip netip.Addr) (bool, error) {
	if taken[ip] || ip.String() == sn.Gateway {
		return false, nil
	}
	used, err := tx.AddressInUse(sn.ID, ip.String())
	if err != nil || used {
		return false, err
	}
	taken[ip] = true
	return true, nil
}

// subnetRange returns a subnet's prefix and the first and last address it
// hands out: the configured range of a bridged subnet, else the subnet
// without the first four and the last address, as AWS reserves them.
func subnetRange(sn model.Subnet) (p netip.Prefix, first, last netip.Addr, err error) {
	if p, err = netip.ParsePrefix(sn.CIDR); err != nil {
		return p, first, last, err
	}
	if sn.RangeFirst != "" {
		if first, err = netip.ParseAddr(sn.RangeFirst); err != nil {
			return p, first, last, err
		}
		last, err = netip.ParseAddr(sn.RangeLast)
		return p, first, last, err
	}
	size := uint64(1) << (32 - p.Bits())
	return p, ipv4Add(p.Addr(), 4), ipv4Add(p.Addr(), size-2), nil
}

// ipv4Diff is b - a for a <= b.
func ipv4Diff(a, b netip.Addr) uint64 {
	x, y := a.As4(), b.As4()
	return uint64(binary.BigEndian.Uint32(y[:])) - uint64(binary.BigEndian.Uint32(x[:]))
}

// usableAddresses is how many addresses a subnet hands out in all.
func usableAddresses(sn model.Subnet) int {
	_, first, last, err := subnetRange(sn)
	if err != nil {
		return 0
	}
	return int(ipv4Diff(first, last) + 1)
}

func vpcFields(v *model.VPC) fieldFunc {
	return func(name string) ([]string, bool) {
		switch name {
		case "vpc-id":
			return []string{v.ID}, true
		case "cidr", "cidr-block-association.cidr-block", "cidrBlock":
			return []string{v.CIDR}, true
		case "is-default", "isDefault":
			return []string{strconv.FormatBool(v.Default)}, true
		case "state":
			return []string{"available"}, true
		case "owner-id":
			return []string{v.AccountID}, true
		case "dhcp-options-id":
			return []string{"default"}, true
		}
		return tagField(v.Tags, name)
	}
}

// DescribeVPCs lists the caller's VPCs (creating the default one if needed).
func (s *Service) DescribeVPCs(ctx context.Context, c Caller, ids []string, filters []Filter) ([]model.VPC, error) {
	if err := checkFilters(filters, vpcFields(&model.VPC{})); err != nil {
		return nil, err
	}
	var vpcs []model.VPC
	err := s.update(ctx, func(tx store.Tx) error {
		if _, err := s.ensureDefaultNetwork(tx, c.AccountID); err != nil {
			return err
		}
		var err error
		if vpcs, err = tx.ListVPCs(c.AccountID); err != nil {
			return err
		}
		tags, err := tx.Tags(c.AccountID, nil)
		for i := range vpcs {
			vpcs[i].Tags = tags[vpcs[i].ID]
		}
		return err
	})
	if err != nil {
		return nil, err
	}
	return filterByID(vpcs, ids, func(v model.VPC) string { return v.ID }, model.ResVPC, "VPC",
		func(v *model.VPC) bool { return matchFilters(filters, vpcFields(v)) })
}

func subnetFields(sn *model.Subnet, available int) fieldFunc {
	return func(name string) ([]string, bool) {
		switch name {
		case "subnet-id":
			return []string{sn.ID}, true
		case "vpc-id":
			return []string{sn.VPCID}, true
		case "availability-zone", "availabilityZone":
			return []string{sn.Zone}, true
		case "cidr", "cidr-block", "cidrBlock":
			return []string{sn.CIDR}, true
		case "default-for-az", "defaultForAz":
			return []string{strconv.FormatBool(sn.Default)}, true
		case "state":
			return []string{"available"}, true
		case "owner-id":
			return []string{sn.AccountID}, true
		case "available-ip-address-count":
			return []string{strconv.Itoa(available)}, true
		}
		return tagField(sn.Tags, name)
	}
}

// SubnetInfo is a subnet with its free address count.
type SubnetInfo struct {
	model.Subnet
	Available int
}

// DescribeSubnets lists the caller's subnets.
func (s *Service) DescribeSubnets(ctx context.Context, c Caller, ids []string, filters []Filter) ([]SubnetInfo, error) {
	if err := checkFilters(filters, subnetFields(&model.Subnet{}, 0)); err != nil {
		return nil, err
	}
	var out []SubnetInfo
	err := s.update(ctx, func(tx store.Tx) error {
		if _, err := s.ensureDefaultNetwork(tx, c.AccountID); err != nil {
			return err
		}
		subnets, err := tx.ListSubnets(c.AccountID)
		if err != nil {
			return err
		}
		tags, err := tx.Tags(c.AccountID, nil)
		if err != nil {
			return err
		}
		out = nil
		for _, sn := range subnets {
			sn.Tags = tags[sn.ID]
			used, err := tx.SubnetUsed(sn.ID)
			if err != nil {
				return err
			}
			out = append(out, SubnetInfo{Subnet: sn, Available: usableAddresses(sn) - used})
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return filterByID(out, ids, func(i SubnetInfo) string { return i.ID }, model.ResSubnet, "subnet",
		func(i *SubnetInfo) bool { return matchFilters(filters, subnetFields(&i.Subnet, i.Available)) })
}

// filterByID keeps the items named by ids (all if none), failing with
// NotFound for an unknown one, and passing keep.
func filterByID[T any](items []T, ids []string, id func(T) string, resource, noun string, keep func(*T) bool) ([]T, error) {
	want := map[string]bool{}
	for _, i := range ids {
		want[i] = true
	}
	var out []T
	for i := range items {
		if len(ids) > 0 && !want[id(items[i])] {
			continue
		}
		delete(want, id(items[i]))
		if keep(&items[i]) {
			out = append(out, items[i])
		}
	}
	for missing := range want {
		return nil, model.Errorf(model.KindNotFound, resource, missing, "The %s ID '%s' does not exist", noun, missing)
	}
	return out, nil
}
