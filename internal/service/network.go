package service

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/netip"

	"github.com/clipper-cloud/clipper/internal/model"
)

// subnet is an account's default subnet in one availability zone.
type subnet struct {
	VPCID    string
	ID       string
	Prefix   netip.Prefix
	Gateway  netip.Addr
	ZoneName string
}

// derivedID makes a stable resource ID from a seed, so that default networks
// need no bookkeeping until networks become first-class resources.
func derivedID(prefix, seed string) string {
	h := sha256.Sum256([]byte(seed))
	return prefix + hex.EncodeToString(h[:])[:17]
}

// defaultSubnet returns the account's default subnet in a zone: zone k of
// the configuration gets the k-th block of SubnetBits inside VPCCIDR.
func (s *Service) defaultSubnet(accountID, zone string) (subnet, error) {
	k := -1
	for i, z := range s.cfg.Zones {
		if z == zone {
			k = i
		}
	}
	if k < 0 {
		return subnet{}, model.Errorf(model.KindInvalidParameter, model.ResZone, zone,
			"Invalid availability zone: [%s]", zone)
	}
	base := s.cfg.VPCCIDR.Masked()
	size := uint64(1) << (32 - s.cfg.SubnetBits)
	start := ipv4Add(base.Addr(), uint64(k)*size)
	p := netip.PrefixFrom(start, s.cfg.SubnetBits)
	if !base.Contains(start) {
		return subnet{}, fmt.Errorf("zone %s: no room for subnet %d in %s", zone, k, base)
	}
	return subnet{
		VPCID:    derivedID(model.PrefixVPC, "vpc/"+accountID),
		ID:       derivedID(model.PrefixSubnet, "subnet/"+accountID+"/"+zone),
		Prefix:   p,
		Gateway:  ipv4Add(start, 1),
		ZoneName: zone,
	}, nil
}

func ipv4Add(a netip.Addr, n uint64) netip.Addr {
	b := a.As4()
	v := uint64(b[0])<<24 | uint64(b[1])<<16 | uint64(b[2])<<8 | uint64(b[3])
	v += n
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
}

// addressPool hands out free private IPs and MACs of one subnet. Like AWS,
// the first four addresses and the last one are reserved.
type addressPool struct {
	sn    subnet
	used  map[netip.Addr]bool
	macs  map[string]bool
	next  netip.Addr
	limit netip.Addr
}

func newAddressPool(sn subnet, ips, macs []string) *addressPool {
	p := &addressPool{sn: sn, used: map[netip.Addr]bool{}, macs: map[string]bool{}}
	for _, ip := range ips {
		if a, err := netip.ParseAddr(ip); err == nil {
			p.used[a] = true
		}
	}
	for _, m := range macs {
		p.macs[m] = true
	}
	size := uint64(1) << (32 - sn.Prefix.Bits())
	p.next = ipv4Add(sn.Prefix.Addr(), 4)
	p.limit = ipv4Add(sn.Prefix.Addr(), size-1) // broadcast, exclusive
	return p
}

func (p *addressPool) take() (ip netip.Addr, mac string, err error) {
	for a := p.next; a.Less(p.limit); a = a.Next() {
		if !p.used[a] {
			p.used[a] = true
			p.next = a.Next()
			ip = a
			break
		}
	}
	if !ip.IsValid() {
		return ip, "", model.Errorf(model.KindInsufficientCapacity, "subnet", p.sn.ID,
			"There are not enough free addresses in subnet '%s' (%s) to satisfy the request", p.sn.ID, p.sn.Prefix)
	}
	for {
		var b [5]byte
		if _, err := rand.Read(b[:]); err != nil {
			return ip, "", err
		}
		mac = fmt.Sprintf("02:%02x:%02x:%02x:%02x:%02x", b[0], b[1], b[2], b[3], b[4])
		if !p.macs[mac] {
			p.macs[mac] = true
			return ip, mac, nil
		}
	}
}

// DefaultVPC returns the ID of the account's default VPC.
func (s *Service) DefaultVPC(accountID string) string {
	return derivedID(model.PrefixVPC, "vpc/"+accountID)
}
