package service

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"net/netip"

	"github.com/clipper-cloud/clipper/internal/model"
	"github.com/clipper-cloud/clipper/internal/store"
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

// allocateAddress picks a free private IP and MAC in a subnet. Like AWS,
// the first four addresses and the last are reserved. Addresses are drawn at
// random and checked against an index, so a launch costs the same in an
// empty subnet and in a busy one; taken holds those handed out in this
// transaction.
func allocateAddress(tx store.Tx, sn subnet, taken map[netip.Addr]bool) (netip.Addr, string, error) {
	size := uint64(1) << (32 - sn.Prefix.Bits())
	usable := size - 5
	for attempt := 0; attempt < 64; attempt++ {
		var b [13]byte
		if _, err := rand.Read(b[:]); err != nil {
			return netip.Addr{}, "", err
		}
		off := binary.BigEndian.Uint64(b[:8]) % usable
		ip := ipv4Add(sn.Prefix.Addr(), 4+off)
		mac := fmt.Sprintf("02:%02x:%02x:%02x:%02x:%02x", b[8], b[9], b[10], b[11], b[12])
		if taken[ip] {
			continue
		}
		used, err := tx.AddressInUse(sn.ID, ip.String(), mac)
		if err != nil {
			return netip.Addr{}, "", err
		}
		if !used {
			taken[ip] = true
			return ip, mac, nil
		}
	}
	return netip.Addr{}, "", model.Errorf(model.KindInsufficientCapacity, "subnet", sn.ID,
		"There are not enough free addresses in subnet '%s' (%s) to satisfy the request", sn.ID, sn.Prefix)
}

// DefaultVPC returns the ID of the account's default VPC.
func (s *Service) DefaultVPC(accountID string) string {
	return derivedID(model.PrefixVPC, "vpc/"+accountID)
}
