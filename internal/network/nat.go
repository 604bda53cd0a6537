package network

import (
	"fmt"
	"net/netip"
	"sort"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
)

// NATTable is the nftables table (ip family) that holds Clipper's NAT.
const NATTable = "clipper_nat"

// natRules is the set of subnets masqueraded on their way out.
type natRules map[string]netip.Prefix // bridge -> subnet

// apply rewrites the NAT table in one atomic nftables transaction:
// traffic from a subnet to anywhere outside it leaves with the node's
// address, unless it goes back out through the network's own bridge (to
// an instance of another subnet on another node, see overlay.go).
func (r natRules) apply() error {
	c, err := nftables.New()
	if err != nil {
		return fmt.Errorf("network: nftables: %w", err)
	}
	t := c.AddTable(&nftables.Table{Family: nftables.TableFamilyIPv4, Name: NATTable})
	c.FlushTable(t)
	post := c.AddChain(&nftables.Chain{
		Name: "postrouting", Table: t, Type: nftables.ChainTypeNAT,
		Hooknum: nftables.ChainHookPostrouting, Priority: nftables.ChainPriorityNATSource,
	})
	bridges := make([]string, 0, len(r))
	for b := range r {
		bridges = append(bridges, b)
	}
	sort.Strings(bridges)
	for _, b := range bridges {
		p := r[b].Masked()
		mask := prefixMask(p.Bits())
		net4 := p.Addr().As4()
		c.AddRule(&nftables.Rule{Table: t, Chain: post, Exprs: []expr.Any{
			// ip saddr & mask == subnet
			&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 12, Len: 4},
			&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4, Mask: mask, Xor: []byte{0, 0, 0, 0}},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: net4[:]},
			// ip daddr & mask != subnet
			&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 16, Len: 4},
			&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4, Mask: mask, Xor: []byte{0, 0, 0, 0}},
			&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: net4[:]},
			// oifname != bridge
			&expr.Meta{Key: expr.MetaKeyOIFNAME, Register: 1},
			&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: ifname(b)},
			&expr.Counter{},
			&expr.Masq{},
		}, UserData: []byte("clipper:" + b)})
	}
	if err := c.Flush(); err != nil {
		return fmt.Errorf("network: apply NAT rules: %w", err)
	}
	return nil
}

func prefixMask(bits int) []byte {
	m := uint32(0xffffffff) << (32 - bits)
	if bits == 0 {
		m = 0
	}
	return binaryutil.BigEndian.PutUint32(m)
}
